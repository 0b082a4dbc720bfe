// Spares (BlockEngine::Options.spare_addresses, docs/cluster-protocol.md "Spares"):
// addresses a node holds in its own blocks for pods it has not seen yet. Against
// FakeBlockApi and real SQLite (:memory:) stores, like block_engine_test.cc.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/cluster_test_support.h"

namespace sublease::spares_test {
namespace {

using testing::ClusterHarness;
using testing::Ip;
using testing::kMaxSteps;
using testing::Node;
using testing::Spec;

BlockEngine::Options WithSpares(int spares) {
  BlockEngine::Options o;
  o.claim_spread = 1;  // claims take the lowest unclaimed block
  o.spare_addresses = spares;
  o.deferred_write_ms = 500;
  return o;
}

// The addresses of `node`'s spares in the API server, lowest first.
std::vector<std::string> Spares(const ClusterHarness& c, const std::string& node) {
  std::vector<std::string> out;
  for (const auto& [name, b] : const_cast<ClusterHarness&>(c).api.objects()) {
    for (const auto& [offset, a] : b.allocations) {
      if (a.spare && a.node == node) out.push_back(b.AddressAt(offset).ToString());
    }
  }
  return out;
}

const BlockAllocation* InApi(ClusterHarness& c, const std::string& address) {
  IpAddr a = Ip(address.c_str());
  for (const auto& [name, b] : c.api.objects()) {
    auto offset = b.OffsetOf(a);
    if (!offset) continue;
    auto it = b.allocations.find(*offset);
    return it == b.allocations.end() ? nullptr : &it->second;
  }
  return nullptr;
}

void TickAfter(ClusterHarness& c, Node& n, int64_t ms) {
  n.clock.Advance(ms);
  n.engine->Tick();
  c.api.RunAll(kMaxSteps);
}

// A release (deferred_write_ms: it leaves with the Tick after it).
Result<void> ReleaseAndTick(ClusterHarness& c, Node& n, const std::string& pod) {
  auto out = std::make_shared<std::optional<Result<void>>>();
  n.engine->Release(AttachmentKey::For("net", c.Request(pod).owner),
                    [out](Result<void> r) { *out = std::move(r); });
  TickAfter(c, n, 1'000);
  if (!*out) return Fail(Error::Internal("no answer"));
  return **out;
}

TEST(BlockEngineSparesTest, AllocationsAreAnsweredFromSparesWithoutAWriteAndRecordedLater) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));  // 32 addresses per block
  Node& a = c.AddNode("node-a", WithSpares(8));
  auto first = c.AllocateNow(a, c.Request("p0"));  // claims the block; the create adds spares
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->v4, Ip("10.0.0.2"));
  EXPECT_EQ(Spares(c, "node-a"),
            (std::vector<std::string>{"10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7",
                                      "10.0.0.8", "10.0.0.9", "10.0.0.10"}));
  const uint64_t writes = c.api.counters().creates + c.api.counters().updates;
  for (int i = 1; i <= 3; ++i) {
    auto l = c.AllocateNow(a, c.Request("p" + std::to_string(i)));
    ASSERT_TRUE(l) << l.error().message;
    EXPECT_EQ(l->v4, Ip(("10.0.0." + std::to_string(2 + i)).c_str()));
    EXPECT_EQ(l->state, LeaseState::kCommitted);
  }
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes) << "answered with no write";
  EXPECT_EQ(a.engine->stats().spares_taken, 3u);
  auto stored = a.store->LoadLiveLeases();
  ASSERT_TRUE(stored);
  for (const Lease& l : *stored) EXPECT_EQ(l.state, LeaseState::kCommitted) << l.key().ToString();
  ASSERT_NE(InApi(c, "10.0.0.4"), nullptr);
  EXPECT_TRUE(InApi(c, "10.0.0.4")->spare) << "not recorded yet";
  c.CheckInvariants();

  // The deferred records leave together on the Tick after deferred_write_ms, and the
  // same write tops the spares up to 8 again.
  TickAfter(c, a, 600);
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes + 1);
  for (int i = 1; i <= 3; ++i) {
    const BlockAllocation* held = InApi(c, "10.0.0." + std::to_string(2 + i));
    ASSERT_NE(held, nullptr);
    EXPECT_FALSE(held->spare);
    EXPECT_EQ(held->pod_name, "p" + std::to_string(i));
    EXPECT_EQ(held->node, "node-a");
  }
  EXPECT_EQ(Spares(c, "node-a").size(), 8u);
  EXPECT_EQ(Spares(c, "node-a").front(), "10.0.0.6");
  c.CheckInvariants();

  // Taking spares down to a quarter sends the record at once: its write tops them up
  // before they run out. Five taken (three left) write nothing yet; the sixth does.
  for (int i = 4; i <= 8; ++i) ASSERT_TRUE(c.AllocateNow(a, c.Request("p" + std::to_string(i))));
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes + 1);
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p9")));
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes + 2);
  EXPECT_EQ(Spares(c, "node-a").size(), 8u);
  c.CheckInvariants();
}

