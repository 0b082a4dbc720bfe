#include "daemon/allocator/allocator.h"
#include "daemon/allocator/test_util.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

using test_util::Ip;

class AllocatorTest : public ::testing::Test {
 protected:
  void AddSubnet(const std::string& name, const std::string& cidr, const std::string& gateway = "",
                 std::vector<std::string> exclude = {}) {
    auto s = NormalizeSubnet(SubnetSpec{name, name + ".default", cidr, gateway, std::move(exclude), "", ""});
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(alloc_.UpsertSubnet(*s));
  }
  static AllocateRequest Req(const std::string& subnet, const std::string& pod,
                             const std::string& container = "") {
    AllocateRequest r;
    r.subnet = subnet;
    r.owner = Owner{"default", pod, "uid-" + pod, container.empty() ? "c-" + pod : container, "net1"};
    r.provider = subnet + ".default";
    return r;
  }
  static AllocateRequest Static(const std::string& subnet, const std::string& pod,
                                std::vector<std::string> ips) {
    AllocateRequest r = Req(subnet, pod);
    r.static_ips = std::move(ips);
    return r;
  }
  static AllocateRequest Pool(const std::string& subnet, const std::string& pod, const std::string& pool,
                              std::optional<uint32_t> ordinal = std::nullopt) {
    AllocateRequest r = Req(subnet, pod);
    r.pool = pool;
    r.ordinal = ordinal;
    return r;
  }
  std::string V4Of(const AllocateRequest& r) {
    auto l = alloc_.Allocate(r);
    if (!l) return "error: " + l.error().message;
    return l->v4 ? l->v4->ToString() : "none";
  }
  Error ErrorOf(const AllocateRequest& r) {
    auto l = alloc_.Allocate(r);
    EXPECT_FALSE(l) << "allocated " << (l && l->v4 ? l->v4->ToString() : "");
    return l ? Error{Code::kInternal, "no error"} : l.error();
  }
  static AttachmentKey KeyOf(const AllocateRequest& r) { return AttachmentKey::For(r.subnet, r.owner); }

  Allocator alloc_;
};

#define EXPECT_ERROR(expr, code_, text)                                          \
  do {                                                                           \
    Error e_ = (expr);                                                           \
    EXPECT_EQ(e_.code, code_) << e_.message;                                     \
    EXPECT_NE(e_.message.find(text), std::string::npos) << e_.message;           \
  } while (0)

TEST_F(AllocatorTest, SeedSubnetHandsOutFrom172_17_0_11Upwards) {
  AddSubnet("macvlan", "172.17.0.0/16", "172.17.0.1", {"172.17.0.0..172.17.0.10"});
  EXPECT_EQ(V4Of(Req("macvlan", "a")), "172.17.0.11");
  EXPECT_EQ(V4Of(Req("macvlan", "b")), "172.17.0.12");
  auto u = *alloc_.Usage("macvlan");
  EXPECT_EQ(u.v4_using, 2u);
  EXPECT_EQ(u.v4_available, 65536u - 2 - 10 - 2);
  EXPECT_EQ(u.v4_using_range, "172.17.0.11-172.17.0.12");
  EXPECT_EQ(u.v4_available_range, "172.17.0.13-172.17.255.254");
  EXPECT_EQ(u.v6_available, 0u);
  EXPECT_EQ(u.v6_available_range, "");
}

TEST_F(AllocatorTest, SeedStaticAddressIsNeverHandedOutDynamically) {
  AddSubnet("macvlan", "172.17.0.0/16", "172.17.0.1", {"172.17.0.0..172.17.0.10"});
  EXPECT_EQ(V4Of(Static("macvlan", "static-ip", {"172.17.0.11"})), "172.17.0.11");
  EXPECT_EQ(V4Of(Req("macvlan", "a")), "172.17.0.12");
  EXPECT_EQ(alloc_.Holder("macvlan", Ip("172.17.0.11"))->owner.pod_name, "static-ip");
}

TEST_F(AllocatorTest, StaticHeldByAnotherIsAConflictNamingTheHolder) {
  AddSubnet("net", "10.0.0.0/24");
  ASSERT_EQ(V4Of(Static("net", "first", {"10.0.0.50"})), "10.0.0.50");
  EXPECT_ERROR(ErrorOf(Static("net", "second", {"10.0.0.50"})), Code::kConflict,
               "address 10.0.0.50 in subnet net is held by pod default/first (container c-first, net1)");
}

