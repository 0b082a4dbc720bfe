#include "daemon/allocator/subnet.h"
#include "daemon/allocator/test_util.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

using test_util::Ip;

SubnetSpec Spec(std::string cidr, std::string gateway = "", std::vector<std::string> exclude = {},
                std::string protocol = "") {
  return SubnetSpec{"net", "macvlan.default", std::move(cidr), std::move(gateway),
                    std::move(exclude), std::move(protocol), ""};
}

struct ValidCase {
  const char* what;
  SubnetSpec spec;
  Protocol protocol;
  const char* v4_gateway;  // "" = none, nullptr = no v4 family
  const char* v4_usable;
  const char* v6_gateway;
  const char* v6_usable;
};

class NormalizeValidTest : public ::testing::TestWithParam<ValidCase> {};

TEST_P(NormalizeValidTest, GivesGatewayAndUsableRanges) {
  const ValidCase& c = GetParam();
  auto s = NormalizeSubnet(c.spec);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->protocol, c.protocol);
  auto check = [](const std::optional<SubnetFamily>& fam, const char* gw, const char* usable) {
    if (gw == nullptr) {
      EXPECT_FALSE(fam.has_value());
      return;
    }
    ASSERT_TRUE(fam.has_value());
    EXPECT_EQ(fam->gateway ? fam->gateway->ToString() : "", gw);
    EXPECT_EQ(fam->usable.ToString(), usable);
    if (fam->gateway) {
      EXPECT_TRUE(fam->excluded.Contains(*fam->gateway));
      EXPECT_FALSE(fam->usable.Contains(*fam->gateway));
    }
  };
  check(s->v4, c.v4_gateway, c.v4_usable);
  check(s->v6, c.v6_gateway, c.v6_usable);
}

