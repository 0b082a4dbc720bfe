// HttpServer: HTTP/1.1 on libuv, over Unix sockets (the CNI API) and TCP (health,
// metrics).
//
// Runs on the daemon's one loop thread. Each listener is a path (Unix socket, created
// with the given mode and group, stale socket files replaced) or host:port (TCP).
// Requests are parsed with http_parser; keep-alive is supported; each request is
// handed to the Handler, which answers through the Respond callback — now or later
// (cluster mode answers after an API server round trip), but exactly once. Limits
// protect the loop: a maximum request size (413), an idle/slow-request timeout per
// connection, and a cap on concurrent connections (beyond it new connections are
// closed at once). On a Unix socket the peer's credentials (SO_PEERCRED) are read; only
// root, the daemon's own euid, or a peer whose primary gid is the listener's group may
// talk (peer_policy.h); others get 403 and the connection is closed. Stop() stops
// accepting, lets in-flight requests finish (at most stop_grace_ms), then closes every
// handle; `done` runs after the last close callback.
//
// Pipelined requests on one connection are handled one at a time, in order: the next is
// parsed after the previous answer was written. A Respond that comes after its
// connection closed (or after the server is gone) is dropped; Respond must be called on
// the loop thread. Destroying a server that was not stopped starts Stop(); the memory of
// its handles is released by their close callbacks as the loop keeps running.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace sublease {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // "/v1/cni/add" (no query string)
  std::string query;   // after '?', may be ""
  std::string body;
  // Peer credentials on a Unix socket; nullopt on TCP.
  std::optional<uid_t> peer_uid;
  std::optional<gid_t> peer_gid;
  std::optional<pid_t> peer_pid;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

using Respond = std::function<void(HttpResponse)>;
using Handler = std::function<void(const HttpRequest&, Respond)>;

struct ListenerConfig {
  // "unix:/run/sublease/sublease.sock" or "tcp:127.0.0.1:9464".
  std::string address;
  // Unix sockets only: file mode (0600 by default, 0660 with a group) and group.
  unsigned mode = 0600;
  std::optional<gid_t> group;
  Handler handler;
};

struct HttpServerLimits {
  size_t max_request_bytes = 64 * 1024;
  uint64_t idle_timeout_ms = 10'000;  // no complete request within this → closed
  size_t max_connections = 256;
  uint64_t stop_grace_ms = 5'000;  // Stop(): in-flight requests are cut off after this
};

// Counters since construction, for the metrics endpoint.
struct HttpServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_refused_capacity = 0;  // closed at once: max_connections reached
  uint64_t connections_refused_peer = 0;      // 403: peer credentials not allowed
  uint64_t connections_timed_out = 0;         // closed by the idle timeout
  uint64_t requests = 0;                      // complete requests handed to a Handler
  uint64_t requests_rejected = 0;             // answered by the server: 400, 411, 413
};

class HttpServer {
 public:
  HttpServer(uv_loop_t* loop, HttpServerLimits limits);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; sets SIGPIPE to ignored if it was default (a peer that hangs up
  // early must not kill the daemon). kInvalidArgument for a malformed address, kUnavailable when
  // the address is in use by a live server, kInternal for other OS errors (message has errno).
  Result<void> Listen(const ListenerConfig& config);
  // Stops accepting; finishes in-flight requests; closes all handles; then calls done.
  void Stop(std::function<void()> done);

  size_t ActiveConnections() const;
  HttpServerStats Stats() const;
  // The port a TCP listener is bound to (useful after "tcp:127.0.0.1:0"); listeners are
  // numbered by successful Listen() calls from 0. kNotFound for a bad index or a Unix one.
  Result<int> BoundPort(size_t listener_index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sublease
