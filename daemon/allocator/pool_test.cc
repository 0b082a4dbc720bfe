#include "daemon/allocator/pool.h"
#include "daemon/allocator/test_util.h"

#include <gtest/gtest.h>

#include <map>

namespace sublease {
namespace {

using test_util::Ip;

Subnet MakeSubnet(const char* cidr, std::vector<std::string> exclude = {}) {
  return *NormalizeSubnet(SubnetSpec{"net", "macvlan.default", cidr, "", std::move(exclude), "", ""});
}

std::string Render(const std::vector<PoolEntry>& entries) {
  std::string out;
  for (const auto& e : entries) {
    out += out.empty() ? "[" : " [";
    out += e.v4 ? e.v4->ToString() : "-";
    out += "|";
    out += e.v6 ? e.v6->ToString() : "-";
    out += "]";
  }
  return out;
}

struct ParseCase {
  const char* what;
  const char* annotation;
  const char* entries;  // Render() of the result, or nullptr for an error
  const char* error;    // substring of the error
};

TEST(PoolTest, ParseTable) {
  Subnet dual = MakeSubnet("10.0.0.0/24,fd00::/120", {"10.0.0.200..10.0.0.210"});
  const ParseCase cases[] = {
      {"seed_list", "10.0.0.20,10.0.0.21,10.0.0.22", "[10.0.0.20|-] [10.0.0.21|-] [10.0.0.22|-]",
       nullptr},
      {"spaces", " 10.0.0.20 , 10.0.0.21 ", "[10.0.0.20|-] [10.0.0.21|-]", nullptr},
      {"single", "10.0.0.20", "[10.0.0.20|-]", nullptr},
      {"dual_pair_is_one_entry", "10.0.0.20,fd00::20", "[10.0.0.20|fd00::20]", nullptr},
      {"dual_entries", "10.0.0.20,fd00::20;10.0.0.21,fd00::21",
       "[10.0.0.20|fd00::20] [10.0.0.21|fd00::21]", nullptr},
      {"semicolon_single_family", "10.0.0.20;fd00::21", "[10.0.0.20|-] [-|fd00::21]", nullptr},
      {"v6_first_in_entry", "fd00::20,10.0.0.20;fd00::21", "[10.0.0.20|fd00::20] [-|fd00::21]",
       nullptr},
      {"excluded_addresses_allowed", "10.0.0.200,10.0.0.201", "[10.0.0.200|-] [10.0.0.201|-]",
       nullptr},
      {"empty", "  ", nullptr, "ip_pool is empty"},
      {"garbage", "10.0.0.20,pear", nullptr, "ip_pool item \"pear\" is not an IP address"},
      {"outside", "10.0.0.20,10.0.1.20", nullptr,
       "address 10.0.1.20 is not in subnet net (10.0.0.0/24,fd00::/120)"},
      {"gateway", "10.0.0.1", nullptr, "address 10.0.0.1 is the gateway of subnet net"},
      {"network", "10.0.0.0", nullptr, "network address"},
      {"broadcast", "10.0.0.255", nullptr, "broadcast address"},
      {"ipv6_last", "fd00::ff", nullptr, "last (reserved) address"},
      {"duplicate", "10.0.0.20,10.0.0.21,10.0.0.20", nullptr, "ip_pool lists 10.0.0.20 twice"},
      {"duplicate_across_entries", "10.0.0.20,fd00::20;10.0.0.21,fd00::20", nullptr,
       "ip_pool lists fd00::20 twice"},
      {"two_v4_in_entry", "10.0.0.20,10.0.0.21;10.0.0.22", nullptr, "has two IPv4 addresses"},
      {"three_in_entry", "10.0.0.20,fd00::20,10.0.0.21;10.0.0.22", nullptr, "more than two addresses"},
      {"trailing_semicolon", "10.0.0.20;", nullptr, "ip_pool entry \"\" is empty"},
      {"trailing_comma", "10.0.0.20,", nullptr, "ip_pool entry \"\" is empty"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = ParsePool(c.annotation, dual);
    if (c.entries != nullptr) {
      ASSERT_TRUE(r) << r.error().message;
      EXPECT_EQ(Render(*r), c.entries);
    } else {
      ASSERT_FALSE(r) << Render(*r);
      EXPECT_EQ(r.error().code, Code::kInvalidArgument);
      EXPECT_NE(r.error().message.find(c.error), std::string::npos) << r.error().message;
    }
  }
}

TEST(PoolTest, FamilyTheSubnetLacksIsRejected) {
  Subnet v4 = MakeSubnet("10.0.0.0/24");
  auto r = ParsePool("10.0.0.20,fd00::20", v4);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("fd00::20 is not in subnet net"), std::string::npos)
      << r.error().message;
}

// A fake holder table: address -> lease of another attachment.
struct Holders {
  std::map<IpAddr, Lease> held;
  void Hold(const char* addr, const char* pod) {
    Lease l;
    l.subnet = "net";
    l.owner = Owner{"default", pod, "uid-" + std::string(pod), "c-" + std::string(pod), "net1"};
    held[Ip(addr)] = l;
  }
  PoolHolderFn Fn() const {
    return [this](const IpAddr& a) -> std::optional<std::string> {
      auto it = held.find(a);
      if (it == held.end()) return std::nullopt;
      return it->second.HolderDescription();
    };
  }
};

constexpr PoolFamilies kV4Only{true, false};
constexpr PoolFamilies kDual{true, true};

TEST(PoolTest, DeploymentTakesFirstEntryNotHeldByAnother) {
  Subnet s = MakeSubnet("10.0.0.0/24");
  auto pool = *ParsePool("10.0.0.20,10.0.0.21,10.0.0.22", s);
  Holders h;
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kV4Only, h.Fn()), 0u);
  h.Hold("10.0.0.20", "web-a");
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kV4Only, h.Fn()), 1u);
  h.Hold("10.0.0.22", "web-c");
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kV4Only, h.Fn()), 1u);
  h.Hold("10.0.0.21", "web-b");
  auto r = SelectPoolEntry(pool, std::nullopt, kV4Only, h.Fn());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kExhausted);
  EXPECT_NE(r.error().message.find("10.0.0.21 is held by pod default/web-b (container c-web-b, net1)"),
            std::string::npos)
      << r.error().message;
}