const ValidCase kValid[] = {
    {"seed", Spec("172.17.0.0/16", "172.17.0.1", {"172.17.0.0..172.17.0.10"}, "IPv4"),
     Protocol::kIPv4, "172.17.0.1", "172.17.0.11-172.17.255.254", nullptr, ""},
    {"defaults", Spec("10.0.0.0/24"), Protocol::kIPv4, "10.0.0.1", "10.0.0.2-10.0.0.254", nullptr, ""},
    {"host_bits_cleared", Spec("10.0.0.77/24"), Protocol::kIPv4, "10.0.0.1", "10.0.0.2-10.0.0.254",
     nullptr, ""},
    {"explicit_gateway_splits", Spec("10.0.0.0/24", "10.0.0.100"), Protocol::kIPv4, "10.0.0.100",
     "10.0.0.1-10.0.0.99,10.0.0.101-10.0.0.254", nullptr, ""},
    {"slash31_uses_both", Spec("10.0.0.0/31"), Protocol::kIPv4, "10.0.0.0", "10.0.0.1", nullptr, ""},
    {"slash31_gateway_second", Spec("10.0.0.0/31", "10.0.0.1"), Protocol::kIPv4, "10.0.0.1",
     "10.0.0.0", nullptr, ""},
    {"slash32_one_address", Spec("10.0.0.5/32"), Protocol::kIPv4, "", "10.0.0.5", nullptr, ""},
    {"slash32_explicit_gateway", Spec("10.0.0.5/32", "10.0.0.5"), Protocol::kIPv4, "10.0.0.5", "",
     nullptr, ""},
    {"slash127_uses_both", Spec("fd00::/127"), Protocol::kIPv6, nullptr, "", "fd00::", "fd00::1"},
    {"slash128_one_address", Spec("fd00::5/128"), Protocol::kIPv6, nullptr, "", "", "fd00::5"},
    {"ipv6_64_keeps_last_out", Spec("fd00::/64"), Protocol::kIPv6, nullptr, "", "fd00::1",
     "fd00::2-fd00::ffff:ffff:ffff:fffe"},
    {"ipv6_120", Spec("fd00:10::/120", "", {"fd00:10::10..fd00:10::1f"}), Protocol::kIPv6, nullptr,
     "", "fd00:10::1", "fd00:10::2-fd00:10::f,fd00:10::20-fd00:10::fe"},
    {"dual", Spec("10.0.0.0/24,fd00::/120"), Protocol::kDual, "10.0.0.1", "10.0.0.2-10.0.0.254",
     "fd00::1", "fd00::2-fd00::fe"},
    {"dual_reversed_with_spaces", Spec(" fd00::/120 , 10.0.0.0/24 ", "", {}, "Dual"), Protocol::kDual,
     "10.0.0.1", "10.0.0.2-10.0.0.254", "fd00::1", "fd00::2-fd00::fe"},
    {"dual_one_gateway_given", Spec("10.0.0.0/24,fd00::/120", "fd00::10"), Protocol::kDual,
     "10.0.0.1", "10.0.0.2-10.0.0.254", "fd00::10", "fd00::1-fd00::f,fd00::11-fd00::fe"},
    {"dual_both_gateways", Spec("10.0.0.0/24,fd00::/120", "10.0.0.254, fd00::fe"), Protocol::kDual,
     "10.0.0.254", "10.0.0.1-10.0.0.253", "fd00::fe", "fd00::1-fd00::fd"},
    {"exclude_clipped_to_host_range", Spec("10.0.0.0/24", "", {"10.0.0.250..10.0.1.20"}),
     Protocol::kIPv4, "10.0.0.1", "10.0.0.2-10.0.0.249", nullptr, ""},
    {"exclude_single_and_spaces", Spec("10.0.0.0/24", "", {" 10.0.0.100 ", "10.0.0.5 .. 10.0.0.6"}),
     Protocol::kIPv4, "10.0.0.1", "10.0.0.2-10.0.0.4,10.0.0.7-10.0.0.99,10.0.0.101-10.0.0.254",
     nullptr, ""},
    {"exclude_outside_ignored", Spec("10.0.0.0/24", "", {"192.168.0.1..192.168.0.9", "fd00::1"}),
     Protocol::kIPv4, "10.0.0.1", "10.0.0.2-10.0.0.254", nullptr, ""},
    {"exclude_dual_items_split_by_family",
     Spec("10.0.0.0/24,fd00::/120", "", {"10.0.0.2..10.0.0.9", "fd00::2..fd00::9"}), Protocol::kDual,
     "10.0.0.1", "10.0.0.10-10.0.0.254", "fd00::1", "fd00::a-fd00::fe"},
    {"exclude_everything", Spec("10.0.0.0/29", "", {"10.0.0.0..10.0.0.7"}), Protocol::kIPv4,
     "10.0.0.1", "", nullptr, ""},
};

INSTANTIATE_TEST_SUITE_P(Table, NormalizeValidTest, ::testing::ValuesIn(kValid),
                         [](const auto& p) { return std::string(p.param.what); });

struct InvalidCase {
  const char* what;
  SubnetSpec spec;
  const char* message;  // a substring the error must contain
};

class NormalizeInvalidTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(NormalizeInvalidTest, FailsNamingTheItem) {
  const InvalidCase& c = GetParam();
  auto s = NormalizeSubnet(c.spec);
  ASSERT_FALSE(s) << "accepted " << c.what;
  EXPECT_EQ(s.error().code, Code::kInvalidArgument);
  EXPECT_NE(s.error().message.find(c.message), std::string::npos) << s.error().message;
}

