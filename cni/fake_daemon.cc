#include "cni/fake_daemon.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace sublease::cni {
namespace {

using Clock = std::chrono::steady_clock;

std::string MakeTempDir() {
  char tmpl[] = "/tmp/sublease-cni-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

bool WaitReadable(int fd, Clock::time_point deadline) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, RemainingMs(deadline)) > 0;
}

// Reads one HTTP request (headers plus Content-Length body), bounded by the deadline.
bool ReadRequest(int fd, Clock::time_point deadline, FakeDaemon::Received* out) {
  std::string in;
  char buf[4096];
  for (int reads = 0; reads < 1000; ++reads) {
    size_t head_end = in.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      std::string head = in.substr(0, head_end);
      size_t content_length = 0;
      size_t pos = head.find("Content-Length: ");
      if (pos != std::string::npos)
        content_length = std::strtoul(head.c_str() + pos + 16, nullptr, 10);
      if (in.size() >= head_end + 4 + content_length) {
        size_t line_end = head.find("\r\n");
        out->request_line = head.substr(0, line_end);
        out->headers = line_end == std::string::npos ? "" : head.substr(line_end + 2);
        out->body = in.substr(head_end + 4, content_length);
        return true;
      }
    }
    if (!WaitReadable(fd, deadline)) return false;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    in.append(buf, static_cast<size_t>(n));
  }
  return false;
}

std::string ReasonFor(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Status";
  }
}

}  // namespace

FakeDaemon::FakeDaemon(std::vector<Reply> replies) : dir_(MakeTempDir()) {
  socket_path_ = dir_ + "/d.sock";
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 8) != 0) {
    throw std::runtime_error(std::string("fake daemon: ") + std::strerror(errno));
  }
  thread_ = std::thread([this, r = std::move(replies)]() mutable { Serve(std::move(r)); });
}

FakeDaemon::~FakeDaemon() {
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  unlink(socket_path_.c_str());
  rmdir(dir_.c_str());
}

std::vector<FakeDaemon::Received> FakeDaemon::Finish() {
  if (thread_.joinable()) thread_.join();
  return received_;
}

void FakeDaemon::Serve(std::vector<Reply> replies) {
  for (const Reply& reply : replies) {
    const auto deadline = Clock::now() + kIoTimeout;
    if (!WaitReadable(listen_fd_, deadline)) return;  // the plugin never connected
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    Received got;
    if (ReadRequest(fd, deadline, &got)) received_.push_back(got);
    if (reply.never_answer) {
      // Hold the connection until the plugin times out and closes its end.
      char c;
      while (WaitReadable(fd, deadline) && recv(fd, &c, 1, 0) > 0) {
      }
    } else if (!reply.hang_up) {
      std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " " + ReasonFor(reply.status) +
                        "\r\nContent-Type: application/json\r\nContent-Length: " +
                        std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n" +
                        reply.body;
      size_t sent = 0;
      while (sent < out.size()) {
        ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
    }
    close(fd);
  }
}

AbsentSocket::AbsentSocket() : dir_(MakeTempDir()), path_(dir_ + "/absent.sock") {}

AbsentSocket::~AbsentSocket() { rmdir(dir_.c_str()); }

}  // namespace sublease::cni
