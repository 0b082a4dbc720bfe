#include "daemon/allocator/ippool.h"

#include <gtest/gtest.h>

#include "daemon/allocator/allocator.h"
#include "daemon/allocator/test_util.h"

namespace sublease {
namespace {

using test_util::Ip;

Subnet MakeSubnet(const std::string& name, const std::string& cidr,
                  std::vector<std::string> exclude = {}) {
  auto s =
      NormalizeSubnet(SubnetSpec{name, name + ".default", cidr, "", std::move(exclude), "", ""});
  EXPECT_TRUE(s) << s.error().message;
  return *s;
}

TEST(IpPoolTest, ParsesAddressesCidrsAndRangesOfBothFamilies) {
  auto p = ParsePoolIps({"10.0.0.5", " 10.0.0.8..10.0.0.10 ", "10.0.1.0/30", "fd00::5",
                         "fd00::10..fd00::11", "fd00::100/126"});
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->v4.ToString(), "10.0.0.5,10.0.0.8-10.0.0.10,10.0.1.0-10.0.1.3");
  EXPECT_EQ(p->v6.ToString(), "fd00::5,fd00::10-fd00::11,fd00::100-fd00::103");
}

TEST(IpPoolTest, BadItemsAreNamed) {
  struct Case {
    std::string item, text;
  } cases[] = {
      {"10.0.0.300", "\"10.0.0.300\" is not an IP address, a CIDR or a..b range"},
      {"10.0.0.9..10.0.0.5", "range end is before its start"},
      {"10.0.0.1..fd00::1", "different families"},
      {"10.0.0.0/33", "is not a CIDR"},
      {"a..10.0.0.1", "range start is not an IP address"},
      {"", "is empty"},
  };
  for (const auto& c : cases) {
    auto p = ParsePoolIps({"10.0.0.1", c.item});
    ASSERT_FALSE(p) << c.item;
    EXPECT_EQ(p.error().code, Code::kInvalidArgument);
    EXPECT_NE(p.error().message.find(c.text), std::string::npos) << p.error().message;
  }
}

TEST(IpPoolTest, PoolNameIsOneTokenThatIsNotAnAddress) {
  EXPECT_TRUE(IsPoolName("my-pool"));
  EXPECT_TRUE(IsPoolName(" pool1 "));
  EXPECT_FALSE(IsPoolName("10.0.0.5"));
  EXPECT_FALSE(IsPoolName("fd00::5"));
  EXPECT_FALSE(IsPoolName("10.0.0.5,10.0.0.6"));
  EXPECT_FALSE(IsPoolName("a;b"));
  EXPECT_FALSE(IsPoolName(""));
}

TEST(IpPoolTest, UsableIsIpsInsideTheSubnetWithoutExcludedGatewayAndBroadcast) {
  Subnet s = MakeSubnet("net", "10.0.0.0/24", {"10.0.0.20..10.0.0.21"});
  auto r = ResolvePools({{"p",
                          "net",
                          {"10.0.0.0..10.0.0.2", "10.0.0.20..10.0.0.22", "10.0.0.255", "10.9.0.1"},
                          {},
                          "t1"}},
                        {{"net", &s}});
  ASSERT_TRUE(r.at("p").ready) << r.at("p").message;
  EXPECT_EQ(r.at("p").usable.v4.ToString(),
            "10.0.0.2,10.0.0.22");  // .0 network, .1 gateway, .255 last
  EXPECT_EQ(r.at("p").reason, "UpdateIPAMSucceeded");
}

TEST(IpPoolTest, TheLaterOfTwoOverlappingPoolsIsNotReadyAndTheMessageNamesBoth) {
  Subnet s = MakeSubnet("net", "10.0.0.0/24");
  Subnet other = MakeSubnet("other", "10.1.0.0/24");
  auto r =
      ResolvePools({{"zeta", "net", {"10.0.0.10..10.0.0.20"}, {}, "2026-01-01T00:00:00Z"},
                    {"alpha", "net", {"10.0.0.20..10.0.0.30"}, {}, "2026-01-02T00:00:00Z"},
                    {"beta", "net", {"10.0.0.40"}, {}, "2026-01-02T00:00:00Z"},
                    {"elsewhere", "other", {"10.1.0.10..10.1.0.20"}, {}, "2026-01-03T00:00:00Z"}},
                   {{"net", &s}, {"other", &other}});
  EXPECT_TRUE(r.at("zeta").ready);
  EXPECT_TRUE(r.at("beta").ready);
  EXPECT_TRUE(r.at("elsewhere").ready);  // the same numbers in another subnet do not count
  ASSERT_FALSE(r.at("alpha").ready);
  EXPECT_EQ(r.at("alpha").reason, "UpdateIPAMFailed");
  EXPECT_NE(r.at("alpha").message.find("IPPool alpha has conflict IPs with IPPool zeta (10.0.0.20"),
            std::string::npos)
      << r.at("alpha").message;
  EXPECT_TRUE(r.at("alpha").usable.v4.empty());
}

TEST(IpPoolTest, SameCreationTimeFallsBackToTheName) {
  Subnet s = MakeSubnet("net", "10.0.0.0/24");
  auto r = ResolvePools({{"b", "net", {"10.0.0.5"}, {}, "t"}, {"a", "net", {"10.0.0.5"}, {}, "t"}},
                        {{"net", &s}});
  EXPECT_TRUE(r.at("a").ready);
  EXPECT_FALSE(r.at("b").ready);
}

TEST(IpPoolTest, MissingSubnetOrBadIpsIsNotReady) {
  Subnet s = MakeSubnet("net", "10.0.0.0/24");
  auto r = ResolvePools(
      {{"nosubnet", "gone", {"10.0.0.5"}, {}, "t"}, {"bad", "net", {"10.0.0.x"}, {}, "t"}},
      {{"net", &s}});
  EXPECT_FALSE(r.at("nosubnet").ready);
  EXPECT_NE(r.at("nosubnet").message.find("Subnet gone does not exist"), std::string::npos);
  EXPECT_FALSE(r.at("bad").ready);
  EXPECT_NE(r.at("bad").message.find("\"10.0.0.x\""), std::string::npos);
}

class NamedPoolAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    subnet_ = MakeSubnet("net", "10.0.0.0/24,fd00::/120");
    ASSERT_TRUE(alloc_.UpsertSubnet(subnet_));
  }
  void SetPool(const std::string& name, std::vector<std::string> ips) {
    specs_.push_back({name, "net", std::move(ips), {}, "t" + std::to_string(specs_.size())});
    Apply();
  }
  void Apply() {
    std::map<std::string, PoolAddresses> ready;
    for (auto& [name, p] : ResolvePools(specs_, {{"net", &subnet_}})) {
      if (p.ready) ready[name] = p.usable;
    }
    ASSERT_TRUE(alloc_.SetNamedPools("net", ready));
  }
  static AllocateRequest Req(const std::string& pod, const std::string& pool = "",
                             std::optional<Family> family = std::nullopt) {
    AllocateRequest r;
    r.subnet = "net";
    r.owner = Owner{"default", pod, "uid-" + pod, "c-" + pod, "net1"};
    r.named_pool = pool;
    r.family = family;
    return r;
  }
  std::string Addrs(const AllocateRequest& r) {
    auto l = alloc_.Allocate(r);
    if (!l) return "error: " + l.error().message;
    std::string out;
    for (const IpAddr& a : l->addresses()) out += (out.empty() ? "" : ",") + a.ToString();
    return out;
  }
  Subnet subnet_;
  std::vector<IpPoolSpec> specs_;
  Allocator alloc_;
};

