// ShutdownSignals: SIGTERM and SIGINT, turned into one callback on the loop thread.
//
// Owns two uv_signal_t handles on the caller's loop. The callback runs once, for the
// first of the signals; later ones are ignored (a second Ctrl-C does not re-enter
// shutdown). Close() closes both handles; its `done` runs after their close callbacks.
// The handles' memory lives until then even if this object is destroyed first
// (destroying an open ShutdownSignals starts Close()). Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>

#include "common/result.h"

namespace sublease {

struct ShutdownSignalsState;  // the handles; defined in signals.cc

class ShutdownSignals {
 public:
  explicit ShutdownSignals(uv_loop_t* loop);
  ~ShutdownSignals();
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  // Starts watching; `on_signal` gets the signal number. kInternal when libuv refuses.
  // REQUIRES: called at most once, before Close().
  Result<void> Start(std::function<void(int signum)> on_signal);
  // Stops watching and closes the handles; `done` (may be empty) runs once they are closed.
  void Close(std::function<void()> done = nullptr);

 private:
  ShutdownSignalsState* state_;  // freed by the last close callback
};

}  // namespace sublease
