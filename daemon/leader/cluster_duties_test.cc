// ClusterDuties against the fake API server: garbage collection rules and their races
// (the reconciler bugs that duplicated addresses in Whereabouts and Spiderpool), and
// Subnet status. Short intervals: reclaim 1.5 s, sweeps every 0.25 s. No daemon runs
// for the nodes named here, which is the "node down, no DEL comes" situation.
#include "daemon/leader/cluster_duties.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "daemon/leader/garbage_collector.h"
#include "daemon/leader/leader_test_support.h"
#include "sync/ipblock.h"

namespace sublease {
namespace {

using testing::JsonField;
constexpr int64_t kReclaimMs = 1500;
constexpr int64_t kSweepMs = 250;
constexpr char kPods[] = "/api/v1/namespaces/default/pods";

class ClusterDutiesTest : public testing::FakeApiTest {
 protected:
  void StartDuties(int64_t status_ms_per_node = 0) {
    ClusterDutiesOptions o;
    o.status_ms_per_node = status_ms_per_node;
    o.node = "node-a";
    o.identity = "duties";
    o.lease_duration_ms = 2000;
    o.renew_deadline_ms = 1400;
    o.retry_period_ms = 200;
    o.reclaim_interval_ms = kReclaimMs;
    o.sweep_interval_ms = kSweepMs;
    o.status_debounce_ms = 100;
    o.seed = 7;
    duties_ = std::make_unique<ClusterDuties>(&loop_, ClientAs("duties"), &clock_, o);
    duties_->set_on_reclaimed([this](const IpBlock&, uint64_t, const BlockAllocation& a) {
      reclaimed_.push_back(a.pod_name + "/" + a.pod_uid);
    });
    duties_->Start();
    closers_.push_back([this](std::function<void()> done) { duties_->Close(std::move(done)); });
    ASSERT_TRUE(Wait([&] { return duties_->leading(); }, 5000));
  }

  std::string CreatePod(const std::string& name, const std::string& node,
                        const std::string& extra_metadata = "") {
    return JsonField(MustCall("POST", kPods, testing::PodJson(name, node, extra_metadata)),
                     {"metadata", "uid"});
  }
  void DeletePodNow(const std::string& name) {
    MustCall("DELETE", std::string(kPods) + "/" + name, R"({"gracePeriodSeconds":0})");
  }
  // Node node-a with spares .2-.4 in block 10.0.0.0/29, its pod "handed" annotated with
  // .3 (handed out, not recorded); the leader running; then the pod is deleted.
  void DeleteAPodHoldingAnUnrecordedSpare();

  BlockAllocation Alloc(const std::string& pod, const std::string& uid, bool sticky = false) {
    return BlockAllocation{"default", pod, uid, "net1", "c-" + pod, "node-a", "m.default", sticky, "", "", ""};
  }
  // Writes block 10.0.0.0/29 of subnet "m" (created when absent), affine to `node`.
  void PutBlock(const std::map<uint64_t, BlockAllocation>& allocations,
                const std::string& node = "node-a", const std::string& cidr = "10.0.0.0/29",
                bool return_spares = false) {
    IpBlock b;
    b.subnet = "m";
    b.cidr = *IpNet::Parse(cidr);
    b.name = BlockName("m", b.cidr);
    b.node = node;
    b.allocations = allocations;
    b.return_spares = return_spares;
    auto current = Call("GET", std::string(kIpBlockCollection) + "/" + b.name);
    if (current) {
      b.resource_version = JsonField(current->body, {"metadata", "resourceVersion"});
      MustCall("PUT", std::string(kIpBlockCollection) + "/" + b.name, EncodeIpBlock(b));
    } else {
      MustCall("POST", std::string(kIpBlockCollection), EncodeIpBlock(b));
    }
  }
  std::map<uint64_t, BlockAllocation> Allocations(const std::string& cidr = "10.0.0.0/29") {
    auto r = Call("GET", std::string(kIpBlockCollection) + "/" + BlockName("m", *IpNet::Parse(cidr)));
    if (!r) return {};
    auto b = DecodeIpBlock(r->body);
    return b ? b->allocations : std::map<uint64_t, BlockAllocation>{};
  }
  bool BlockExists(const std::string& cidr) {
    return Call("GET", std::string(kIpBlockCollection) + "/" + BlockName("m", *IpNet::Parse(cidr))).has_value();
  }
  static int64_t Since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  }
  // Pumps the loop long enough for several reclaim intervals.
  void SeveralIntervals() { Pump(3 * kReclaimMs + 4 * kSweepMs); }