TEST_F(NamedPoolAllocatorTest, PoolGivesItsLowestFreeAddressAndDynamicNeverDoes) {
  SetPool("p", {"10.0.0.2..10.0.0.4", "fd00::2"});
  EXPECT_EQ(Addrs(Req("a", "p")), "10.0.0.2,fd00::2");
  EXPECT_EQ(Addrs(Req("b", "p", Family::kV4)), "10.0.0.3");
  // Dynamic picks skip the pool's addresses.
  EXPECT_EQ(Addrs(Req("dyn1")), "10.0.0.5,fd00::3");
  EXPECT_EQ(Addrs(Req("c", "p", Family::kV4)), "10.0.0.4");
  EXPECT_EQ(alloc_.Allocate(Req("d", "p", Family::kV4)).error().code, Code::kExhausted);
  // Released pool addresses go back to the pool, not to dynamic allocation.
  ASSERT_TRUE(alloc_.Release(AttachmentKey::For("net", Req("b").owner)));
  EXPECT_EQ(Addrs(Req("dyn2", "", Family::kV4)), "10.0.0.6");
  EXPECT_EQ(Addrs(Req("e", "p", Family::kV4)), "10.0.0.3");
}

TEST_F(NamedPoolAllocatorTest, FamilyTheRequestNamesMustBeInThePool) {
  SetPool("v4only", {"10.0.0.10"});
  auto l = alloc_.Allocate(Req("a", "v4only", Family::kV6));
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, Code::kInvalidArgument);
  EXPECT_NE(l.error().message.find("has no IPv6 address"), std::string::npos) << l.error().message;
  // Without ip_family, the missing family is dynamic.
  EXPECT_EQ(Addrs(Req("b", "v4only")), "10.0.0.10,fd00::2");
}

