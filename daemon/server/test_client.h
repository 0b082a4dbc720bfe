// Test helpers for daemon/server tests: a blocking HTTP/1.1 client over POSIX sockets
// (every call bounded by socket timeouts), a temporary directory, and a harness that
// runs a uv loop on the test thread while a client runs on another thread, under a
// watchdog timer so no test can hang. Test-only; not part of sublease_server.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>

namespace sublease::testing {

inline constexpr int kClientTimeoutMs = 3000;

// mkdtemp under /tmp (short, so socket paths fit in sun_path); removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Connected blocking socket with send/receive timeouts, or -1.
int ConnectUnix(const std::string& path);
int ConnectTcp(const std::string& host, int port);
// Sends everything (MSG_NOSIGNAL); false on error or timeout.
bool SendAll(int fd, std::string_view data);

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};
// Reads one response; `carry` keeps bytes read past it for the next call.
// nullopt on EOF, error or timeout before a whole response.
std::optional<ClientResponse> ReadResponse(int fd, std::string& carry);
// True when the peer closes the connection (EOF or reset) within the timeout; any
// bytes before the EOF are skipped.
bool ReadsEof(int fd);
// "POST <path> HTTP/1.1" with Host and Content-Length.
std::string MakeRequest(std::string_view method, std::string_view target, std::string_view body,
                        std::string_view extra_headers = "");

// Runs `client` on a thread while running `loop` on this one. When the client returns,
// `after_client` runs on the loop thread and must arrange for `finish` to be called once
// all the test's own handles are closed (usually as Stop()'s done). A 10 s watchdog
// fails the test and stops the loop instead of hanging.
void RunLoopWithClient(uv_loop_t* loop, const std::function<void()>& client,
                       const std::function<void(std::function<void()> finish)>& after_client);

// Closes any handle still open on `loop` and runs it; then uv_loop_close's result.
int CloseLoop(uv_loop_t* loop);

// Calls `fn` after `ms` on the loop thread (the timer closes itself).
void After(uv_loop_t* loop, uint64_t ms, std::function<void()> fn);

}  // namespace sublease::testing
