#include "daemon/service/cni_service.h"

#include <gtest/gtest.h>

#include <set>

namespace sublease {
namespace {

SubnetSpec SeedSubnet() {
  SubnetSpec s;
  s.name = "macvlan";
  s.provider = "macvlan.default";
  s.cidr_block = "172.17.0.0/16";
  s.gateway = "172.17.0.1";
  s.protocol = "IPv4";
  s.exclude_ips = {"172.17.0.0..172.17.0.10"};
  return s;
}

CniRequest Req(const std::string& container, const std::string& ifname = "net1") {
  CniRequest r;
  r.container_id = container;
  r.ifname = ifname;
  r.netns = "/var/run/netns/" + container;
  r.provider = "macvlan.default";
  return r;
}

class CniServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open(":memory:");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    service_ = std::make_unique<CniService>(&allocator_, store_.get(), &clock_);
    auto applied = service_->ApplySubnets({SeedSubnet()});
    ASSERT_TRUE(applied) << applied.error().message;
  }

  // What a restarted daemon sees: a fresh allocator loaded from the same store.
  std::unique_ptr<CniService> Reload(Allocator* fresh) {
    auto svc = std::make_unique<CniService>(fresh, store_.get(), &clock_);
    auto loaded = svc->Load();
    EXPECT_TRUE(loaded) << loaded.error().message;
    return svc;
  }

  FakeClock clock_;
  Allocator allocator_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<CniService> service_;
};

TEST_F(CniServiceTest, FirstAddGetsFirstAddressAfterExcludeIps) {
  auto reply = service_->Add(Req("c1"));
  ASSERT_TRUE(reply) << reply.error().message;
  ASSERT_EQ(reply->ips.size(), 1u);
  EXPECT_EQ(reply->ips[0].address, "172.17.0.11/16");
  EXPECT_EQ(reply->ips[0].gateway, "172.17.0.1");
  EXPECT_TRUE(reply->routes.empty()) << "no default route unless the NAD asks";
}

TEST_F(CniServiceTest, RepeatedAddIsIdempotentAndDistinctAttachmentsGetDistinctAddresses) {
  auto a = service_->Add(Req("c1"));
  auto again = service_->Add(Req("c1"));
  auto b = service_->Add(Req("c2"));
  auto c = service_->Add(Req("c1", "net2"));
  ASSERT_TRUE(a && again && b && c);
  EXPECT_EQ(a->ips, again->ips);
  std::set<std::string> distinct{a->ips[0].address, b->ips[0].address, c->ips[0].address};
  EXPECT_EQ(distinct.size(), 3u);
}

TEST_F(CniServiceTest, DelReleasesAndIsIdempotent) {
  auto a = service_->Add(Req("c1"));
  ASSERT_TRUE(a);
  ASSERT_TRUE(service_->Del(Req("c1")));
  ASSERT_TRUE(service_->Del(Req("c1"))) << "second DEL must succeed";
  CniRequest unknown = Req("c9");
  unknown.provider = "nobody.default";
  EXPECT_TRUE(service_->Del(unknown)) << "DEL for an unknown provider must succeed";
  auto b = service_->Add(Req("c2"));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->ips[0].address, "172.17.0.11/16") << "released address is reused (lowest free)";
  auto history = store_->History("172.17.0.11", 10);
  ASSERT_TRUE(history);
  EXPECT_GE(history->size(), 3u) << "allocation, release and re-allocation are all kept";
}

TEST_F(CniServiceTest, StaticAddressAndConflictNamesTheHolder) {
  CniRequest r = Req("c1");
  r.pod_namespace = "default";
  r.pod_name = "static-ip";
  r.ips = {"172.17.0.100"};
  auto a = service_->Add(r);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->ips[0].address, "172.17.0.100/16");
  CniRequest other = Req("c2");
  other.ips = {"172.17.0.100"};
  auto b = service_->Add(other);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, Code::kConflict);
  EXPECT_NE(b.error().message.find("default/static-ip"), std::string::npos) << b.error().message;
  // Nothing was written for the failed request.
  auto leases = store_->LoadLiveLeases();
  ASSERT_TRUE(leases);
  EXPECT_EQ(leases->size(), 1u);
}

TEST_F(CniServiceTest, UnknownProviderIsNotFoundWithAHint) {
  CniRequest r = Req("c1");
  r.provider = "ipvlan.default";
  auto a = service_->Add(r);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Code::kNotFound);
  EXPECT_NE(a.error().message.find("provider: ipvlan.default"), std::string::npos);
}