  // Started and closed like duties_; owned here so that they outlive the test body.
  ClusterDuties* StartOther(ClusterDutiesOptions o, const std::string& user) {
    others_.push_back(std::make_unique<ClusterDuties>(&loop_, ClientAs(user), &clock_, o));
    ClusterDuties* d = others_.back().get();
    d->Start();
    closers_.push_back([d](std::function<void()> done) { d->Close(std::move(done)); });
    return d;
  }

  std::unique_ptr<ClusterDuties> duties_;
  std::vector<std::unique_ptr<ClusterDuties>> others_;
  std::vector<std::string> reclaimed_;
};

TEST_F(ClusterDutiesTest, LeakedAllocationIsReclaimedOnlyAfterTwoObservations) {
  StartDuties();
  PutBlock({{3, Alloc("ghost", "uid-ghost")}});
  auto t0 = std::chrono::steady_clock::now();
  Pump(kReclaimMs - 400);
  EXPECT_EQ(Allocations().count(3), 1u) << "reclaimed before two observations";
  // The block is written before the duties' loop reads the answer and reports the reclaim:
  // wait for both (on a busy machine the report can come a moment after the write).
  ASSERT_TRUE(Wait([&] { return Allocations().empty() && !reclaimed_.empty(); },
                   3 * kReclaimMs + 2000));
  int64_t ms = Since(t0);
  std::printf("leaked allocation reclaimed %lld ms after it appeared (reclaim interval %lld ms)\n",
              static_cast<long long>(ms), static_cast<long long>(kReclaimMs));
  EXPECT_GE(ms, kReclaimMs);
  EXPECT_EQ(reclaimed_, std::vector<std::string>{"ghost/uid-ghost"});
}

TEST_F(ClusterDutiesTest, PodDeletedDuringItsOwnAddIsReclaimedAfterTwoObservations) {
  StartDuties();
  std::string uid = CreatePod("p-add", "node-b");
  DeletePodNow("p-add");
  // The node's write lands after the pod is gone.
  PutBlock({{2, Alloc("p-add", uid)}});
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(Wait([&] { return Allocations().empty(); }, 3 * kReclaimMs + 2000));
  EXPECT_GE(Since(t0), kReclaimMs);
}

TEST_F(ClusterDutiesTest, NeverWhileThePodExistsEvenWithItsNodeDown) {
  StartDuties();
  std::string uid = CreatePod("alive", "node-down");
  CreatePod("alive-no-uid", "node-down");
  PutBlock({{2, Alloc("alive", uid)}, {3, Alloc("alive-no-uid", "")}});
  SeveralIntervals();
  EXPECT_EQ(Allocations().size(), 2u);
  EXPECT_TRUE(reclaimed_.empty());
}

TEST_F(ClusterDutiesTest, RecreatedPodLosesTheOldUidsAddressAndKeepsItsOwn) {
  StartDuties();
  std::string old_uid = CreatePod("web", "node-b");
  PutBlock({{2, Alloc("web", old_uid)}});
  DeletePodNow("web");
  std::string new_uid = CreatePod("web", "node-b");
  ASSERT_NE(old_uid, new_uid);
  auto allocations = Allocations();
  allocations[4] = Alloc("web", new_uid);
  PutBlock(allocations);
  ASSERT_TRUE(Wait([&] { return Allocations().count(2) == 0; }, 3 * kReclaimMs + 2000));
  SeveralIntervals();
  auto left = Allocations();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left.begin()->first, 4u);
  EXPECT_EQ(left.begin()->second.pod_uid, new_uid);
}