// The pod of a spare goes before its record left: the record and the release leave in
// one write, in that order, and no allocation of the pod is left behind.
TEST(BlockEngineSparesTest, AReleaseBeforeTheRecordLeavesNoAllocationOfThePod) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(8));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));
  auto l = c.AllocateNow(a, c.Request("short"));
  ASSERT_TRUE(l);
  std::optional<Result<void>> released;
  a.engine->Release(l->key(), [&released](Result<void> r) { released = std::move(r); });
  TickAfter(c, a, 600);  // the release rides with the record (deferred_write_ms)
  ASSERT_TRUE(released && *released);
  const BlockAllocation* held = InApi(c, l->v4->ToString());
  EXPECT_TRUE(held == nullptr || held->spare) << "the pod is gone: its address is free or a spare";
  EXPECT_EQ(Spares(c, "node-a").size(), 8u);
  EXPECT_FALSE(a.allocator.Find(l->key()).has_value());
  c.CheckInvariants();
}

// Asked back, a node hands out no spare without a write: the leader takes back the
// spares of a node that does not answer in time, and must not race a hand-out that
// leaves no trace in the API server.
TEST(BlockEngineSparesTest, AskedBackANodeHandsOutNoSpareWithoutAWrite) {
  ClusterHarness c(Spec("10.0.0.0/29"));  // one block, usable .2-.6
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a0")));  // spares .3-.6
  c.api.HoldWatch("node-a", true);
  ASSERT_FALSE(c.AllocateNow(b, c.Request("b0")));  // asks for them back
  ASSERT_TRUE(c.api.objects().begin()->second.return_spares);
  c.api.HoldWatch("node-a", false);
  ASSERT_TRUE(c.api.RunNext());  // node-a's watch shows the ask; its giving back is in flight
  const uint64_t writes = c.api.counters().creates + c.api.counters().updates;
  auto l = c.AllocateNow(a, c.Request("a1"));  // before the spares are back
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(a.engine->stats().spares_taken, 0u);
  EXPECT_GT(c.api.counters().creates + c.api.counters().updates, writes) << "answered after a write";
  const BlockAllocation* held = InApi(c, l->v4->ToString());
  ASSERT_NE(held, nullptr);
  EXPECT_FALSE(held->spare);
  EXPECT_EQ(held->pod_name, "a1");
  c.CheckInvariants();
}

