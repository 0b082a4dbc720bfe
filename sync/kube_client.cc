#include "sync/kube_client.h"

#include <curl/curl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <utility>

#include "common/json_writer.h"
#include "common/log.h"
#include "sync/kube_object.h"
#include "sync/line_splitter.h"

namespace sublease {

// One request or watch. Owned by transfers_ while active; by graveyard_ between a
// cancel inside curl and the moment curl lets go of it.
struct KubeClient::Transfer {
  RequestId id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string method;
  std::string path;
  std::string url;
  std::string body;
  std::string content_type;
  int64_t timeout_ms = 0;
  bool watch = false;
  bool in_multi = false;
  bool cancelled = false;
  bool retried_401 = false;
  bool overflowed = false;
  int retries = 0;               // after 429 / 5xx with Retry-After
  uint64_t deadline_ms = 0;      // uv_now() by which a request must be answered
  bool has_retry_after = false;  // this answer carried Retry-After in whole seconds
  int64_t retry_after_s = 0;
  long status = 0;       // NOLINT(google-runtime-int): curl's type
  std::string response;  // body of a plain request, or of a non-2xx watch answer
  LineSplitter lines;
  ResponseCallback on_response;
  LineCallback on_line;
  EndCallback on_end;
  char errbuf[CURL_ERROR_SIZE] = {};

