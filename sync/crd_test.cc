// The CRDs in packaging/kubernetes/ against the codecs: every field EncodeIpBlock
// writes, and every field of a recorded Kube-OVN Subnet sublease reads, is declared in
// the schema with its type (an undeclared field would be pruned by the API server, or
// rejected with a type error, and the block protocol would silently lose data).
#include <gtest/gtest.h>
#include <simdjson.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "sync/ipblock.h"
#include "sync/test_support.h"

namespace sublease {
namespace {

YAML::Node LoadCrd(const std::string& file) {
  const std::string path = std::string(SUBLEASE_SOURCE_DIR) + "/packaging/kubernetes/" + file;
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    ADD_FAILURE() << path << ": " << e.what();
    return YAML::Node();
  }
}

std::string Str(const YAML::Node& n) { return n && n.IsScalar() ? n.as<std::string>() : ""; }

// The one version of a CRD.
YAML::Node OnlyVersion(const YAML::Node& crd) {
  const YAML::Node versions = crd["spec"]["versions"];
  EXPECT_TRUE(versions.IsSequence());
  EXPECT_EQ(versions.size(), 1u);
  return versions.size() == 1 ? versions[0] : YAML::Node();
}

// JSON type -> the OpenAPI types that accept it.
bool TypeAccepts(const std::string& schema_type, simdjson::dom::element_type t) {
  using simdjson::dom::element_type;
  switch (t) {
    case element_type::OBJECT: return schema_type == "object";
    case element_type::ARRAY: return schema_type == "array";
    case element_type::STRING: return schema_type == "string";
    case element_type::BOOL: return schema_type == "boolean";
    case element_type::INT64:
    case element_type::UINT64: return schema_type == "integer" || schema_type == "number";
    case element_type::DOUBLE: return schema_type == "number";
    case element_type::NULL_VALUE: return true;
  }
  return false;
}

// Appends to `missing` every path of `value` that `schema` does not declare with a
// matching type (properties, additionalProperties, items).
void CheckDeclared(const simdjson::dom::element& value, const YAML::Node& schema,
                   const std::string& path, std::vector<std::string>& missing) {
  const std::string type = Str(schema["type"]);
  if (!TypeAccepts(type, value.type())) {
    missing.push_back(path + " (schema type \"" + type + "\")");
    return;
  }
  if (value.type() == simdjson::dom::element_type::OBJECT) {
    for (auto [key, child] : simdjson::dom::object(value)) {
      const std::string child_path = path + "." + std::string(key);
      if (schema["properties"] && schema["properties"][std::string(key)]) {
        CheckDeclared(child, schema["properties"][std::string(key)], child_path, missing);
      } else if (schema["additionalProperties"] && schema["additionalProperties"].IsMap()) {
        CheckDeclared(child, schema["additionalProperties"], child_path, missing);
      } else {
        missing.push_back(child_path);
      }
    }
  } else if (value.type() == simdjson::dom::element_type::ARRAY) {
    for (simdjson::dom::element item : simdjson::dom::array(value)) {
      CheckDeclared(item, schema["items"], path + "[]", missing);
    }
  }
}

// The top-level spec and status of `object_json` against the CRD's schema (metadata,
// apiVersion and kind are the API server's).
std::vector<std::string> Undeclared(const std::string& object_json, const YAML::Node& schema) {
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(object_json);
  simdjson::dom::element root = parser.parse(padded);
  std::vector<std::string> missing;
  for (const char* part : {"spec", "status"}) {
    simdjson::dom::element e;
    if (root[part].get(e) != simdjson::SUCCESS) continue;
    if (!schema["properties"][part]) {
      missing.push_back(part);
      continue;
    }
    CheckDeclared(e, schema["properties"][part], part, missing);
  }
  return missing;
}

std::vector<std::string> Columns(const YAML::Node& version) {
  std::vector<std::string> out;
  for (const auto& c : version["additionalPrinterColumns"]) {
    out.push_back(Str(c["name"]) + " " + Str(c["jsonPath"]));
  }
  return out;
}

TEST(IpBlockCrdTest, NamesScopeAndVersion) {
  YAML::Node crd = LoadCrd("crd-ipblock.yaml");
  EXPECT_EQ(Str(crd["apiVersion"]), "apiextensions.k8s.io/v1");
  EXPECT_EQ(Str(crd["kind"]), "CustomResourceDefinition");
  EXPECT_EQ(Str(crd["metadata"]["name"]), "ipblocks.sublease.io");
  EXPECT_EQ(Str(crd["spec"]["group"]), "sublease.io");
  EXPECT_EQ(Str(crd["spec"]["scope"]), "Cluster");
  EXPECT_EQ(Str(crd["spec"]["names"]["kind"]), "IPBlock");
  EXPECT_EQ(Str(crd["spec"]["names"]["plural"]), "ipblocks");
  // kIpBlockCollection and kIpBlockApiVersion are built from these.
  EXPECT_EQ(std::string(kIpBlockCollection), "/apis/" + Str(crd["spec"]["group"]) + "/" +
                                                 Str(OnlyVersion(crd)["name"]) + "/" +
                                                 Str(crd["spec"]["names"]["plural"]));
  EXPECT_EQ(std::string(kIpBlockApiVersion),
            Str(crd["spec"]["group"]) + "/" + Str(OnlyVersion(crd)["name"]));
  YAML::Node version = OnlyVersion(crd);
  EXPECT_TRUE(version["served"].as<bool>());
  EXPECT_TRUE(version["storage"].as<bool>());
  // status.used travels with spec in one update: a status subresource would drop it.
  EXPECT_FALSE(version["subresources"] && version["subresources"]["status"]);
}

TEST(IpBlockCrdTest, PrinterColumnsPointAtFieldsTheCodecWrites) {
  YAML::Node version = OnlyVersion(LoadCrd("crd-ipblock.yaml"));
  std::vector<std::string> columns = Columns(version);
  for (const std::string want :
       {"Subnet .spec.subnet", "CIDR .spec.cidr", "Node .spec.node", "Used .status.used"}) {
    EXPECT_NE(std::find(columns.begin(), columns.end(), want), columns.end()) << want;
  }
  IpBlock block;
  block.subnet = "macvlan";
  block.cidr = IpNet::Parse("172.17.0.64/26").value();
  block.name = BlockName(block.subnet, block.cidr);
  block.node = "node-a";
  block.allocations[3] = BlockAllocation{"ns", "p", "u", "net1", "", "node-a", "m.ns", false, ""};
  block.allocations[4] = BlockAllocation{"ns", "q", "v", "net1", "", "node-a", "m.ns", true, "sts-1"};
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(EncodeIpBlock(block));
  simdjson::dom::element root = parser.parse(padded);
  EXPECT_EQ(std::string_view(root["spec"]["subnet"]), "macvlan");
  EXPECT_EQ(std::string_view(root["spec"]["cidr"]), "172.17.0.64/26");
  EXPECT_EQ(std::string_view(root["spec"]["node"]), "node-a");
  EXPECT_EQ(uint64_t(root["status"]["used"]), 2u);
}

TEST(IpBlockCrdTest, SchemaDeclaresEveryFieldEncodeIpBlockWrites) {
  YAML::Node schema = OnlyVersion(LoadCrd("crd-ipblock.yaml"))["schema"]["openAPIV3Schema"];
  ASSERT_TRUE(schema.IsMap());
  IpBlock block;
  block.subnet = "macvlan";
  block.cidr = IpNet::Parse("fd00::40/122").value();
  block.name = BlockName(block.subnet, block.cidr);
  block.node = "node-a";
  block.resource_version = "7";
  block.allocations[11] = BlockAllocation{"default", "samplepod",       "u1", "net1", "cid",
                                          "node-a",  "macvlan.default", true, "sts-uid"};
  EXPECT_EQ(Undeclared(EncodeIpBlock(block), schema), std::vector<std::string>{});
  // The check itself notices an undeclared field.
  EXPECT_EQ(Undeclared(R"({"spec":{"subnet":"s","extra":1}})", schema),
            std::vector<std::string>{"spec.extra"});
  EXPECT_EQ(Undeclared(R"({"spec":{"allocations":{"1":{"sticky":"no"}}}})", schema),
            std::vector<std::string>{"spec.allocations.1.sticky (schema type \"boolean\")"});
  // Structural: the allocation map is additionalProperties, never free-form.
  YAML::Node allocations = schema["properties"]["spec"]["properties"]["allocations"];
  EXPECT_FALSE(allocations["x-kubernetes-preserve-unknown-fields"]);
  EXPECT_TRUE(allocations["additionalProperties"].IsMap());
}

TEST(SubnetCrdTest, CompatibleWithKubeOvnDefinition) {
  YAML::Node crd = LoadCrd("crd-subnet.yaml");
  EXPECT_EQ(Str(crd["metadata"]["name"]), "subnets.kubeovn.io");
  EXPECT_EQ(Str(crd["spec"]["group"]), "kubeovn.io");
  EXPECT_EQ(Str(crd["spec"]["scope"]), "Cluster");
  EXPECT_EQ(Str(crd["spec"]["names"]["kind"]), "Subnet");
  EXPECT_EQ(Str(crd["spec"]["names"]["listKind"]), "SubnetList");
  EXPECT_EQ(Str(crd["spec"]["names"]["plural"]), "subnets");
  EXPECT_EQ(Str(crd["spec"]["names"]["singular"]), "subnet");
  YAML::Node version = OnlyVersion(crd);
  EXPECT_EQ(Str(version["name"]), "v1");
  EXPECT_TRUE(version["served"].as<bool>());
  EXPECT_TRUE(version["storage"].as<bool>());
  EXPECT_TRUE(version["subresources"]["status"].IsMap());
  // Kube-OVN's own column names and paths.
  std::vector<std::string> columns = Columns(version);
  for (const std::string want :
       {"Provider .spec.provider", "Protocol .spec.protocol", "CIDR .spec.cidrBlock",
        "V4Used .status.v4usingIPs", "V4Available .status.v4availableIPs",
        "V6Used .status.v6usingIPs", "V6Available .status.v6availableIPs"}) {
    EXPECT_NE(std::find(columns.begin(), columns.end(), want), columns.end()) << want;
  }
  // Kube-OVN's other fields (vpc, natOutgoing, …) must survive a round trip.
  YAML::Node props = version["schema"]["openAPIV3Schema"]["properties"];
  EXPECT_TRUE(props["spec"]["x-kubernetes-preserve-unknown-fields"].as<bool>());
  EXPECT_TRUE(props["status"]["x-kubernetes-preserve-unknown-fields"].as<bool>());
}

TEST(SubnetCrdTest, SchemaDeclaresEveryFieldOfTheRecordedSubnet) {
  YAML::Node schema = OnlyVersion(LoadCrd("crd-subnet.yaml"))["schema"]["openAPIV3Schema"];
  ASSERT_TRUE(schema.IsMap());
  // Spec and status as a real API server stored them (status written by a merge patch).
  const std::string body =
      testing::RecordedBody(testing::ReadRecording("07-patch-subnet-status-merge-200.txt"));
  EXPECT_EQ(Undeclared(body, schema), std::vector<std::string>{});
  // Every spec field DecodeSubnet reads, dual stack included.
  auto spec = DecodeSubnet(body);
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(Undeclared(R"({"spec":{"provider":"p","cidrBlock":"10.0.0.0/24,fd00::/64",
                          "gateway":"10.0.0.1,fd00::1","excludeIps":["10.0.0.2..10.0.0.9"],
                          "protocol":"Dual"},
                          "status":{"v6availableIPs":1,"v6usingIPs":0,"v4availableIPrange":"",
                          "v4usingIPrange":"","v6availableIPrange":"","v6usingIPrange":""}})",
                       schema),
            std::vector<std::string>{});
  std::set<std::string> protocols;
  for (const auto& p : schema["properties"]["spec"]["properties"]["protocol"]["enum"]) {
    protocols.insert(p.as<std::string>());
  }
  EXPECT_EQ(protocols, (std::set<std::string>{"IPv4", "IPv6", "Dual"}));
}

}  // namespace
}  // namespace sublease