TEST_F(AllocatorTest, StaticRejectsUnassignableAddressesSayingWhy) {
  AddSubnet("net", "10.0.0.0/24");
  struct {
    const char* ip;
    const char* why;
  } cases[] = {
      {"10.0.0.1", "is the gateway of subnet net"},
      {"10.0.0.0", "is the network address"},
      {"10.0.0.255", "is the broadcast address"},
      {"10.0.1.9", "address 10.0.1.9 is not in subnet net (10.0.0.0/24)"},
      {"fd00::5", "is not in subnet net"},
      {"banana", "static address"},
      {"10.0.0.5/25", "static address 10.0.0.5/25: the prefix must match subnet net (10.0.0.0/24)"},
      {"10.0.0.5/x", "the prefix must match"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.ip);
    EXPECT_ERROR(ErrorOf(Static("net", "p", {c.ip})), Code::kInvalidArgument, c.why);
  }
  EXPECT_EQ(alloc_.LeaseCount(), 0u);
}

TEST_F(AllocatorTest, StaticWithMatchingPrefixIsAccepted) {
  AddSubnet("net", "10.0.0.0/24");
  EXPECT_EQ(V4Of(Static("net", "p", {"10.0.0.5/24"})), "10.0.0.5");
}

TEST_F(AllocatorTest, StaticTwoOfOneFamilyIsRejected) {
  AddSubnet("net", "10.0.0.0/24");
  EXPECT_ERROR(ErrorOf(Static("net", "p", {"10.0.0.5", "10.0.0.6"})), Code::kInvalidArgument,
               "two IPv4 addresses");
}

// Kube-OVN's Subnet.GetStaticAddress accepts reserved (excludeIps) addresses.
TEST_F(AllocatorTest, StaticInExcludeIpsIsAllowedAndNotFreedOnRelease) {
  AddSubnet("net", "10.0.0.0/24", "", {"10.0.0.100..10.0.0.110"});
  auto before = *alloc_.Usage("net");
  auto r = Static("net", "p", {"10.0.0.105"});
  ASSERT_EQ(V4Of(r), "10.0.0.105");
  auto during = *alloc_.Usage("net");
  EXPECT_EQ(during.v4_using, 1u);
  EXPECT_EQ(during.v4_available, before.v4_available);  // was never free
  ASSERT_TRUE(alloc_.Release(KeyOf(r)));
  auto after = *alloc_.Usage("net");
  EXPECT_EQ(after.v4_available, before.v4_available);
  EXPECT_EQ(after.v4_available_range, before.v4_available_range);
}

TEST_F(AllocatorTest, DualStackDynamicGivesOneOfEach) {
  AddSubnet("dual", "10.0.0.0/24,fd00::/120");
  auto l = alloc_.Allocate(Req("dual", "a"));
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->v4->ToString(), "10.0.0.2");
  EXPECT_EQ(l->v6->ToString(), "fd00::2");
}

TEST_F(AllocatorTest, DualStackStaticWithOneFamilyGetsTheOtherDynamically) {
  AddSubnet("dual", "10.0.0.0/24,fd00::/120");
  auto l = alloc_.Allocate(Static("dual", "a", {"fd00::40"}));
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->v4->ToString(), "10.0.0.2");
  EXPECT_EQ(l->v6->ToString(), "fd00::40");
  auto both = alloc_.Allocate(Static("dual", "b", {"10.0.0.9", "fd00::9"}));
  ASSERT_TRUE(both) << both.error().message;
  EXPECT_EQ(both->v4->ToString(), "10.0.0.9");
  EXPECT_EQ(both->v6->ToString(), "fd00::9");
}

TEST_F(AllocatorTest, DualStackFailureInV6LeavesV4Untouched) {
  // fd00::/126: host range fd00::1-fd00::2, gateway fd00::1: one IPv6 address.
  AddSubnet("dual", "10.0.0.0/24,fd00::/126");
  ASSERT_TRUE(alloc_.Allocate(Req("dual", "a")));
  auto before = *alloc_.Usage("dual");
  EXPECT_ERROR(ErrorOf(Req("dual", "b")), Code::kExhausted, "no free IPv6 address in fd00::/126");
  auto after = *alloc_.Usage("dual");
  EXPECT_EQ(after.v4_using, before.v4_using);
  EXPECT_EQ(after.v4_available_range, before.v4_available_range);
  EXPECT_EQ(alloc_.Holder("dual", Ip("10.0.0.3")), std::nullopt);
  // A static v6 conflict leaves the v4 half untouched as well.
  EXPECT_ERROR(ErrorOf(Static("dual", "c", {"10.0.0.7", "fd00::2"})), Code::kConflict, "held by pod default/a");
  EXPECT_EQ(alloc_.Holder("dual", Ip("10.0.0.7")), std::nullopt);
  EXPECT_EQ(alloc_.LeaseCount(), 1u);
}