TEST_F(ClusterDutiesTest, StickyAddressIsKeptWhileItsStatefulSetWantsTheOrdinal) {
  StartDuties();
  std::string sts = MustCall("POST", "/apis/apps/v1/namespaces/default/statefulsets",
                             R"({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},"spec":{"replicas":2}})");
  PutBlock({{2, Alloc("db-1", "uid-db-1", true)}});
  SeveralIntervals();
  EXPECT_EQ(Allocations().count(2), 1u) << "the StatefulSet still wants ordinal 1";
  EXPECT_GT(duties_->stats().gc.kept_sticky, 0u);
  MustCall("PATCH", "/apis/apps/v1/namespaces/default/statefulsets/db", R"({"spec":{"replicas":1}})",
           "application/merge-patch+json");
  ASSERT_TRUE(Wait([&] { return Allocations().empty(); }, 3 * kReclaimMs + 2000))
      << "scaled below the ordinal: the address is free";
}

TEST_F(ClusterDutiesTest, StickyAddressIsKeptWhileItsStatefulSetCannotBeRead) {
  Control("POST", "/deny", R"({"user":"duties","resource":"statefulsets"})");
  StartDuties();
  PutBlock({{2, Alloc("db-0", "uid-db-0", true)}});
  SeveralIntervals();
  EXPECT_EQ(Allocations().count(2), 1u) << "403 on the StatefulSet: cannot tell, so keep";
  Control("DELETE", "/deny");
  // Readable now, and absent (404): the address goes.
  ASSERT_TRUE(Wait([&] { return Allocations().empty(); }, 3 * kReclaimMs + 2000));
}

TEST_F(ClusterDutiesTest, StickyAddressOfAReCreatedStatefulSetIsReclaimed) {
  std::string sts = MustCall("POST", "/apis/apps/v1/namespaces/default/statefulsets",
                             R"({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},"spec":{"replicas":3}})");
  StartDuties();
  BlockAllocation a = Alloc("db-0", "uid-db-0", true);
  a.owner_uid = "uid-of-the-deleted-statefulset";
  BlockAllocation kept = Alloc("db-1", "uid-db-1", true);
  kept.owner_uid = JsonField(sts, {"metadata", "uid"});
  PutBlock({{2, a}, {3, kept}});
  ASSERT_TRUE(Wait([&] { return Allocations().count(2) == 0; }, 3 * kReclaimMs + 2000));
  EXPECT_EQ(Allocations().count(3), 1u);
}

TEST_F(ClusterDutiesTest, StatefulSetPodMovingNodesKeepsItsAddress) {
  MustCall("POST", "/apis/apps/v1/namespaces/default/statefulsets",
           R"({"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db"},"spec":{"replicas":1}})");
  StartDuties();
  // node-a's block holds db-0's address under its old UID; db-0 now runs on node-b.
  PutBlock({{2, Alloc("db-0", "uid-before-move", true)}});
  std::string uid = CreatePod("db-0", "node-b");
  SeveralIntervals();
  EXPECT_EQ(Allocations().count(2), 1u);
  // Deleted in between moves (pod gone for a while): the StatefulSet still wants it.
  DeletePodNow("db-0");
  SeveralIntervals();
  EXPECT_EQ(Allocations().count(2), 1u);
}

TEST_F(ClusterDutiesTest, EmptyBlocksOfDeletedNodesAreDeletedOthersKept) {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  std::string uid = CreatePod("live", "node-gone-2");
  StartDuties();
  PutBlock({}, "node-a", "10.0.0.0/29");         // live node's reserve block
  PutBlock({}, "node-gone", "10.0.0.8/29");      // deleted node, empty
  PutBlock({{1, Alloc("live", uid)}}, "node-gone-2", "10.0.0.16/29");  // deleted node, live pod
  ASSERT_TRUE(Wait([&] { return !BlockExists("10.0.0.8/29"); }, 3 * kReclaimMs + 2000));
  SeveralIntervals();
  EXPECT_TRUE(BlockExists("10.0.0.0/29"));
  EXPECT_TRUE(BlockExists("10.0.0.16/29"));
  EXPECT_EQ(Allocations("10.0.0.16/29").size(), 1u);
  EXPECT_EQ(duties_->stats().gc.blocks_deleted, 1u);
}

