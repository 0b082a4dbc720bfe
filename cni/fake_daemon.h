// FakeDaemon: a stand-in subleased for the plugin's tests. Test-only.
//
// A plain POSIX Unix-socket server on its own thread: it serves one connection per
// scripted Reply, in order, recording each request, then stops. Every wait is
// bounded (kIoTimeout) so a broken plugin fails the test instead of hanging it.
// The socket lives in a fresh temporary directory removed by the destructor.
#pragma once

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace sublease::cni {

class FakeDaemon {
 public:
  static constexpr std::chrono::seconds kIoTimeout{5};

  struct Reply {
    int status = 200;
    std::string body;
    // Read the request, then send nothing until the client gives up.
    bool never_answer = false;
    // Read the request, then close without a byte.
    bool hang_up = false;
  };

  struct Received {
    std::string request_line;  // "POST /v1/cni/add HTTP/1.1"
    std::string headers;       // the header block, CRLF-separated
    std::string body;
  };

  explicit FakeDaemon(std::vector<Reply> replies);
  ~FakeDaemon();
  FakeDaemon(const FakeDaemon&) = delete;
  FakeDaemon& operator=(const FakeDaemon&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  // Waits for the server thread (bounded) and returns what it received.
  std::vector<Received> Finish();

 private:
  void Serve(std::vector<Reply> replies);

  std::string dir_;
  std::string socket_path_;
  int listen_fd_ = -1;
  std::vector<Received> received_;
  std::thread thread_;
};

// A path in a fresh temporary directory where nothing listens. Removed on destruction.
class AbsentSocket {
 public:
  AbsentSocket();
  ~AbsentSocket();
  AbsentSocket(const AbsentSocket&) = delete;
  AbsentSocket& operator=(const AbsentSocket&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

}  // namespace sublease::cni