TEST_F(AllocatorTest, FamilyNarrowsADualStackSubnet) {
  AddSubnet("dual", "10.0.0.0/24,fd00::/120");
  AllocateRequest r = Req("dual", "a");
  r.family = Family::kV6;
  auto l = alloc_.Allocate(r);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_FALSE(l->v4.has_value());
  EXPECT_EQ(l->v6->ToString(), "fd00::2");
  AllocateRequest s = Static("dual", "b", {"fd00::30"});
  s.family = Family::kV4;
  EXPECT_ERROR(ErrorOf(s), Code::kInvalidArgument, "static address fd00::30 is IPv6 but ip_family asks for IPv4");
}

TEST_F(AllocatorTest, FamilyTheSubnetLacksIsInvalid) {
  AddSubnet("net", "10.0.0.0/24");
  AllocateRequest r = Req("net", "a");
  r.family = Family::kV6;
  EXPECT_ERROR(ErrorOf(r), Code::kInvalidArgument, "subnet net (10.0.0.0/24) has no IPv6 block");
}

TEST_F(AllocatorTest, UnknownSubnetIsNotFound) {
  EXPECT_ERROR(ErrorOf(Req("nope", "a")), Code::kNotFound, "subnet nope is not known");
}

TEST_F(AllocatorTest, DeploymentPodsTakePoolEntriesInOrderAndReuseReleasedOnes) {
  AddSubnet("macvlan", "172.17.0.0/16", "172.17.0.1", {"172.17.0.0..172.17.0.10"});
  const std::string pool = "172.17.0.200,172.17.0.201,172.17.0.202";
  EXPECT_EQ(V4Of(Pool("macvlan", "w-1", pool)), "172.17.0.200");
  AllocateRequest second = Pool("macvlan", "w-2", pool);
  EXPECT_EQ(V4Of(second), "172.17.0.201");
  EXPECT_EQ(V4Of(Pool("macvlan", "w-3", pool)), "172.17.0.202");
  EXPECT_ERROR(ErrorOf(Pool("macvlan", "w-4", pool)), Code::kExhausted, "every ip_pool entry is taken");
  ASSERT_TRUE(alloc_.Release(KeyOf(second)));
  EXPECT_EQ(V4Of(Pool("macvlan", "w-4", pool)), "172.17.0.201");
  // Dynamic allocation still starts at the bottom of the free range.
  EXPECT_EQ(V4Of(Req("macvlan", "dyn")), "172.17.0.11");
}

TEST_F(AllocatorTest, UpdateOwnerKeepsTheLeaseForANewPodUidOrSandbox) {
  AddSubnet("net", "10.0.0.0/24");
  AllocateRequest r = Req("net", "web-0");
  auto first = alloc_.Allocate(r);
  ASSERT_TRUE(first);
  ASSERT_TRUE(alloc_.UpdateOwner(KeyOf(r), "uid-new", ""));
  EXPECT_EQ(alloc_.Find(KeyOf(r))->owner.pod_uid, "uid-new");
  EXPECT_EQ(alloc_.Find(KeyOf(r))->owner.container_id, first->owner.container_id);
  ASSERT_TRUE(alloc_.UpdateOwner(KeyOf(r), "", "sandbox-2"));
  EXPECT_EQ(alloc_.Find(KeyOf(r))->owner.container_id, "sandbox-2");
  EXPECT_EQ(alloc_.Find(KeyOf(r))->v4, first->v4);
  EXPECT_EQ(alloc_.Holder("net", *first->v4), alloc_.Find(KeyOf(r)));
  EXPECT_EQ(alloc_.UpdateOwner(AttachmentKey::For("net", Owner{"default", "nobody", "", "", "net1"}), "u", "")
                .error()
                .code,
            Code::kNotFound);
  AllocateRequest bare = Req("net", "");
  bare.owner.container_id = "c-bare";
  ASSERT_TRUE(alloc_.Allocate(bare));
  EXPECT_EQ(alloc_.UpdateOwner(KeyOf(bare), "", "c-other").error().code, Code::kInvalidArgument);
}