// Spares (--spare-addresses) are the affine node's for its next pods: never collected
// while the node exists; a deleted node's block that holds nothing else is deleted.
TEST_F(ClusterDutiesTest, SparesAreKeptWhileTheirNodeExistsAndGoWithADeletedNodesBlock) {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  StartDuties();
  BlockAllocation spare;
  spare.spare = true;
  spare.node = "node-a";
  PutBlock({{2, spare}, {3, spare}}, "node-a", "10.0.0.0/29");
  spare.node = "node-gone";
  PutBlock({{2, spare}}, "node-gone", "10.0.0.8/29");
  ASSERT_TRUE(Wait([&] { return !BlockExists("10.0.0.8/29"); }, 3 * kReclaimMs + 2000));
  SeveralIntervals();
  EXPECT_EQ(Allocations("10.0.0.0/29").size(), 2u) << "a live node's spares are not collected";
  EXPECT_EQ(duties_->stats().gc.reclaimed, 0u);
}

// Node node-a's block 10.0.0.0/29 with spares at offsets 2, 3 and 4 and another node's
// ask for them (spec.returnSpares), as a node that went down leaves it.
std::map<uint64_t, BlockAllocation> ThreeSpares() {
  BlockAllocation spare;
  spare.spare = true;
  spare.node = "node-a";
  return {{2, spare}, {3, spare}, {4, spare}};
}
// Annotations of a pod with one Multus attachment: allocated `address`, or waiting ("").
std::string OneAttachment(const std::string& address) {
  std::string a = R"(,"annotations":{"k8s.v1.cni.cncf.io/networks":"m")";
  if (!address.empty()) {
    a += R"(,"m.default.kubernetes.io/allocated":"true","m.default.kubernetes.io/ip_address":")" +
         address + "\"";
  }
  return a + "}";
}
size_t SparesIn(const std::map<uint64_t, BlockAllocation>& allocations) {
  size_t n = 0;
  for (const auto& [offset, a] : allocations) n += a.spare ? 1 : 0;
  return n;
}

// A node that does not answer an ask for its spares (down, or its daemon is) has them
// taken back by the leader — but not one its pods' annotations name (handed out, not
// recorded yet), and not while the node keeps writing the block (answering).
TEST_F(ClusterDutiesTest, SparesAskedBackAndUnansweredAreTakenBackButNotThoseItsPodsHold) {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  std::string uid = CreatePod("recorded", "node-a", OneAttachment("10.0.0.5"));
  CreatePod("handed", "node-a", OneAttachment("10.0.0.3"));
  CreatePod("elsewhere", "node-b", OneAttachment(""));  // another node's: no matter
  CreatePod("plain", "node-a");                          // asks for no attachment
  auto allocations = ThreeSpares();
  allocations[5] = Alloc("recorded", uid);
  PutBlock(allocations, "node-a", "10.0.0.0/29", /*return_spares=*/true);
  StartDuties();
  // Written again and again (the node answering, slowly): the clock restarts each time.
  // (A write that changes nothing is no write on a real API server: each one differs.)
  for (int i = 0; i < 6; ++i) {
    Pump(kReclaimMs / 2);
    auto changed = allocations;
    if (i % 2 == 0) changed[6] = Alloc("recorded-too", "uid-" + std::to_string(i));
    PutBlock(changed, "node-a", "10.0.0.0/29", true);
  }
  PutBlock(allocations, "node-a", "10.0.0.0/29", true);
  EXPECT_EQ(SparesIn(Allocations()), 3u) << "taken back while the node kept writing";
  EXPECT_EQ(duties_->stats().gc.spares_reclaimed, 0u);
  ASSERT_TRUE(Wait([&] { return SparesIn(Allocations()) == 1; }, 3 * kReclaimMs + 4000));
  auto left = Allocations();
  ASSERT_EQ(left.count(3), 1u);
  EXPECT_TRUE(left.at(3).spare) << "the one pod `handed` is annotated with stays";
  ASSERT_EQ(left.count(5), 1u);
  EXPECT_EQ(left.at(5).pod_name, "recorded");
  // The write is visible before its answer reaches the collector, which counts it then.
  EXPECT_TRUE(Wait([&] { return duties_->stats().gc.spares_reclaimed == 2u; }, 5000));
  EXPECT_EQ(duties_->stats().gc.reclaimed, 0u);
}