// No other node allocates a spare: one that finds no other free address asks the holder
// to give its spares back (spec.returnSpares) and answers "try again"; the holder gives
// back those it has not handed out as soon as its watch shows the ask (no tick needed),
// and the next try gets one.
TEST(BlockEngineSparesTest, ANodeThatFindsOnlySparesAsksForThemBackAndGetsOneOnTheNextTry) {
  ClusterHarness c(Spec("10.0.0.0/29"));  // one block, usable .2-.6
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a0")));  // .2; spares .3-.6: the rest of the block
  ASSERT_EQ(Spares(c, "node-a").size(), 4u);
  c.api.HoldWatch("node-a", true);
  auto refused = c.AllocateNow(b, c.Request("b0"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::kUnavailable) << refused.error().message;
  EXPECT_NE(refused.error().message.find("node-a"), std::string::npos) << refused.error().message;
  EXPECT_TRUE(c.api.objects().begin()->second.return_spares);
  EXPECT_EQ(b.allocator.LeaseCount(), 0u);
  c.CheckInvariants();

  c.api.HoldWatch("node-a", false);
  c.api.RunAll(kMaxSteps);  // node-a's watch shows the ask: it gives them back, no tick
  EXPECT_TRUE(Spares(c, "node-a").empty());
  EXPECT_FALSE(c.api.objects().begin()->second.return_spares);
  EXPECT_EQ(a.engine->stats().spares_returned, 4u);
  auto got = c.AllocateNow(b, c.Request("b0"));
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(a.engine->stats().borrows + b.engine->stats().borrows, 1u);
  // node-a keeps none meanwhile: its own next allocation writes, and adds no spare.
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a1")));
  EXPECT_TRUE(Spares(c, "node-a").empty());
  c.CheckInvariants();
}

// A node asked for its spares keeps none for spare_pause_ms, unless its pods go: once it
// has released spare_addresses more leases there than it committed since, the subnet is
// no fuller than when it was asked, and its next write holds spares again (else pods
// re-created after a mass delete would each wait for a write for the rest of the pause).
TEST(BlockEngineSparesTest, APauseAfterAnAskEndsOnceTheNodeFreedAsManyAddressesAsItsSpares) {
  ClusterHarness c(Spec("10.0.0.0/27", "/27"));  // one block, usable .2-.30 (29)
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(c.AllocateNow(a, c.Request("a" + std::to_string(i))));
  TickAfter(c, a, 600);  // records out; the block is full: 25 pods and 4 spares
  ASSERT_EQ(Spares(c, "node-a").size(), 4u);
  ASSERT_FALSE(c.AllocateNow(b, c.Request("b0")));  // asks; node-a gives them back
  c.api.RunAll(kMaxSteps);
  ASSERT_TRUE(Spares(c, "node-a").empty());
  ASSERT_TRUE(c.AllocateNow(b, c.Request("b0")));
  const int64_t asked_ms = a.clock.NowMs();

  // Three releases (net 3 < 4): still paused; the releases' write adds no spare.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ReleaseAndTick(c, a, "a" + std::to_string(i)));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("n0")));  // writes (no spare), net 2
  EXPECT_TRUE(Spares(c, "node-a").empty()) << "the pause holds: net releases 2 of 4";
  // Two more (net 4): the pause ends; the next write tops the spares up.
  for (int i = 3; i < 5; ++i) ASSERT_TRUE(ReleaseAndTick(c, a, "a" + std::to_string(i)));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("n1")));
  EXPECT_EQ(Spares(c, "node-a").size(), 4u) << "keeping spares again well before spare_pause_ms";
  EXPECT_LT(a.clock.NowMs() - asked_ms, 60'000);
  c.CheckInvariants();
}

TEST(BlockEngineSparesTest, AStaticAddressThatIsAnotherNodesSpareIsAskedBack) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a0")));  // .2; spares .3-.6
  auto refused = c.AllocateNow(b, c.Request("web", {"10.0.0.4"}));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::kUnavailable) << refused.error().message;
  EXPECT_NE(refused.error().message.find("spare of node node-a"), std::string::npos)
      << refused.error().message;
  TickAfter(c, a, 1'000);
  auto got = c.AllocateNow(b, c.Request("web", {"10.0.0.4"}));
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.4"));
  c.CheckInvariants();
}

