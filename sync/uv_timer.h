// Closing a heap-allocated libuv timer whose owner must learn when it is gone.
#pragma once

#include <uv.h>

#include <functional>
#include <utility>

namespace sublease {

// Stops `timer` (allocated with `new`), closes it, deletes it once libuv is done with
// it, then calls `done` (may be empty). Takes over `timer->data`; the owner need not
// outlive the close.
inline void CloseTimerThen(uv_timer_t* timer, std::function<void()> done) {
  uv_timer_stop(timer);
  timer->data = new std::function<void()>(std::move(done));
  uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* h) {
    auto* fn = static_cast<std::function<void()>*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
    if (*fn) (*fn)();
    delete fn;
  });
}

}  // namespace sublease
