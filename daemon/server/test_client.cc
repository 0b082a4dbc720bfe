#include "daemon/server/test_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace sublease::testing {
namespace {

void SetTimeouts(int fd) {
  timeval tv{};
  tv.tv_sec = kClientTimeoutMs / 1000;
  tv.tv_usec = (kClientTimeoutMs % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

TempDir::TempDir() {
  char tmpl[] = "/tmp/sublease-srv-XXXXXX";
  char* p = mkdtemp(tmpl);
  if (p == nullptr) std::abort();
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int ConnectUnix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  SetTimeouts(fd);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int ConnectTcp(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  SetTimeouts(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::optional<ClientResponse> ReadResponse(int fd, std::string& carry) {
  for (int reads = 0; reads < 10'000; ++reads) {
    size_t head_end = carry.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      ClientResponse r;
      std::string head = carry.substr(0, head_end);
      size_t line_end = head.find("\r\n");
      std::string status_line = head.substr(0, line_end);
      if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.1 ")) return std::nullopt;
      r.status = std::atoi(status_line.c_str() + 9);
      r.headers["reason"] = status_line.substr(13);  // after "HTTP/1.1 NNN "
      size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
      while (pos < head.size()) {
        size_t next = head.find("\r\n", pos);
        if (next == std::string::npos) next = head.size();
        std::string line = head.substr(pos, next - pos);
        size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string value = line.substr(colon + 1);
          value.erase(0, value.find_first_not_of(' '));
          r.headers[Lower(line.substr(0, colon))] = value;
        }
        pos = next + 2;
      }
      size_t length = std::strtoul(r.headers["content-length"].c_str(), nullptr, 10);
      if (carry.size() >= head_end + 4 + length) {
        r.body = carry.substr(head_end + 4, length);
        carry.erase(0, head_end + 4 + length);
        return r;
      }
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return std::nullopt;
    carry.append(buf, static_cast<size_t>(n));
  }
  return std::nullopt;
}

bool ReadsEof(int fd) {
  for (int reads = 0; reads < 1000; ++reads) {
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

std::string MakeRequest(std::string_view method, std::string_view target, std::string_view body,
                        std::string_view extra_headers) {
  std::string r;
  r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: sublease\r\n");
  r.append(extra_headers);
  r.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n\r\n");
  r.append(body);
  return r;
}

namespace {

struct Harness {
  uv_async_t client_done;
  uv_timer_t watchdog;
  std::function<void(std::function<void()>)> after_client;
  bool finished = false;
};

void CloseHarness(Harness* h) {
  if (h->finished) return;
  h->finished = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&h->client_done), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&h->watchdog), nullptr);
}

}  // namespace

void RunLoopWithClient(uv_loop_t* loop, const std::function<void()>& client,
                       const std::function<void(std::function<void()> finish)>& after_client) {
  Harness h;
  h.after_client = after_client;
  uv_async_init(loop, &h.client_done, [](uv_async_t* a) {
    auto* harness = static_cast<Harness*>(a->data);
    harness->after_client([harness] { CloseHarness(harness); });
  });
  h.client_done.data = &h;
  uv_timer_init(loop, &h.watchdog);
  h.watchdog.data = &h;
  uv_timer_start(
      &h.watchdog,
      [](uv_timer_t* t) {
        ADD_FAILURE() << "watchdog: the test did not finish within 10 s";
        uv_stop(t->loop);
      },
      10'000, 0);
  std::thread thread([&] {
    client();
    uv_async_send(&h.client_done);
  });
  uv_run(loop, UV_RUN_DEFAULT);
  thread.join();
  if (!h.finished) {
    CloseHarness(&h);
    uv_run(loop, UV_RUN_NOWAIT);  // the close callbacks run before `h` goes away
  }
}

int CloseLoop(uv_loop_t* loop) {
  int rc = uv_loop_close(loop);
  if (rc == 0) return 0;
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
  uv_loop_close(loop);
  return rc;
}

void After(uv_loop_t* loop, uint64_t ms, std::function<void()> fn) {
  struct Pending {
    uv_timer_t timer;
    std::function<void()> fn;
  };
  auto* p = new Pending{{}, std::move(fn)};
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(
      &p->timer,
      [](uv_timer_t* t) {
        auto* pending = static_cast<Pending*>(t->data);
        pending->fn();
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete static_cast<Pending*>(h->data); });
      },
      ms, 0);
}

}  // namespace sublease::testing