// So is a Kube-OVN ip_pool entry: a Deployment's pool whose free-looking entries are
// all another node's spares, and a StatefulSet member's entry [ordinal].
TEST(BlockEngineSparesTest, IpPoolEntriesThatAreAnotherNodesSparesAreAskedBack) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a0")));  // .2; spares .3-.6
  AllocateRequest deployment = c.Request("deploy-x");
  deployment.pool = "10.0.0.4,10.0.0.5";
  AllocateRequest member = c.Request("web-1");
  member.pool = "10.0.0.9,10.0.0.6";
  member.ordinal = 1;
  c.api.HoldWatch("node-a", true);  // the asks stay unanswered while both are refused
  for (const AllocateRequest& r : {deployment, member}) {
    auto refused = c.AllocateNow(b, r);
    ASSERT_FALSE(refused) << r.owner.pod_name;
    EXPECT_EQ(refused.error().code, Code::kUnavailable) << refused.error().message;
    EXPECT_NE(refused.error().message.find("spare of node node-a"), std::string::npos)
        << refused.error().message;
  }
  c.api.HoldWatch("node-a", false);
  c.api.RunAll(kMaxSteps);
  auto got = c.AllocateNow(b, deployment);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.4"));
  got = c.AllocateNow(b, member);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.6"));
  c.CheckInvariants();
}

// A dynamic pick takes a spare even when a lower address is free (a released one): a
// spare needs no write before the answer.
TEST(BlockEngineSparesTest, ADynamicPickPrefersASpareToALowerFreeAddress) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));  // .2; spares .3-.6
  ASSERT_TRUE(ReleaseAndTick(c, a, "p0"));         // .2 free, not a spare (there are 4)
  ASSERT_EQ(InApi(c, "10.0.0.2"), nullptr);
  const uint64_t writes = c.api.counters().creates + c.api.counters().updates;
  auto l = c.AllocateNow(a, c.Request("p1"));
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->v4, Ip("10.0.0.3"));
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes);
  c.CheckInvariants();
}

// Spares running low in a block with no room left: another own block with room gets
// them (one spares-only write); the records keep waiting to share a later write.
TEST(BlockEngineSparesTest, SparesRunningLowInAFullBlockAreToppedUpInAnotherOwnBlock) {
  ClusterHarness c(Spec("10.0.0.0/24"));  // /29 blocks: .0/29 holds .2-.7, .8/29 .8-.15
  Node& a = c.AddNode("node-a", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));                // .2; spares .3-.6
  ASSERT_TRUE(c.AllocateNow(a, c.Request("web", {"10.0.0.9"})));  // claims .8/29: no spares there
  ASSERT_EQ(Spares(c, "node-a"), (std::vector<std::string>{"10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p1")));  // .3
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p2")));  // .4
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p3")));  // .5: one left, its block tops up: .7
  ASSERT_EQ(Spares(c, "node-a"), (std::vector<std::string>{"10.0.0.6", "10.0.0.7"}));
  const uint64_t writes = c.api.counters().creates + c.api.counters().updates;
  auto p4 = c.AllocateNow(a, c.Request("p4"));  // .6: one left again, and .0/29 is full
  ASSERT_TRUE(p4) << p4.error().message;
  EXPECT_EQ(p4->v4, Ip("10.0.0.6"));
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes + 1);
  EXPECT_EQ(Spares(c, "node-a"),
            (std::vector<std::string>{"10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.10", "10.0.0.11"}))
      << "p4's record waits (.6 still a spare); .8/29 got three";
  TickAfter(c, a, 1'000);
  EXPECT_EQ(InApi(c, "10.0.0.6")->pod_name, "p4");
  c.CheckInvariants();
}

// This node's copy of another node's block is as old as its last read: an address it
// shows as that node's spare may have been handed out since (here to an IPAMClaim's
// VM). A change that lands there is judged on a fresh read, not refused from the copy:
// the migration target takes the claim's address over.
TEST(BlockEngineSparesTest, AnotherNodesSpareInAnOldCopyIsJudgedOnAFreshRead) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(4));
  Node& b = c.AddNode("node-b", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));  // .2; spares .3-.6
  auto asked = c.AllocateNow(b, c.Request("web", {"10.0.0.3"}));
  ASSERT_FALSE(asked);  // node-b's copy of the block now shows .3 as node-a's spare
  AllocateRequest vm = c.Request("launcher-1", {"10.0.0.3"});
  vm.ipam_claim = "default/vm-a.net";
  auto source = c.AllocateNow(a, vm);  // node-a's own spare, taken for the claim by a write
  ASSERT_TRUE(source) << source.error().message;
  ASSERT_FALSE(InApi(c, "10.0.0.3")->spare);
  AllocateRequest target = c.Request("launcher-2", {"10.0.0.3"});
  target.ipam_claim = "default/vm-a.net";
  auto got = c.AllocateNow(b, target);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.3"));
  EXPECT_EQ(InApi(c, "10.0.0.3")->pod_name, "launcher-2");
  EXPECT_EQ(InApi(c, "10.0.0.3")->node, "node-b");
}

