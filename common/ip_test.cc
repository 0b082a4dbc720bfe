#include "common/ip.h"

#include <gtest/gtest.h>

#include <string_view>

namespace sublease {
namespace {

TEST(IpAddrTest, ParsesAndFormatsBothFamilies) {
  struct Case { const char* in; Family family; const char* out; };
  for (const auto& c : {Case{"10.0.0.1", Family::kV4, "10.0.0.1"},
                        Case{"255.255.255.255", Family::kV4, "255.255.255.255"},
                        Case{"fd00::1", Family::kV6, "fd00::1"},
                        Case{"FD00:0:0::0001", Family::kV6, "fd00::1"},
                        Case{"::", Family::kV6, "::"}}) {
    auto a = IpAddr::Parse(c.in);
    ASSERT_TRUE(a) << c.in;
    EXPECT_EQ(a->family(), c.family) << c.in;
    EXPECT_EQ(a->ToString(), c.out) << c.in;
  }
}

TEST(IpAddrTest, RejectsGarbageWithMessageNamingIt) {
  for (const char* bad : {"", "10.0.0", "10.0.0.256", "fd00:::1", "10.0.0.1/24", "abc", " 10.0.0.1"}) {
    auto a = IpAddr::Parse(bad);
    ASSERT_FALSE(a) << bad;
    EXPECT_EQ(a.error().code, Code::kInvalidArgument);
    EXPECT_NE(a.error().message.find(std::string("'") + bad + "'"), std::string::npos) << a.error().message;
  }
}

// Regression: inet_pton stops at a NUL, so "10.0.0.1\0junk" (a JSON "\u0000" in a
// CNI config or request) used to parse as 10.0.0.1.
TEST(IpAddrTest, RejectsEmbeddedNul) {
  for (std::string_view bad : {std::string_view("10.0.0.1\0junk", 13),
                               std::string_view("fd00::1\0", 8), std::string_view("\0", 1)}) {
    EXPECT_FALSE(IpAddr::Parse(bad)) << bad.size();
  }
  EXPECT_FALSE(IpNet::Parse(std::string_view("10.0.0.0\0x/8", 12)));
}

TEST(IpAddrTest, BytesRoundTripAndOrderIsNumeric) {
  auto a = *IpAddr::Parse("10.0.0.9");
  auto b = *IpAddr::Parse("10.0.0.10");
  EXPECT_LT(a, b);
  auto bytes = b.Bytes();
  EXPECT_EQ(bytes[0], 10);
  EXPECT_EQ(bytes[3], 10);
  EXPECT_EQ(*IpAddr::FromBytes(bytes.data(), 4), b);
  auto v6 = *IpAddr::Parse("fd00::ff:1");
  auto v6b = v6.Bytes();
  EXPECT_EQ(*IpAddr::FromBytes(v6b.data(), 16), v6);
  EXPECT_LT(a, v6);  // IPv4 sorts before IPv6
  EXPECT_EQ(a.Plus(1), b);
}

TEST(IpNetTest, ParsesCanonicalisesAndContains) {
  auto n = IpNet::Parse("172.17.0.5/16");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->ToString(), "172.17.0.0/16");
  EXPECT_EQ(n->last().ToString(), "172.17.255.255");
  EXPECT_TRUE(n->Contains(*IpAddr::Parse("172.17.3.4")));
  EXPECT_FALSE(n->Contains(*IpAddr::Parse("172.18.0.0")));
  EXPECT_FALSE(n->Contains(*IpAddr::Parse("fd00::1")));
  auto v6 = IpNet::Parse("fd00:10:16::/64");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->last().ToString(), "fd00:10:16:0:ffff:ffff:ffff:ffff");
  EXPECT_EQ(U128ToString(v6->SizeMinusOne()), "18446744073709551615");
  auto all6 = IpNet::Parse("::/0");
  ASSERT_TRUE(all6);
  EXPECT_EQ(all6->SizeMinusOne(), ~U128{0});
}

TEST(IpNetTest, RejectsBadCidrs) {
  for (const char* bad : {"10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "fd00::/129", "x/24", "10.0.0.0/2a"}) {
    auto n = IpNet::Parse(bad);
    ASSERT_FALSE(n) << bad;
    EXPECT_NE(n.error().message.find(bad), std::string::npos) << n.error().message;
  }
}

}  // namespace
}  // namespace sublease