// A pod on that node that waits for an attachment may hold one of its spares, handed
// out in the node's last moments and recorded nowhere: nothing is taken back while it
// is there; once it is gone, they are.
TEST_F(ClusterDutiesTest, UnansweredSparesAreKeptWhileAPodOfTheNodeWaitsForAnAddress) {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  CreatePod("waiting", "node-a", OneAttachment(""));
  PutBlock(ThreeSpares(), "node-a", "10.0.0.0/29", /*return_spares=*/true);
  StartDuties();
  ASSERT_TRUE(Wait([&] { return duties_->stats().gc.spares_kept_pod >= 2; }, 6 * kReclaimMs + 4000));
  EXPECT_EQ(SparesIn(Allocations()), 3u);
  DeletePodNow("waiting");
  ASSERT_TRUE(Wait([&] { return SparesIn(Allocations()) == 0; }, 3 * kReclaimMs + 4000));
  EXPECT_TRUE(Wait([&] { return duties_->stats().gc.spares_reclaimed == 3u; }, 5000));
  EXPECT_TRUE(BlockExists("10.0.0.0/29")) << "the node's block stays (the node exists)";
}

// Annotations sublease writes for an allocated attachment of subnet "m".
std::string AllocatedInM(const std::string& address) {
  return R"(,"annotations":{"k8s.v1.cni.cncf.io/networks":"m","m.default.kubernetes.io/allocated":"true",)"
         R"("m.default.kubernetes.io/cidr":"10.0.0.0/24","m.default.kubernetes.io/ip_address":")" +
         address + R"("})";
}
bool Asked(const std::string& body) { return body.find("\"returnSpares\":true") != std::string::npos; }

void ClusterDutiesTest::DeleteAPodHoldingAnUnrecordedSpare() {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  CreatePod("handed", "node-a", AllocatedInM("10.0.0.3"));
  PutBlock(ThreeSpares());
  StartDuties();
  ASSERT_TRUE(Wait([&] { return duties_->stats().gc.sweeps >= 2; }, 5000));
  DeletePodNow("handed");
}

// A pod deleted while its address is still its node's spare (handed out, never
// recorded: the node went down) and the block unchanged since: the leader asks the node
// for its spares itself, and with no answer takes them back — nobody had to run out.
TEST_F(ClusterDutiesTest, ADeletedPodsUnrecordedSpareOfANodeThatIsDownIsAskedForAndTakenBack) {
  ASSERT_NO_FATAL_FAILURE(DeleteAPodHoldingAnUnrecordedSpare());
  ASSERT_TRUE(Wait([&] { return duties_->stats().gc.spares_asked == 1; }, 2 * kReclaimMs + 2000));
  ASSERT_TRUE(Wait([&] { return SparesIn(Allocations()) == 0; }, 3 * kReclaimMs + 4000));
  EXPECT_TRUE(Wait([&] { return duties_->stats().gc.spares_reclaimed == 3u; }, 5000));
}

// A node that is up writes the block when such a pod goes (the release rides with its
// record): the leader does not ask.
TEST_F(ClusterDutiesTest, ANodeThatWritesTheBlockAfterThePodWentIsNotAsked) {
  ASSERT_NO_FATAL_FAILURE(DeleteAPodHoldingAnUnrecordedSpare());
  auto spares = ThreeSpares();
  spares.erase(3);
  spares[5] = spares[2];  // recorded and released in one write; topped up again
  PutBlock(spares);
  SeveralIntervals();
  EXPECT_EQ(duties_->stats().gc.spares_asked, 0u);
  EXPECT_FALSE(Asked(MustCall("GET", std::string(kIpBlockCollection) + "/" +
                                         BlockName("m", *IpNet::Parse("10.0.0.0/29")))));
  EXPECT_EQ(SparesIn(Allocations()), 3u);
}