const InvalidCase kInvalid[] = {
    {"empty_cidr", Spec(""), "cidrBlock is empty"},
    {"cidr_without_prefix", Spec("10.0.0.0"), "cidrBlock item \"10.0.0.0\""},
    {"cidr_prefix_too_long", Spec("10.0.0.0/33"), "cidrBlock item \"10.0.0.0/33\""},
    {"cidr_garbage", Spec("10.0.0.0/24,banana"), "cidrBlock item \"banana\""},
    {"cidr_two_v4", Spec("10.0.0.0/24,10.1.0.0/24"), "has two IPv4 blocks"},
    {"cidr_three_blocks", Spec("10.0.0.0/24,fd00::/64,10.1.0.0/24"), "more than two blocks"},
    {"protocol_mismatch", Spec("10.0.0.0/24", "", {}, "IPv6"),
     "protocol \"IPv6\" does not match cidrBlock \"10.0.0.0/24\", which is IPv4"},
    {"protocol_single_for_dual", Spec("10.0.0.0/24,fd00::/64", "", {}, "IPv4"),
     "which is Dual"},
    {"protocol_unknown", Spec("10.0.0.0/24", "", {}, "ipv4"), "is not IPv4, IPv6 or Dual"},
    {"gateway_outside", Spec("10.0.0.0/24", "10.0.1.1"),
     "gateway \"10.0.1.1\" is not in cidr 10.0.0.0/24"},
    {"gateway_network", Spec("10.0.0.0/24", "10.0.0.0"), "is the network address of 10.0.0.0/24"},
    {"gateway_broadcast", Spec("10.0.0.0/24", "10.0.0.255"), "is the broadcast address"},
    {"gateway_ipv6_last", Spec("fd00::/120", "fd00::ff"), "is the last address of fd00::/120"},
    {"gateway_garbage", Spec("10.0.0.0/24", "ten"), "gateway \"ten\""},
    {"gateway_wrong_family", Spec("10.0.0.0/24", "fd00::1"), "gateway \"fd00::1\" is IPv6"},
    {"gateway_two_of_one_family", Spec("10.0.0.0/24,fd00::/64", "10.0.0.1,10.0.0.2"),
     "names two IPv4 gateways"},
    {"exclude_reversed", Spec("10.0.0.0/24", "", {"10.0.0.9..10.0.0.3"}),
     "excludeIps item \"10.0.0.9..10.0.0.3\": range end is before its start"},
    {"exclude_garbage", Spec("10.0.0.0/24", "", {"10.0.0.5", "foo"}),
     "excludeIps item \"foo\": not an IP address"},
    {"exclude_empty_item", Spec("10.0.0.0/24", "", {""}), "excludeIps item \"\""},
    {"exclude_bad_end", Spec("10.0.0.0/24", "", {"10.0.0.1..x"}),
     "excludeIps item \"10.0.0.1..x\": range end is not an IP address"},
    {"exclude_triple_dots", Spec("10.0.0.0/24", "", {"10.0.0.1...10.0.0.5"}),
     "excludeIps item \"10.0.0.1...10.0.0.5\""},
    {"exclude_mixed_families", Spec("10.0.0.0/24,fd00::/64", "", {"10.0.0.1..fd00::1"}),
     "range ends are of different families"},
    {"exclude_cidr_notation", Spec("10.0.0.0/24", "", {"10.0.0.0/28"}),
     "excludeIps item \"10.0.0.0/28\""},
};

INSTANTIATE_TEST_SUITE_P(Table, NormalizeInvalidTest, ::testing::ValuesIn(kInvalid),
                         [](const auto& p) { return std::string(p.param.what); });

