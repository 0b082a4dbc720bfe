#include "daemon/store/rebuild.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/store/recovery.h"

namespace sublease {
namespace {

constexpr int64_t kRebuildT0 = 1700000000123;

SubnetSpec Spec(const std::string& name, const std::string& cidr) {
  return SubnetSpec{name, name + ".default", cidr, "", {}, "", ""};
}

BlockAllocation Alloc(const std::string& pod, const std::string& node,
                      const std::string& ifname = "net1") {
  BlockAllocation a;
  a.pod_namespace = "default";
  a.pod_name = pod;
  a.pod_uid = "uid-" + pod;
  a.ifname = ifname;
  a.node = node;
  a.provider = "";
  return a;
}

IpBlock Block(const std::string& subnet, const char* cidr, const std::string& node) {
  IpBlock b;
  b.subnet = subnet;
  b.cidr = *IpNet::Parse(cidr);
  b.name = BlockName(subnet, b.cidr);
  b.node = node;
  b.resource_version = "7";
  return b;
}

class RebuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = OpenOrRecover(":memory:", kRebuildT0);
    ASSERT_TRUE(opened);
    store_ = std::move(opened->store);
    ASSERT_TRUE(MarkRebuildPending(store_.get(), kRebuildT0));
  }
  std::vector<Lease> Live() {
    auto leases = store_->LoadLiveLeases();
    EXPECT_TRUE(leases) << leases.error().message;
    return leases ? *leases : std::vector<Lease>{};
  }
  std::unique_ptr<Store> store_;
};

// This node's spares are no leases, and any of them may have been handed to a pod whose
// record was lost with the database: they are recorded as quarantined. Another node's
// spares are not this node's concern.
TEST_F(RebuildTest, ThisNodesSparesBecomeNoLeaseAndAreQuarantined) {
  IpBlock own = Block("net", "10.0.0.8/29", "node-a");
  own.allocations[2] = Alloc("p1", "node-a");
  BlockAllocation spare;
  spare.node = "node-a";
  spare.spare = true;
  own.allocations[3] = spare;
  own.allocations[4] = spare;
  IpBlock theirs = Block("net", "10.0.0.16/29", "node-b");
  spare.node = "node-b";
  theirs.allocations[2] = spare;
  auto report =
      RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {own, theirs}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 1u);
  EXPECT_EQ(report->quarantined, 2u);
  ASSERT_EQ(Live().size(), 1u);
  auto quarantined = store_->GetSyncState(std::string(kQuarantinedSparesKey));
  ASSERT_TRUE(quarantined && *quarantined);
  EXPECT_EQ(**quarantined, "net 10.0.0.11\nnet 10.0.0.12\n");
  auto pods = store_->GetSyncState(std::string(kQuarantinePodsKey));
  ASSERT_TRUE(pods && *pods);
  EXPECT_EQ(**pods, "") << "the pods are noted by the node once it has seen them";
}

TEST_F(RebuildTest, ThisNodesAllocationsInOwnAndBorrowedBlocksBecomeCommittedLeases) {
  IpBlock own = Block("net", "10.0.0.8/29", "node-a");
  own.allocations[2] = Alloc("p1", "node-a");
  own.allocations[3] = Alloc("q1", "node-b");  // borrowed by node-b: not ours
  IpBlock theirs = Block("net", "10.0.0.16/29", "node-b");
  theirs.allocations[1] = Alloc("p2", "node-a");  // we borrowed it
  theirs.allocations[4] = Alloc("q2", "node-b");
  theirs.allocations[4].sticky = true;
  auto report =
      RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {own, theirs}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 2u);
  EXPECT_EQ(report->blocks, 2u);
  EXPECT_TRUE(report->warnings.empty());
  auto live = Live();
  ASSERT_EQ(live.size(), 2u);
  // Ordered by owner.
  EXPECT_EQ(live[0].owner.pod_name, "p1");
  EXPECT_EQ(live[0].v4->ToString(), "10.0.0.10");
  EXPECT_EQ(live[0].state, LeaseState::kCommitted);
  EXPECT_EQ(live[0].owner.pod_uid, "uid-p1");
  EXPECT_EQ(live[0].provider, "net.default") << "the Subnet's provider when the block names none";
  EXPECT_EQ(live[1].owner.pod_name, "p2");
  EXPECT_EQ(live[1].v4->ToString(), "10.0.0.17");
  EXPECT_FALSE(*RebuildPending(store_.get())) << "the mark is cleared with the leases";
}

