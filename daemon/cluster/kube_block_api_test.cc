// KubeBlockApi against the project's fake API server (tests/fakeapi/fake_apiserver.py,
// docs/fake-apiserver.md): the BlockApi contract's codes as a kube-apiserver answers
// them (404, 409 AlreadyExists, 409 Conflict on a stale version or a failed
// precondition) and the label selector of ListSubnet. Every wait is bounded.
#include "daemon/cluster/kube_block_api.h"

#include <gtest/gtest.h>

#include <optional>

#include "daemon/leader/leader_test_support.h"

namespace sublease {
namespace {

class KubeBlockApiTest : public testing::FakeApiTest {
 protected:
  void SetUp() override {
    FakeApiTest::SetUp();
    api_ = std::make_unique<KubeBlockApi>(client_.get());
  }

  static IpBlock NewBlock(const std::string& subnet, const char* cidr, const std::string& node) {
    IpBlock b;
    b.subnet = subnet;
    b.cidr = *IpNet::Parse(cidr);
    b.name = BlockName(subnet, b.cidr);
    b.node = node;
    b.allocations[3] = BlockAllocation{"default", "p", "u", "net1", "", node, "m.default", true, "sts", "", ""};
    return b;
  }

  Result<std::optional<IpBlock>> Get(const std::string& name) {
    std::optional<Result<std::optional<IpBlock>>> got;
    api_->Get(name, [&](Result<std::optional<IpBlock>> r) { got = std::move(r); });
    EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000));
    return got ? *got : Fail(Error::Internal("no answer"));
  }
  Result<IpBlock> Create(const IpBlock& b) {
    std::optional<Result<IpBlock>> got;
    api_->Create(b, [&](Result<IpBlock> r) { got = std::move(r); });
    EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000));
    return got ? *got : Fail(Error::Internal("no answer"));
  }
  Result<IpBlock> Update(const IpBlock& b) {
    std::optional<Result<IpBlock>> got;
    api_->Update(b, [&](Result<IpBlock> r) { got = std::move(r); });
    EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000));
    return got ? *got : Fail(Error::Internal("no answer"));
  }
  Result<void> Delete(const std::string& name, const std::string& rv) {
    std::optional<Result<void>> got;
    api_->Delete(name, rv, [&](Result<void> r) { got = std::move(r); });
    EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000));
    return got ? *got : Fail(Error::Internal("no answer"));
  }
  Result<std::vector<IpBlock>> List(const std::string& subnet) {
    std::optional<Result<std::vector<IpBlock>>> got;
    api_->ListSubnet(subnet, [&](Result<std::vector<IpBlock>> r) { got = std::move(r); });
    EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000));
    return got ? *got : Fail(Error::Internal("no answer"));
  }

  std::unique_ptr<KubeBlockApi> api_;
};

TEST_F(KubeBlockApiTest, GetOfAMissingBlockIsNullopt) {
  auto got = Get(BlockName("a", *IpNet::Parse("10.0.0.0/29")));
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(got->has_value());
}

TEST_F(KubeBlockApiTest, CreateReturnsTheStoredBlockAndATakenNameIsAConflict) {
  IpBlock b = NewBlock("a", "10.0.0.8/29", "node-a");
  auto created = Create(b);
  ASSERT_TRUE(created) << created.error().message;
  EXPECT_FALSE(created->resource_version.empty());
  EXPECT_EQ(created->allocations, b.allocations);
  auto got = Get(b.name);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->allocations.at(3).owner_uid, "sts");
  auto again = Create(NewBlock("a", "10.0.0.8/29", "node-b"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Code::kConflict) << again.error().message;
}

TEST_F(KubeBlockApiTest, AStaleUpdateIsAConflictAndAnUpdateOfAGoneBlockIsNotFound) {
  auto created = Create(NewBlock("a", "10.0.0.16/29", "node-a"));
  ASSERT_TRUE(created) << created.error().message;
  IpBlock next = *created;
  next.allocations.erase(3);
  auto updated = Update(next);
  ASSERT_TRUE(updated) << updated.error().message;
  EXPECT_NE(updated->resource_version, created->resource_version);
  EXPECT_TRUE(updated->allocations.empty());
  IpBlock stale = *created;  // still carries the first resourceVersion
  stale.allocations[4] = stale.allocations.at(3);
  auto lost = Update(stale);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, Code::kConflict) << lost.error().message;
  ASSERT_TRUE(Delete(next.name, updated->resource_version));
  auto gone = Update(*updated);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Code::kNotFound) << gone.error().message;
}

TEST_F(KubeBlockApiTest, DeleteWithAStaleVersionIsAConflictAndLeavesTheBlock) {
  auto created = Create(NewBlock("a", "10.0.0.24/29", "node-a"));
  ASSERT_TRUE(created) << created.error().message;
  IpBlock next = *created;
  next.allocations.clear();
  auto updated = Update(next);
  ASSERT_TRUE(updated) << updated.error().message;
  auto stale = Delete(created->name, created->resource_version);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, Code::kConflict) << stale.error().message;
  ASSERT_TRUE(Get(created->name)->has_value());
  ASSERT_TRUE(Delete(created->name, updated->resource_version));
  EXPECT_FALSE(Get(created->name)->has_value());
  auto twice = Delete(created->name, updated->resource_version);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, Code::kNotFound);
}

TEST_F(KubeBlockApiTest, ListSubnetReturnsOnlyThatSubnetsBlocks) {
  ASSERT_TRUE(Create(NewBlock("a", "10.0.0.32/29", "node-a")));
  ASSERT_TRUE(Create(NewBlock("a", "10.0.0.40/29", "node-b")));
  ASSERT_TRUE(Create(NewBlock("b", "10.1.0.0/29", "node-a")));
  auto a = List("a");
  ASSERT_TRUE(a) << a.error().message;
  std::set<std::string> names;
  for (const IpBlock& b : *a) names.insert(b.name);
  EXPECT_EQ(names, (std::set<std::string>{BlockName("a", *IpNet::Parse("10.0.0.32/29")),
                                          BlockName("a", *IpNet::Parse("10.0.0.40/29"))}));
  auto none = List("c");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace sublease
