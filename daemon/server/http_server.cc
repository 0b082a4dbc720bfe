#include "daemon/server/http_server.h"

#include <fcntl.h>
#include <http_parser.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstring>
#include <map>
#include <string_view>
#include <utility>

#include "common/wire.h"
#include "daemon/server/peer_policy.h"

namespace sublease {
namespace {

constexpr int kBacklog = 128;
constexpr size_t kReadBufferSize = size_t{64} * 1024;

std::string ErrnoText(int err) { return std::strerror(err); }

// A listen address split into its parts. Only numeric TCP hosts: the daemon must not
// depend on DNS to open its health port.
struct ListenAddress {
  bool is_unix = false;
  std::string path;  // unix
  std::string host;  // tcp, without brackets
  int port = 0;      // tcp
  bool ipv6 = false;
};

Result<ListenAddress> ParseListenAddress(std::string_view address) {
  ListenAddress out;
  auto bad = [&](std::string_view why) {
    return Fail(Error::InvalidArgument("listen address \"" + std::string(address) + "\": " +
                                       std::string(why) + " (want unix:/path or tcp:HOST:PORT)"));
  };
  if (address.starts_with("unix:")) {
    out.is_unix = true;
    out.path = std::string(address.substr(5));
    if (out.path.empty() || out.path[0] != '/') return bad("the socket path must be absolute");
    if (out.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return bad("the socket path is longer than " +
                 std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
    }
    return out;
  }
  if (!address.starts_with("tcp:")) return bad("unknown scheme");
  std::string_view rest = address.substr(4);
  std::string_view port_text;
  if (rest.starts_with("[")) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return bad("an IPv6 host must be written [ADDR]:PORT");
    }
    out.host = std::string(rest.substr(1, close - 1));
    out.ipv6 = true;
    port_text = rest.substr(close + 2);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing port");
    out.host = std::string(rest.substr(0, colon));
    port_text = rest.substr(colon + 1);
  }
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), out.port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      out.port < 0 || out.port > 65535) {
    return bad("the port must be a number from 0 to 65535");
  }
  return out;
}

// Creates the missing directories above `path` with mode 0755.
Result<void> MakeParentDirs(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) == 0) {
      chmod(dir.c_str(), 0755);  // exactly 0755, whatever the umask
    } else if (errno != EEXIST) {
      return Fail(Error::Internal("cannot create directory " + dir + ": " + ErrnoText(errno)));
    }
  }
  return Ok();
}

