// SubnetStatus: Kube-OVN's usage numbers and ranges, validation verdicts and the
// no-op-write comparison, as pure functions.
#include "daemon/leader/subnet_status.h"

#include <gtest/gtest.h>

#include "daemon/leader/ippool_status.h"

namespace sublease {
namespace {

SubnetSpec Spec(std::string name, std::string provider, std::string cidr, std::string gateway = "",
                std::vector<std::string> exclude = {}, std::string protocol = "") {
  return SubnetSpec{std::move(name), std::move(provider), std::move(cidr), std::move(gateway),
                    std::move(exclude), std::move(protocol), ""};
}

std::vector<IpAddr> Addrs(std::initializer_list<const char*> texts) {
  std::vector<IpAddr> out;
  for (const char* t : texts) out.push_back(*IpAddr::Parse(t));
  return out;
}

TEST(SubnetStatusTest, UsageCountsAllocatedAndFreeRangesLikeKubeOvn) {
  auto subnet = NormalizeSubnet(Spec("s", "m.default", "10.0.0.0/24", "", {"10.0.0.2..10.0.0.9"}));
  ASSERT_TRUE(subnet);
  FamilyUsage u = ComputeFamilyUsage(*subnet->v4, Addrs({"10.0.0.10", "10.0.0.11", "10.0.0.20"}));
  EXPECT_EQ(u.using_ips, 3u);
  EXPECT_EQ(u.using_range, "10.0.0.10-10.0.0.11,10.0.0.20");
  // 254 hosts - gateway .1 - 8 excluded - 3 using.
  EXPECT_EQ(u.available_ips, 242u);
  EXPECT_EQ(u.available_range, "10.0.0.12-10.0.0.19,10.0.0.21-10.0.0.254");
}

TEST(SubnetStatusTest, StaticAddressInsideExcludeIpsIsUsingButNotSubtractedTwice) {
  auto subnet = NormalizeSubnet(Spec("s", "m.default", "10.0.0.0/24", "", {"10.0.0.2..10.0.0.9"}));
  ASSERT_TRUE(subnet);
  FamilyUsage u = ComputeFamilyUsage(*subnet->v4, Addrs({"10.0.0.5"}));
  EXPECT_EQ(u.using_ips, 1u);
  EXPECT_EQ(u.available_ips, 245u);
}

TEST(SubnetStatusTest, DualStackCountsEachFamilyAndIgnoresAddressesOutsideTheCidr) {
  auto subnet = NormalizeSubnet(Spec("s", "m.default", "10.0.0.0/30,fd00::/126"));
  ASSERT_TRUE(subnet);
  auto allocated = Addrs({"10.0.0.2", "fd00::2", "192.168.1.1"});
  FamilyUsage v4 = ComputeFamilyUsage(*subnet->v4, allocated);
  FamilyUsage v6 = ComputeFamilyUsage(*subnet->v6, allocated);
  EXPECT_EQ(v4.using_ips, 1u);
  EXPECT_EQ(v4.available_ips, 0u);  // .1 gateway, .2 used
  EXPECT_EQ(v6.using_range, "fd00::2");
  EXPECT_EQ(v6.available_ips, 0u);
}

TEST(SubnetStatusTest, InvalidSubnetsAreNamedWithTheirProblem) {
  struct Case {
    SubnetSpec spec;
    std::string reason;
    std::string mentions;
  } cases[] = {
      {Spec("a", "m.default", "10.0.0.0/33"), "InvalidCIDR", "10.0.0.0/33"},
      {Spec("b", "m.default", "10.0.0.0/24", "10.0.1.1"), "InvalidGateway", "10.0.1.1"},
      {Spec("c", "m.default", "10.0.0.0/24", "", {"10.0.0.5..bogus"}), "InvalidExcludeIps",
       "10.0.0.5..bogus"},
      {Spec("d", "m.default", "10.0.0.0/24", "", {}, "IPv6"), "InvalidProtocol", "IPv6"},
  };
  for (const Case& c : cases) {
    SubnetVerdict v = ValidateSubnet(c.spec, {});
    EXPECT_FALSE(v.valid) << c.spec.name;
    EXPECT_EQ(v.reason, c.reason) << c.spec.name << ": " << v.message;
    EXPECT_NE(v.message.find(c.mentions), std::string::npos) << v.message;
    EXPECT_NE(v.message.find("allocates nothing"), std::string::npos) << v.message;
  }
}

TEST(SubnetStatusTest, OverlappingSubnetsOfOneProviderNameEachOther) {
  SubnetSpec a = Spec("a", "m.default", "10.0.0.0/24");
  SubnetSpec b = Spec("b", "m.default", "10.0.0.128/25");
  SubnetVerdict va = ValidateSubnet(a, {a, b});
  SubnetVerdict vb = ValidateSubnet(b, {a, b});
  EXPECT_FALSE(va.valid);
  EXPECT_EQ(va.reason, "CIDROverlap");
  EXPECT_NE(va.message.find("Subnet b"), std::string::npos) << va.message;
  EXPECT_FALSE(vb.valid);
  EXPECT_NE(vb.message.find("Subnet a"), std::string::npos) << vb.message;
}

TEST(SubnetStatusTest, SameProviderWithoutOverlapIsADuplicateProvider) {
  SubnetSpec a = Spec("a", "m.default", "10.0.0.0/24");
  SubnetSpec b = Spec("b", "m.default", "10.1.0.0/24");
  EXPECT_EQ(ValidateSubnet(a, {b}).reason, "DuplicateProvider");
}

TEST(SubnetStatusTest, OtherProvidersAndInvalidSubnetsDoNotConflict) {
  SubnetSpec a = Spec("a", "m.default", "10.0.0.0/24");
  SubnetSpec other_provider = Spec("b", "n.default", "10.0.0.0/24");
  SubnetSpec invalid = Spec("c", "m.default", "10.0.0.0/99");
  EXPECT_TRUE(ValidateSubnet(a, {other_provider, invalid}).valid);
}

TEST(SubnetStatusTest, PatchRoundTripsAndComparisonIgnoresTimes) {
  auto subnet = NormalizeSubnet(Spec("s", "m.default", "10.0.0.0/24"));
  ASSERT_TRUE(subnet);
  SubnetStatusValue s = DesiredStatus(ValidateSubnet(subnet->spec, {}), *subnet,
                                      Addrs({"10.0.0.7"}), {}, "2024-01-01T00:00:00Z");
  auto parsed = ParseSubnetStatus(EncodeStatusPatch(s));
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(SameStatus(s, *parsed));
  EXPECT_EQ(parsed->v4.using_ips, 1u);
  EXPECT_EQ(parsed->conditions.at(0).type, "Validated");
  EXPECT_EQ(parsed->conditions.at(1).status, "True");

  SubnetStatusValue later = DesiredStatus(ValidateSubnet(subnet->spec, {}), *subnet,
                                          Addrs({"10.0.0.7"}), parsed->conditions,
                                          "2024-06-01T00:00:00Z");
  EXPECT_TRUE(SameStatus(later, *parsed));
  EXPECT_EQ(later.conditions[0].last_transition_time, "2024-01-01T00:00:00Z");
  SubnetStatusValue more = DesiredStatus(ValidateSubnet(subnet->spec, {}), *subnet,
                                         Addrs({"10.0.0.7", "10.0.0.8"}), parsed->conditions,
                                         "2024-06-01T00:00:00Z");
  EXPECT_FALSE(SameStatus(more, *parsed));
}

TEST(SubnetStatusTest, AFlippedConditionGetsANewTransitionTime) {
  SubnetSpec bad = Spec("s", "m.default", "10.0.0.0/24", "10.9.9.9");
  std::vector<SubnetCondition> previous = {
      {"Validated", "True", "ValidationSucceeded", "", "t0", "t0"},
      {"Ready", "True", "Allocatable", "", "t0", "t0"}};
  SubnetStatusValue s = DesiredStatus(ValidateSubnet(bad, {}), std::nullopt, {}, previous, "t1");
  EXPECT_EQ(s.conditions[0].status, "False");
  EXPECT_EQ(s.conditions[0].last_transition_time, "t1");
  EXPECT_EQ(s.v4.available_range, "");
}

TEST(SubnetStatusTest, HugeIpv6CountsAreWrittenAsNumbers) {
  auto subnet = NormalizeSubnet(Spec("s", "m.default", "fd00::/48"));
  ASSERT_TRUE(subnet);
  SubnetStatusValue s = DesiredStatus(ValidateSubnet(subnet->spec, {}), *subnet, {}, {}, "t");
  std::string patch = EncodeStatusPatch(s);
  auto parsed = ParseSubnetStatus(patch);
  ASSERT_TRUE(parsed) << patch;
  EXPECT_TRUE(SameStatus(s, *parsed)) << patch;
}

TEST(IpPoolStatusTest, CountsThePoolsAddressesInUseAndFreeAndWritesKubeOvnsKeys) {
  auto subnet =
      NormalizeSubnet(Spec("s", "m.default", "10.0.0.0/24,fd00::/120", "", {"10.0.0.12"}));
  ASSERT_TRUE(subnet);
  std::map<std::string, const Subnet*> subnets{{"s", &*subnet}};
  auto pools = ResolvePools({{"p", "s", {"10.0.0.10..10.0.0.13", "fd00::10"}, {}, "t1"},
                             {"q", "s", {"10.0.0.13"}, {}, "t2"}},
                            subnets);
  auto st = DesiredPoolStatus(
      pools.at("p"), Addrs({"10.0.0.10", "10.0.0.12", "10.0.0.99", "fd00::10"}), {}, "now");
  EXPECT_EQ(st.v4.using_ips, 2u);  // .12 is excluded but held (a static pod): in use
  EXPECT_EQ(st.v4.using_range, "10.0.0.10,10.0.0.12");
  EXPECT_EQ(st.v4.available_range, "10.0.0.11,10.0.0.13");
  EXPECT_EQ(st.v6.using_ips, 1u);
  EXPECT_EQ(st.v6.available_ips, 0u);
  ASSERT_EQ(st.conditions.size(), 1u);
  EXPECT_EQ(st.conditions[0].status, "True");
  auto later = DesiredPoolStatus(pools.at("q"), {}, {}, "now");
  EXPECT_EQ(later.conditions[0].status, "False");
  EXPECT_EQ(later.v4.available_ips, 0u);
  EXPECT_NE(later.conditions[0].message.find("IPPool q has conflict IPs with IPPool p"),
            std::string::npos);
  std::string patch = EncodeStatusPatch(st, StatusKeys::kIpPool);
  EXPECT_NE(patch.find("\"v4AvailableIPs\":2"), std::string::npos) << patch;
  EXPECT_NE(patch.find("\"v4UsingIPRange\":\"10.0.0.10,10.0.0.12\""), std::string::npos) << patch;
  auto parsed = ParseSubnetStatus(patch, StatusKeys::kIpPool);
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(SameStatus(*parsed, st));
  EXPECT_FALSE(SameStatus(*ParseSubnetStatus(patch), st));  // Subnet keys: not the pool's
}

}  // namespace
}  // namespace sublease