  std::string What() const { return method + " " + path; }
};

struct KubeClient::Socket {
  uv_poll_t poll;
  curl_socket_t fd;
  KubeClient* client;
};

namespace {

CURLM* M(void* multi) { return static_cast<CURLM*>(multi); }

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool Is2xx(long status) { return status >= 200 && status < 300; }  // NOLINT

Code CodeForStatus(int status) {
  if (status == 409 || status == 410) return Code::kConflict;
  if (status == 404) return Code::kNotFound;
  if (status == 401 || status == 403) return Code::kInternal;
  if (status == 429 || status >= 500) return Code::kUnavailable;
  if (status >= 400) return Code::kInvalidArgument;
  return Code::kInternal;
}

std::string Trim(std::string s) {
  size_t b = 0;
  while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  size_t e = s.size();
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

KubeError TransportError(std::string_view what, const std::string& server, CURLcode code,
                         const char* errbuf) {
  KubeError e;
  std::string detail = curl_easy_strerror(code);
  if (errbuf != nullptr && *errbuf != '\0') detail += std::string(" (") + errbuf + ")";
  e.message = std::string(what) + ": " + server + ": " + detail;
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      e.code = Code::kInternal;
      e.message +=
          "; the API server's certificate is not signed by the configured CA: check "
          "certificate-authority(-data) in the kubeconfig or the service-account ca.crt";
      break;
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      e.code = Code::kInternal;
      e.message += "; check the CA and client certificate files named in the configuration";
      break;
    default:
      e.code = Code::kUnavailable;  // refused, reset, timed out, DNS: try again later
  }
  return e;
}

}  // namespace

std::string QueryEscape(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

std::string EncodeDeleteOptions(const DeleteOptions& options) {
  JsonWriter w;
  w.BeginObject().Field("kind", "DeleteOptions").Field("apiVersion", "v1");
  if (options.grace_period_seconds) w.Field("gracePeriodSeconds", *options.grace_period_seconds);
  if (!options.propagation_policy.empty()) w.Field("propagationPolicy", options.propagation_policy);
  if (!options.precondition_uid.empty() || !options.precondition_resource_version.empty()) {
    w.Key("preconditions").BeginObject();
    if (!options.precondition_uid.empty()) w.Field("uid", options.precondition_uid);
    if (!options.precondition_resource_version.empty()) {
      w.Field("resourceVersion", options.precondition_resource_version);
    }
    w.EndObject();
  }
  w.EndObject();
  return w.Take();
}

KubeError ErrorFromResponse(std::string_view what, int http_status, std::string_view body,
                            int64_t retry_after_ms) {
  KubeError e;
  e.code = CodeForStatus(http_status);
  e.http_status = http_status;
  e.retry_after_ms = retry_after_ms;
  std::string detail;
  if (auto status = ParseStatus(body)) {
    e.reason = status->reason;
    detail = status->message;
  } else {
    detail = Trim(std::string(body.substr(0, 300)));
  }
  e.message = std::string(what) + ": " + std::to_string(http_status);
  if (!e.reason.empty()) e.message += " " + e.reason;
  if (!detail.empty()) e.message += ": " + detail;
  if (http_status == 401) {
    e.message +=
        "; the API server rejected the credentials: check that the bearer token "
        "(kubeconfig token/tokenFile or the service-account token) is current";
  } else if (http_status == 403) {
    e.message +=
        "; check the RBAC rules (ClusterRole and binding) granted to subleased's "
        "service account";
  }
  return e;
}

KubeClient::KubeClient(uv_loop_t* loop, KubeConfig config, const Clock* clock)
    : loop_(loop), config_(std::move(config)), clock_(clock) {
  GlobalInitOnce();
  multi_ = curl_multi_init();
  curl_multi_setopt(M(multi_), CURLMOPT_SOCKETFUNCTION, &KubeClient::OnCurlSocket);
  curl_multi_setopt(M(multi_), CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(M(multi_), CURLMOPT_TIMERFUNCTION, &KubeClient::OnCurlTimer);
  curl_multi_setopt(M(multi_), CURLMOPT_TIMERDATA, this);
  // Over HTTP/1.1 (an API server or proxy without HTTP/2) every concurrent request
  // would open its own TLS connection: a burst of 2,500 allocations made thousands of
  // handshakes (libcrypto was a third of the daemon's CPU, bench/cluster_bench.py) and
  // timed out. Past this many connections, requests wait in curl for a free one. Watches
  // hold a connection each (a handful), so requests always keep most of them; over
  // HTTP/2 everything shares one connection and the cap does not bind.
  curl_multi_setopt(M(multi_), CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  defer_timer_ = new uv_timer_t;
  uv_timer_init(loop_, defer_timer_);
  defer_timer_->data = this;
  retry_timer_ = new uv_timer_t;
  uv_timer_init(loop_, retry_timer_);
  retry_timer_->data = this;
  open_handles_ = 3;
}

KubeClient::~KubeClient() {
  // The uv handles can only be freed in their close callbacks: Close must have run.
  assert(closing_ && open_handles_ == 0 && "KubeClient destroyed before Close(done) finished");
  if (multi_ != nullptr) {
    for (auto& [id, t] : transfers_) Destroy(t.get());
    curl_multi_cleanup(M(multi_));
  }
}

KubeClient::RequestId KubeClient::Request(std::string_view method, std::string_view path_with_query,
                                          std::string body, std::string_view content_type,
                                          int64_t timeout_ms, ResponseCallback callback) {
  auto t = std::make_unique<Transfer>();
  t->method = method;
  t->path = path_with_query;
  t->body = std::move(body);
  t->content_type = content_type;
  t->timeout_ms = timeout_ms > 0 ? timeout_ms : kDefaultTimeoutMs;
  t->on_response = std::move(callback);
  return Start(std::move(t));
}

KubeClient::RequestId KubeClient::Get(std::string_view path, ResponseCallback callback) {
  return Request("GET", path, "", "", 0, std::move(callback));
}

KubeClient::RequestId KubeClient::List(std::string_view path, const ListOptions& options,
                                       ResponseCallback callback) {
  std::string p(path);
  char sep = p.find('?') == std::string::npos ? '?' : '&';
  auto add = [&](std::string_view key, const std::string& value) {
    if (value.empty()) return;
    p += sep;
    p += key;
    p += '=';
    p += QueryEscape(value);
    sep = '&';
  };
  add("labelSelector", options.label_selector);
  add("fieldSelector", options.field_selector);
  add("limit", options.limit > 0 ? std::to_string(options.limit) : "");
  add("continue", options.continue_token);
  add("resourceVersion", options.resource_version);
  return Request("GET", p, "", "", options.timeout_ms, std::move(callback));
}

KubeClient::RequestId KubeClient::Create(std::string_view collection_path, std::string body,
                                         ResponseCallback callback) {
  return Request("POST", collection_path, std::move(body), "application/json", 0,
                 std::move(callback));
}

KubeClient::RequestId KubeClient::Update(std::string_view object_path, std::string body,
                                         ResponseCallback callback) {
  return Request("PUT", object_path, std::move(body), "application/json", 0, std::move(callback));
}

KubeClient::RequestId KubeClient::MergePatch(std::string_view object_path, std::string patch,
                                             ResponseCallback callback) {
  return Request("PATCH", object_path, std::move(patch), "application/merge-patch+json", 0,
                 std::move(callback));
}

KubeClient::RequestId KubeClient::Delete(std::string_view object_path, const DeleteOptions& options,
                                         ResponseCallback callback) {
  return Request("DELETE", object_path, EncodeDeleteOptions(options), "application/json", 0,
                 std::move(callback));
}

KubeClient::RequestId KubeClient::Watch(std::string_view path_with_query, int64_t timeout_ms,
                                        LineCallback on_line, EndCallback on_end) {
  auto t = std::make_unique<Transfer>();
  t->method = "GET";
  t->path = path_with_query;
  t->timeout_ms = timeout_ms;
  t->watch = true;
  t->on_line = std::move(on_line);
  t->on_end = std::move(on_end);
  return Start(std::move(t));
}

KubeClient::RequestId KubeClient::Start(std::unique_ptr<Transfer> t) {
  assert(!closing_ && "KubeClient used after Close");
  if (closing_) return 0;
  RequestId id = next_id_++;
  t->id = id;
  if (!t->watch) t->deadline_ms = uv_now(loop_) + static_cast<uint64_t>(t->timeout_ms);
  Transfer* raw = t.get();
  transfers_.emplace(id, std::move(t));
  if (auto configured = Configure(raw); !configured) {
    // Never call back from inside Request: the caller has not seen the id yet.
    KubeError e;
    e.code = configured.error().code;
    e.message = raw->What() + ": " + configured.error().message;
    deferred_failures_.emplace_back(id, std::move(e));
    uv_timer_start(defer_timer_, &KubeClient::OnDeferTimer, 0, 0);
    return id;
  }
  if (curl_depth_ > 0) {
    to_add_.push_back(id);  // curl forbids curl_multi_add_handle from its callbacks
  } else {
    raw->in_multi = true;
    curl_multi_add_handle(M(multi_), raw->easy);
  }
  return id;
}

Result<void> KubeClient::Configure(Transfer* t) {
  auto token = Token(t->retried_401);
  if (!token) return Fail(token.error());

  if (t->easy != nullptr) curl_easy_cleanup(t->easy);
  if (t->headers != nullptr) curl_slist_free_all(t->headers);
  t->headers = nullptr;
  t->easy = curl_easy_init();
  if (t->easy == nullptr) return Fail(Error::Internal("curl_easy_init failed"));
  CURL* e = t->easy;
  t->url = config_.server + t->path;
  t->status = 0;
  t->response.clear();
  t->lines.Reset();
  t->errbuf[0] = '\0';
  t->has_retry_after = false;
  t->retry_after_s = 0;
  int64_t timeout_ms = t->timeout_ms;
  if (!t->watch) {
    // Retries share the request's timeout: each attempt gets what is left of it.
    uint64_t now = uv_now(loop_);
    timeout_ms = t->deadline_ms > now ? static_cast<int64_t>(t->deadline_ms - now) : 1;
  }

  curl_easy_setopt(e, CURLOPT_URL, t->url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &KubeClient::OnWrite);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &KubeClient::OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  // libcurl copies the string.
  curl_easy_setopt(e, CURLOPT_USERAGENT,
                   config_.user_agent.empty() ? std::string(kUserAgent).c_str() : config_.user_agent.c_str());
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));  // NOLINT
  // Share the HTTP/2 connection (multiplexing) rather than opening one per request.
  curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(kConnectTimeoutMs));  // NOLINT
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));                // NOLINT
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
  if (!t->watch) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  // gzip for big lists

  if (config_.insecure_skip_tls_verify) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!config_.ca_data.empty()) {
      curl_blob blob{config_.ca_data.data(), config_.ca_data.size(), CURL_BLOB_COPY};
      curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
      curl_easy_setopt(e, CURLOPT_CAPATH, nullptr);  // trust the cluster CA only
    } else if (!config_.ca_file.empty()) {
      curl_easy_setopt(e, CURLOPT_CAINFO, config_.ca_file.c_str());
      curl_easy_setopt(e, CURLOPT_CAPATH, nullptr);
    }
  }
  if (!config_.client_cert_data.empty()) {
    curl_blob cert{config_.client_cert_data.data(), config_.client_cert_data.size(),
                   CURL_BLOB_COPY};
    curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
  } else if (!config_.client_cert_file.empty()) {
    curl_easy_setopt(e, CURLOPT_SSLCERT, config_.client_cert_file.c_str());
  }
  if (!config_.client_key_data.empty()) {
    curl_blob key{config_.client_key_data.data(), config_.client_key_data.size(), CURL_BLOB_COPY};
    curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &key);
    curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
  } else if (!config_.client_key_file.empty()) {
    curl_easy_setopt(e, CURLOPT_SSLKEY, config_.client_key_file.c_str());
  }

  if (t->method == "GET") {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else {
    if (t->method != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->body.size()));
  }

  auto add_header = [t](const std::string& h) {
    t->headers = curl_slist_append(t->headers, h.c_str());
  };
  add_header("Accept: application/json");
  add_header("Expect:");  // no 100-continue round trip
  if (!t->content_type.empty()) add_header("Content-Type: " + t->content_type);
  if (!token->empty()) add_header("Authorization: Bearer " + *token);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  return Ok();
}

