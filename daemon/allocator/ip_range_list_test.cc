#include "daemon/allocator/ip_range_list.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>

namespace sublease {
namespace {

IpAddr V4(const char* text) { return *IpAddr::Parse(text); }
IpAddr V6(const char* text) { return *IpAddr::Parse(text); }
IpAddr V4Val(U128 v) { return IpAddr(Family::kV4, v); }
IpAddr V6Val(U128 v) { return IpAddr(Family::kV6, v); }
constexpr U128 kMax128 = ~U128{0};

TEST(IpRangeListTest, EmptyListHoldsNothing) {
  IpRangeList l;
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(l.Count(), 0u);
  EXPECT_FALSE(l.Lowest().has_value());
  EXPECT_FALSE(l.Contains(V4("10.0.0.1")));
  EXPECT_EQ(l.ToString(), "");
}

TEST(IpRangeListTest, AddMergesOverlappingAndAdjacentRanges) {
  IpRangeList l;
  l.Add(V4("10.0.0.1"), V4("10.0.0.5"));
  l.Add(V4("10.0.0.10"), V4("10.0.0.12"));
  EXPECT_EQ(l.RangeCount(), 2u);
  l.Add(V4("10.0.0.6"));  // touches the first range on the right
  EXPECT_EQ(l.ToString(), "10.0.0.1-10.0.0.6,10.0.0.10-10.0.0.12");
  l.Add(V4("10.0.0.4"), V4("10.0.0.9"));  // overlaps one, touches the other
  EXPECT_EQ(l.ToString(), "10.0.0.1-10.0.0.12");
  EXPECT_EQ(l.RangeCount(), 1u);
  EXPECT_EQ(l.Count(), 12u);
}

TEST(IpRangeListTest, AddSwallowsEveryRangeInside) {
  IpRangeList l;
  for (int i = 0; i < 10; ++i) l.Add(V4Val(100 + 3 * i));
  EXPECT_EQ(l.RangeCount(), 10u);
  l.Add(V4Val(99), V4Val(200));
  EXPECT_EQ(l.RangeCount(), 1u);
  EXPECT_EQ(l.Count(), 102u);
}

TEST(IpRangeListTest, AddInsideExistingRangeChangesNothing) {
  IpRangeList l;
  l.Add(V4("10.0.0.1"), V4("10.0.0.100"));
  l.Add(V4("10.0.0.5"), V4("10.0.0.7"));
  EXPECT_EQ(l.RangeCount(), 1u);
  EXPECT_EQ(l.Count(), 100u);
}

TEST(IpRangeListTest, RemoveSplitsARange) {
  IpRangeList l;
  l.Add(V4("10.0.0.1"), V4("10.0.0.10"));
  l.Remove(V4("10.0.0.5"));
  EXPECT_EQ(l.ToString(), "10.0.0.1-10.0.0.4,10.0.0.6-10.0.0.10");
  EXPECT_EQ(l.Count(), 9u);
  EXPECT_FALSE(l.Contains(V4("10.0.0.5")));
  EXPECT_TRUE(l.Contains(V4("10.0.0.4")));
  EXPECT_TRUE(l.Contains(V4("10.0.0.6")));
}

TEST(IpRangeListTest, RemoveAcrossSeveralRangesTrimsTheEnds) {
  IpRangeList l;
  l.Add(V4Val(10), V4Val(20));
  l.Add(V4Val(30), V4Val(40));
  l.Add(V4Val(50), V4Val(60));
  l.Remove(V4Val(15), V4Val(55));
  EXPECT_EQ(l.RangeCount(), 2u);
  EXPECT_EQ(l.Count(), 5u + 5u);
  EXPECT_TRUE(l.Contains(V4Val(14)));
  EXPECT_FALSE(l.Contains(V4Val(15)));
  EXPECT_FALSE(l.Contains(V4Val(55)));
  EXPECT_TRUE(l.Contains(V4Val(56)));
}

TEST(IpRangeListTest, RemoveOfAbsentAddressesChangesNothing) {
  IpRangeList l;
  l.Add(V4Val(10), V4Val(20));
  l.Remove(V4Val(1), V4Val(9));
  l.Remove(V4Val(21), V4Val(30));
  EXPECT_EQ(l.Count(), 11u);
  EXPECT_EQ(l.RangeCount(), 1u);
}

TEST(IpRangeListTest, LowestAndLowestAtOrAbove) {
  IpRangeList l;
  l.Add(V4Val(10), V4Val(20));
  l.Add(V4Val(30), V4Val(40));
  EXPECT_EQ(*l.Lowest(), V4Val(10));
  EXPECT_EQ(*l.LowestAtOrAbove(V4Val(0)), V4Val(10));
  EXPECT_EQ(*l.LowestAtOrAbove(V4Val(15)), V4Val(15));
  EXPECT_EQ(*l.LowestAtOrAbove(V4Val(21)), V4Val(30));
  EXPECT_FALSE(l.LowestAtOrAbove(V4Val(41)).has_value());
  EXPECT_FALSE(l.LowestAtOrAbove(V6Val(0)).has_value());  // other family
}

TEST(IpRangeListTest, OverlapsIsTrueOnlyWhenSomeAddressIsShared) {
  IpRangeList l;
  l.Add(V4Val(10), V4Val(20));
  EXPECT_TRUE(l.Overlaps(V4Val(0), V4Val(10)));
  EXPECT_TRUE(l.Overlaps(V4Val(20), V4Val(30)));
  EXPECT_TRUE(l.Overlaps(V4Val(12), V4Val(13)));
  EXPECT_FALSE(l.Overlaps(V4Val(0), V4Val(9)));
  EXPECT_FALSE(l.Overlaps(V4Val(21), V4Val(30)));
}

TEST(IpRangeListTest, IntersectKeepsOnlyCommonAddresses) {
  IpRangeList a, b;
  a.Add(V4Val(0), V4Val(10));
  a.Add(V4Val(20), V4Val(30));
  b.Add(V4Val(5), V4Val(25));
  IpRangeList i = a.Intersect(b);
  EXPECT_EQ(i.Count(), 6u + 6u);
  EXPECT_EQ(i.RangeCount(), 2u);
  EXPECT_TRUE(i.Contains(V4Val(5)));
  EXPECT_TRUE(i.Contains(V4Val(25)));
  EXPECT_FALSE(i.Contains(V4Val(15)));
  EXPECT_TRUE(a.Intersect(IpRangeList(Family::kV6)).empty());
}

TEST(IpRangeListTest, SubtractRemovesEveryAddressOfTheOther) {
  IpRangeList a, b;
  a.Add(V4Val(0), V4Val(100));
  b.Add(V4Val(10), V4Val(19));
  b.Add(V4Val(50));
  IpRangeList d = a.Subtract(b);
  EXPECT_EQ(d.Count(), 101u - 11u);
  EXPECT_EQ(d.RangeCount(), 3u);
  EXPECT_FALSE(d.Contains(V4Val(50)));
  EXPECT_EQ(a.Count(), 101u);  // the operand is untouched
}

TEST(IpRangeListTest, EdgeValuesZeroAndMaxOfBothFamilies) {
  IpRangeList v4;
  v4.Add(V4Val(0), V4Val(0xffffffff));
  EXPECT_EQ(v4.Count(), U128{1} << 32);
  v4.Remove(V4Val(0));
  v4.Remove(V4Val(0xffffffff));
  EXPECT_EQ(v4.ToString(), "0.0.0.1-255.255.255.254");

  IpRangeList v6(Family::kV6);
  v6.Add(V6Val(kMax128));
  v6.Add(V6Val(0));
  EXPECT_EQ(v6.RangeCount(), 2u);
  EXPECT_EQ(v6.ToString(), "::,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  v6.Add(V6Val(kMax128 - 1));  // merges with max without overflowing
  EXPECT_EQ(v6.RangeCount(), 2u);
  EXPECT_EQ(v6.Count(), 3u);
  EXPECT_EQ(*v6.LowestAtOrAbove(V6Val(1)), V6Val(kMax128 - 1));
  v6.Remove(V6Val(kMax128 - 1), V6Val(kMax128));
  EXPECT_EQ(v6.Count(), 1u);
}

TEST(IpRangeListTest, FullIpv6SpaceCountSaturates) {
  IpRangeList l(Family::kV6);
  l.Add(V6Val(0), V6Val(kMax128));
  EXPECT_EQ(l.Count(), kMax128);
  l.Remove(V6Val(5));
  EXPECT_EQ(l.Count(), kMax128);  // 2^128 - 1 addresses remain, exactly representable
  EXPECT_EQ(l.RangeCount(), 2u);
}

TEST(IpRangeListTest, Ipv6RangesFormatAndCount) {
  IpRangeList l(Family::kV6);
  l.Add(V6("fd00::1"), V6("fd00::ffff"));
  l.Remove(V6("fd00::100"), V6("fd00::1ff"));
  EXPECT_EQ(l.Count(), 0xffffu - 256u);
  EXPECT_EQ(l.ToString(), "fd00::1-fd00::ff,fd00::200-fd00::ffff");
}

// Random Add/Remove against a std::set over a small universe: every query agrees.
TEST(IpRangeListTest, MatchesAReferenceSetUnderRandomEdits) {
  constexpr int kSeeds = 20, kOps = 400, kUniverse = 96;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pick(0, kUniverse - 1);
    IpRangeList l;
    std::set<int> ref;
    for (int op = 0; op < kOps; ++op) {
      int a = pick(rng), b = pick(rng);
      if (a > b) std::swap(a, b);
      bool add = rng() % 2 == 0;
      if (add) {
        l.Add(V4Val(a), V4Val(b));
        for (int v = a; v <= b; ++v) ref.insert(v);
      } else {
        l.Remove(V4Val(a), V4Val(b));
        for (int v = a; v <= b; ++v) ref.erase(v);
      }
      ASSERT_EQ(l.Count(), ref.size());
      std::optional<IpAddr> lowest = l.Lowest();
      ASSERT_EQ(lowest.has_value(), !ref.empty());
      if (lowest) {
        ASSERT_EQ(lowest->value(), U128(*ref.begin()));
      }
      int probe = pick(rng);
      ASSERT_EQ(l.Contains(V4Val(probe)), ref.count(probe) == 1);
      auto above = l.LowestAtOrAbove(V4Val(probe));
      auto it = ref.lower_bound(probe);
      ASSERT_EQ(above.has_value(), it != ref.end());
      if (above) {
        ASSERT_EQ(above->value(), U128(*it));
      }
    }
    // Ranges are disjoint, non-adjacent and sorted.
    std::optional<IpRange> prev;
    l.ForEach([&](const IpRange& r) {
      EXPECT_LE(r.first, r.last);
      if (prev) {
        EXPECT_GT(r.first.value(), prev->last.value() + 1);
      }
      prev = r;
    });
  }
}

}  // namespace
}  // namespace sublease
