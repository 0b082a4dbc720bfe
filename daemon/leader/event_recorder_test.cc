// EventRecorder against the fake API server: what `kubectl describe pod` would find.
#include "daemon/leader/event_recorder.h"

#include <gtest/gtest.h>

#include "daemon/leader/leader_test_support.h"

namespace sublease {
namespace {

constexpr char kEvents[] = "/api/v1/namespaces/default/events";

class EventRecorderTest : public testing::FakeApiTest {
 protected:
  void SetUp() override {
    FakeApiTest::SetUp();
    std::string pod = MustCall("POST", "/api/v1/namespaces/default/pods", testing::PodJson("p1", "node-a"));
    ref_ = {"default", "p1", testing::JsonField(pod, {"metadata", "uid"})};
    recorder_ = std::make_unique<EventRecorder>(client_.get(), &fake_clock_,
                                                EventRecorderOptions{"subleased", "node-a", 60'000, 16});
    closers_.push_back([this](std::function<void()> done) {
      recorder_->Close();
      done();
    });
  }

  // kubectl describe's query for the pod's events.
  std::string Described() {
    return MustCall("GET", std::string(kEvents) +
                               "?fieldSelector=involvedObject.name%3Dp1,involvedObject.namespace%3Ddefault");
  }
  size_t Count() {
    std::string list = Described();
    size_t n = 0;
    while (!testing::JsonField(list, {"items", std::to_string(n), "metadata", "name"}).empty()) ++n;
    return n;
  }

  FakeClock fake_clock_;
  PodRef ref_;
  std::unique_ptr<EventRecorder> recorder_;
};

TEST_F(EventRecorderTest, AWarningIsFoundByTheInvolvedObjectFieldSelector) {
  recorder_->PodWarning(ref_, kReasonAddressExhausted, "Subnet macvlan has no free address");
  ASSERT_TRUE(Wait([&] { return recorder_->stats().created == 1; }, 5000));
  std::string list = Described();
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "reason"}), "AddressExhausted");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "type"}), "Warning");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "message"}), "Subnet macvlan has no free address");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "source", "component"}), "subleased");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "source", "host"}), "node-a");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "involvedObject", "uid"}), ref_.uid);
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "involvedObject", "kind"}), "Pod");
  EXPECT_EQ(testing::JsonField(list, {"items", "0", "count"}), "1");
  EXPECT_FALSE(testing::JsonField(list, {"items", "0", "firstTimestamp"}).empty());
}

TEST_F(EventRecorderTest, RepeatsWithinTheWindowBumpOneEventsCount) {
  for (int i = 0; i < 3; ++i) {
    recorder_->PodWarning(ref_, kReasonAddressConflict, "10.0.0.5 is held by pod default/x #" + std::to_string(i));
    fake_clock_.Advance(1000);
  }
  ASSERT_TRUE(Wait([&] { return testing::JsonField(Described(), {"items", "0", "count"}) == "3"; }, 5000));
  EXPECT_EQ(Count(), 1u);
  EXPECT_EQ(recorder_->stats().created, 1u);
  EXPECT_EQ(testing::JsonField(Described(), {"items", "0", "message"}), "10.0.0.5 is held by pod default/x #2");
}

TEST_F(EventRecorderTest, OtherReasonsAndRepeatsAfterTheWindowAreNewEvents) {
  recorder_->PodWarning(ref_, kReasonAddressConflict, "a");
  recorder_->PodWarning(ref_, kReasonInvalidRequest, "b");
  ASSERT_TRUE(Wait([&] { return recorder_->stats().created == 2; }, 5000));
  fake_clock_.Advance(61'000);
  recorder_->PodWarning(ref_, kReasonAddressConflict, "c");
  ASSERT_TRUE(Wait([&] { return recorder_->stats().created == 3; }, 5000));
  EXPECT_EQ(Count(), 3u);
}

// An Event that says why a pod has no address may never occur again: a create answered
// 500 (an etcd timeout) is sent again, not left for a next occurrence.
TEST_F(EventRecorderTest, ACreateAnsweredWithAServerErrorIsSentAgain) {
  Control("POST", "/faults",
          R"({"method":"POST","path_prefix":"/api/v1/namespaces/default/events","status":500,"count":1})");
  recorder_->PodWarning(ref_, kReasonAddressExhausted, "Subnet macvlan has no free address");
  ASSERT_TRUE(Wait([&] { return recorder_->stats().created == 1; }, 5000));
  EXPECT_EQ(recorder_->stats().failed, 1u);
  EXPECT_EQ(Count(), 1u);
}

TEST(EventReasonTest, AllocationFailuresMapToReasonsAndRetriesToNone) {
  EXPECT_EQ(EventReasonFor(Code::kExhausted), kReasonAddressExhausted);
  EXPECT_EQ(EventReasonFor(Code::kConflict), kReasonAddressConflict);
  EXPECT_EQ(EventReasonFor(Code::kInvalidArgument), kReasonInvalidRequest);
  EXPECT_EQ(EventReasonFor(Code::kUnavailable), "");
}

}  // namespace
}  // namespace sublease
