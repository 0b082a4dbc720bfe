// The compact lease record round-trips every field exactly, canonical forms or not, and
#include "daemon/allocator/test_util.h"
// interns the strings leases share.
#include "daemon/allocator/lease_table.h"

#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <string>
#include <vector>

namespace sublease {
namespace {

using test_util::Ip;

Lease Typical() {
  Lease l;
  l.subnet = "net";
  l.owner = Owner{"default", "web-7d9f8b6c5-x2k4p", "3f6c1f5e-8d7a-4b8e-9c1a-0123456789ab",
                  "4f1e9c0b2a3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7", "net1"};
  l.v4 = Ip("10.0.0.5");
  l.state = LeaseState::kCommitted;
  l.mac = "0a:1b:2c:3d:4e:5f";
  l.provider = "macvlan.default";
  return l;
}

// Table: one field changed from the typical lease; each must come back exactly.
struct Case {
  const char* name;
  void (*change)(Lease&);
};
const Case kCases[] = {
    {"typical", [](Lease&) {}},
    {"uid not a UUID", [](Lease& l) { l.owner.pod_uid = "uid-a"; }},
    {"uid uppercase UUID",
     [](Lease& l) { l.owner.pod_uid = "3F6C1F5E-8D7A-4B8E-9C1A-0123456789AB"; }},
    {"uid UUID without dashes",
     [](Lease& l) { l.owner.pod_uid = "3f6c1f5e8d7a4b8e9c1a0123456789ab"; }},
    {"uid UUID dash misplaced",
     [](Lease& l) { l.owner.pod_uid = "3f6c1f5e8-d7a-4b8e-9c1a-0123456789ab"; }},
    {"uid empty", [](Lease& l) { l.owner.pod_uid = ""; }},
    {"container ID short", [](Lease& l) { l.owner.container_id = "c1"; }},
    {"container ID uppercase",
     [](Lease& l) {
       l.owner.container_id = "4F1E9C0B2A3D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7";
     }},
    {"container ID 63 hex", [](Lease& l) { l.owner.container_id.pop_back(); }},
    {"container ID 65 hex", [](Lease& l) { l.owner.container_id += "a"; }},
    {"container ID 64 non-hex", [](Lease& l) { l.owner.container_id[10] = 'g'; }},
    {"container ID with NUL", [](Lease& l) { l.owner.container_id = std::string("a\0b", 3); }},
    {"container ID empty", [](Lease& l) { l.owner.container_id = ""; }},
    {"long container ID (varint)", [](Lease& l) { l.owner.container_id = std::string(300, 'z'); }},
    {"namespace empty", [](Lease& l) { l.owner.pod_namespace = ""; }},
    {"pod name empty (container-keyed)", [](Lease& l) { l.owner.pod_name = ""; }},
    {"pod name and container ID empty",
     [](Lease& l) {
       l.owner.pod_name = "";
       l.owner.container_id = "";
     }},
    {"mac uppercase", [](Lease& l) { l.mac = "0A:1B:2C:3D:4E:5F"; }},
    {"mac with dashes", [](Lease& l) { l.mac = "0a-1b-2c-3d-4e-5f"; }},
    {"mac short", [](Lease& l) { l.mac = "0a:1b:2c"; }},
    {"mac empty", [](Lease& l) { l.mac = ""; }},
    {"mac all ones", [](Lease& l) { l.mac = "ff:ff:ff:ff:ff:ff"; }},
    {"ipv6 only",
     [](Lease& l) {
       l.v4.reset();
       l.v6 = Ip("fd00:1234::ffff:1");
     }},
    {"dual stack", [](Lease& l) { l.v6 = Ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"); }},
    {"no address", [](Lease& l) { l.v4.reset(); }},
    {"ipv4 0.0.0.0 and 255.255.255.255", [](Lease& l) { l.v4 = Ip("255.255.255.255"); }},
    {"pending sticky",
     [](Lease& l) {
       l.state = LeaseState::kPending;
       l.sticky = true;
     }},
    {"provider and ifname empty",
     [](Lease& l) {
       l.provider = "";
       l.owner.ifname = "";
     }},
    {"everything as text",
     [](Lease& l) {
       l.owner.pod_uid = "U";
       l.owner.container_id = "C";
       l.mac = "M";
     }},
};

TEST(LeaseTableTest, RoundTripsEveryFieldExactly) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    LeaseTable t;
    Lease l = Typical();
    c.change(l);
    LeaseTable::Id id = t.Insert(l);
    ASSERT_NE(id, LeaseTable::kNone);
    EXPECT_EQ(t.Get(id), l);
    auto found = t.Find(l.key());
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(*found, l);
    EXPECT_EQ(t.state(id), l.state);
    EXPECT_EQ(t.HolderDescription(id), l.HolderDescription());
    for (const IpAddr& a : l.addresses()) EXPECT_EQ(t.FindByAddress(l.subnet, a), id);
  }
}

TEST(LeaseTableTest, ManyLeasesOfEveryShapeStayApart) {
  // All cases at once, each in its own pod: no record bleeds into another.
  LeaseTable t;
  std::vector<std::pair<LeaseTable::Id, Lease>> stored;
  int n = 0;
  for (const Case& c : kCases) {
    Lease l = Typical();
    c.change(l);
    if (!l.owner.pod_name.empty()) l.owner.pod_name += "-" + std::to_string(n);
    if (l.owner.pod_name.empty()) l.owner.container_id += "-" + std::to_string(n);
    if (l.v4) l.v4 = IpAddr(Family::kV4, 0x0a000000 + n);
    if (l.v6) l.v6 = IpAddr(Family::kV6, (U128{0xfd} << 120) + n);
    ++n;
    ASSERT_EQ(t.FindId(l.key()), LeaseTable::kNone) << c.name;
    stored.emplace_back(t.Insert(l), l);
  }
  EXPECT_EQ(t.size(), stored.size());
  for (const auto& [id, l] : stored) {
    EXPECT_EQ(t.Get(id), l);
    EXPECT_EQ(t.FindId(l.key()), id);
  }
  size_t seen = 0;
  t.ForEach([&](const Lease& l) {
    ++seen;
    EXPECT_EQ(t.Get(t.FindId(l.key())), l);
  });
  EXPECT_EQ(seen, stored.size());
}

TEST(LeaseTableTest, KeyOfContainerKeyedLeaseIsItsContainerId) {
  LeaseTable t;
  Lease a = Typical();
  a.owner.pod_name = "";
  LeaseTable::Id id = t.Insert(a);
  EXPECT_EQ(t.FindId(AttachmentKey{"net", "container:" + a.owner.container_id, "net1"}), id);
  EXPECT_EQ(t.FindId(AttachmentKey{"net", "pod:default/", "net1"}), LeaseTable::kNone);
  // Same bytes, different text (uppercase) is a different container.
  std::string upper = a.owner.container_id;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
  EXPECT_EQ(t.FindId(AttachmentKey{"net", "container:" + upper, "net1"}), LeaseTable::kNone);
}

TEST(LeaseTableTest, FindByAddressIsPerSubnetAndFamily) {
  LeaseTable t;
  Lease a = Typical();
  a.v6 = Ip("fd00::5");
  LeaseTable::Id id = t.Insert(a);
  EXPECT_EQ(t.FindByAddress("net", Ip("10.0.0.5")), id);
  EXPECT_EQ(t.FindByAddress("net", Ip("fd00::5")), id);
  EXPECT_EQ(t.FindByAddress("other", Ip("10.0.0.5")), LeaseTable::kNone);
  EXPECT_EQ(t.FindByAddress("net", Ip("10.0.0.6")), LeaseTable::kNone);
  // ::a00:5 has the IPv4 address's value but is another family.
  EXPECT_EQ(t.FindByAddress("net", IpAddr(Family::kV6, 0x0a000005)), LeaseTable::kNone);
}

TEST(LeaseTableTest, InternsRepeatedStringsAndFreesUnusedOnes) {
  LeaseTable t;
  std::vector<LeaseTable::Id> ids;
  for (int i = 0; i < 100; ++i) {
    Lease l = Typical();
    l.owner.pod_name = "p" + std::to_string(i);
    l.v4 = IpAddr(Family::kV4, 0x0a000000 + i);
    ids.push_back(t.Insert(l));
  }
  // "net", "default", "net1", "macvlan.default": four strings for 100 leases.
  EXPECT_EQ(t.interned_strings(), 4u);
  Lease other = Typical();
  other.subnet = "net2";
  other.owner.pod_namespace = "team-a";
  LeaseTable::Id o = t.Insert(other);
  EXPECT_EQ(t.interned_strings(), 6u);
  t.Erase(o);
  EXPECT_EQ(t.interned_strings(), 4u);
  EXPECT_EQ(t.FindId(other.key()), LeaseTable::kNone);
  for (LeaseTable::Id id : ids) t.Erase(id);
  EXPECT_EQ(t.interned_strings(), 0u);
  EXPECT_EQ(t.size(), 0u);
}

TEST(LeaseTableTest, UpdateKeepsKeyAndIndexesAndSharedStrings) {
  LeaseTable t;
  Lease a = Typical();
  Lease b = Typical();
  b.owner.pod_name = "b";
  b.v4 = Ip("10.0.0.6");
  LeaseTable::Id ia = t.Insert(a), ib = t.Insert(b);
  a.owner.container_id = "new-sandbox";
  a.owner.pod_uid = "3f6c1f5e-8d7a-4b8e-9c1a-000000000000";
  a.state = LeaseState::kCommitted;
  t.Update(ia, a);
  EXPECT_EQ(t.Get(ia), a);
  EXPECT_EQ(t.FindId(a.key()), ia);
  EXPECT_EQ(t.FindByAddress("net", *a.v4), ia);
  EXPECT_EQ(t.Get(ib), b);
  EXPECT_EQ(t.interned_strings(), 4u);
  t.SetState(ib, LeaseState::kPending);
  EXPECT_EQ(t.state(ib), LeaseState::kPending);
}

TEST(LeaseTableTest, ErasedIdsAreReusedAndIndexesStayExact) {
  // Many inserts and erases in a fixed pseudo-random order: the table always answers
  // like a std::set of the live keys would.
  LeaseTable t;
  std::map<std::string, std::pair<LeaseTable::Id, Lease>> live;
  uint64_t x = 12345;
  for (int step = 0; step < 20000; ++step) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int pod = static_cast<int>((x >> 33) % 3000);
    Lease l = Typical();
    l.owner.pod_name = "p" + std::to_string(pod);
    l.v4 = IpAddr(Family::kV4, 0x0a000000 + pod);
    if (pod % 3 == 0) l.v6 = IpAddr(Family::kV6, (U128{0xfd} << 120) + pod);
    auto it = live.find(l.owner.pod_name);
    if (it == live.end()) {
      ASSERT_EQ(t.FindId(l.key()), LeaseTable::kNone);
      live.emplace(l.owner.pod_name, std::make_pair(t.Insert(l), l));
    } else {
      ASSERT_EQ(t.FindId(l.key()), it->second.first);
      t.Erase(it->second.first);
      ASSERT_EQ(t.FindByAddress("net", *l.v4), LeaseTable::kNone);
      live.erase(it);
    }
  }
  EXPECT_EQ(t.size(), live.size());
  for (const auto& [name, entry] : live) {
    EXPECT_EQ(t.FindId(entry.second.key()), entry.first);
    EXPECT_EQ(t.FindByAddress("net", *entry.second.v4), entry.first);
    if (entry.second.v6) {
      EXPECT_EQ(t.FindByAddress("net", *entry.second.v6), entry.first);
    }
    EXPECT_EQ(t.Get(entry.first), entry.second);
  }
}

}  // namespace
}  // namespace sublease
