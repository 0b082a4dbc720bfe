#include "daemon/server/signals.h"

#include <gtest/gtest.h>

#include <csignal>
#include <vector>

#include "daemon/server/test_client.h"

namespace sublease {
namespace {

TEST(SignalsTest, FirstSignalCallsBackOnceAndCloseReleasesHandles) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  std::vector<int> received;
  bool closed = false;
  {
    ShutdownSignals signals(&loop);
    ASSERT_TRUE(signals.Start([&](int signum) { received.push_back(signum); }));
    // Both signals arrive before the loop runs; only the first one counts.
    ASSERT_EQ(uv_kill(getpid(), SIGTERM), 0);
    testing::After(&loop, 50, [] { uv_kill(getpid(), SIGINT); });
    testing::After(&loop, 150, [&] { signals.Close([&] { closed = true; }); });
    uv_timer_t watchdog;
    uv_timer_init(&loop, &watchdog);
    uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));  // ends with the other handles
    uv_timer_start(
        &watchdog, [](uv_timer_t* t) { uv_stop(t->loop); }, 5000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  EXPECT_EQ(received, std::vector<int>{SIGTERM});
  EXPECT_TRUE(closed);
  EXPECT_EQ(testing::CloseLoop(&loop), 0);
}

TEST(SignalsTest, DestroyingWithoutCloseStillClosesHandles) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    ShutdownSignals signals(&loop);
    ASSERT_TRUE(signals.Start([](int) {}));
  }
  for (int i = 0; i < 10 && uv_run(&loop, UV_RUN_NOWAIT) != 0; ++i) {
  }
  EXPECT_EQ(testing::CloseLoop(&loop), 0);
}

}  // namespace
}  // namespace sublease