Result<std::string> KubeClient::Token(bool force_reread) {
  if (config_.token_file.empty()) return config_.token;
  int64_t now = clock_->NowMs();
  if (!force_reread && token_mtime_ns_ >= 0 && now - token_checked_ms_ < kTokenRecheckMs) {
    return token_;
  }
  token_checked_ms_ = now;
  struct stat st {};
  if (stat(config_.token_file.c_str(), &st) != 0) {
    std::string m = "cannot read token file " + config_.token_file + ": " + std::strerror(errno);
    // A rotation in progress: keep the last good token (client-go does the same).
    if (!token_.empty()) {
      LogWarn(m + "; keeping the previous token");
      return token_;
    }
    return Fail(Error::Internal(m));
  }
  int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (!force_reread && mtime_ns == token_mtime_ns_ && st.st_ino == token_ino_) return token_;
  std::ifstream in(config_.token_file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = Trim(text.str());
  if (!in || token.empty()) {
    std::string m = "token file " + config_.token_file + " is unreadable or empty";
    if (!token_.empty()) {
      LogWarn(m + "; keeping the previous token");
      return token_;
    }
    return Fail(Error::Internal(m));
  }
  if (token_mtime_ns_ >= 0 && token != token_)
    LogInfo("re-read rotated token from " + config_.token_file);
  token_ = std::move(token);
  token_mtime_ns_ = mtime_ns;
  token_ino_ = st.st_ino;
  return token_;
}

void KubeClient::Cancel(RequestId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  std::unique_ptr<Transfer> t = std::move(it->second);
  transfers_.erase(it);
  t->cancelled = true;
  if (curl_depth_ > 0) {
    // Inside a curl callback (maybe this transfer's own on_line is running): curl must
    // not be re-entered and the callback must stay alive. Let go after curl returns.
    graveyard_.push_back(std::move(t));
    return;
  }
  Destroy(t.get());
}

void KubeClient::Destroy(Transfer* t) {
  if (t->easy != nullptr) {
    if (t->in_multi && multi_ != nullptr) curl_multi_remove_handle(M(multi_), t->easy);
    curl_easy_cleanup(t->easy);
    t->easy = nullptr;
  }
  t->in_multi = false;
  if (t->headers != nullptr) curl_slist_free_all(t->headers);
  t->headers = nullptr;
}

size_t KubeClient::OnWrite(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t bytes = size * n;
  if (t->cancelled) return 0;  // ends the transfer; the client already forgot it
  if (t->status == 0) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  if (!t->watch || !Is2xx(t->status)) {
    t->response.append(data, bytes);
    return bytes;
  }
  bool go_on = t->lines.Feed(std::string_view(data, bytes), [t](std::string_view line) {
    t->on_line(line);
    return !t->cancelled;  // the callback may have cancelled this watch
  });
  if (!go_on) {
    t->overflowed = t->lines.overflowed();
    return 0;
  }
  return bytes;
}

void KubeClient::Drive(int fd, int ev_bitmask) {
  if (multi_ == nullptr) return;
  int running = 0;
  ++curl_depth_;
  curl_multi_socket_action(M(multi_), fd, ev_bitmask, &running);
  --curl_depth_;
  AfterCurl();
}

void KubeClient::AfterCurl() {
  if (curl_depth_ > 0 || multi_ == nullptr) return;
  // Collect finished transfers first, while every easy handle is still alive, so a
  // removal below can never leave a message pointing at a freed handle.
  std::vector<std::pair<RequestId, int>> done;
  int left = 0;
  while (CURLMsg* m = curl_multi_info_read(M(multi_), &left)) {
    if (m->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &t);
    if (t != nullptr) done.emplace_back(t->id, static_cast<int>(m->data.result));
  }
  for (auto& t : graveyard_) Destroy(t.get());
  graveyard_.clear();
  if (close_pending_) {
    FinishClose();
    return;
  }
  std::vector<RequestId> adds;
  adds.swap(to_add_);
  for (RequestId id : adds) {
    auto it = transfers_.find(id);
    if (it == transfers_.end() || it->second->easy == nullptr) continue;
    it->second->in_multi = true;
    curl_multi_add_handle(M(multi_), it->second->easy);
  }
  // Callbacks may Request, Cancel or Close: each id is looked up afresh.
  for (auto [id, code] : done) {
    if (multi_ == nullptr) return;
    Finish(id, code);
  }
}

void KubeClient::Finish(RequestId id, int curl_code) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;  // cancelled meanwhile
  Transfer* t = it->second.get();
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
  curl_off_t retry_after_s = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after_s);
  curl_multi_remove_handle(M(multi_), t->easy);
  t->in_multi = false;

  auto code = static_cast<CURLcode>(curl_code);
  // Kubernetes: a 401 after the kubelet rotated the token; re-read it and retry once.
  if (code == CURLE_OK && t->status == 401 && !t->retried_401 && !config_.token_file.empty()) {
    t->retried_401 = true;
    if (Configure(t)) {
      LogInfo(t->What() + ": 401 Unauthorized; retrying once with the re-read token");
      t->in_multi = true;
      curl_multi_add_handle(M(multi_), t->easy);
      return;
    }
  }

  if (code == CURLE_OK && !t->watch && ScheduleRetry(t)) return;

  std::unique_ptr<Transfer> owned = std::move(it->second);
  transfers_.erase(it);
  std::optional<KubeError> error;
  if (owned->overflowed) {
    error = KubeError{};
    error->code = Code::kInternal;
    error->message = owned->What() + ": a watch line exceeded " +
                     std::to_string(LineSplitter::kDefaultMaxLineBytes) + " bytes";
  } else if (code != CURLE_OK) {
    error = TransportError(owned->What(), config_.server, code, owned->errbuf);
  } else if (!Is2xx(owned->status)) {
    error = ErrorFromResponse(owned->What(), static_cast<int>(owned->status), owned->response,
                              static_cast<int64_t>(retry_after_s) * 1000);
  }
  Destroy(owned.get());

  if (owned->watch) {
    EndCallback on_end = std::move(owned->on_end);
    if (!error && !owned->lines.pending().empty()) {
      // The API server ends every event with "\n"; a torn tail is not an event.
      LogWarn(owned->What() + ": watch stream ended inside a line; dropped " +
              std::to_string(owned->lines.pending().size()) + " bytes");
    }
    if (error) {
      on_end(tl::unexpected(std::move(*error)));
    } else {
      on_end({});
    }
    return;
  }
  ResponseCallback on_response = std::move(owned->on_response);
  if (error) {
    on_response(tl::unexpected(std::move(*error)));
  } else {
    on_response(KubeResponse{static_cast<int>(owned->status), std::move(owned->response)});
  }
}