// A node's own static request for one of its spares is answered from it like a dynamic
// one: the address is this node's already.
TEST(BlockEngineSparesTest, AnOwnSpareNamedByAStaticRequestIsHandedOutLikeAnyOther) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(4));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("a0")));
  const uint64_t writes = c.api.counters().creates + c.api.counters().updates;
  auto got = c.AllocateNow(a, c.Request("web", {"10.0.0.5"}));
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.5"));
  EXPECT_EQ(c.api.counters().creates + c.api.counters().updates, writes);
  TickAfter(c, a, 600);
  const BlockAllocation* held = InApi(c, "10.0.0.5");
  ASSERT_NE(held, nullptr);
  EXPECT_FALSE(held->spare);
  EXPECT_EQ(held->pod_name, "web");
  c.CheckInvariants();
}

// p1 is answered from a spare; the daemon dies before its record leaves and restarts
// with the leases of its store (the allocator holds what Restore would give it) and a
// new engine that has seen no block yet.
void HandOutASpareThenRestart(ClusterHarness& c, Node& a, std::optional<Lease>* l) {
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));
  auto handed = c.AllocateNow(a, c.Request("p1"));
  ASSERT_TRUE(handed);
  ASSERT_TRUE(InApi(c, handed->v4->ToString())->spare);
  *l = *handed;
  BlockEngine::Options o = WithSpares(8);
  o.node = a.name;
  a.engine = std::make_unique<BlockEngine>(&a.allocator, a.store.get(), &c.api, &a.clock, o);
  ASSERT_TRUE(a.engine->OnSubnetUpsert("net"));
}

// A spare handed out before a restart (its record not written yet) is recorded by the
// restarted engine's Tick: the lease is in the store, committed.
TEST(BlockEngineSparesTest, ASpareHandedOutBeforeARestartIsRecordedAfterIt) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(8));
  std::optional<Lease> l;
  ASSERT_NO_FATAL_FAILURE(HandOutASpareThenRestart(c, a, &l));
  for (const auto& [name, b] : c.api.objects()) a.engine->OnBlockUpsert(b);  // the informer's list
  // Another pod gets another spare, never p1's.
  auto other = c.AllocateNow(a, c.Request("p2"));
  ASSERT_TRUE(other) << other.error().message;
  EXPECT_NE(other->v4, l->v4);
  EXPECT_TRUE(InApi(c, l->v4->ToString())->spare);
  // A holder confirmation before the restarted engine recorded it (its Tick) finds the
  // spare handed to this very lease: it records it, it does not call it freed.
  std::optional<Result<void>> confirmed;
  a.engine->ConfirmHolder(l->key(), "uid-p1-new", "", [&](Result<void> r) { confirmed = std::move(r); });
  c.api.RunAll(kMaxSteps);
  ASSERT_TRUE(confirmed && *confirmed) << (confirmed ? confirmed->error().message : "no answer");
  EXPECT_TRUE(a.allocator.Find(l->key()).has_value()) << "the lease is kept";
  EXPECT_EQ(InApi(c, l->v4->ToString())->pod_uid, "uid-p1-new");
  TickAfter(c, a, 1'000);
  const BlockAllocation* held = InApi(c, l->v4->ToString());
  ASSERT_NE(held, nullptr);
  EXPECT_FALSE(held->spare);
  EXPECT_EQ(held->pod_name, "p1");
  c.CheckInvariants();
}

