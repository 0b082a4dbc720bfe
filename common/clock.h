// Clock: the one seam for time. Production uses SystemClock; tests use FakeClock.
#pragma once

#include <chrono>
#include <cstdint>

namespace sublease {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time in unix milliseconds (for timestamps a person reads).
  virtual int64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_; }
  void Advance(int64_t ms) { now_ms_ += ms; }

 private:
  int64_t now_ms_;
};

}  // namespace sublease