size_t KubeClient::OnHeader(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t bytes = size * n;
  std::string_view line(data, bytes);
  if (line.rfind("HTTP/", 0) == 0) {  // a new answer (after 100 Continue, say) starts afresh
    t->has_retry_after = false;
    return bytes;
  }
  constexpr std::string_view kName = "retry-after:";
  if (line.size() <= kName.size()) return bytes;
  for (size_t i = 0; i < kName.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != kName[i]) return bytes;
  }
  // client-go (retryAfterSeconds) honours whole seconds only; an HTTP date is ignored.
  std::string value = Trim(std::string(line.substr(kName.size())));
  if (value.empty() || value.size() > 9) return bytes;
  for (char c : value) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return bytes;
  }
  t->retry_after_s = std::stoll(value);
  t->has_retry_after = true;
  return bytes;
}

bool KubeClient::ScheduleRetry(Transfer* t) {
  // client-go's checkWait: 429, or any 5xx, and only with a Retry-After to honour.
  if (!(t->status == 429 || t->status >= 500) || !t->has_retry_after) return false;
  if (t->retries >= kMaxRetries || closing_) return false;
  int64_t wait_ms = std::min(t->retry_after_s * 1000, kMaxRetryWaitMs);
  uint64_t now = uv_now(loop_);
  auto left = t->deadline_ms > now ? static_cast<int64_t>(t->deadline_ms - now) : 0;
  if (wait_ms + kMinRetryAttemptMs > left) return false;  // would outlive the timeout
  ++t->retries;
  LogInfo(t->What() + ": " + std::to_string(t->status) + " with Retry-After " +
          std::to_string(t->retry_after_s) + " s; retry " + std::to_string(t->retries) + " of " +
          std::to_string(kMaxRetries) + " in " + std::to_string(wait_ms) + " ms");
  uint64_t due = now + static_cast<uint64_t>(wait_ms);
  retry_queue_.emplace(due, t->id);
  if (retry_queue_.begin()->first == due) {
    uv_timer_start(retry_timer_, &KubeClient::OnRetryTimer, static_cast<uint64_t>(wait_ms), 0);
  }
  return true;
}

