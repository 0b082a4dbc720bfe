#include "cni/unix_http.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace sublease::cni {
namespace {

constexpr size_t kMaxResponseBytes = 1 << 20;  // the daemon's answers are a few hundred bytes

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Milliseconds left until the deadline, at least 0, for poll().
int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 1'000'000 ? 1'000'000 : static_cast<int>(left.count());
}

std::string Where(std::string_view socket_path) {
  return "sublease daemon at " + std::string(socket_path);
}

Error ConnectError(std::string_view socket_path, int err) {
  std::string cause = std::strerror(err);
  std::string hint;
  switch (err) {
    case ENOENT:
      hint = "is subleased running, and is ipam.server_socket the path it listens on?";
      break;
    case ECONNREFUSED: hint = "is subleased running?"; break;
    case EACCES:
    case EPERM: hint = "the socket accepts only root or its configured group"; break;
    case EAGAIN:
    case EINPROGRESS: hint = "subleased is not accepting connections fast enough"; break;
    default: hint = "is subleased running?"; break;
  }
  return Error::Unavailable("cannot reach " + Where(socket_path) + ": " + cause + "; " + hint);
}

Error TimeoutError(std::string_view socket_path, std::chrono::milliseconds timeout,
                   std::string_view phase) {
  return Error::Unavailable(Where(socket_path) + " did not answer within " +
                            std::to_string(timeout.count()) + " ms (" + std::string(phase) +
                            "); it may be overloaded or waiting for the Kubernetes API server");
}

// Waits until fd is ready for `events` or the deadline passes. False on timeout.
Result<bool> WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, RemainingMs(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return Fail(Error::Internal(std::string("poll: ") + std::strerror(errno)));
  }
}

std::string FormatRequest(const HttpRequest& r) {
  std::string out = r.method + " " + r.path + " HTTP/1.1\r\nHost: sublease\r\n";
  if (!r.body.empty() || r.method == "POST") {
    out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(r.body.size()) +
           "\r\n";
  }
  out += "Accept: application/json\r\nConnection: close\r\n\r\n";
  out += r.body;
  return out;
}

}  // namespace

Result<std::optional<HttpResponse>> ParseHttpResponse(std::string_view raw, bool at_eof) {
  size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (at_eof) return Fail(Error::Internal("answer ended before its headers did"));
    return std::nullopt;
  }
  std::string_view head = raw.substr(0, head_end);
  std::string_view body = raw.substr(head_end + 4);
  size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  // "HTTP/1.1 200 OK"
  if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12 || status_line[8] != ' ') {
    return Fail(
        Error::Internal("not an HTTP answer: \"" + std::string(status_line.substr(0, 80)) + "\""));
  }
  HttpResponse resp;
  auto [end, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, resp.status);
  if (ec != std::errc() || end != status_line.data() + 12 || resp.status < 100) {
    return Fail(Error::Internal("bad HTTP status line: \"" + std::string(status_line) + "\""));
  }
  std::optional<size_t> content_length;
  std::string_view headers = line_end == std::string_view::npos ? "" : head.substr(line_end + 2);
  while (!headers.empty()) {
    size_t eol = headers.find("\r\n");
    std::string_view line = headers.substr(0, eol);
    headers = eol == std::string_view::npos ? "" : headers.substr(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = Lower(Trim(line.substr(0, colon)));
    std::string_view value = Trim(line.substr(colon + 1));
    if (name == "content-length") {
      size_t n = 0;
      auto [e, c] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (c != std::errc() || e != value.data() + value.size()) {
        return Fail(Error::Internal("bad Content-Length: \"" + std::string(value) + "\""));
      }
      content_length = n;
    } else if (name == "transfer-encoding" && Lower(value) != "identity") {
      return Fail(Error::Internal("answer uses Transfer-Encoding: " + std::string(value) +
                                  ", which the plugin does not read"));
    }
  }
  if (content_length) {
    if (body.size() < *content_length) {
      if (at_eof) {
        return Fail(Error::Unavailable("connection closed after " + std::to_string(body.size()) +
                                       " of " + std::to_string(*content_length) + " body bytes"));
      }
      return std::nullopt;
    }
    body = body.substr(0, *content_length);
  } else if (!at_eof) {
    return std::nullopt;  // the body runs to EOF
  }
  resp.body = std::string(body);
  return std::optional<HttpResponse>(std::move(resp));
}

Result<HttpResponse> UnixHttpExchange(std::string_view socket_path, const HttpRequest& request,
                                      std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return Fail(Error::InvalidArgument("socket path \"" + std::string(socket_path) +
                                       "\" is empty or longer than " +
                                       std::to_string(sizeof(addr.sun_path) - 1) + " bytes"));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Fail(Error::Internal(std::string("socket: ") + std::strerror(errno)));
  // A blocking Unix connect waits only when the listener's backlog is full, and then
  // for at most SO_SNDTIMEO.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Fail(ConnectError(socket_path, errno));
  if (fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) | O_NONBLOCK) != 0) {
    return Fail(Error::Internal(std::string("fcntl: ") + std::strerror(errno)));
  }

  const std::string out = FormatRequest(request);
  size_t sent = 0;
  while (sent < out.size()) {
    auto ready = WaitFor(fd.get(), POLLOUT, deadline);
    if (!ready) return Fail(ready.error());
    if (!*ready) return Fail(TimeoutError(socket_path, timeout, "sending the request"));
    // MSG_NOSIGNAL: a daemon that hangs up must not kill the plugin with SIGPIPE.
    ssize_t n = send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Fail(Error::Unavailable(Where(socket_path) +
                                     " closed the connection while the request "
                                     "was sent: " +
                                     std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }

  std::string in;
  char buf[16384];
  for (;;) {
    auto ready = WaitFor(fd.get(), POLLIN, deadline);
    if (!ready) return Fail(ready.error());
    if (!*ready) return Fail(TimeoutError(socket_path, timeout, "waiting for the answer"));
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Fail(Error::Unavailable(Where(socket_path) +
                                     " broke the connection: " + std::strerror(errno)));
    }
    bool at_eof = n == 0;
    if (at_eof && in.empty()) {
      return Fail(Error::Unavailable(Where(socket_path) + " closed the connection without an "
                                                          "answer; check the daemon's log"));
    }
    in.append(buf, static_cast<size_t>(n));
    if (in.size() > kMaxResponseBytes) {
      return Fail(
          Error::Internal(Where(socket_path) + " sent more than 1 MiB; not a sublease answer"));
    }
    auto resp = ParseHttpResponse(in, at_eof);
    if (!resp) return Fail(resp.error().Wrap("bad answer from " + Where(socket_path)));
    if (*resp) return std::move(**resp);
    if (at_eof)
      return Fail(Error::Internal("answer from " + Where(socket_path) + " is incomplete"));
  }
}

}  // namespace sublease::cni
