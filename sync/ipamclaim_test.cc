#include "sync/ipamclaim.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

TEST(IpamClaimTest, DecodesSpecAndStatus) {
  auto c = DecodeIpamClaim(R"({"apiVersion":"k8s.cni.cncf.io/v1alpha1","kind":"IPAMClaim",
      "metadata":{"name":"vm-a.tenant","namespace":"vms","uid":"u1","resourceVersion":"7"},
      "spec":{"network":"tenantnet","interface":""},
      "status":{"ips":["172.17.0.20/16","fd00::14/64"],"ownerPod":{"name":"virt-launcher-vm-a-x"},
                "conditions":[{"type":"IPsAllocated","status":"True"}]}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->Key(), "vms/vm-a.tenant");
  EXPECT_EQ(c->uid, "u1");
  EXPECT_EQ(c->resource_version, "7");
  EXPECT_EQ(c->network, "tenantnet");
  EXPECT_EQ(c->ips, (std::vector<std::string>{"172.17.0.20/16", "fd00::14/64"}));
  EXPECT_EQ(c->owner_pod, "virt-launcher-vm-a-x");
}

TEST(IpamClaimTest, AClaimWithoutStatusHasNoAddresses) {
  auto c = DecodeIpamClaim(R"({"metadata":{"name":"c","namespace":"n"},"spec":{"network":"x"}})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->ips.empty());
  EXPECT_EQ(c->owner_pod, "");
}

TEST(IpamClaimTest, MalformedClaimsAreRejectedNamingTheField) {
  struct Case {
    const char* json;
    const char* names;
  };
  for (const Case& c :
       {Case{R"({"metadata":{"namespace":"n"}})", "metadata.name"},
        Case{R"({"metadata":{"name":"c"},"spec":{"network":3}})", "spec.network"},
        Case{R"({"metadata":{"name":"c"},"status":{"ips":"10.0.0.1/8"}})", "status.ips"},
        Case{R"({"metadata":{"name":"c"},"status":{"ips":["nope/8"]}})", "status.ips[0]"},
        Case{R"([1])", "not a JSON object"}}) {
    auto got = DecodeIpamClaim(c.json);
    ASSERT_FALSE(got) << c.json;
    EXPECT_NE(got.error().message.find(c.names), std::string::npos) << got.error().message;
  }
}

TEST(IpamClaimTest, StatusBodyCarriesThePreconditionAndTheCondition) {
  IpamClaim c;
  c.namespace_name = "vms";
  c.name = "vm-a.tenant";
  c.resource_version = "7";
  c.network = "tenantnet";
  std::string ok =
      EncodeIpamClaimStatus(c, {"172.17.0.20/16"}, "virt-launcher-vm-a-x", "SuccessfulAllocation",
                            "allocated", "2026-12-03T02:40:00Z");
  auto back = DecodeIpamClaim(ok);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->resource_version, "7");
  EXPECT_EQ(back->ips, (std::vector<std::string>{"172.17.0.20/16"}));
  EXPECT_EQ(back->owner_pod, "virt-launcher-vm-a-x");
  EXPECT_NE(ok.find(R"("type":"IPsAllocated","status":"True","reason":"SuccessfulAllocation")"),
            std::string::npos)
      << ok;
  std::string failed = EncodeIpamClaimStatus(c, {}, "p", "SubnetExhausted", "full", "t");
  EXPECT_NE(failed.find(R"("ips":[])"), std::string::npos) << failed;
  EXPECT_NE(failed.find(R"("status":"False","reason":"SubnetExhausted")"), std::string::npos)
      << failed;
}

}  // namespace
}  // namespace sublease