TEST_F(AllocatorTest, StatefulSetPodsTakeTheirOrdinalEntry) {
  AddSubnet("net", "10.0.0.0/24", "", {"10.0.0.20..10.0.0.29"});  // pool reserved from dynamic
  const std::string pool = "10.0.0.20,10.0.0.21,10.0.0.22";
  EXPECT_EQ(V4Of(Pool("net", "web-2", pool, 2)), "10.0.0.22");
  EXPECT_EQ(V4Of(Pool("net", "web-0", pool, 0)), "10.0.0.20");
  EXPECT_ERROR(ErrorOf(Pool("net", "web-3", pool, 3)), Code::kExhausted,
               "ip_pool has 3 entries; StatefulSet pod ordinal 3 has none");
  ASSERT_EQ(V4Of(Static("net", "squatter", {"10.0.0.21"})), "10.0.0.21");
  EXPECT_ERROR(ErrorOf(Pool("net", "web-1", pool, 1)), Code::kConflict,
               "10.0.0.21 is held by pod default/squatter");
  // Excluded pool addresses are never handed out dynamically.
  for (int i = 0; i < 20; ++i) {
    auto l = alloc_.Allocate(Req("net", "dyn-" + std::to_string(i)));
    ASSERT_TRUE(l);
    EXPECT_FALSE(l->v4->value() >= Ip("10.0.0.20").value() && l->v4->value() <= Ip("10.0.0.29").value())
        << l->v4->ToString();
  }
}

TEST_F(AllocatorTest, DualStackPoolEntries) {
  AddSubnet("dual", "10.0.0.0/24,fd00::/120");
  const std::string pool = "10.0.0.20,fd00::20;10.0.0.21,fd00::21";
  auto l = alloc_.Allocate(Pool("dual", "a", pool));
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->v4->ToString(), "10.0.0.20");
  EXPECT_EQ(l->v6->ToString(), "fd00::20");
  // A single-family pool in a dual-stack subnet: the other family is dynamic.
  auto m = alloc_.Allocate(Pool("dual", "b", "10.0.0.40,10.0.0.41"));
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->v4->ToString(), "10.0.0.40");
  EXPECT_EQ(m->v6->ToString(), "fd00::2");
}

TEST_F(AllocatorTest, MalformedPoolIsInvalidAndTakesNothing) {
  AddSubnet("net", "10.0.0.0/24");
  EXPECT_ERROR(ErrorOf(Pool("net", "a", "10.0.0.20,10.0.9.1")), Code::kInvalidArgument,
               "address 10.0.9.1 is not in subnet net (10.0.0.0/24)");
  EXPECT_EQ(alloc_.LeaseCount(), 0u);
  EXPECT_EQ(alloc_.Usage("net")->v4_using, 0u);
}

TEST_F(AllocatorTest, StaticTakesPrecedenceOverPool) {
  AddSubnet("net", "10.0.0.0/24");
  AllocateRequest r = Pool("net", "a", "10.0.0.20");
  r.static_ips = {"10.0.0.30"};
  EXPECT_EQ(V4Of(r), "10.0.0.30");
}