// A socket file left by a daemon that died is replaced; one a live server answers on
// is not (two daemons would otherwise steal each other's socket).
Result<void> RemoveStaleSocket(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok();
    return Fail(Error::Internal("cannot stat " + path + ": " + ErrnoText(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Fail(Error::InvalidArgument(path + " exists and is not a socket; remove it or "
                                              "choose another path"));
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Fail(Error::Internal("socket(): " + ErrnoText(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  close(fd);
  // EAGAIN: a live listener whose backlog is full.
  if (rc == 0 || err == EAGAIN) {
    return Fail(Error::Unavailable("address in use: a server is listening on " + path +
                                   " (is another subleased running?)"));
  }
  if (err != ECONNREFUSED) {
    return Fail(Error::Internal("cannot probe socket " + path + ": " + ErrnoText(err)));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(Error::Internal("cannot remove stale socket " + path + ": " + ErrnoText(errno)));
  }
  return Ok();
}

// libuv writes without MSG_NOSIGNAL: a peer that hung up before its answer (a plugin
// killed by its timeout) would otherwise kill the daemon with SIGPIPE.
void IgnoreSigpipe() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

std::string FormatResponse(const HttpResponse& response, bool close_after) {
  int status = response.status;
  if (status < 100 || status > 999) status = 500;  // a handler bug; never send a bad line
  std::string_view reason = http_status_str(static_cast<http_status>(status));
  if (reason.starts_with("<")) reason = "Unknown";
  std::string_view type = response.content_type;
  // A header value with a line break would let a body forge headers.
  if (type.find_first_of("\r\n") != std::string_view::npos) type = "application/octet-stream";
  std::string out;
  out.reserve(128 + response.body.size());
  out.append("HTTP/1.1 ").append(std::to_string(status)).append(" ").append(reason);
  out.append("\r\nContent-Type: ").append(type);
  out.append("\r\nContent-Length: ").append(std::to_string(response.body.size()));
  out.append("\r\nConnection: ").append(close_after ? "close" : "keep-alive");
  out.append("\r\n\r\n").append(response.body);
  return out;
}

HttpResponse ErrorResponse(int status, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.body = EncodeWireError(Error::InvalidArgument(message));
  return r;
}

// The server's state. Shared so that a Respond can find out, through a weak_ptr,
// whether the server still exists; kept alive by self_ while any handle is open.
class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(uv_loop_t* loop, HttpServerLimits limits) : loop_(loop), limits_(limits) {}

  Result<void> Listen(const ListenerConfig& config);
  void Stop(std::function<void()> done);
  size_t ActiveConnections() const;
  const HttpServerStats& stats() const { return stats_; }
  Result<int> BoundPort(size_t index) const;
  bool stop_requested() const { return stop_requested_; }
  bool has_open_handles() const { return open_handles_ > 0; }

 private:
  union StreamHandle {
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  };

  struct Listener {
    Core* core = nullptr;
    StreamHandle handle;
    bool is_unix = false;
    bool closing = false;
    std::optional<gid_t> group;
    Handler handler;
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle); }
    uv_handle_t* uv() { return reinterpret_cast<uv_handle_t*>(&handle); }
  };

  // kReading: waiting for (the rest of) a request, idle timer running.
  // kHandling: the Handler has the request; reading paused until it answers.
  // kWriting: the answer is being written; then back to kReading, or closed.
  enum class State { kReading, kHandling, kWriting };

  struct Connection {
    Core* core = nullptr;
    uint64_t id = 0;
    StreamHandle handle;
    uv_timer_t idle_timer;
    int open_handles = 0;
    bool closing = false;
    State state = State::kReading;
    Handler handler;
    bool forbidden = false;  // peer credentials not allowed: 403 to the first request
    std::optional<uid_t> peer_uid;
    std::optional<gid_t> peer_gid;
    std::optional<pid_t> peer_pid;

    http_parser parser;
    HttpRequest request;
    std::string url;
    size_t request_bytes = 0;
    bool too_large = false;
    bool chunked = false;
    bool keep_alive = true;
    bool close_after_write = false;
    uint64_t request_seq = 0;  // which request a Respond belongs to
    std::string unparsed;      // bytes after a complete request, parsed once it is answered

    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle); }
    uv_handle_t* uv() { return reinterpret_cast<uv_handle_t*>(&handle); }
  };

  struct WriteRequest {
    uv_write_t req;
    Connection* connection;
    std::string data;
  };

  void HandleOpened() {
    if (open_handles_++ == 0) self_ = shared_from_this();
  }
  void HandleClosed();
  void MaybeFinishStop();
  void CloseListener(Listener* l);

  void Accept(Listener* l);
  void Close(Connection* c);
  void Parse(Connection* c, const char* data, size_t len);
  void Dispatch(Connection* c);
  void Reject(Connection* c, int status, const std::string& message);
  void Write(Connection* c, const HttpResponse& response);
  void AfterWrite(Connection* c);
  void StartIdleTimer(Connection* c);
  void OnRespond(uint64_t connection_id, uint64_t seq, const HttpResponse& response);

  static void OnConnection(uv_stream_t* server, int status);
  static void OnAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void OnRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void OnWrite(uv_write_t* req, int status);
  static void OnIdle(uv_timer_t* t);
  static void OnGrace(uv_timer_t* t);
  static void OnConnectionHandleClosed(uv_handle_t* h);

  static int OnMessageBegin(http_parser* p);
  static int OnUrl(http_parser* p, const char* at, size_t len);
  static int OnHeaderBytes(http_parser* p, const char* at, size_t len);
  static int OnHeadersComplete(http_parser* p);
  static int OnBody(http_parser* p, const char* at, size_t len);
  static int OnMessageComplete(http_parser* p);
  static bool CountBytes(Connection* c, size_t len);
  static const http_parser_settings kSettings;

  uv_loop_t* loop_;
  HttpServerLimits limits_;
  HttpServerStats stats_;
  std::vector<std::unique_ptr<Listener>> listeners_;  // all ever initialised
  std::vector<Listener*> active_listeners_;           // successful Listen() calls, in order
  std::map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_connection_id_ = 1;
  int open_handles_ = 0;  // listeners + connections (one each) + the grace timer
  std::shared_ptr<Core> self_;
  bool stop_requested_ = false;
  bool grace_timer_open_ = false;
  bool grace_timer_closing_ = false;
  uv_timer_t grace_timer_;
  std::function<void()> done_;
  std::array<char, kReadBufferSize> read_buffer_;  // one thread: one read at a time
};

const http_parser_settings Core::kSettings = [] {
  http_parser_settings s{};
  s.on_message_begin = &Core::OnMessageBegin;
  s.on_url = &Core::OnUrl;
  s.on_header_field = &Core::OnHeaderBytes;
  s.on_header_value = &Core::OnHeaderBytes;
  s.on_headers_complete = &Core::OnHeadersComplete;
  s.on_body = &Core::OnBody;
  s.on_message_complete = &Core::OnMessageComplete;
  return s;
}();

// ---- Listening ----------------------------------------------------------------------

Result<void> Core::Listen(const ListenerConfig& config) {
  if (stop_requested_) return Fail(Error::Unavailable("the server is stopping"));
  IgnoreSigpipe();
  if (!config.handler) return Fail(Error::InvalidArgument("listener without a handler"));
  auto address = ParseListenAddress(config.address);
  if (!address) return Fail(address.error());

  auto owned = std::make_unique<Listener>();
  Listener* l = owned.get();
  l->core = this;
  l->is_unix = address->is_unix;
  l->group = config.group;
  l->handler = config.handler;

  // Everything up to the first uv_*_init can fail without a handle to close.
  sockaddr_storage tcp_addr{};
  if (l->is_unix) {
    if (auto r = MakeParentDirs(address->path); !r) return r;
    if (auto r = RemoveStaleSocket(address->path); !r) return r;
  } else {
    int rc = address->ipv6 ? uv_ip6_addr(address->host.c_str(), address->port,
                                         reinterpret_cast<sockaddr_in6*>(&tcp_addr))
                           : uv_ip4_addr(address->host.c_str(), address->port,
                                         reinterpret_cast<sockaddr_in*>(&tcp_addr));
    if (rc != 0) {
      return Fail(Error::InvalidArgument("listen address \"" + config.address +
                                         "\": the host must be a numeric IPv4 or [IPv6] address"));
    }
  }

  int rc =
      l->is_unix ? uv_pipe_init(loop_, &l->handle.pipe, 0) : uv_tcp_init(loop_, &l->handle.tcp);
  if (rc != 0)
    return Fail(Error::Internal("cannot create listener: " + std::string(uv_strerror(rc))));
  l->uv()->data = l;
  listeners_.push_back(std::move(owned));
  HandleOpened();

  // From here a failure closes the handle (libuv unlinks a bound socket file on close).
  auto fail = [&](const Error& e) {
    CloseListener(l);
    return Fail(e.Wrap("listen on " + config.address));
  };
  auto uv_fail = [&](int code) {
    if (code == UV_EADDRINUSE) return fail(Error::Unavailable("address in use"));
    if (code == UV_EACCES || code == UV_EADDRNOTAVAIL) {
      return fail(Error::Unavailable(uv_strerror(code)));
    }
    return fail(Error::Internal(uv_strerror(code)));
  };
  if (l->is_unix) {
    const std::string& path = address->path;
    if ((rc = uv_pipe_bind(&l->handle.pipe, path.c_str())) != 0) return uv_fail(rc);
    // Nothing can connect before uv_listen, so mode and group are in place first.
    if (chmod(path.c_str(), config.mode) != 0) {
      return fail(Error::Internal("chmod " + path + ": " + ErrnoText(errno)));
    }
    if (config.group && chown(path.c_str(), static_cast<uid_t>(-1), *config.group) != 0) {
      return fail(Error::Internal("chown " + path + " to group " + std::to_string(*config.group) +
                                  ": " + ErrnoText(errno)));
    }
  } else if ((rc = uv_tcp_bind(&l->handle.tcp, reinterpret_cast<sockaddr*>(&tcp_addr), 0)) != 0) {
    return uv_fail(rc);
  }
  if ((rc = uv_listen(l->stream(), kBacklog, &Core::OnConnection)) != 0) return uv_fail(rc);
  active_listeners_.push_back(l);
  return Ok();
}

void Core::CloseListener(Listener* l) {
  if (l->closing) return;
  l->closing = true;
  uv_close(l->uv(), [](uv_handle_t* h) { static_cast<Listener*>(h->data)->core->HandleClosed(); });
}

Result<int> Core::BoundPort(size_t index) const {
  if (index >= active_listeners_.size()) {
    return Fail(Error::NotFound("no listener #" + std::to_string(index)));
  }
  Listener* l = active_listeners_[index];
  if (l->is_unix)
    return Fail(Error::NotFound("listener #" + std::to_string(index) + " is a Unix socket"));
  if (l->closing) return Fail(Error::NotFound("listener #" + std::to_string(index) + " is closed"));
  sockaddr_storage addr{};
  int len = sizeof(addr);
  int rc = uv_tcp_getsockname(&l->handle.tcp, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return Fail(Error::Internal(std::string("getsockname: ") + uv_strerror(rc)));
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

// ---- Connections --------------------------------------------------------------------

void Core::OnConnection(uv_stream_t* server, int status) {
  auto* l = static_cast<Listener*>(server->data);
  if (status < 0 || l->closing) return;
  l->core->Accept(l);
}

void Core::Accept(Listener* l) {
  auto owned = std::make_unique<Connection>();
  Connection* c = owned.get();
  c->core = this;
  c->id = next_connection_id_++;
  c->handler = l->handler;
  if (l->is_unix) {
    uv_pipe_init(loop_, &c->handle.pipe, 0);
  } else {
    uv_tcp_init(loop_, &c->handle.tcp);
  }
  uv_timer_init(loop_, &c->idle_timer);
  c->uv()->data = c;
  c->idle_timer.data = c;
  c->open_handles = 2;
  connections_.emplace(c->id, std::move(owned));
  HandleOpened();

  if (uv_accept(l->stream(), c->stream()) != 0) {
    Close(c);
    return;
  }
  // Count the new one: beyond the cap it is closed at once, unanswered.
  if (connections_.size() > limits_.max_connections || stop_requested_) {
    ++stats_.connections_refused_capacity;
    Close(c);
    return;
  }
  ++stats_.connections_accepted;
  if (l->is_unix) {
    uv_os_fd_t fd = -1;
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (uv_fileno(c->uv(), &fd) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      c->forbidden = true;  // unknown peer: refuse rather than guess
    } else {
      c->peer_uid = cred.uid;
      c->peer_gid = cred.gid;
      c->peer_pid = cred.pid;
      c->forbidden = !PeerAllowed(cred.uid, cred.gid, geteuid(), l->group);
    }
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  StartIdleTimer(c);
  uv_read_start(c->stream(), &Core::OnAlloc, &Core::OnRead);
}

void Core::StartIdleTimer(Connection* c) {
  uv_timer_start(&c->idle_timer, &Core::OnIdle, limits_.idle_timeout_ms, 0);
}

void Core::OnIdle(uv_timer_t* t) {
  auto* c = static_cast<Connection*>(t->data);
  ++c->core->stats_.connections_timed_out;
  c->core->Close(c);
}

void Core::Close(Connection* c) {
  if (c->closing) return;
  c->closing = true;
  uv_timer_stop(&c->idle_timer);
  uv_read_stop(c->stream());
  uv_close(reinterpret_cast<uv_handle_t*>(&c->idle_timer), &Core::OnConnectionHandleClosed);
  uv_close(c->uv(), &Core::OnConnectionHandleClosed);
}

void Core::OnConnectionHandleClosed(uv_handle_t* h) {
  auto* c = static_cast<Connection*>(h->data);
  if (--c->open_handles > 0) return;
  Core* core = c->core;
  core->connections_.erase(c->id);  // frees c
  core->HandleClosed();
}

void Core::OnAlloc(uv_handle_t* h, size_t /*suggested*/, uv_buf_t* buf) {
  Core* core = static_cast<Connection*>(h->data)->core;
  *buf = uv_buf_init(core->read_buffer_.data(), kReadBufferSize);
}

void Core::OnRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (nread < 0) {  // EOF or an error: nothing more can be answered
    c->core->Close(c);
    return;
  }
  if (nread == 0 || c->state != State::kReading) return;
  c->core->Parse(c, buf->base, static_cast<size_t>(nread));
}

// ---- Parsing ------------------------------------------------------------------------

// Counts request bytes as the parser sees them; false once over the limit.
bool Core::CountBytes(Connection* c, size_t len) {
  c->request_bytes += len;
  if (c->request_bytes > c->core->limits_.max_request_bytes) c->too_large = true;
  return !c->too_large;
}

int Core::OnMessageBegin(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->request = HttpRequest{};
  c->url.clear();
  c->request_bytes = 0;
  return 0;
}

int Core::OnUrl(http_parser* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!CountBytes(c, len)) return -1;
  c->url.append(at, len);
  return 0;
}

int Core::OnHeaderBytes(http_parser* p, const char* /*at*/, size_t len) {
  // Header values the server needs (length, framing, keep-alive) are read by the parser.
  return CountBytes(static_cast<Connection*>(p->data), len) ? 0 : -1;
}

int Core::OnHeadersComplete(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  if ((p->flags & F_CHUNKED) != 0) {  // the plugin always sends Content-Length
    c->chunked = true;
    return -1;
  }
  // Refuse a body announced too large before reading any of it.
  size_t max = c->core->limits_.max_request_bytes;
  if (p->content_length != ULLONG_MAX &&
      p->content_length > max - std::min(c->request_bytes, max)) {
    c->too_large = true;
    return -1;
  }
  c->request.method = http_method_str(static_cast<http_method>(p->method));
  return 0;
}

int Core::OnBody(http_parser* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!CountBytes(c, len)) return -1;
  c->request.body.append(at, len);
  return 0;
}

int Core::OnMessageComplete(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->keep_alive = http_should_keep_alive(p) != 0;
  // One request at a time: the rest of the input waits until this one is answered.
  http_parser_pause(p, 1);
  return 0;
}

void Core::Parse(Connection* c, const char* data, size_t len) {
  size_t used = http_parser_execute(&c->parser, &kSettings, data, len);
  auto err = static_cast<http_errno>(c->parser.http_errno);
  if (c->too_large || err == HPE_HEADER_OVERFLOW) {
    Reject(c, 413, "request larger than " + std::to_string(limits_.max_request_bytes) + " bytes");
    return;
  }
  if (c->chunked) {
    Reject(c, 411, "chunked request bodies are not supported; send Content-Length");
    return;
  }
  if (err == HPE_PAUSED) {
    c->unparsed.assign(data + used, len - used);
    Dispatch(c);
    return;
  }
  if (err != HPE_OK) {
    Reject(c, 400, std::string("malformed HTTP request: ") + http_errno_description(err));
    return;
  }
  if (c->parser.upgrade) Reject(c, 400, "protocol upgrades are not supported");
}

void Core::Dispatch(Connection* c) {
  http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(c->url.data(), c->url.size(), 0, &u) != 0 ||
      (u.field_set & (1 << UF_PATH)) == 0) {
    Reject(c, 400, "malformed request target \"" + c->url + "\"");
    return;
  }
  HttpRequest& r = c->request;
  r.path = c->url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  if ((u.field_set & (1 << UF_QUERY)) != 0) {
    r.query = c->url.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  }
  r.peer_uid = c->peer_uid;
  r.peer_gid = c->peer_gid;
  r.peer_pid = c->peer_pid;

  c->state = State::kHandling;
  uv_timer_stop(&c->idle_timer);
  uv_read_stop(c->stream());
  if (c->forbidden) {
    ++stats_.connections_refused_peer;
    c->keep_alive = false;
    Write(c, ErrorResponse(403, "uid " + (c->peer_uid ? std::to_string(*c->peer_uid) : "?") +
                                    " may not use this socket: run as root or in its group"));
    return;
  }
  ++stats_.requests;
  uint64_t id = c->id;
  uint64_t seq = ++c->request_seq;
  std::weak_ptr<Core> weak = weak_from_this();
  Respond respond = [weak, id, seq](const HttpResponse& response) {
    if (auto core = weak.lock()) core->OnRespond(id, seq, response);
  };
  // The handler may answer at once (Write below) or keep `respond` for later.
  c->handler(c->request, std::move(respond));
}