void KubeClient::OnRetryTimer(uv_timer_t* timer) {
  static_cast<KubeClient*>(timer->data)->StartRetries();
}

void KubeClient::StartRetries() {
  if (closing_) return;
  uint64_t now = uv_now(loop_);
  std::vector<RequestId> due;
  while (!retry_queue_.empty() && retry_queue_.begin()->first <= now) {
    due.push_back(retry_queue_.begin()->second);
    retry_queue_.erase(retry_queue_.begin());
  }
  if (!retry_queue_.empty()) {
    uv_timer_start(retry_timer_, &KubeClient::OnRetryTimer, retry_queue_.begin()->first - now, 0);
  }
  for (RequestId id : due) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) continue;  // cancelled while waiting
    Transfer* t = it->second.get();
    if (auto configured = Configure(t); !configured) {
      KubeError e;
      e.code = configured.error().code;
      e.message = t->What() + ": " + configured.error().message;
      deferred_failures_.emplace_back(id, std::move(e));
      uv_timer_start(defer_timer_, &KubeClient::OnDeferTimer, 0, 0);
      continue;
    }
    if (curl_depth_ > 0) {
      to_add_.push_back(id);
    } else {
      t->in_multi = true;
      curl_multi_add_handle(M(multi_), t->easy);
    }
  }
}