// Which pods may hold an address their node handed out and recorded nowhere.
TEST(MayHoldUnrecordedAddressTest, APodWaitingForAnAttachmentMayAFinishedOrFullyAllocatedOneMayNot) {
  auto pod = [](const std::string& annotations, const std::string& phase = "Running") {
    auto o = ParseKubeObject(R"({"metadata":{"name":"p","namespace":"default","uid":"u","annotations":{)" +
                             annotations + R"(}},"spec":{"nodeName":"n"},"status":{"phase":")" + phase +
                             "\"}}");
    EXPECT_TRUE(o);
    return *o;
  };
  EXPECT_FALSE(MayHoldUnrecordedAddress(pod("")));
  EXPECT_TRUE(MayHoldUnrecordedAddress(pod(R"("k8s.v1.cni.cncf.io/networks":"a")")));
  EXPECT_FALSE(MayHoldUnrecordedAddress(
      pod(R"("k8s.v1.cni.cncf.io/networks":"a","a.default.kubernetes.io/allocated":"true")")));
  EXPECT_TRUE(MayHoldUnrecordedAddress(
      pod(R"("k8s.v1.cni.cncf.io/networks":"a, b","a.default.kubernetes.io/allocated":"true")")))
      << "one of two attachments allocated";
  EXPECT_TRUE(MayHoldUnrecordedAddress(
      pod(R"("k8s.v1.cni.cncf.io/networks":"a","ovn.kubernetes.io/allocated":"true")")))
      << "Kube-OVN's own network is not an attachment of ours";
  EXPECT_TRUE(MayHoldUnrecordedAddress(pod(R"("v1.multus-cni.io/default-network":"a")")));
  EXPECT_TRUE(MayHoldUnrecordedAddress(pod(R"("k8s.v1.cni.cncf.io/networks":"[{bad")")))
      << "unreadable: it may";
  EXPECT_FALSE(MayHoldUnrecordedAddress(pod(R"("k8s.v1.cni.cncf.io/networks":"a")", "Succeeded")));
  EXPECT_FALSE(MayHoldUnrecordedAddress(pod(R"("k8s.v1.cni.cncf.io/networks":"a")", "Failed")));
}

TEST_F(ClusterDutiesTest, BlockChangedBetweenCheckAndWriteIsReReadAndRechecked) {
  StartDuties();
  // The final re-check of "ghost" is slow; meanwhile a node commits another address.
  Control("POST", "/faults",
          R"({"method":"GET","path_prefix":"/api/v1/namespaces/default/pods/ghost","action":"delay","delay_ms":1000,"count":1})");
  PutBlock({{3, Alloc("ghost", "uid-ghost")}});
  ASSERT_TRUE(Wait([&] { return JsonField(Control("GET", "/faults"), {"faults", "0", "hits"}) == "1"; },
                   3 * kReclaimMs + 2000));
  std::string uid = CreatePod("newcomer", "node-a");
  auto allocations = Allocations();
  allocations[5] = Alloc("newcomer", uid);
  PutBlock(allocations);
  ASSERT_TRUE(Wait([&] { return Allocations().count(3) == 0; }, 3 * kReclaimMs + 3000));
  auto left = Allocations();
  EXPECT_EQ(left.count(5), 1u) << "the concurrent commit survived the reclaim";
}

TEST_F(ClusterDutiesTest, AStaleWriteIsReReadRecheckedAndRetried) {
  StartDuties();
  Control("POST", "/faults",
          R"({"method":"PUT","path_prefix":"/apis/sublease.io/v1alpha1/ipblocks/","action":"error","status":409,"count":1})");
  std::string uid = CreatePod("stays", "node-a");
  PutBlock({{3, Alloc("ghost", "uid-ghost")}, {4, Alloc("stays", uid)}});
  // The block is written before the duties' loop reads the answer and reports the reclaim.
  ASSERT_TRUE(Wait([&] { return Allocations().count(3) == 0 && !reclaimed_.empty(); },
                   3 * kReclaimMs + 3000));
  EXPECT_EQ(Allocations().count(4), 1u);
  EXPECT_EQ(duties_->stats().gc.conflicts, 1u);
  EXPECT_EQ(reclaimed_, std::vector<std::string>{"ghost/uid-ghost"});
}

TEST_F(ClusterDutiesTest, SubnetStatusFollowsTheAllocations) {
  MustCall("POST", "/apis/kubeovn.io/v1/subnets",
           testing::SubnetJson("m", "m.default", "10.0.0.0/24", R"(,"excludeIps":["10.0.0.2..10.0.0.4"])"));
  std::string uid = CreatePod("a", "node-a");
  PutBlock({{5, Alloc("a", uid)}, {6, Alloc("a2", "x")}});
  StartDuties();
  auto status = [&](const char* field) {
    return JsonField(MustCall("GET", "/apis/kubeovn.io/v1/subnets/m"), {"status", field});
  };
  ASSERT_TRUE(Wait([&] { return status("v4usingIPs") == "2"; }, 5000));
  EXPECT_EQ(status("v4usingIPrange"), "10.0.0.5-10.0.0.6");
  EXPECT_EQ(status("v4availableIPs"), "248");  // 254 - gateway - 3 excluded - 2
  EXPECT_EQ(status("v4availableIPrange"), "10.0.0.7-10.0.0.254");
  EXPECT_EQ(status("v6usingIPs"), "0");
  std::string subnet = MustCall("GET", "/apis/kubeovn.io/v1/subnets/m");
  EXPECT_EQ(JsonField(subnet, {"status", "conditions", "0", "type"}), "Validated");
  EXPECT_EQ(JsonField(subnet, {"status", "conditions", "0", "status"}), "True");
  EXPECT_EQ(JsonField(subnet, {"status", "conditions", "1", "type"}), "Ready");
  // Another block: only this change is applied, and the status follows.
  PutBlock({{0, Alloc("b", "y")}}, "node-b", "10.0.0.200/29");
  ASSERT_TRUE(Wait([&] { return status("v4usingIPs") == "3"; }, 5000));
  EXPECT_EQ(status("v4usingIPrange"), "10.0.0.5-10.0.0.6,10.0.0.200");
  // The server may show a write whose answer the loop has not taken yet: wait for it.
  ASSERT_TRUE(Wait(
      [&] {
        auto st = duties_->stats().status;
        return st.written + st.unchanged + st.errors >= st.computed;
      },
      5000));
  uint64_t written = duties_->stats().status.written;
  Pump(1000);
  EXPECT_EQ(duties_->stats().status.written, written) << "no write when nothing changed";
}

// Every node watches every Subnet: the leader spaces a Subnet's status writes by at
// least status_ms_per_node per node it knows (here 2 nodes x 1.5 s = 3 s).
TEST_F(ClusterDutiesTest, SubnetStatusIntervalGrowsWithTheNumberOfNodes) {
  MustCall("POST", "/apis/kubeovn.io/v1/subnets", testing::SubnetJson("m", "m.default", "10.0.0.0/24"));
  for (const char* node : {"node-a", "node-b"}) {
    MustCall("POST", "/api/v1/nodes", std::string(R"({"apiVersion":"v1","kind":"Node","metadata":{"name":")") +
                                          node + R"("}})");
  }
  const std::string a = CreatePod("a", "node-a"), b = CreatePod("b", "node-a");
  PutBlock({{5, Alloc("a", a)}});
  StartDuties(/*status_ms_per_node=*/1500);
  auto status = [&](const char* field) {
    return JsonField(MustCall("GET", "/apis/kubeovn.io/v1/subnets/m"), {"status", field});
  };
  ASSERT_TRUE(Wait([&] { return status("v4usingIPs") == "1"; }, 20000));
  Pump(1000);  // (the nodes' informer has listed both by now)
  // The allocations change every ~100 ms for 3 s: the status follows at most once per
  // interval (a slow machine makes fewer writes, never more).
  const uint64_t written = duties_->stats().status.written;
  auto t0 = std::chrono::steady_clock::now();
  int changes = 0;
  while (Since(t0) < 3000) {
    if (changes++ % 2 == 0) {
      PutBlock({{5, Alloc("a", a)}, {6, Alloc("b", b)}});
    } else {
      PutBlock({{5, Alloc("a", a)}});
    }
    Pump(100);
  }
  const int64_t elapsed = Since(t0);
  EXPECT_LE(duties_->stats().status.written - written, static_cast<uint64_t>(elapsed / 3000 + 2))
      << changes << " changes in " << elapsed << " ms";
  // And it does follow.
  PutBlock({{5, Alloc("a", a)}, {6, Alloc("b", b)}});
  ASSERT_TRUE(Wait([&] { return status("v4usingIPs") == "2"; }, 20000));
}