TEST_F(NamedPoolAllocatorTest, DeletingAPoolReturnsItsAddressesToDynamicAllocation) {
  SetPool("p", {"10.0.0.2..10.0.0.3"});
  EXPECT_EQ(Addrs(Req("held", "p", Family::kV4)), "10.0.0.2");
  EXPECT_EQ(Addrs(Req("d1", "", Family::kV4)), "10.0.0.4");
  specs_.clear();
  Apply();
  EXPECT_FALSE(alloc_.HasNamedPool("net", "p"));
  // The held address stays held; .3 is dynamic again.
  EXPECT_EQ(Addrs(Req("d2", "", Family::kV4)), "10.0.0.3");
  EXPECT_TRUE(alloc_.Find(AttachmentKey::For("net", Req("held").owner)));
  EXPECT_EQ(alloc_.Allocate(Req("x", "p")).error().code, Code::kNotFound);
}

TEST_F(NamedPoolAllocatorTest, EditingIpsWhileInUseKeepsLeases) {
  SetPool("p", {"10.0.0.2..10.0.0.3"});
  EXPECT_EQ(Addrs(Req("a", "p", Family::kV4)), "10.0.0.2");
  specs_[0].ips = {"10.0.0.50..10.0.0.51"};
  Apply();
  EXPECT_EQ(Addrs(Req("b", "p", Family::kV4)), "10.0.0.50");
  EXPECT_TRUE(alloc_.NamedPoolContains("net", "p", Ip("10.0.0.51")));
  EXPECT_FALSE(alloc_.NamedPoolContains("net", "p", Ip("10.0.0.2")));
  EXPECT_EQ(Addrs(Req("d", "", Family::kV4)), "10.0.0.3");  // .2 is still a's
  // The edited-out address, once released, is dynamic.
  ASSERT_TRUE(alloc_.Release(AttachmentKey::For("net", Req("a").owner)));
  EXPECT_EQ(Addrs(Req("e", "", Family::kV4)), "10.0.0.2");
}

TEST_F(NamedPoolAllocatorTest, ForeignHoldsInThePoolAreSkippedAndUsageCountsPoolAddresses) {
  SetPool("p", {"10.0.0.2..10.0.0.4"});
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.2"), "pod x on node n"));
  EXPECT_EQ(Addrs(Req("a", "p", Family::kV4)), "10.0.0.3");
  ASSERT_TRUE(alloc_.UnmarkForeign("net", Ip("10.0.0.2")));
  EXPECT_EQ(Addrs(Req("b", "p", Family::kV4)), "10.0.0.2");
  auto u = alloc_.Usage("net");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->v4_using, 2u);
  EXPECT_EQ(u->v4_available, 251u);  // .2-.254 (the gateway .1 never) minus the two held
}

TEST_F(NamedPoolAllocatorTest, ClusterModeDynamicPicksInLocalBlocksSkipThePool) {
  ASSERT_TRUE(alloc_.SetClusterMode("net", true));
  ASSERT_TRUE(alloc_.SetBlockLocal("net", *IpNet::Parse("10.0.0.0/29"), true));
  ASSERT_TRUE(alloc_.SetBlockLocal("net", *IpNet::Parse("fd00::/125"), true));
  SetPool("p", {"10.0.0.2..10.0.0.6", "10.0.0.20"});
  EXPECT_EQ(Addrs(Req("d", "", Family::kV4)), "10.0.0.7");
  EXPECT_FALSE(alloc_.HasDynamicFree("net", Family::kV4));
  // A pool address outside this node's blocks is still the pool's to give.
  for (int i = 0; i < 5; ++i)
    ASSERT_NE(Addrs(Req("p" + std::to_string(i), "p", Family::kV4)).substr(0, 5), "error");
  EXPECT_EQ(Addrs(Req("p5", "p", Family::kV4)), "10.0.0.20");
}

}  // namespace
}  // namespace sublease