TEST_F(CniServiceTest, DefaultRouteOnlyWhenTheNadAsks) {
  CniRequest r = Req("c1");
  r.routes = {{"", ""}, {"192.168.50.0/24", "172.17.0.254"}};
  auto a = service_->Add(r);
  ASSERT_TRUE(a) << a.error().message;
  ASSERT_EQ(a->routes.size(), 2u);
  // The NAD's order is kept; its dst-less route became the default via the gateway.
  EXPECT_EQ(a->routes[0], (WireRoute{"0.0.0.0/0", "172.17.0.1"}));
  EXPECT_EQ(a->routes[1], (WireRoute{"192.168.50.0/24", "172.17.0.254"}));
  CniRequest bad = Req("c2");
  bad.routes = {{"not-a-cidr", ""}};
  auto b = service_->Add(bad);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, Code::kInvalidArgument);
}

TEST_F(CniServiceTest, NewSandboxOfSamePodKeepsAddressAndLateDelOfOldSandboxIsIgnored) {
  CniRequest first = Req("sandbox1");
  first.pod_namespace = "default";
  first.pod_name = "web-0";
  auto a = service_->Add(first);
  ASSERT_TRUE(a);
  CniRequest second = first;
  second.container_id = "sandbox2";
  auto b = service_->Add(second);
  ASSERT_TRUE(b);
  EXPECT_EQ(a->ips, b->ips);
  ASSERT_TRUE(service_->Del(first));  // late DEL of the old sandbox
  auto check = service_->Check(second);
  ASSERT_TRUE(check) << check.error().message;
  EXPECT_EQ(check->ips, b->ips);
  // And the move survives a restart.
  Allocator fresh;
  auto svc = Reload(&fresh);
  auto after = svc->Check(second);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->ips, b->ips);
}

TEST_F(CniServiceTest, CheckFailsForUnknownAttachment) {
  auto c = service_->Check(Req("nobody"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Code::kNotFound);
}

TEST_F(CniServiceTest, GcReleasesOnlyUnlistedAttachments) {
  ASSERT_TRUE(service_->Add(Req("keep")));
  ASSERT_TRUE(service_->Add(Req("gone")));
  GcRequest gc{"macvlan.default", {{"keep", "net1"}}};
  auto outcome = service_->Gc(gc);
  ASSERT_TRUE(outcome) << outcome.error().message;
  EXPECT_EQ(outcome->released, 1u);
  EXPECT_EQ(outcome->kept, 1u);
  EXPECT_TRUE(service_->Check(Req("keep")));
  EXPECT_FALSE(service_->Check(Req("gone")));
}

TEST_F(CniServiceTest, LeasesSurviveRestart) {
  auto a = service_->Add(Req("c1"));
  ASSERT_TRUE(a);
  Allocator fresh;
  auto svc = Reload(&fresh);
  auto again = svc->Add(Req("c1"));
  ASSERT_TRUE(again);
  EXPECT_EQ(a->ips, again->ips);
  auto other = svc->Add(Req("c2"));
  ASSERT_TRUE(other);
  EXPECT_NE(other->ips, a->ips);
}

TEST_F(CniServiceTest, InvalidSubnetChangesNothing) {
  SubnetSpec bad = SeedSubnet();
  bad.name = "broken";
  bad.provider = "broken.default";
  bad.exclude_ips = {"172.17.0.9..172.17.0.3"};
  auto r = service_->ApplySubnets({SeedSubnet(), bad});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("broken"), std::string::npos);
  EXPECT_EQ(allocator_.FindSubnet("broken"), nullptr);
  auto stored = store_->LoadSubnets();
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->size(), 1u);
}

TEST_F(CniServiceTest, TwoSubnetsWithOneProviderAreRefused) {
  SubnetSpec twin = SeedSubnet();
  twin.name = "twin";
  twin.cidr_block = "172.18.0.0/16";
  twin.gateway = "";
  twin.exclude_ips = {};
  auto r = service_->ApplySubnets({SeedSubnet(), twin});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("already served"), std::string::npos);
}

TEST_F(CniServiceTest, RemovedSubnetWithLeasesIsKeptWithAWarning) {
  ASSERT_TRUE(service_->Add(Req("c1")));
  auto r = service_->ApplySubnets({});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  EXPECT_NE(allocator_.FindSubnet("macvlan"), nullptr);
  ASSERT_TRUE(service_->Del(Req("c1")));
  auto again = service_->ApplySubnets({});
  ASSERT_TRUE(again);
  EXPECT_EQ(allocator_.FindSubnet("macvlan"), nullptr);
}

}  // namespace
}  // namespace sublease
