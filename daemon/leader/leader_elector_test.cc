// LeaderElector against the fake API server: three electors, each its own API user so
// one can be cut off with a deny rule. leading() of all of them is sampled on the loop
// every few milliseconds: two leaders at once must never be seen.
#include "daemon/leader/leader_elector.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "daemon/leader/leader_test_support.h"

namespace sublease {
namespace {

constexpr char kLeasePath[] = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/test-leader";

class LeaderElectorTest : public testing::FakeApiTest {
 protected:
  LeaderElectorOptions Options(int i) {
    LeaderElectorOptions o;
    o.identity = "e" + std::to_string(i);
    o.name = "test-leader";
    o.lease_duration_ms = 2000;
    o.renew_deadline_ms = 1400;
    o.retry_period_ms = 200;
    o.seed = 100 + i;
    return o;
  }

  void StartElectors(int n) {
    for (int i = 0; i < n; ++i) {
      KubeClient* c = ClientAs("e" + std::to_string(i));
      auto e = std::make_unique<LeaderElector>(
          &loop_, c, &clock_, Options(i), [this, i] { started_[i]++; }, [this, i] { stopped_[i]++; });
      e->Start();
      LeaderElector* raw = e.get();
      electors_.push_back(std::move(e));
      closers_.push_back([raw](std::function<void()> done) { raw->Close(false, std::move(done)); });
    }
  }

  int Leaders() {
    int n = 0;
    for (auto& e : electors_) n += e->leading() ? 1 : 0;
    max_leaders_ = std::max(max_leaders_, n);
    return n;
  }
  int Leader() {
    for (size_t i = 0; i < electors_.size(); ++i) {
      if (electors_[i]->leading()) return static_cast<int>(i);
    }
    return -1;
  }
  // Waits, sampling leading() of every elector at each loop turn.
  bool WaitSampling(const std::function<bool()>& done, int64_t ms) {
    return Wait([&] {
      Leaders();
      return done();
    }, ms);
  }

  std::vector<std::unique_ptr<LeaderElector>> electors_;
  int started_[3] = {0, 0, 0};
  int stopped_[3] = {0, 0, 0};
  int max_leaders_ = 0;
};

TEST_F(LeaderElectorTest, ExactlyOneOfThreeLeadsAndKeepsLeading) {
  StartElectors(3);
  ASSERT_TRUE(WaitSampling([&] { return Leaders() == 1; }, 5000));
  int leader = Leader();
  WaitSampling([] { return false; }, 3000);  // well beyond the lease duration
  EXPECT_EQ(Leader(), leader) << "leadership moved without a fault";
  EXPECT_EQ(max_leaders_, 1);
  EXPECT_EQ(started_[leader], 1);
  auto lease = MustCall("GET", kLeasePath);
  EXPECT_EQ(testing::JsonField(lease, {"spec", "holderIdentity"}), "e" + std::to_string(leader));
  EXPECT_EQ(testing::JsonField(lease, {"spec", "leaseDurationSeconds"}), "2");
  EXPECT_FALSE(testing::JsonField(lease, {"spec", "renewTime"}).empty());
  EXPECT_FALSE(testing::JsonField(lease, {"spec", "acquireTime"}).empty());
}

TEST_F(LeaderElectorTest, ALeaderThatCannotRenewStopsBeforeAnotherStarts) {
  StartElectors(3);
  ASSERT_TRUE(WaitSampling([&] { return Leaders() == 1; }, 5000));
  int old = Leader();
  std::string transitions = testing::JsonField(MustCall("GET", kLeasePath), {"spec", "leaseTransitions"});
  Control("POST", "/deny", R"({"user":"e)" + std::to_string(old) + R"(","resource":"leases"})");
  auto cut = std::chrono::steady_clock::now();
  int64_t stopped_ms = -1;
  int64_t new_leader_ms = -1;
  ASSERT_TRUE(WaitSampling([&] {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - cut).count();
    if (stopped_ms < 0 && !electors_[old]->leading()) stopped_ms = ms;
    int l = Leader();
    if (new_leader_ms < 0 && l >= 0 && l != old) new_leader_ms = ms;
    return new_leader_ms >= 0;
  }, 10000));
  std::printf("cut-off leader stopped after %lld ms, another led after %lld ms\n",
              static_cast<long long>(stopped_ms), static_cast<long long>(new_leader_ms));
  EXPECT_EQ(max_leaders_, 1) << "two electors led at the same time";
  ASSERT_GE(stopped_ms, 0);
  EXPECT_LE(stopped_ms, new_leader_ms);
  EXPECT_LE(stopped_ms, 1400 + 300);  // renew deadline (+ loop slack)
  EXPECT_GE(new_leader_ms, 1400);      // not before the old leader's deadline
  EXPECT_LE(new_leader_ms, 2000 + 2 * 240 + 1000);  // lease duration + retries + slack
  EXPECT_EQ(stopped_[old], 1);
  std::string after = testing::JsonField(MustCall("GET", kLeasePath), {"spec", "leaseTransitions"});
  EXPECT_EQ(std::stoi(after), std::stoi(transitions) + 1);
}

TEST_F(LeaderElectorTest, ReleaseOnCloseHandsOverAtOnce) {
  StartElectors(2);
  ASSERT_TRUE(WaitSampling([&] { return Leaders() == 1; }, 5000));
  int old = Leader();
  int other = 1 - old;
  WaitSampling([] { return false; }, 500);  // the other elector settles into polling
  bool closed = false;
  auto t0 = std::chrono::steady_clock::now();
  closers_.erase(closers_.begin() + old);
  electors_[old]->Close(true, [&] { closed = true; });
  EXPECT_FALSE(electors_[old]->leading()) << "stops acting before releasing";
  EXPECT_EQ(stopped_[old], 1);
  ASSERT_TRUE(WaitSampling([&] { return closed && electors_[other]->leading(); }, 5000));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("handover after a release took %lld ms\n", static_cast<long long>(ms));
  EXPECT_LT(ms, 1000) << "not at the next retry: the release did not work";
  EXPECT_EQ(max_leaders_, 1);
}

TEST(LeaseCodecTest, EncodesAndDecodesTheLeaseSpec) {
  LeaseRecord r{"node-a_1", 15, FormatMicroTime(1'700'000'000'123), FormatMicroTime(1'700'000'001'000), 3};
  EXPECT_EQ(r.acquire_time, "2023-11-14T22:13:20.123000Z");
  auto decoded = DecodeLease(EncodeLease("kube-system", "l", "42", r));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->resource_version, "42");
  EXPECT_EQ(decoded->record, r);
  EXPECT_FALSE(DecodeLease(R"({"spec":{"leaseDurationSeconds":"x"}})"));
}

}  // namespace
}  // namespace sublease
