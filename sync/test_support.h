// Test support for sync/: the recorded API server answers (tests/fakeapi/k8s-reference), a bounded
// loop runner, and ReplayServer, a plain-HTTP/1.1 server on the test's uv loop that
// answers each request with what a handler returns (typically a recording). Tests only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace sublease::testing {

// The contents of tests/fakeapi/k8s-reference/<name> (the recorded kube-apiserver answers).
std::string ReadRecording(const std::string& name);
// From a *.txt recording: the HTTP status and the body.
int RecordedStatus(std::string_view recording);
std::string RecordedBody(std::string_view recording);
// From a *.raw watch recording: the HTTP/1.1 body with its chunk framing removed.
std::string DechunkedBody(std::string_view recording);

// Runs `loop` until done() or timeout_ms of loop time passed; a 5 ms ticker keeps
// the loop from blocking forever. Returns done().
bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done, int64_t timeout_ms);
// Runs the loop until nothing is left (closing handles finish). Bounded.
void Drain(uv_loop_t* loop);

// One answer: raw HTTP/1.1 bytes; hold_open keeps the connection open afterwards
// (a watch that sends nothing more). The server closes it otherwise.
struct ReplayResponse {
  std::string bytes;
  bool hold_open = false;
};
// A *.txt recording (HTTP/2) as an HTTP/1.1 answer with Content-Length.
ReplayResponse FromTxtRecording(std::string_view recording);
// A *.raw recording as sent, header lines normalised to CRLF.
ReplayResponse FromRawRecording(std::string_view recording);
// A JSON answer with the given status and body.
ReplayResponse JsonResponse(int status, std::string_view body, std::string_view extra_headers = "");
// A chunked 200 watch answer carrying `lines` ("\n" appended to each), then the end.
ReplayResponse WatchResponse(const std::vector<std::string>& lines, bool hold_open = false);

class ReplayServer {
 public:
  // method, target ("/path?query"), body → answer.
  using Handler = std::function<ReplayResponse(const std::string& method, const std::string& target,
                                               const std::string& body)>;
  ReplayServer(uv_loop_t* loop, Handler handler);
  ~ReplayServer();
  std::string url() const;  // "http://127.0.0.1:<port>"
  // Every request seen, as "METHOD target".
  const std::vector<std::string>& requests() const { return requests_; }
  // The header block of every request, in the same order.
  const std::vector<std::string>& heads() const { return heads_; }
  // Closes held connections (the client sees the stream break).
  void DropHeld();
  void Close();  // then Drain the loop before destroying

 private:
  struct Conn;
  static void OnConnection(uv_stream_t* server, int status);
  void CloseConn(Conn* c);

  uv_loop_t* loop_;
  Handler handler_;
  uv_tcp_t listener_;
  int port_ = 0;
  bool closed_ = false;
  std::vector<Conn*> conns_;
  std::vector<std::string> requests_;
  std::vector<std::string> heads_;
};

}  // namespace sublease::testing