TEST_F(AllocatorTest, Slash31Slash32AndIpv6SmallSubnets) {
  AddSubnet("p2p", "10.0.0.0/31", "10.0.0.1");
  EXPECT_EQ(V4Of(Req("p2p", "a")), "10.0.0.0");
  EXPECT_ERROR(ErrorOf(Req("p2p", "b")), Code::kExhausted, "no free IPv4 address in 10.0.0.0/31");
  AddSubnet("host", "10.9.9.9/32");
  EXPECT_EQ(V4Of(Req("host", "a")), "10.9.9.9");
  AddSubnet("p2p6", "fd00::/127");
  auto l = alloc_.Allocate(Req("p2p6", "a"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->v6->ToString(), "fd00::1");
  AddSubnet("host6", "fd00::9/128");
  auto h = alloc_.Allocate(Req("host6", "a"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->v6->ToString(), "fd00::9");
}

TEST_F(AllocatorTest, Ipv6Slash64HandsOutFromTheBottom) {
  AddSubnet("v6", "fd00:1::/64");
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) got.push_back(alloc_.Allocate(Req("v6", "p" + std::to_string(i)))->v6->ToString());
  EXPECT_EQ(got, (std::vector<std::string>{"fd00:1::2", "fd00:1::3", "fd00:1::4"}));
  EXPECT_EQ(alloc_.Usage("v6")->v6_available, (U128{1} << 64) - 3 - 3);  // net, gw, last, 3 held
}

TEST_F(AllocatorTest, ExhaustionThenReleaseThenReuse) {
  AddSubnet("small", "10.0.0.0/29");  // .2-.6 usable
  std::vector<AllocateRequest> reqs;
  for (int i = 0; i < 5; ++i) {
    reqs.push_back(Req("small", "p" + std::to_string(i)));
    EXPECT_EQ(V4Of(reqs.back()), "10.0.0." + std::to_string(2 + i));
  }
  EXPECT_ERROR(ErrorOf(Req("small", "late")), Code::kExhausted, "subnet small has no free IPv4 address");
  auto released = alloc_.Release(KeyOf(reqs[2]));
  ASSERT_TRUE(released);
  EXPECT_EQ(released->v4->ToString(), "10.0.0.4");
  EXPECT_EQ(V4Of(Req("small", "late")), "10.0.0.4");
  EXPECT_ERROR(ErrorOf(Req("small", "later")), Code::kExhausted, "5 held");
}

TEST_F(AllocatorTest, SameAttachmentAskingAgainGetsTheSameLease) {
  AddSubnet("net", "10.0.0.0/24");
  auto first = alloc_.Allocate(Req("net", "a"));
  auto again = alloc_.Allocate(Req("net", "a"));
  ASSERT_TRUE(first && again);
  EXPECT_EQ(first->v4, again->v4);
  EXPECT_EQ(alloc_.LeaseCount(), 1u);
  // Even when the repeated request asks for something else: the lease is returned unchanged.
  auto other = alloc_.Allocate(Static("net", "a", {"10.0.0.99"}));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->v4, first->v4);
}

TEST_F(AllocatorTest, NewSandboxOfSamePodKeepsAddressAndUpdatesContainerId) {
  AddSubnet("net", "10.0.0.0/24");
  auto first = alloc_.Allocate(Req("net", "a", "sandbox-1"));
  ASSERT_TRUE(first);
  ASSERT_TRUE(alloc_.Commit(KeyOf(Req("net", "a"))));
  auto second = alloc_.Allocate(Req("net", "a", "sandbox-2"));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->v4, first->v4);
  EXPECT_EQ(second->owner.container_id, "sandbox-2");
  EXPECT_EQ(second->state, LeaseState::kCommitted);
  std::optional<Lease> stored = alloc_.Find(KeyOf(Req("net", "a")));
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->owner.container_id, "sandbox-2");
  EXPECT_EQ(alloc_.Holder("net", *first->v4), stored);
}

TEST_F(AllocatorTest, WithoutPodIdentityEachContainerIsItsOwnAttachment) {
  AddSubnet("net", "10.0.0.0/24");
  AllocateRequest a = Req("net", "", "c1"), b = Req("net", "", "c2");
  a.owner.pod_namespace = b.owner.pod_namespace = "";
  EXPECT_EQ(V4Of(a), "10.0.0.2");
  EXPECT_EQ(V4Of(b), "10.0.0.3");
  EXPECT_EQ(V4Of(a), "10.0.0.2");
  EXPECT_EQ(alloc_.LeaseCount(), 2u);
  EXPECT_EQ(alloc_.Find(KeyOf(b))->HolderDescription(), "container c2 (net1)");
}

