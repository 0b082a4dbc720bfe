#include "daemon/service/subnet_manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace sublease {
namespace {

TEST(SubnetManifestTest, ReadsTheSeedSubnetVerbatim) {
  auto set = LoadSubnetManifests(std::string(SUBLEASE_SOURCE_DIR) + "/packaging/examples/seed-subnet.yaml");
  ASSERT_TRUE(set) << set.error().message;
  ASSERT_EQ(set->subnets.size(), 1u);
  const auto& s = set->subnets[0];
  EXPECT_EQ(s.name, "macvlan");
  EXPECT_EQ(s.provider, "macvlan.default");
  EXPECT_EQ(s.cidr_block, "172.17.0.0/16");
  EXPECT_EQ(s.gateway, "172.17.0.1");
  EXPECT_EQ(s.protocol, "IPv4");
  EXPECT_EQ(s.exclude_ips, std::vector<std::string>{"172.17.0.0..172.17.0.10"});
}

TEST(SubnetManifestTest, SkipsOtherKindsAndReadsListsAndMultipleDocuments) {
  auto set = ParseSubnetManifests(R"(
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: macvlan, namespace: default}
---
apiVersion: v1
kind: List
items:
- apiVersion: kubeovn.io/v1
  kind: Subnet
  metadata: {name: a, annotations: {sublease.io/block-size: "/26"}}
  spec: {provider: a.default, cidrBlock: "10.1.0.0/24"}
- apiVersion: kubeovn.io/v1
  kind: Subnet
  metadata: {name: b}
  spec: {provider: b.default, cidrBlock: "10.2.0.0/24,fd00::/120", protocol: Dual}
)", "test.yaml");
  ASSERT_TRUE(set) << set.error().message;
  ASSERT_EQ(set->subnets.size(), 2u);
  EXPECT_EQ(set->subnets[0].block_size, "/26");
  EXPECT_EQ(set->subnets[1].cidr_block, "10.2.0.0/24,fd00::/120");
  ASSERT_EQ(set->skipped.size(), 1u);
  EXPECT_NE(set->skipped[0].find("NetworkAttachmentDefinition/macvlan"), std::string::npos);
}

TEST(SubnetManifestTest, BadDocumentsNameFileSubnetAndField) {
  struct Case { const char* yaml; const char* expect; };
  for (const auto& c : {
           Case{"kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: x}\nspec: {provider: p}\n", "x spec: cidrBlock is required"},
           Case{"kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: x}\nspec: {cidrBlock: 10.0.0.0/24}\n", "provider is required"},
           Case{"kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: x}\nspec: {provider: p, cidrBlock: 10.0.0.0/24, excludeIps: 10.0.0.1}\n", "excludeIps must be a list"},
           Case{"kind: Subnet\napiVersion: kubeovn.io/v2\nmetadata: {name: x}\nspec: {}\n", "kubeovn.io/v1"},
           Case{"kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: x}\nspec: {provider: [a], cidrBlock: 10.0.0.0/24}\n", "provider must be a string"},
           Case{"kind: Subnet\n  bad: [\n", "not valid YAML"},
       }) {
    auto set = ParseSubnetManifests(c.yaml, "f.yaml");
    ASSERT_FALSE(set) << c.yaml;
    EXPECT_NE(set.error().message.find(c.expect), std::string::npos) << set.error().message;
    EXPECT_EQ(set.error().message.rfind("f.yaml", 0), 0u) << set.error().message;
  }
}

TEST(SubnetManifestTest, DirectoryIsReadInNameOrderAndMissingPathIsAnError) {
  auto dir = std::filesystem::temp_directory_path() / ("sublease-manifests-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "b.yaml") << "kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: b}\nspec: {provider: b.x, cidrBlock: 10.2.0.0/24}\n";
  std::ofstream(dir / "a.yml") << "kind: Subnet\napiVersion: kubeovn.io/v1\nmetadata: {name: a}\nspec: {provider: a.x, cidrBlock: 10.1.0.0/24}\n";
  std::ofstream(dir / "notes.txt") << "ignored";
  auto set = LoadSubnetManifests(dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(set) << set.error().message;
  ASSERT_EQ(set->subnets.size(), 2u);
  EXPECT_EQ(set->subnets[0].name, "a");
  EXPECT_EQ(set->subnets[1].name, "b");
  auto missing = LoadSubnetManifests("/nonexistent/sublease");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace sublease
