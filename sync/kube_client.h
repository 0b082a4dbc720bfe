// KubeClient: asynchronous HTTPS requests and watch streams to the Kubernetes API
// server, on the daemon's libuv loop.
//
// libcurl's multi-socket API runs on the caller's loop (uv_poll per socket, one
// uv_timer), so everything happens on the loop's one thread: no locks, and every
// callback runs on that thread. HTTP/2 is used where the server offers it (all
// requests then share one connection), HTTP/1.1 otherwise.
//
// Ownership: the client owns its curl handles and uv handles (it opens three timers at
// construction). Close(done) cancels every request and closes the handles; it must
// be called before destruction, and the client must stay alive until `done` runs.
//
// Errors: a non-2xx answer becomes a KubeError built from the Status object the
// server sent (reason kept, e.g. AlreadyExists vs Conflict for 409); 5xx/429 and
// network failures are kUnavailable (Retry-After kept), 409/410 kConflict,
// 404 kNotFound, 400/422 kInvalidArgument, 401/403 kInternal with a message that says
// to check the token or RBAC. On a 401 the token file is re-read and the request
// retried once. TLS verification is always on unless the config says insecure.
//
// Retries, as client-go's rest.Request does: a request (not a watch) answered 429, or
// 5xx with a Retry-After header in whole seconds, is sent again after that many
// seconds (capped at kMaxRetryWaitMs), at most kMaxRetries times, and only while the
// wait and one more attempt still fit in the request's timeout, which bounds the
// whole exchange. A 500 without Retry-After is not retried: a write may have landed,
// and the caller decides (re-read, CAS retry). Watches are never retried here (the
// informer backs off and re-lists).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "sync/kube_config.h"

namespace sublease {

// A failed request: an Error (branch on code) plus what the server said.
struct KubeError : Error {
  int http_status = 0;         // 0 when no HTTP answer came (network, TLS, timeout)
  std::string reason;          // Status.reason: "AlreadyExists", "Conflict", "Expired", ...
  int64_t retry_after_ms = 0;  // the Retry-After header (429/503); 0 = none

  bool IsAlreadyExists() const { return http_status == 409 && reason == "AlreadyExists"; }
  // 410 Gone / reason Expired: the resourceVersion is older than the server keeps.
  bool IsExpired() const { return http_status == 410 || reason == "Expired" || reason == "Gone"; }
};

template <typename T>
using KubeResult = tl::expected<T, KubeError>;

struct KubeResponse {
  int status = 0;  // 2xx
  std::string body;
};

// Query parameters of a list (Kubernetes API: "list" verb).
struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int64_t limit = 0;           // page size; 0 = no paging
  std::string continue_token;  // from the previous page's metadata.continue
  std::string resource_version;
  int64_t timeout_ms = 0;  // 0 = kDefaultTimeoutMs
};

// DeleteOptions: preconditions make the delete a compare-and-swap.
struct DeleteOptions {
  std::string precondition_uid;               // "" = none
  std::string precondition_resource_version;  // "" = none
  std::optional<int64_t> grace_period_seconds;
  std::string propagation_policy;  // "" = server default; "Background", "Foreground", "Orphan"
};

// Percent-encodes a query value (RFC 3986 unreserved characters pass).
std::string QueryEscape(std::string_view value);
// Encodes DeleteOptions as the JSON body of a DELETE.
std::string EncodeDeleteOptions(const DeleteOptions& options);
// Builds a KubeError for a non-2xx answer from its status and body (a Status object
// when the server sent one). `what` is "METHOD path", the message's prefix.
KubeError ErrorFromResponse(std::string_view what, int http_status, std::string_view body,
                            int64_t retry_after_ms = 0);

class KubeClient {
 public:
  using RequestId = uint64_t;
  using ResponseCallback = std::function<void(KubeResult<KubeResponse>)>;
  using LineCallback = std::function<void(std::string_view line)>;
  using EndCallback = std::function<void(KubeResult<void>)>;

  static constexpr int64_t kDefaultTimeoutMs = 30'000;
  static constexpr int64_t kConnectTimeoutMs = 10'000;
  // A token file is stat()ed at most this often (kubelet rotates projected tokens
  // well before they expire; a 401 forces a re-read anyway).
  static constexpr int64_t kTokenRecheckMs = 2'000;
  static constexpr std::string_view kUserAgent = "subleased/0.1.0";
  // client-go's default (rest.Request maxRetries): retries after 429/5xx+Retry-After.
  static constexpr int kMaxRetries = 10;
  // A longer Retry-After is waited for this long (APF sends 1 s; a confused proxy
  // could send an hour, and a CNI ADD must not wait that long).
  static constexpr int64_t kMaxRetryWaitMs = 10'000;
  // A retry is sent only if at least this much of the request's timeout is left
  // after the wait.
  static constexpr int64_t kMinRetryAttemptMs = 200;