TEST_F(AllocatorTest, CommitAndReleaseOfUnknownKeysAreNotFound) {
  AddSubnet("net", "10.0.0.0/24");
  AttachmentKey k{"net", "pod:default/ghost", "net1"};
  EXPECT_EQ(alloc_.Release(k).error().code, Code::kNotFound);
  EXPECT_EQ(alloc_.Commit(k).error().code, Code::kNotFound);
  auto l = alloc_.Allocate(Req("net", "a"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->state, LeaseState::kPending);
  ASSERT_TRUE(alloc_.Commit(KeyOf(Req("net", "a"))));
  EXPECT_EQ(alloc_.Find(KeyOf(Req("net", "a")))->state, LeaseState::kCommitted);
}

TEST_F(AllocatorTest, UpsertSubnetRecomputesFreeAndKeepsLeases) {
  AddSubnet("net", "10.0.0.0/24");
  auto a = Req("net", "a");
  ASSERT_EQ(V4Of(a), "10.0.0.2");
  ASSERT_EQ(V4Of(Req("net", "b")), "10.0.0.3");
  // Now exclude the held .2 and everything up to .9.
  AddSubnet("net", "10.0.0.0/24", "", {"10.0.0.2..10.0.0.9"});
  auto u = *alloc_.Usage("net");
  EXPECT_EQ(u.v4_using, 2u);
  EXPECT_EQ(u.v4_available_range, "10.0.0.10-10.0.0.254");
  EXPECT_NE(alloc_.Find(KeyOf(a)), std::nullopt);  // not revoked
  ASSERT_TRUE(alloc_.Release(KeyOf(a)));       // .2 is excluded now: not freed
  EXPECT_EQ(alloc_.Usage("net")->v4_available_range, "10.0.0.10-10.0.0.254");
  EXPECT_EQ(V4Of(Req("net", "c")), "10.0.0.10");
  // Dropping the exclusion frees .2-.9 except the still-held .3.
  AddSubnet("net", "10.0.0.0/24");
  EXPECT_EQ(alloc_.Usage("net")->v4_available_range, "10.0.0.2,10.0.0.4-10.0.0.9,10.0.0.11-10.0.0.254");
}

TEST_F(AllocatorTest, RemoveSubnetRefusesWhileLeasesLive) {
  AddSubnet("net", "10.0.0.0/24");
  auto a = Req("net", "a");
  ASSERT_TRUE(alloc_.Allocate(a));
  EXPECT_ERROR(alloc_.RemoveSubnet("net").error(), Code::kConflict, "still has 1 live leases");
  ASSERT_TRUE(alloc_.Release(KeyOf(a)));
  EXPECT_TRUE(alloc_.RemoveSubnet("net"));
  EXPECT_EQ(alloc_.FindSubnet("net"), nullptr);
  EXPECT_EQ(alloc_.RemoveSubnet("net").error().code, Code::kNotFound);
}

TEST_F(AllocatorTest, RestoreReinsertsAndDetectsConflicts) {
  AddSubnet("net", "10.0.0.0/24");
  Lease l;
  l.subnet = "net";
  l.owner = Owner{"default", "old", "uid", "c-old", "net1"};
  l.v4 = Ip("10.0.0.2");
  l.state = LeaseState::kCommitted;
  ASSERT_TRUE(alloc_.Restore(l));
  EXPECT_EQ(V4Of(Req("net", "new")), "10.0.0.3");  // restored address is not free
  Lease dup = l;
  dup.owner.pod_name = "other";
  EXPECT_ERROR(alloc_.Restore(dup).error(), Code::kConflict, "is already held by pod default/old");
  EXPECT_EQ(alloc_.Restore(l).error().code, Code::kConflict);  // same key twice
  Lease lost = l;
  lost.subnet = "gone";
  EXPECT_EQ(alloc_.Restore(lost).error().code, Code::kNotFound);
  EXPECT_EQ(alloc_.LeaseCount(), 2u);
}

TEST_F(AllocatorTest, SubnetLookupsByNameAndProvider) {
  AddSubnet("a", "10.0.0.0/24");
  AddSubnet("b", "10.1.0.0/24");
  EXPECT_EQ(alloc_.FindSubnetByProvider("b.default")->name, "b");
  EXPECT_EQ(alloc_.FindSubnetByProvider("c.default"), nullptr);
  EXPECT_EQ(alloc_.SubnetNames(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(alloc_.Usage("c").error().code, Code::kNotFound);
}

TEST_F(AllocatorTest, LeaseRecordsRequestDetails) {
  AddSubnet("net", "10.0.0.0/24");
  AllocateRequest r = Req("net", "a");
  r.sticky = true;
  r.mac = "00:00:00:53:6b:bb";
  auto l = alloc_.Allocate(r);
  ASSERT_TRUE(l);
  EXPECT_TRUE(l->sticky);
  EXPECT_EQ(l->mac, "00:00:00:53:6b:bb");
  EXPECT_EQ(l->provider, "net.default");
  EXPECT_EQ(l->key(), KeyOf(r));
  int seen = 0;
  alloc_.ForEachLease([&](const Lease& x) { seen += x.owner.pod_name == "a"; });
  EXPECT_EQ(seen, 1);
}

// --- Cluster mode: local blocks, `within`, foreign holds ---

IpNet Net(const char* text) { return *IpNet::Parse(text); }

class ClusterAllocatorTest : public AllocatorTest {
 protected:
  void SetUp() override {
    AddSubnet("net", "10.0.0.0/24");  // gateway 10.0.0.1
    ASSERT_TRUE(alloc_.SetClusterMode("net", true));
  }
  AllocateRequest Within(const std::string& pod, std::vector<IpNet> within) {
    AllocateRequest r = Req("net", pod);
    r.within = std::move(within);
    return r;
  }
};

TEST_F(ClusterAllocatorTest, WithoutALocalBlockDynamicRequestsAreExhausted) {
  EXPECT_FALSE(alloc_.HasDynamicFree("net", Family::kV4));
  EXPECT_ERROR(ErrorOf(Req("net", "a")), Code::kExhausted, "in this node's blocks");
  EXPECT_EQ(alloc_.LeaseCount(), 0u);
  // Standalone mode hands out from the whole subnet again.
  ASSERT_TRUE(alloc_.SetClusterMode("net", false));
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.2");
}

TEST_F(ClusterAllocatorTest, DynamicPicksComeOnlyFromLocalBlocksLowestFirst) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.16/29"), true));
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.2");  // .0 network, .1 gateway
  for (int i = 0; i < 5; ++i) EXPECT_EQ(V4Of(Req("net", "b" + std::to_string(i))), "10.0.0." + std::to_string(3 + i));
  EXPECT_EQ(V4Of(Req("net", "c")), "10.0.0.16");  // the first block is full
  ASSERT_TRUE(alloc_.Release(KeyOf(Req("net", "b1"))));
  EXPECT_EQ(V4Of(Req("net", "d")), "10.0.0.4");  // a released local address comes back first
}

TEST_F(ClusterAllocatorTest, ABlockNoLongerLocalIsNotPickedFrom) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.8/29"), true));
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.8");
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.8/29"), false));
  EXPECT_FALSE(alloc_.HasDynamicFree("net", Family::kV4));
  EXPECT_ERROR(ErrorOf(Req("net", "b")), Code::kExhausted, "10.0.0.0/24");
  // A lease released inside a non-local block goes back to free but not to local_free.
  ASSERT_TRUE(alloc_.Release(KeyOf(Req("net", "a"))));
  EXPECT_FALSE(alloc_.HasDynamicFree("net", Family::kV4));
  EXPECT_EQ(alloc_.LowestFreeAtOrAbove("net", Ip("10.0.0.8")), Ip("10.0.0.8"));
}

TEST_F(ClusterAllocatorTest, WithinPicksTheLowestFreeAddressOfTheRangeIgnoringLocality) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  ASSERT_EQ(V4Of(Static("net", "s", {"10.0.0.40"})), "10.0.0.40");
  EXPECT_EQ(V4Of(Within("a", {Net("10.0.0.40/29")})), "10.0.0.41");
  EXPECT_EQ(V4Of(Req("net", "b")), "10.0.0.2");  // plain picks stay local
}

