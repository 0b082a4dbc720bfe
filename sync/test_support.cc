#include "sync/test_support.h"

#include <cassert>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace sublease::testing {
namespace {

std::string_view AfterHeaders(std::string_view text, size_t from) {
  size_t crlf = text.find("\r\n\r\n", from);
  size_t lf = text.find("\n\n", from);
  if (crlf != std::string_view::npos && (lf == std::string_view::npos || crlf < lf)) {
    return text.substr(crlf + 4);
  }
  return lf == std::string_view::npos ? std::string_view() : text.substr(lf + 2);
}

size_t StatusLineStart(std::string_view recording) {
  size_t p = recording.find("\nHTTP/");
  return p == std::string_view::npos ? 0 : p + 1;
}

}  // namespace

std::string ReadRecording(const std::string& name) {
  std::ifstream in(std::string(SUBLEASE_SYNC_TESTDATA) + "/" + name, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int RecordedStatus(std::string_view recording) {
  size_t p = StatusLineStart(recording);
  size_t sp = recording.find(' ', p);
  return std::atoi(std::string(recording.substr(sp + 1, 3)).c_str());
}

std::string RecordedBody(std::string_view recording) {
  return std::string(AfterHeaders(recording, StatusLineStart(recording)));
}

std::string DechunkedBody(std::string_view recording) {
  size_t p = StatusLineStart(recording);
  size_t end = recording.find("\r\n\r\n", p);
  std::string_view body = recording.substr(end + 4);
  std::string out;
  while (!body.empty()) {
    size_t eol = body.find("\r\n");
    size_t size = std::stoul(std::string(body.substr(0, eol)), nullptr, 16);
    if (size == 0) break;
    out.append(body.substr(eol + 2, size));
    body.remove_prefix(eol + 2 + size + 2);
  }
  return out;
}

bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done, int64_t timeout_ms) {
  uv_timer_t ticker;
  uv_timer_init(loop, &ticker);
  uv_timer_start(
      &ticker, [](uv_timer_t*) {}, 5, 5);
  uv_update_time(loop);
  const uint64_t deadline = uv_now(loop) + static_cast<uint64_t>(timeout_ms);
  bool ok = false;
  for (int i = 0; i < 10'000'000; ++i) {
    if (done()) {
      ok = true;
      break;
    }
    if (uv_now(loop) >= deadline) break;
    uv_run(loop, UV_RUN_ONCE);
  }
  bool closed = false;
  ticker.data = &closed;
  uv_close(reinterpret_cast<uv_handle_t*>(&ticker),
           [](uv_handle_t* h) { *static_cast<bool*>(h->data) = true; });
  for (int i = 0; i < 1000 && !closed; ++i) uv_run(loop, UV_RUN_NOWAIT);
  assert(closed);
  return ok;
}

void Drain(uv_loop_t* loop) {
  for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
}

ReplayResponse FromTxtRecording(std::string_view recording) {
  int status = RecordedStatus(recording);
  return JsonResponse(status, RecordedBody(recording));
}

ReplayResponse FromRawRecording(std::string_view recording) {
  size_t p = StatusLineStart(recording);
  size_t end = recording.find("\r\n\r\n", p);
  std::string_view head = recording.substr(p, end - p);
  std::string out;
  size_t start = 0;
  while (start <= head.size()) {
    size_t nl = head.find('\n', start);
    std::string_view line =
        head.substr(start, nl == std::string_view::npos ? head.size() - start : nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.append(line);
    out.append("\r\n");
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  out.append("Connection: close\r\n\r\n");
  out.append(recording.substr(end + 4));
  return {out, false};
}

ReplayResponse JsonResponse(int status, std::string_view body, std::string_view extra_headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) +
                    " X\r\nContent-Type: application/json\r\n" +
                    "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n";
  out.append(extra_headers);
  out.append("\r\n");
  out.append(body);
  return {out, false};
}

ReplayResponse WatchResponse(const std::vector<std::string>& lines, bool hold_open) {
  std::string out =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
      "Connection: close\r\n\r\n";
  char size[32];
  for (const std::string& line : lines) {
    std::snprintf(size, sizeof size, "%zx\r\n", line.size() + 1);
    out += size;
    out += line;
    out += "\n\r\n";
  }
  if (!hold_open) out += "0\r\n\r\n";
  return {out, hold_open};
}

struct ReplayServer::Conn {
  uv_tcp_t tcp;
  ReplayServer* server;
  std::string in;
  std::string out;
  bool responded = false;
  bool hold_open = false;
  uv_write_t write;
};

ReplayServer::ReplayServer(uv_loop_t* loop, Handler handler)
    : loop_(loop), handler_(std::move(handler)) {
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 16, &ReplayServer::OnConnection);
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

ReplayServer::~ReplayServer() {
  assert(closed_ && "ReplayServer: Close and Drain before destroying");
}

std::string ReplayServer::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

void ReplayServer::OnConnection(uv_stream_t* listener, int status) {
  auto* self = static_cast<ReplayServer*>(listener->data);
  if (status < 0 || self->closed_) return;
  auto* c = new Conn;
  c->server = self;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    return;
  }
  self->conns_.push_back(c);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        buf->base = new char[suggested];
        buf->len = suggested;
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
        auto* conn = static_cast<Conn*>(stream->data);
        if (n > 0) conn->in.append(buf->base, static_cast<size_t>(n));
        delete[] buf->base;
        ReplayServer* server = conn->server;
        if (n < 0) {
          server->CloseConn(conn);
          return;
        }
        if (conn->responded) return;
        size_t end = conn->in.find("\r\n\r\n");
        if (end == std::string::npos) return;
        size_t length = 0;
        if (size_t cl = conn->in.find("Content-Length: "); cl != std::string::npos && cl < end) {
          length = std::stoul(conn->in.substr(cl + 16));
        }
        if (conn->in.size() < end + 4 + length) return;
        conn->responded = true;
        std::string line = conn->in.substr(0, conn->in.find("\r\n"));
        size_t sp1 = line.find(' ');
        size_t sp2 = line.find(' ', sp1 + 1);
        std::string method = line.substr(0, sp1);
        std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        server->requests_.push_back(method + " " + target);
        server->heads_.push_back(conn->in.substr(0, end + 2));
        ReplayResponse r = server->handler_(method, target, conn->in.substr(end + 4, length));
        conn->out = std::move(r.bytes);
        conn->hold_open = r.hold_open;
        uv_buf_t out = uv_buf_init(conn->out.data(), static_cast<unsigned>(conn->out.size()));
        conn->write.data = conn;
        uv_write(&conn->write, stream, &out, 1, [](uv_write_t* w, int write_status) {
          auto* written = static_cast<Conn*>(w->data);
          if (write_status < 0 || uv_is_closing(reinterpret_cast<uv_handle_t*>(&written->tcp)))
            return;
          if (!written->hold_open) written->server->CloseConn(written);
        });
      });
}

void ReplayServer::CloseConn(Conn* c) {
  for (size_t i = 0; i < conns_.size(); ++i) {
    if (conns_[i] == c) {
      conns_.erase(conns_.begin() + static_cast<ptrdiff_t>(i));
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
               [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
      return;
    }
  }
}

void ReplayServer::DropHeld() {
  std::vector<Conn*> held;
  for (Conn* c : conns_) {
    if (c->hold_open) held.push_back(c);
  }
  for (Conn* c : held) CloseConn(c);
}

void ReplayServer::Close() {
  if (closed_) return;
  closed_ = true;
  while (!conns_.empty()) CloseConn(conns_.back());
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
}

}  // namespace sublease::testing