// --leader-candidates=labelled: only nodes with the label campaign (the others never
// poll the Lease); with no node labelled, every node does.
TEST_F(ClusterDutiesTest, OnlyLabelledNodesCampaignWhenSomeAreLabelled) {
  auto node = [&](const char* name, bool candidate) {
    std::string labels = candidate ? R"(,"labels":{"sublease.io/leader-candidate":"true"})" : "";
    MustCall("POST", "/api/v1/nodes",
             std::string(R"({"apiVersion":"v1","kind":"Node","metadata":{"name":")") + name + "\"" +
                 labels + "}}");
  };
  node("node-a", false);
  node("node-b", true);
  auto make = [&](const char* name) {
    ClusterDutiesOptions o;
    o.node = name;
    o.identity = name;
    o.lease_duration_ms = 2000;
    o.renew_deadline_ms = 1400;
    o.retry_period_ms = 200;
    o.candidate_selector = std::string(kLeaderCandidateLabel) + "=true";
    return StartOther(o, name);
  };
  auto a = make("node-a");
  ASSERT_TRUE(Wait([&] { return a->candidacy_decided(); }, 10000));
  EXPECT_FALSE(a->campaigning());
  auto b = make("node-b");
  ASSERT_TRUE(Wait([&] { return b->leading(); }, 10000));
  EXPECT_TRUE(b->campaigning());
  Pump(600);  // several of b's renewals
  EXPECT_FALSE(a->leading());
  EXPECT_EQ(a->stats().election.reads + a->stats().election.writes, 0u) << "a non-candidate polls no Lease";
  EXPECT_EQ(JsonField(MustCall("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/sublease-leader"),
                      {"spec", "holderIdentity"}),
            "node-b");
}