TEST(SubnetTest, SeedSubnetFirstDynamicAddressIs172_17_0_11) {
  auto s = NormalizeSubnet(Spec("172.17.0.0/16", "172.17.0.1", {"172.17.0.0..172.17.0.10"}, "IPv4"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->v4->usable.Lowest()->ToString(), "172.17.0.11");
  EXPECT_EQ(s->v4->usable.Count(), 65536u - 2 - 10);  // minus network, broadcast, .1-.10
  EXPECT_EQ(s->v4->excluded.ToString(), "172.17.0.1-172.17.0.10");
  EXPECT_TRUE(s->warnings.empty());
}

TEST(SubnetTest, IgnoredExcludeItemsAreReportedAsWarnings) {
  auto s = NormalizeSubnet(Spec("10.0.0.0/24", "", {"192.168.0.1", "fd00::1", "10.0.0.5"}));
  ASSERT_TRUE(s);
  ASSERT_EQ(s->warnings.size(), 2u);
  EXPECT_NE(s->warnings[0].find("\"192.168.0.1\" ignored"), std::string::npos) << s->warnings[0];
  EXPECT_NE(s->warnings[1].find("no IPv6 block"), std::string::npos) << s->warnings[1];
}

TEST(SubnetTest, KeepsSpecNameAndProvider) {
  auto s = NormalizeSubnet(Spec("10.0.0.0/24"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->name, "net");
  EXPECT_EQ(s->provider, "macvlan.default");
  EXPECT_EQ(s->spec.cidr_block, "10.0.0.0/24");
  EXPECT_EQ(s->family(Family::kV4), &*s->v4);
  EXPECT_EQ(s->family(Family::kV6), nullptr);
}

struct AssignCase {
  const char* address;
  const char* error;  // nullptr = assignable
};

TEST(SubnetTest, CheckAssignableNamesTheReason) {
  auto s = NormalizeSubnet(Spec("10.0.0.0/24,fd00::/120", "", {"10.0.0.10..10.0.0.20"}));
  ASSERT_TRUE(s);
  const AssignCase cases[] = {
      {"10.0.0.2", nullptr},
      {"10.0.0.15", nullptr},  // excluded addresses may be requested (Kube-OVN reserves that way)
      {"10.0.0.254", nullptr},
      {"fd00::fe", nullptr},
      {"10.0.0.1", "address 10.0.0.1 is the gateway of subnet net (10.0.0.0/24)"},
      {"10.0.0.0", "address 10.0.0.0 is the network address of subnet net (10.0.0.0/24)"},
      {"10.0.0.255", "address 10.0.0.255 is the broadcast address of subnet net"},
      {"fd00::ff", "address fd00::ff is the last (reserved) address of subnet net"},
      {"fd00::", "is the network address"},
      {"10.0.1.5", "address 10.0.1.5 is not in subnet net (10.0.0.0/24,fd00::/120)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.address);
    auto r = CheckAssignable(*s, Ip(c.address));
    if (c.error == nullptr) {
      EXPECT_TRUE(r) << r.error().message;
    } else {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, Code::kInvalidArgument);
      EXPECT_NE(r.error().message.find(c.error), std::string::npos) << r.error().message;
    }
  }
}

TEST(SubnetTest, CheckAssignableOnSlash31AndSlash32) {
  auto p2p = NormalizeSubnet(Spec("10.0.0.0/31", "10.0.0.0"));
  ASSERT_TRUE(p2p);
  EXPECT_TRUE(CheckAssignable(*p2p, Ip("10.0.0.1")));
  EXPECT_FALSE(CheckAssignable(*p2p, Ip("10.0.0.0")));  // the gateway
  auto host = NormalizeSubnet(Spec("10.0.0.5/32"));
  ASSERT_TRUE(host);
  EXPECT_TRUE(CheckAssignable(*host, Ip("10.0.0.5")));
  EXPECT_FALSE(CheckAssignable(*host, Ip("fd00::5")));
}

TEST(SubnetTest, HostRangeTable) {
  struct {
    const char* cidr;
    const char* first;
    const char* last;
  } cases[] = {
      {"10.0.0.0/24", "10.0.0.1", "10.0.0.254"}, {"10.0.0.0/30", "10.0.0.1", "10.0.0.2"},
      {"10.0.0.0/31", "10.0.0.0", "10.0.0.1"},   {"10.0.0.9/32", "10.0.0.9", "10.0.0.9"},
      {"0.0.0.0/0", "0.0.0.1", "255.255.255.254"}, {"fd00::/127", "fd00::", "fd00::1"},
      {"fd00::/128", "fd00::", "fd00::"},        {"::/0", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.cidr);
    IpRange r = HostRange(*IpNet::Parse(c.cidr));
    EXPECT_EQ(r.first.ToString(), c.first);
    EXPECT_EQ(r.last.ToString(), c.last);
  }
}

}  // namespace
}  // namespace sublease