void Core::OnRespond(uint64_t connection_id, uint64_t seq, const HttpResponse& response) {
  auto it = connections_.find(connection_id);
  if (it == connections_.end()) return;  // the connection is gone: drop the answer
  Connection* c = it->second.get();
  if (c->closing || c->state != State::kHandling || c->request_seq != seq) return;
  Write(c, response);
}

void Core::Reject(Connection* c, int status, const std::string& message) {
  ++stats_.requests_rejected;
  c->keep_alive = false;
  Write(c, ErrorResponse(status, message));
}

// ---- Writing ------------------------------------------------------------------------

void Core::Write(Connection* c, const HttpResponse& response) {
  uv_timer_stop(&c->idle_timer);
  uv_read_stop(c->stream());
  c->state = State::kWriting;
  c->close_after_write = !c->keep_alive || stop_requested_;
  auto* w = new WriteRequest{};
  w->connection = c;
  w->data = FormatResponse(response, c->close_after_write);
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  if (uv_write(&w->req, c->stream(), &buf, 1, &Core::OnWrite) != 0) {
    delete w;
    Close(c);
  }
}

void Core::OnWrite(uv_write_t* req, int status) {
  std::unique_ptr<WriteRequest> w(static_cast<WriteRequest*>(req->data));
  Connection* c = w->connection;
  if (c->closing) return;  // cancelled by Close(); the close callback frees c
  if (status < 0 || c->close_after_write || c->core->stop_requested_) {
    c->core->Close(c);
    return;
  }
  c->core->AfterWrite(c);
}