TEST_F(ClusterAllocatorTest, WithinAFullRangeIsExhaustedAndOutsideTheSubnetIsInvalid) {
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(alloc_.MarkForeign("net", Ip(("10.0.0." + std::to_string(48 + i)).c_str()), "pod x/y"));
  }
  EXPECT_ERROR(ErrorOf(Within("a", {Net("10.0.0.48/29")})), Code::kExhausted, "10.0.0.48/29");
  EXPECT_ERROR(ErrorOf(Within("a", {Net("10.0.1.0/29")})), Code::kInvalidArgument, "10.0.1.0/29");
  EXPECT_ERROR(ErrorOf(Within("a", {Net("10.0.0.0/29"), Net("10.0.0.8/29")})), Code::kInvalidArgument,
               "one range per family");
  EXPECT_EQ(alloc_.LeaseCount(), 0u);
}

TEST_F(ClusterAllocatorTest, ForeignHoldsAreNeverHandedOutAndStaticRequestsNameTheHolder) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.2"), "pod default/other (node-b)"));
  EXPECT_EQ(alloc_.ForeignHolder("net", Ip("10.0.0.2")), "pod default/other (node-b)");
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.3");
  EXPECT_ERROR(ErrorOf(Static("net", "s", {"10.0.0.2"})), Code::kConflict, "pod default/other (node-b)");
  auto u = *alloc_.Usage("net");
  EXPECT_EQ(u.v4_using, 1u);  // a foreign hold is not a lease of this node
  EXPECT_EQ(alloc_.LeaseCount(), 1u);
  EXPECT_EQ(alloc_.Holder("net", Ip("10.0.0.2")), std::nullopt);
}