TEST_F(RebuildTest, ADualStackAttachmentBecomesOneLeaseWithBothFamilies) {
  IpBlock v4 = Block("dual", "10.1.0.0/29", "node-a");
  v4.allocations[5] = Alloc("web-0", "node-a");
  v4.allocations[5].sticky = true;
  IpBlock v6 = Block("dual", "fd00::/125", "node-a");
  v6.allocations[6] = Alloc("web-0", "node-a");
  v6.allocations[6].sticky = true;
  auto report = RebuildFromBlocks(store_.get(), "node-a", {Spec("dual", "10.1.0.0/24,fd00::/120")},
                                  {v4, v6}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 1u);
  auto live = Live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].v4->ToString(), "10.1.0.5");
  EXPECT_EQ(live[0].v6->ToString(), "fd00::6");
  EXPECT_TRUE(live[0].sticky);
}

TEST_F(RebuildTest, AllocationsOfAnAbsentSubnetAreLeftOutWithAWarning) {
  IpBlock b = Block("gone", "10.2.0.0/29", "node-a");
  b.allocations[2] = Alloc("p", "node-a");
  auto report = RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {b}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 0u);
  ASSERT_EQ(report->warnings.size(), 1u);
  EXPECT_NE(report->warnings[0].find("10.2.0.2"), std::string::npos) << report->warnings[0];
  EXPECT_TRUE(Live().empty());
  EXPECT_FALSE(*RebuildPending(store_.get()));
}

TEST_F(RebuildTest, ASecondAllocationOfOneAttachmentAndFamilyIsLeftOut) {
  // An ambiguous write that landed twice: one attachment, two addresses of one family.
  IpBlock b = Block("net", "10.0.0.8/29", "node-a");
  b.allocations[2] = Alloc("p", "node-a");
  b.allocations[3] = Alloc("p", "node-a");
  auto report = RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {b}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 1u);
  ASSERT_EQ(report->warnings.size(), 1u);
  EXPECT_NE(report->warnings[0].find("10.0.0.11"), std::string::npos) << report->warnings[0];
  auto live = Live();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].v4->ToString(), "10.0.0.10");
}

TEST_F(RebuildTest, AnAddressAlreadyLeasedLocallyIsReportedNotDuplicated) {
  auto subnet = NormalizeSubnet(Spec("net", "10.0.0.0/24"));
  ASSERT_TRUE(store_->UpsertSubnet(*subnet, kRebuildT0));
  Lease held;
  held.subnet = "net";
  held.owner = Owner{"default", "other", "u", "", "net1"};
  held.v4 = *IpAddr::Parse("10.0.0.10");
  held.state = LeaseState::kCommitted;
  ASSERT_TRUE(store_->InsertLease(held, kRebuildT0));
  IpBlock b = Block("net", "10.0.0.8/29", "node-a");
  b.allocations[2] = Alloc("p", "node-a");  // 10.0.0.10 again
  b.allocations[4] = Alloc("r", "node-a");
  auto report = RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {b}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 1u);
  ASSERT_EQ(report->warnings.size(), 1u);
  EXPECT_NE(report->warnings[0].find("held by"), std::string::npos) << report->warnings[0];
  EXPECT_EQ(Live().size(), 2u);
}

TEST_F(RebuildTest, NothingOfThisNodeRebuildsNothingAndClearsTheMark) {
  IpBlock b = Block("net", "10.0.0.8/29", "node-b");
  b.allocations[2] = Alloc("p", "node-b");
  auto report = RebuildFromBlocks(store_.get(), "node-a", {Spec("net", "10.0.0.0/24")}, {b}, kRebuildT0);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->leases, 0u);
  EXPECT_TRUE(Live().empty());
  EXPECT_FALSE(*RebuildPending(store_.get()));
}

}  // namespace
}  // namespace sublease