// Back to reading: first whatever arrived behind the request just answered.
void Core::AfterWrite(Connection* c) {
  c->state = State::kReading;
  StartIdleTimer(c);
  http_parser_pause(&c->parser, 0);
  std::string rest = std::move(c->unparsed);
  c->unparsed.clear();
  if (!rest.empty()) Parse(c, rest.data(), rest.size());
  if (!c->closing && c->state == State::kReading) {
    uv_read_start(c->stream(), &Core::OnAlloc, &Core::OnRead);
  }
}

// ---- Stopping -----------------------------------------------------------------------

void Core::Stop(std::function<void()> done) {
  if (stop_requested_) return;
  stop_requested_ = true;
  done_ = std::move(done);
  for (auto& l : listeners_) CloseListener(l.get());
  for (auto& [id, c] : connections_) {
    // Idle or half-received: nothing in flight to wait for.
    if (c->state == State::kReading) Close(c.get());
  }
  uv_timer_init(loop_, &grace_timer_);
  grace_timer_.data = this;
  grace_timer_open_ = true;
  HandleOpened();
  uv_timer_start(&grace_timer_, &Core::OnGrace, limits_.stop_grace_ms, 0);
  MaybeFinishStop();
}

void Core::OnGrace(uv_timer_t* t) {
  Core* core = static_cast<Core*>(t->data);
  for (auto& [id, c] : core->connections_) core->Close(c.get());
}