void KubeClient::Close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  close_done_ = std::move(done);
  for (auto& [id, t] : transfers_) t->cancelled = true;
  if (curl_depth_ > 0) {
    close_pending_ = true;  // finished in AfterCurl, once curl has returned
    return;
  }
  FinishClose();
}

void KubeClient::FinishClose() {
  close_pending_ = false;
  auto transfers = std::move(transfers_);
  transfers_.clear();
  for (auto& [id, t] : transfers) Destroy(t.get());
  for (auto& t : graveyard_) Destroy(t.get());
  graveyard_.clear();
  deferred_failures_.clear();
  retry_queue_.clear();
  to_add_.clear();
  if (multi_ != nullptr) {
    ++curl_depth_;
    curl_multi_cleanup(M(multi_));  // may report CURL_POLL_REMOVE for cached connections
    --curl_depth_;
    multi_ = nullptr;
  }
  auto close_cb = [](uv_handle_t* h) {
    auto* self = static_cast<KubeClient*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
    self->OnHandleClosed();
  };
  for (Socket* s : sockets_) CloseSocket(s, /*forget=*/false);
  sockets_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(defer_timer_), close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(retry_timer_), close_cb);
  timer_ = nullptr;
  defer_timer_ = nullptr;
  retry_timer_ = nullptr;
}