TEST_F(ClusterDutiesTest, EveryNodeCampaignsWhenNoneIsLabelled) {
  MustCall("POST", "/api/v1/nodes", R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"}})");
  ClusterDutiesOptions o;
  o.node = "node-a";
  o.identity = "node-a";
  o.lease_duration_ms = 2000;
  o.renew_deadline_ms = 1400;
  o.retry_period_ms = 200;
  o.candidate_selector = std::string(kLeaderCandidateLabel) + "=true";
  ClusterDuties* d = StartOther(o, "node-a");
  EXPECT_TRUE(Wait([&] { return d->leading(); }, 10000));
}

TEST_F(ClusterDutiesTest, InvalidAndOverlappingSubnetsGetConditionsAPersonCanActOn) {
  StartDuties();
  MustCall("POST", "/apis/kubeovn.io/v1/subnets",
           testing::SubnetJson("bad-gw", "x.default", "10.1.0.0/24", R"(,"gateway":"10.2.0.1")"));
  MustCall("POST", "/apis/kubeovn.io/v1/subnets", testing::SubnetJson("one", "m.default", "10.0.0.0/24"));
  MustCall("POST", "/apis/kubeovn.io/v1/subnets", testing::SubnetJson("two", "m.default", "10.0.0.128/25"));
  MustCall("POST", "/apis/kubeovn.io/v1/subnets", testing::SubnetJson("fine", "f.default", "10.0.0.0/24"));
  auto condition = [&](const std::string& subnet, const char* field) {
    return JsonField(MustCall("GET", "/apis/kubeovn.io/v1/subnets/" + subnet), {"status", "conditions", "0", field});
  };
  ASSERT_TRUE(Wait([&] {
    return condition("bad-gw", "status") == "False" && condition("two", "status") == "False" &&
           condition("fine", "status") == "True";
  }, 5000));
  EXPECT_EQ(condition("bad-gw", "reason"), "InvalidGateway");
  EXPECT_NE(condition("bad-gw", "message").find("10.2.0.1"), std::string::npos);
  EXPECT_EQ(condition("one", "reason"), "CIDROverlap");
  EXPECT_NE(condition("one", "message").find("Subnet two"), std::string::npos);
  EXPECT_NE(condition("two", "message").find("Subnet one"), std::string::npos);
  // Fixing one side clears both.
  MustCall("PATCH", "/apis/kubeovn.io/v1/subnets/two", R"({"spec":{"provider":"n.default"}})",
           "application/merge-patch+json");
  ASSERT_TRUE(Wait([&] { return condition("one", "status") == "True" && condition("two", "status") == "True"; }, 5000));
}

TEST_F(ClusterDutiesTest, ALeaderThatLosesTheLeaseStopsCollecting) {
  StartDuties();
  Control("POST", "/deny", R"({"user":"duties","resource":"leases"})");
  ASSERT_TRUE(Wait([&] { return !duties_->leading(); }, 3000));
  PutBlock({{3, Alloc("ghost", "uid-ghost")}});
  SeveralIntervals();
  EXPECT_EQ(Allocations().count(3), 1u) << "a former leader reclaimed";
}

}  // namespace
}  // namespace sublease