TEST_F(ClusterAllocatorTest, UnmarkForeignReturnsTheAddressToTheLocalFreeSet) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.2"), "pod default/other"));
  ASSERT_TRUE(alloc_.UnmarkForeign("net", Ip("10.0.0.2")));
  ASSERT_TRUE(alloc_.UnmarkForeign("net", Ip("10.0.0.2")));  // no-op
  EXPECT_EQ(alloc_.ForeignHolder("net", Ip("10.0.0.2")), std::nullopt);
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.2");
}

TEST_F(ClusterAllocatorTest, AForeignMarkOnALeasedAddressKeepsItOutWhenTheLeaseGoes) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.2");
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.2"), "pod default/other"));
  ASSERT_TRUE(alloc_.Release(KeyOf(Req("net", "a"))));
  EXPECT_EQ(V4Of(Req("net", "b")), "10.0.0.3");
  ASSERT_TRUE(alloc_.UnmarkForeign("net", Ip("10.0.0.2")));
  EXPECT_EQ(V4Of(Req("net", "c")), "10.0.0.2");
}

TEST_F(ClusterAllocatorTest, PoolSkipsForeignHeldEntriesAndStatefulSetsNameTheHolder) {
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.20"), "pod default/web-0 on node-b"));
  EXPECT_EQ(V4Of(Pool("net", "a", "10.0.0.20,10.0.0.21")), "10.0.0.21");
  EXPECT_ERROR(ErrorOf(Pool("net", "web-0", "10.0.0.20,10.0.0.22", 0u)), Code::kConflict,
               "pod default/web-0 on node-b");
}

TEST_F(ClusterAllocatorTest, RedefiningTheSubnetKeepsModeBlocksAndForeignHolds) {
  ASSERT_TRUE(alloc_.SetBlockLocal("net", Net("10.0.0.0/29"), true));
  ASSERT_TRUE(alloc_.MarkForeign("net", Ip("10.0.0.2"), "pod default/other"));
  AddSubnet("net", "10.0.0.0/24", "", {"10.0.0.3"});
  EXPECT_EQ(V4Of(Req("net", "a")), "10.0.0.4");
  EXPECT_EQ(alloc_.ForeignHolder("net", Ip("10.0.0.2")), "pod default/other");
}

TEST_F(ClusterAllocatorTest, BlocksAndForeignHoldsOutsideTheSubnetAreRejected) {
  EXPECT_EQ(alloc_.SetBlockLocal("net", Net("10.0.1.0/29"), true).error().code, Code::kInvalidArgument);
  EXPECT_EQ(alloc_.MarkForeign("net", Ip("10.0.1.1"), "x").error().code, Code::kInvalidArgument);
  EXPECT_EQ(alloc_.SetBlockLocal("nope", Net("10.0.0.0/29"), true).error().code, Code::kNotFound);
  EXPECT_EQ(alloc_.SetClusterMode("nope", true).error().code, Code::kNotFound);
}

TEST_F(ClusterAllocatorTest, DualStackWithinRestrictsEachFamilyToItsOwnRange) {
  AddSubnet("dual", "10.1.0.0/24,fd00::/120");
  ASSERT_TRUE(alloc_.SetClusterMode("dual", true));
  ASSERT_TRUE(alloc_.SetBlockLocal("dual", Net("10.1.0.0/29"), true));
  AllocateRequest r = Req("dual", "a");
  // IPv6 has no local block: exhausted unless `within` names a range for it.
  EXPECT_ERROR(ErrorOf(r), Code::kExhausted, "IPv6");
  r.within = {Net("fd00::40/125")};
  auto l = alloc_.Allocate(r);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->v4->ToString(), "10.1.0.2");
  EXPECT_EQ(l->v6->ToString(), "fd00::40");
}

}  // namespace
}  // namespace sublease
