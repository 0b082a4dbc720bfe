#include "daemon/server/signals.h"

#include <csignal>
#include <string>
#include <utility>

namespace sublease {

struct ShutdownSignalsState {
  uv_signal_t term;
  uv_signal_t interrupt;
  int open_handles = 0;
  bool fired = false;
  bool closing = false;
  std::function<void(int)> on_signal;
  std::function<void()> done;
};

namespace {

void OnClosed(uv_handle_t* h) {
  auto* s = static_cast<ShutdownSignalsState*>(h->data);
  if (--s->open_handles > 0) return;
  std::function<void()> done = std::move(s->done);
  delete s;
  if (done) done();
}

}  // namespace

ShutdownSignals::ShutdownSignals(uv_loop_t* loop) : state_(new ShutdownSignalsState) {
  uv_signal_init(loop, &state_->term);
  uv_signal_init(loop, &state_->interrupt);
  state_->term.data = state_;
  state_->interrupt.data = state_;
  state_->open_handles = 2;
}

ShutdownSignals::~ShutdownSignals() { Close(); }

Result<void> ShutdownSignals::Start(std::function<void(int signum)> on_signal) {
  if (state_ == nullptr) return Fail(Error::Internal("signal handlers already closed"));
  state_->on_signal = std::move(on_signal);
  auto cb = [](uv_signal_t* h, int signum) {
    auto* s = static_cast<ShutdownSignalsState*>(h->data);
    if (s->fired || s->closing) return;
    s->fired = true;
    // A copy: the callback may Close(), which clears s->on_signal.
    std::function<void(int)> fn = s->on_signal;
    if (fn) fn(signum);
  };
  for (auto [handle, signum] :
       {std::pair{&state_->term, SIGTERM}, std::pair{&state_->interrupt, SIGINT}}) {
    int rc = uv_signal_start(handle, cb, signum);
    if (rc != 0) {
      return Fail(Error::Internal("cannot watch signal " + std::to_string(signum) + ": " +
                                  uv_strerror(rc)));
    }
  }
  return Ok();
}

void ShutdownSignals::Close(std::function<void()> done) {
  if (state_ == nullptr) return;
  ShutdownSignalsState* s = std::exchange(state_, nullptr);
  s->closing = true;
  s->done = std::move(done);
  s->on_signal = nullptr;
  uv_signal_stop(&s->term);
  uv_signal_stop(&s->interrupt);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->term), OnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->interrupt), OnClosed);
}

}  // namespace sublease