void Core::MaybeFinishStop() {
  if (!stop_requested_ || !connections_.empty() || !grace_timer_open_ || grace_timer_closing_) {
    return;
  }
  grace_timer_closing_ = true;
  uv_timer_stop(&grace_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&grace_timer_),
           [](uv_handle_t* h) { static_cast<Core*>(h->data)->HandleClosed(); });
}

void Core::HandleClosed() {
  --open_handles_;
  MaybeFinishStop();
  if (open_handles_ > 0) return;
  // The last handle is closed: nothing refers to this object from the loop any more.
  std::shared_ptr<Core> keep = std::move(self_);
  std::function<void()> done = std::move(done_);
  done_ = nullptr;
  if (done && stop_requested_) done();
  // `keep` may free *this on return; no member is touched after this point.
}

size_t Core::ActiveConnections() const {
  size_t n = 0;
  for (const auto& [id, c] : connections_) n += c->closing ? 0 : 1;
  return n;
}

}  // namespace

// ---- HttpServer ---------------------------------------------------------------------

struct HttpServer::Impl {
  std::shared_ptr<Core> core;
};

HttpServer::HttpServer(uv_loop_t* loop, HttpServerLimits limits)
    : impl_(std::make_unique<Impl>(Impl{std::make_shared<Core>(loop, limits)})) {}

HttpServer::~HttpServer() {
  if (!impl_->core->stop_requested() && impl_->core->has_open_handles()) impl_->core->Stop(nullptr);
}

Result<void> HttpServer::Listen(const ListenerConfig& config) {
  return impl_->core->Listen(config);
}

void HttpServer::Stop(std::function<void()> done) { impl_->core->Stop(std::move(done)); }

size_t HttpServer::ActiveConnections() const { return impl_->core->ActiveConnections(); }

HttpServerStats HttpServer::Stats() const { return impl_->core->stats(); }

Result<int> HttpServer::BoundPort(size_t listener_index) const {
  return impl_->core->BoundPort(listener_index);
}

}  // namespace sublease