  // `loop` and `clock` must outlive the client.
  KubeClient(uv_loop_t* loop, KubeConfig config, const Clock* clock);
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // Sends one request; `callback` runs exactly once on the loop unless the request is
  // cancelled first. `path_with_query` starts with "/". `timeout_ms` 0 = default.
  RequestId Request(std::string_view method, std::string_view path_with_query, std::string body,
                    std::string_view content_type, int64_t timeout_ms, ResponseCallback callback);

  RequestId Get(std::string_view path, ResponseCallback callback);
  RequestId List(std::string_view path, const ListOptions& options, ResponseCallback callback);
  // POST to the collection. 409 AlreadyExists when the name is taken.
  RequestId Create(std::string_view collection_path, std::string body, ResponseCallback callback);
  // PUT; the body's metadata.resourceVersion makes it a compare-and-swap (409 Conflict).
  RequestId Update(std::string_view object_path, std::string body, ResponseCallback callback);
  // PATCH with application/merge-patch+json (RFC 7386).
  RequestId MergePatch(std::string_view object_path, std::string patch, ResponseCallback callback);
  // DELETE with DeleteOptions; a failed precondition is 409 Conflict.
  RequestId Delete(std::string_view object_path, const DeleteOptions& options,
                   ResponseCallback callback);

  // Opens a watch (path_with_query carries watch=1 etc.). Each line of a 2xx answer
  // goes to on_line as it arrives; on_end runs once when the stream ends: success for
  // a clean end (e.g. timeoutSeconds passed), a KubeError for a non-2xx answer or a
  // broken stream. `timeout_ms` 0 = no client-side limit.
  RequestId Watch(std::string_view path_with_query, int64_t timeout_ms, LineCallback on_line,
                  EndCallback on_end);

  // Stops a request or watch; no callback of it runs afterwards. Unknown or finished
  // ids are ignored. Safe from inside any callback of this client.
  void Cancel(RequestId id);

  // Cancels everything and closes all handles; `done` runs once, on the loop, when
  // the last handle is closed. Safe from inside callbacks. No requests after Close.
  void Close(std::function<void()> done);

  uv_loop_t* loop() const { return loop_; }
  const KubeConfig& config() const { return config_; }
  size_t active_requests() const { return transfers_.size(); }

 private:
  struct Transfer;
  struct Socket;

  RequestId Start(std::unique_ptr<Transfer> t);
  Result<void> Configure(Transfer* t);
  Result<std::string> Token(bool force_reread);
  void Finish(RequestId id, int curl_code);
  void Destroy(Transfer* t);
  void CloseSocket(Socket* s, bool forget);
  void Drive(int fd, int ev_bitmask);  // curl_multi_socket_action + bookkeeping
  void AfterCurl();                    // deferred adds/removals, completions, close
  void CheckMultiInfo();
  void FinishClose();
  void OnHandleClosed();
  bool ScheduleRetry(Transfer* t);  // true: t waits in retry_queue_
  void StartRetries();              // sends the retries that are due

  static size_t OnHeader(char* data, size_t size, size_t n, void* userp);
  static void OnRetryTimer(uv_timer_t* timer);

  static int OnCurlSocket(void* easy, int fd, int what, void* userp, void* socketp);
  static int OnCurlTimer(void* multi, long timeout_ms, void* userp);
  static size_t OnWrite(char* data, size_t size, size_t n, void* userp);
  static void OnUvTimer(uv_timer_t* timer);
  static void OnUvPoll(uv_poll_t* poll, int status, int events);
  static void OnDeferTimer(uv_timer_t* timer);

  uv_loop_t* loop_;
  KubeConfig config_;
  const Clock* clock_;
  void* multi_ = nullptr;              // CURLM*
  uv_timer_t* timer_ = nullptr;        // curl's timeout
  uv_timer_t* defer_timer_ = nullptr;  // failures reported after Request returned
  uv_timer_t* retry_timer_ = nullptr;  // the next due retry
  std::multimap<uint64_t, RequestId> retry_queue_;  // uv_now() due time -> request
  std::map<RequestId, std::unique_ptr<Transfer>> transfers_;
  std::vector<std::unique_ptr<Transfer>> graveyard_;  // cancelled while inside curl
  std::vector<std::pair<RequestId, KubeError>> deferred_failures_;
  std::vector<Socket*> sockets_;   // open uv_polls, closed in Close
  std::vector<RequestId> to_add_;  // started while inside curl
  RequestId next_id_ = 1;
  int curl_depth_ = 0;  // > 0 while inside curl_multi_* (curl forbids re-entry)
  int open_handles_ = 0;
  bool closing_ = false;
  bool close_pending_ = false;
  std::function<void()> close_done_;

  // Bearer token state (token_file re-read on change).
  std::string token_;
  int64_t token_checked_ms_ = 0;
  int64_t token_mtime_ns_ = -1;
  uint64_t token_ino_ = 0;
};

}  // namespace sublease