TEST(PoolTest, DeploymentSkipsDualEntryWhenEitherHalfIsHeld) {
  Subnet s = MakeSubnet("10.0.0.0/24,fd00::/120");
  auto pool = *ParsePool("10.0.0.20,fd00::20;10.0.0.21,fd00::21", s);
  Holders h;
  h.Hold("fd00::20", "other");  // only the v6 half of entry 0 is held
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kDual, h.Fn()), 1u);
  // Narrowed to IPv4, entry 0's held v6 half does not matter.
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kV4Only, h.Fn()), 0u);
}

TEST(PoolTest, StatefulSetTakesEntryAtOrdinal) {
  Subnet s = MakeSubnet("10.0.0.0/24");
  auto pool = *ParsePool("10.0.0.20,10.0.0.21,10.0.0.22", s);
  Holders h;
  h.Hold("10.0.0.20", "web-x");  // entry 0 held does not move ordinal 2
  EXPECT_EQ(*SelectPoolEntry(pool, 2u, kV4Only, h.Fn()), 2u);
  EXPECT_EQ(*SelectPoolEntry(pool, 1u, kV4Only, h.Fn()), 1u);
}

TEST(PoolTest, StatefulSetOrdinalBeyondPoolIsExhausted) {
  Subnet s = MakeSubnet("10.0.0.0/24");
  auto pool = *ParsePool("10.0.0.20,10.0.0.21", s);
  Holders h;
  auto r = SelectPoolEntry(pool, 2u, kV4Only, h.Fn());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kExhausted);
  EXPECT_NE(r.error().message.find("ip_pool has 2 entries; StatefulSet pod ordinal 2 has none"),
            std::string::npos)
      << r.error().message;
}

TEST(PoolTest, StatefulSetEntryHeldByAnotherIsAConflictNamingTheHolder) {
  Subnet s = MakeSubnet("10.0.0.0/24");
  auto pool = *ParsePool("10.0.0.20,10.0.0.21", s);
  Holders h;
  h.Hold("10.0.0.21", "intruder");
  auto r = SelectPoolEntry(pool, 1u, kV4Only, h.Fn());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kConflict);
  EXPECT_NE(r.error().message.find("10.0.0.21 is held by pod default/intruder"), std::string::npos)
      << r.error().message;
}

TEST(PoolTest, EntryWithoutRequestedFamilyIsSkippedOrRejected) {
  Subnet s = MakeSubnet("10.0.0.0/24,fd00::/120");
  auto pool = *ParsePool("10.0.0.20;10.0.0.21,fd00::21", s);
  Holders h;
  constexpr PoolFamilies kV6Only{false, true};
  EXPECT_EQ(*SelectPoolEntry(pool, std::nullopt, kV6Only, h.Fn()), 1u);
  auto sts = SelectPoolEntry(pool, 0u, kV6Only, h.Fn());
  ASSERT_FALSE(sts);
  EXPECT_EQ(sts.error().code, Code::kInvalidArgument);
  auto v4only = *ParsePool("10.0.0.20", s);
  auto none = SelectPoolEntry(v4only, std::nullopt, kV6Only, h.Fn());
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Code::kInvalidArgument);
}

}  // namespace
}  // namespace sublease