// The same, after a restart that resumed the block watch instead of listing: nothing
// delivers the block until it changes, so the engine reads each block that holds one of
// its committed leases — again at a later Tick when the API server is away at first.
TEST(BlockEngineSparesTest, ASpareHandedOutBeforeARestartThatResumedTheWatchIsRecorded) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(8));
  std::optional<Lease> l;
  ASSERT_NO_FATAL_FAILURE(HandOutASpareThenRestart(c, a, &l));
  c.api.FailNext(1);
  TickAfter(c, a, 1'000);  // the read fails
  ASSERT_TRUE(InApi(c, l->v4->ToString())->spare);
  TickAfter(c, a, 1'000);  // read again
  TickAfter(c, a, 1'000);
  const BlockAllocation* held = InApi(c, l->v4->ToString());
  ASSERT_NE(held, nullptr);
  EXPECT_FALSE(held->spare) << "recorded";
  EXPECT_EQ(held->pod_name, "p1");
  // Read once: later Ticks read nothing.
  const uint64_t gets = a.engine->stats().gets;
  for (int i = 0; i < 3; ++i) TickAfter(c, a, 1'000);
  EXPECT_EQ(a.engine->stats().gets, gets);
  c.CheckInvariants();
}

// After a rebuilt database, the node's spares are quarantined: not handed out, not
// given back, not counted (more are added beside them) — until the quarantine is lifted.
TEST(BlockEngineSparesTest, AQuarantinedSpareIsNeitherHandedOutNorGivenBackUntilLifted) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(2));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));  // .2; spares .3, .4
  ASSERT_EQ(Spares(c, "node-a"), (std::vector<std::string>{"10.0.0.3", "10.0.0.4"}));
  a.engine->QuarantineSpare("net", Ip("10.0.0.3"));
  a.engine->QuarantineSpare("net", Ip("10.0.0.4"));
  EXPECT_TRUE(a.allocator.ForeignHolder("net", Ip("10.0.0.3")).has_value());
  auto next = c.AllocateNow(a, c.Request("p1"));
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(next->v4, Ip("10.0.0.5")) << "a quarantined spare is never handed out";
  EXPECT_EQ(Spares(c, "node-a"),
            (std::vector<std::string>{"10.0.0.3", "10.0.0.4", "10.0.0.6", "10.0.0.7"}))
      << "kept in place, and two usable ones added";
  a.engine->LiftQuarantine();
  EXPECT_FALSE(a.allocator.ForeignHolder("net", Ip("10.0.0.3")).has_value());
  auto after = c.AllocateNow(a, c.Request("p2"));
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->v4, Ip("10.0.0.3"));
  c.CheckInvariants();
}

// A record that failed (the API server away) is sent again at a later tick, though the
// block's copy is no longer current and nothing else changes the block.
TEST(BlockEngineSparesTest, ARecordThatFailedIsSentAgainWithoutAnyOtherChange) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(8));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));  // .2; spares .3-.10
  auto l = c.AllocateNow(a, c.Request("p1"));
  ASSERT_TRUE(l) << l.error().message;
  ASSERT_EQ(l->v4, Ip("10.0.0.3"));
  c.api.FailNext(1);
  TickAfter(c, a, 600);  // the record leaves, and fails
  ASSERT_TRUE(InApi(c, "10.0.0.3")->spare) << "the record failed";
  for (int i = 0; i < 3; ++i) TickAfter(c, a, 1'000);
  const BlockAllocation* recorded = InApi(c, "10.0.0.3");
  ASSERT_NE(recorded, nullptr);
  EXPECT_FALSE(recorded->spare);
  EXPECT_EQ(recorded->pod_name, "p1");
  c.CheckInvariants();
}

