// A one-shot HTTP/1.1 client over a Unix socket: one connect, one write, one read.
//
// The plugin is short-lived and asks one question, so there is no connection
// reuse, no threads and no event loop: a blocking connect bounded by SO_SNDTIMEO,
// then poll() against a single deadline for the write and the read. The request
// says "Connection: close"; the answer ends at Content-Length or at EOF.
// Chunked answers are refused (docs/protocol.md says the daemon never sends them).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sublease::cni {

struct HttpRequest {
  std::string method;  // "POST", "GET"
  std::string path;    // "/v1/cni/add"
  std::string body;    // sent with Content-Type: application/json when non-empty or POST
};

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Errors: kUnavailable when the socket cannot be reached, the deadline passes or
// the daemon hangs up without an answer (the message names the socket and says
// what to check); kInternal when the answer is not HTTP or too large.
Result<HttpResponse> UnixHttpExchange(std::string_view socket_path, const HttpRequest& request,
                                      std::chrono::milliseconds timeout);

// Parses the bytes received so far (status line, headers, body): nullopt while
// more are needed, kInternal for a malformed answer, kUnavailable for one cut
// short by EOF. Exposed for tests.
Result<std::optional<HttpResponse>> ParseHttpResponse(std::string_view raw, bool at_eof);

}  // namespace sublease::cni