void KubeClient::CloseSocket(Socket* s, bool forget) {
  if (forget) {
    for (size_t i = 0; i < sockets_.size(); ++i) {
      if (sockets_[i] == s) {
        sockets_[i] = sockets_.back();
        sockets_.pop_back();
        break;
      }
    }
  }
  uv_poll_stop(&s->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), [](uv_handle_t* h) {
    auto* sock = static_cast<Socket*>(h->data);
    KubeClient* self = sock->client;
    delete sock;
    self->OnHandleClosed();
  });
}

void KubeClient::OnHandleClosed() {
  --open_handles_;
  if (open_handles_ == 0 && closing_ && timer_ == nullptr && close_done_) {
    auto done = std::move(close_done_);
    close_done_ = nullptr;
    done();  // may destroy this client: nothing after this line
  }
}

int KubeClient::OnCurlSocket(void* /*easy*/, int fd, int what, void* userp, void* socketp) {
  auto* self = static_cast<KubeClient*>(userp);
  auto* sock = static_cast<Socket*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (sock != nullptr) {
      self->CloseSocket(sock, /*forget=*/true);
      if (self->multi_ != nullptr) curl_multi_assign(M(self->multi_), fd, nullptr);
    }
    return 0;
  }
  if (sock == nullptr) {
    sock = new Socket;
    sock->fd = fd;
    sock->client = self;
    if (int rc = uv_poll_init_socket(self->loop_, &sock->poll, fd); rc != 0) {
      LogError(std::string("uv_poll_init_socket: ") + uv_strerror(rc));
      delete sock;
      return -1;
    }
    sock->poll.data = sock;
    ++self->open_handles_;
    self->sockets_.push_back(sock);
    curl_multi_assign(M(self->multi_), fd, sock);
  }
  int events = 0;
  if ((what & CURL_POLL_IN) != 0) events |= UV_READABLE;
  if ((what & CURL_POLL_OUT) != 0) events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, &KubeClient::OnUvPoll);
  return 0;
}

int KubeClient::OnCurlTimer(void* /*multi*/, long timeout_ms, void* userp) {  // NOLINT
  auto* self = static_cast<KubeClient*>(userp);
  if (self->timer_ == nullptr) return 0;  // closing
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_);
  } else {
    // curl forbids calling socket_action from here; even 0 goes through the loop.
    uv_timer_start(self->timer_, &KubeClient::OnUvTimer, static_cast<uint64_t>(timeout_ms), 0);
  }
  return 0;
}

void KubeClient::OnUvTimer(uv_timer_t* timer) {
  static_cast<KubeClient*>(timer->data)->Drive(CURL_SOCKET_TIMEOUT, 0);
}

void KubeClient::OnUvPoll(uv_poll_t* poll, int status, int events) {
  auto* sock = static_cast<Socket*>(poll->data);
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if ((events & UV_READABLE) != 0) flags |= CURL_CSELECT_IN;
    if ((events & UV_WRITABLE) != 0) flags |= CURL_CSELECT_OUT;
  }
  sock->client->Drive(sock->fd, flags);  // may close `sock`; not touched afterwards
}

void KubeClient::OnDeferTimer(uv_timer_t* timer) {
  auto* self = static_cast<KubeClient*>(timer->data);
  auto failures = std::move(self->deferred_failures_);
  self->deferred_failures_.clear();
  for (auto& [id, error] : failures) {
    if (self->closing_) return;
    auto it = self->transfers_.find(id);
    if (it == self->transfers_.end()) continue;
    std::unique_ptr<Transfer> t = std::move(it->second);
    self->transfers_.erase(it);
    self->Destroy(t.get());
    if (t->watch) {
      t->on_end(tl::unexpected(std::move(error)));
    } else {
      t->on_response(tl::unexpected(std::move(error)));
    }
  }
}

}  // namespace sublease