// After a lost database, a quarantined spare that a pod's own written-back annotations
// name (allocated: "true" beside ip_address) is that pod's: handed to it and recorded.
// The same address asked for as a plain static one stays out of use.
TEST(BlockEngineSparesTest, AQuarantinedSpareGoesToThePodWhoseWrittenBackAnnotationsNameIt) {
  ClusterHarness c(Spec("10.0.0.0/24", "/27"));
  Node& a = c.AddNode("node-a", WithSpares(2));
  ASSERT_TRUE(c.AllocateNow(a, c.Request("p0")));  // .2; spares .3, .4
  a.engine->QuarantineSpare("net", Ip("10.0.0.3"));
  a.engine->QuarantineSpare("net", Ip("10.0.0.4"));
  ASSERT_FALSE(c.AllocateNow(a, c.Request("someone", {"10.0.0.4"}))) << "a plain static request";
  AllocateRequest held = c.Request("holder", {"10.0.0.4"});
  held.written_back = true;
  auto got = c.AllocateNow(a, held);
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got->v4, Ip("10.0.0.4"));
  EXPECT_EQ(a.engine->quarantined_spares(), 1u) << "only that one left the quarantine";
  TickAfter(c, a, 1'000);
  const BlockAllocation* recorded = InApi(c, "10.0.0.4");
  ASSERT_NE(recorded, nullptr);
  EXPECT_FALSE(recorded->spare);
  EXPECT_EQ(recorded->pod_name, "holder");
  EXPECT_TRUE(a.allocator.ForeignHolder("net", Ip("10.0.0.3")).has_value()) << ".3 stays out of use";
  c.CheckInvariants();
}

// Seeded random interleavings of several nodes allocating and releasing with spares
// on, in a subnet small enough to run out: never a duplicate, every lease in its block.
TEST(BlockEngineSparesTest, NodesWithSparesNeverHandOutADuplicate) {
  uint64_t total_taken = 0, total_returned = 0;
  int total_full = 0;
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    ClusterHarness c(Spec("10.0.0.0/27"));  // 4 blocks of 8
    std::vector<Node*> nodes;
    for (int n = 0; n < 4; ++n) {
      BlockEngine::Options o = WithSpares(3);
      o.seed = seed * 10 + n;
      nodes.push_back(&c.AddNode("node-" + std::to_string(n), o));
    }
    std::mt19937 rng(seed);
    std::map<std::string, Node*> live;
    std::map<Code, int> refused;
    for (int step = 0; step < 200; ++step) {
      Node* n = nodes[rng() % nodes.size()];
      if (live.size() > 0 && rng() % 3 == 0) {
        auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
        EXPECT_TRUE(ReleaseAndTick(c, *it->second, it->first));
        live.erase(it);
      } else {
        std::string pod = "p" + std::to_string(step);
        std::optional<Result<Lease>> got;
        n->engine->Allocate(c.Request(pod), [&got](Result<Lease> l) { got = std::move(l); });
        c.api.RunAll(kMaxSteps, &rng);
        ASSERT_TRUE(got.has_value());
        if (*got) {
          live[pod] = n;
        } else {
          ++refused[got->error().code];
        }
      }
      if (step % 7 == 0) {
        for (Node* t : nodes) TickAfter(c, *t, 1'000);
      }
    }
    for (Node* t : nodes) TickAfter(c, *t, 1'000);
    c.CheckInvariants();
    uint64_t taken = 0, returned = 0;
    for (Node* t : nodes) {
      taken += t->engine->stats().spares_taken;
      returned += t->engine->stats().spares_returned;
    }
    total_taken += taken;
    total_returned += returned;
    total_full += refused[Code::kExhausted];
    std::printf("[ seed %u ] %zu live, %llu spares taken, %llu given back, %d try-again, %d full\n", seed,
                live.size(), static_cast<unsigned long long>(taken),
                static_cast<unsigned long long>(returned), refused[Code::kUnavailable],
                refused[Code::kExhausted]);
  }
  // The runs went through the cases the test is for: spares handed out, the subnet full,
  // spares asked back and given back.
  EXPECT_GT(total_taken, 100u);
  EXPECT_GT(total_returned, 0u);
  EXPECT_GT(total_full, 0);
}

}  // namespace
}  // namespace sublease::spares_test
