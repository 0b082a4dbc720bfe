#include "daemon/cluster/fake_block_api.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

IpBlock Block(const std::string& node) {
  IpBlock b;
  b.subnet = "net";
  b.cidr = *IpNet::Parse("10.0.0.0/29");
  b.name = BlockName(b.subnet, b.cidr);
  b.node = node;
  return b;
}

TEST(FakeBlockApiTest, CallsCompleteOnlyWhenTheTestRunsTheirSteps) {
  FakeBlockApi api;
  bool done = false;
  api.Create(Block("a"), [&](Result<IpBlock> r) { done = r.has_value(); });
  EXPECT_FALSE(done);
  EXPECT_TRUE(api.objects().empty());
  ASSERT_TRUE(api.RunNext());  // arrives: applied, not answered
  EXPECT_EQ(api.objects().size(), 1u);
  EXPECT_FALSE(done);
  ASSERT_TRUE(api.RunNext());
  EXPECT_TRUE(done);
  EXPECT_FALSE(api.RunNext());
}

TEST(FakeBlockApiTest, CreateOfAnExistingNameIsAConflict) {
  FakeBlockApi api;
  api.Put(Block("a"));
  std::optional<Result<IpBlock>> r;
  api.Create(Block("b"), [&](Result<IpBlock> x) { r = std::move(x); });
  api.RunAll(100);
  ASSERT_TRUE(r && !*r);
  EXPECT_EQ(r->error().code, Code::kConflict);
  EXPECT_EQ(api.objects().begin()->second.node, "a");
  EXPECT_EQ(api.counters().conflicts, 1u);
}

TEST(FakeBlockApiTest, UpdateAndDeleteWithAStaleVersionAreConflicts) {
  FakeBlockApi api;
  IpBlock v1 = api.Put(Block("a"));
  IpBlock v2 = v1;
  v2.allocations[3].pod_name = "x";
  std::optional<Result<IpBlock>> up;
  api.Update(v2, [&](Result<IpBlock> x) { up = std::move(x); });
  api.RunAll(100);
  ASSERT_TRUE(up && *up);
  EXPECT_NE((*up)->resource_version, v1.resource_version);
  std::optional<Result<IpBlock>> stale;
  api.Update(v1, [&](Result<IpBlock> x) { stale = std::move(x); });
  std::optional<Result<void>> del;
  api.Delete(v1.name, v1.resource_version, [&](Result<void> x) { del = std::move(x); });
  api.RunAll(100);
  EXPECT_EQ(stale->error().code, Code::kConflict);
  EXPECT_EQ(del->error().code, Code::kConflict);
  EXPECT_EQ(api.objects().begin()->second.allocations.at(3).pod_name, "x");
  std::optional<Result<void>> gone;
  api.Delete(v1.name, (*up)->resource_version, [&](Result<void> x) { gone = std::move(x); });
  api.RunAll(100);
  EXPECT_TRUE(gone && *gone);
  EXPECT_TRUE(api.objects().empty());
}

TEST(FakeBlockApiTest, InjectedFailuresAreUnavailableAndAppliedOnesLandAnyway) {
  FakeBlockApi api;
  api.FailNext(1);
  std::optional<Result<IpBlock>> r1, r2;
  api.Create(Block("a"), [&](Result<IpBlock> x) { r1 = std::move(x); });
  api.RunAll(100);
  EXPECT_EQ(r1->error().code, Code::kUnavailable);
  EXPECT_TRUE(api.objects().empty());
  api.FailNextAfterApply(1);
  api.Create(Block("a"), [&](Result<IpBlock> x) { r2 = std::move(x); });
  api.RunAll(100);
  EXPECT_EQ(r2->error().code, Code::kUnavailable);
  EXPECT_EQ(api.objects().size(), 1u);
  EXPECT_EQ(api.counters().unavailable, 2u);
  EXPECT_EQ(api.counters().creates, 2u);
}

TEST(FakeBlockApiTest, WatchesDeliverTheirNodesChangesInOrder) {
  FakeBlockApi api;
  std::vector<std::string> seen;
  api.Watch(
      "a", [&](const IpBlock& b) { seen.push_back("up " + b.resource_version); },
      [&](const std::string& n, const std::string&) { seen.push_back("del " + n); });
  IpBlock v1 = api.Put(Block("a"));
  IpBlock v2 = api.Put(v1);
  api.Put([] {
    IpBlock b = Block("b");
    b.name = "other";
    return b;
  }());
  std::optional<Result<void>> del;
  api.Delete(v2.name, v2.resource_version, [&](Result<void> x) { del = std::move(x); });
  std::mt19937 rng(7);
  api.RunAll(100, &rng);
  EXPECT_EQ(seen, (std::vector<std::string>{"up " + v1.resource_version,
                                            "up " + v2.resource_version, "del " + v1.name}));
}

TEST(FakeBlockApiTest, ListReturnsOneSubnetsBlocks) {
  FakeBlockApi api;
  api.Put(Block("a"));
  IpBlock other = Block("b");
  other.subnet = "other";
  other.name = "other.x";
  api.Put(other);
  std::optional<Result<std::vector<IpBlock>>> r;
  api.ListSubnet("net", [&](Result<std::vector<IpBlock>> x) { r = std::move(x); });
  api.RunAll(100);
  ASSERT_TRUE(r && *r);
  ASSERT_EQ((*r)->size(), 1u);
  EXPECT_EQ((*r)->front().node, "a");
  EXPECT_EQ(api.counters().lists, 1u);
}

}  // namespace
}  // namespace sublease
