#include "sync/ipblock.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sync/kube_object.h"
#include "sync/test_support.h"

namespace sublease {
namespace {

using testing::ReadRecording;
using testing::RecordedBody;

IpNet Net(std::string_view text) {
  auto n = IpNet::Parse(text);
  EXPECT_TRUE(n) << text;
  return n.value_or(IpNet());
}

IpAddr Addr(std::string_view text) {
  auto a = IpAddr::Parse(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(IpAddr());
}

TEST(BlockNameTest, SubnetDotZeroPaddedHexOfFirstAddressDashPrefix) {
  struct Case {
    std::string subnet, cidr, want;
  };
  for (const Case& c : std::vector<Case>{
           {"macvlan", "172.17.0.64/26", "macvlan.ac110040-26"},
           {"macvlan", "fd00::40/122", "macvlan.fd000000000000000000000000000040-122"},
           {"a", "0.0.0.0/29", "a.00000000-29"},
           {"b", "10.0.0.8/29", "b.0a000008-29"},
           {"x", "255.255.255.248/29", "x.fffffff8-29"},
           {"v6", "::/122", "v6.00000000000000000000000000000000-122"},
           {"v6", "2001:db8:ffff::ffc0/122", "v6.20010db8ffff0000000000000000ffc0-122"},
       }) {
    EXPECT_EQ(BlockName(c.subnet, Net(c.cidr)), c.want) << c.cidr;
  }
}

TEST(BlockPrefixTest, DefaultIsAtLeast32BlocksAndAtMost64Addresses) {
  struct Case {
    std::string cidr;
    int want;
  };
  for (const Case& c : std::vector<Case>{
           {"10.0.0.0/24", 29},    // 32 blocks of 8
           {"172.17.0.0/16", 26},  // 1024 blocks of 64
           {"10.0.0.0/8", 26},
           {"10.0.0.0/26", 29},    // blocks never smaller than 8 addresses
           {"10.0.0.0/27", 29},
           {"10.0.0.0/29", 29},
           {"10.0.0.0/30", 30},  // never larger than the subnet: one block
           {"10.0.0.1/32", 32},
           {"fd00::/64", 122},
           {"fd00::/100", 122},
           {"fd00::/120", 125},
           {"fd00::/126", 126},
       }) {
    EXPECT_EQ(DefaultBlockPrefix(Net(c.cidr)), c.want) << c.cidr;
    auto r = BlockPrefixFor(Net(c.cidr), "");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, c.want) << c.cidr << " with no override";
  }
}

TEST(BlockPrefixTest, OverrideIsABlockSizeWrittenAsIpv4PrefixAndClampedToTheSubnet) {
  struct Case {
    std::string cidr, override;
    int want;
  };
  for (const Case& c : std::vector<Case>{
           {"172.17.0.0/16", "/26", 26},
           {"172.17.0.0/16", "26", 26},
           {"172.17.0.0/16", " /28 ", 28},
           {"172.17.0.0/16", "/32", 32},
           {"fd00::/64", "/26", 122},  // the same 64 addresses per block
           {"fd00::/64", "/32", 128},
           {"10.0.0.0/24", "/20", 24},  // a block is never larger than its subnet
           {"fd00::/120", "/20", 120},
           {"10.0.0.0/8", "/1", 8},
       }) {
    auto r = BlockPrefixFor(Net(c.cidr), c.override);
    ASSERT_TRUE(r) << c.cidr << " " << c.override << ": " << r.error().message;
    EXPECT_EQ(*r, c.want) << c.cidr << " " << c.override;
  }
}

TEST(BlockPrefixTest, MalformedOverrideIsRejectedNamingTheValue) {
  for (const std::string bad : {"abc", "/", "/0", "/33", "-1", "26x", "/+5", "26/", "1e1"}) {
    auto r = BlockPrefixFor(Net("10.0.0.0/16"), bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
    EXPECT_NE(r.error().message.find("\"" + bad + "\""), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("/26"), std::string::npos) << r.error().message;
  }
}

TEST(BlockOfTest, ClearsHostBits) {
  EXPECT_EQ(BlockOf(Addr("172.17.0.75"), 26), Net("172.17.0.64/26"));
  EXPECT_EQ(BlockOf(Addr("172.17.0.64"), 26), Net("172.17.0.64/26"));
  EXPECT_EQ(BlockOf(Addr("172.17.0.63"), 26), Net("172.17.0.0/26"));
  EXPECT_EQ(BlockOf(Addr("fd00::7f"), 122), Net("fd00::40/122"));
  // The block of an address named as BlockName names: no lookup needed.
  EXPECT_EQ(BlockName("macvlan", BlockOf(Addr("172.17.0.75"), 26)), "macvlan.ac110040-26");
}

TEST(IpBlockTest, OffsetOfAndAddressAtAreInverse) {
  IpBlock block;
  block.cidr = Net("172.17.0.64/26");
  EXPECT_EQ(block.OffsetOf(Addr("172.17.0.64")), 0u);
  EXPECT_EQ(block.OffsetOf(Addr("172.17.0.75")), 11u);
  EXPECT_EQ(block.OffsetOf(Addr("172.17.0.127")), 63u);
  EXPECT_EQ(block.OffsetOf(Addr("172.17.0.128")), std::nullopt);
  EXPECT_EQ(block.OffsetOf(Addr("172.17.0.63")), std::nullopt);
  EXPECT_EQ(block.OffsetOf(Addr("fd00::4b")), std::nullopt);  // other family
  for (uint64_t offset : {0u, 1u, 11u, 63u}) {
    EXPECT_EQ(block.OffsetOf(block.AddressAt(offset)), offset);
  }
  IpBlock v6;
  v6.cidr = Net("fd00::40/122");
  EXPECT_EQ(v6.OffsetOf(Addr("fd00::4b")), 11u);
  EXPECT_EQ(v6.AddressAt(11), Addr("fd00::4b"));
}

IpBlock SampleBlock() {
  IpBlock block;
  block.subnet = "macvlan";
  block.cidr = Net("172.17.0.64/26");
  block.name = BlockName(block.subnet, block.cidr);
  block.node = "node-a";
  block.allocations[11] = BlockAllocation{
      "default",         "samplepod", "6d5ee978-8144-4c8e-bcf1-4798bdf2a0c7", "net1", "", "node-a",
      "macvlan.default", false, "", "", ""};
  block.allocations[2] =
      BlockAllocation{"db", "web-0", "u-2", "net2", "c0ffee", "node-b", "macvlan.default", true,
                      "sts-uid-1", "", ""};
  return block;
}

TEST(IpBlockCodecTest, OwnerUidIsWrittenOnlyForAllocationsThatHaveOne) {
  IpBlock block = SampleBlock();
  std::string json = EncodeIpBlock(block);
  EXPECT_NE(json.find(R"("sticky":true,"ownerUID":"sts-uid-1"})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("sticky":false})"), std::string::npos) << json;
  auto decoded = DecodeIpBlock(json);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->allocations.at(2).owner_uid, "sts-uid-1");
  EXPECT_EQ(decoded->allocations.at(11).owner_uid, "");
}

TEST(IpBlockCodecTest, IpamClaimRoundTripsAndIsLeftOutWhenEmpty) {
  IpBlock block = SampleBlock();
  block.allocations[11].ipam_claim = "vms/vm-a.tenant";
  std::string json = EncodeIpBlock(block);
  EXPECT_NE(json.find(R"("ipamClaim":"vms/vm-a.tenant")"), std::string::npos) << json;
  EXPECT_EQ(json.find(R"("ipamClaim":"")"), std::string::npos) << json;
  auto decoded = DecodeIpBlock(json);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->allocations.at(11).ipam_claim, "vms/vm-a.tenant");
  EXPECT_EQ(decoded->allocations.at(2).ipam_claim, "");
  EXPECT_EQ(decoded->allocations, block.allocations);
}

TEST(IpBlockCodecTest, SparesAndReturnSparesRoundTripAreLeftOutWhenFalseAndNotCountedAsUsed) {
  IpBlock block = SampleBlock();
  std::string plain = EncodeIpBlock(block);
  EXPECT_EQ(plain.find("spare"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("returnSpares"), std::string::npos) << plain;
  BlockAllocation spare;
  spare.node = "node-a";
  spare.spare = true;
  block.allocations[12] = spare;
  block.return_spares = true;
  std::string json = EncodeIpBlock(block);
  EXPECT_NE(json.find(R"("spare":true)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("returnSpares":true)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("used":2)"), std::string::npos) << "the spare is not in use: " << json;
  auto decoded = DecodeIpBlock(json);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_TRUE(decoded->return_spares);
  EXPECT_EQ(decoded->allocations, block.allocations);
  EXPECT_EQ(UsedCount(*decoded), 2u);
  EXPECT_FALSE(OnlySpares(*decoded));
  decoded->allocations.erase(2);
  decoded->allocations.erase(11);
  EXPECT_TRUE(OnlySpares(*decoded));
}

// A version without spares (or a CRD older than the flag, which prunes it) rewrites a
// spare as an entry of the affine node with empty pod fields: it is still a spare. An
// entry of another node, or with a keeper, is not.
TEST(IpBlockCodecTest, ASpareWhoseFlagAnOlderVersionDroppedIsStillASpare) {
  const std::string head =
      R"({"apiVersion":"sublease.io/v1alpha1","kind":"IPBlock","metadata":{"name":"m.0a000000-29"},)"
      R"("spec":{"subnet":"m","cidr":"10.0.0.0/29","node":"node-a","allocations":{)";
  const std::string empty_pod =
      R"("namespace":"","pod":"","podUID":"","interface":"","containerID":"","provider":"","sticky":false)";
  auto decoded = DecodeIpBlock(head + R"("3":{)" + empty_pod + R"(,"node":"node-a"},)" +
                               R"("4":{)" + empty_pod + R"(,"node":"node-b"},)" + R"("5":{)" + empty_pod +
                               R"(,"node":"node-a","reservedIp":"r1"}}}})");
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_TRUE(decoded->allocations.at(3).spare);
  EXPECT_FALSE(decoded->allocations.at(4).spare) << "another node's entry";
  EXPECT_FALSE(decoded->allocations.at(5).spare) << "kept for a reserved IP";
  EXPECT_EQ(UsedCount(*decoded), 2u);
}

TEST(IpBlockCodecTest, EncodesTheDocumentedShape) {
  IpBlock block = SampleBlock();
  block.allocations.erase(2);
  EXPECT_EQ(EncodeIpBlock(block),
            R"({"apiVersion":"sublease.io/v1alpha1","kind":"IPBlock",)"
            R"("metadata":{"name":"macvlan.ac110040-26",)"
            R"("labels":{"sublease.io/subnet":"macvlan","sublease.io/node":"node-a"}},)"
            R"("spec":{"subnet":"macvlan","cidr":"172.17.0.64/26","node":"node-a",)"
            R"("allocations":{"11":{"namespace":"default","pod":"samplepod",)"
            R"("podUID":"6d5ee978-8144-4c8e-bcf1-4798bdf2a0c7","interface":"net1",)"
            R"("containerID":"","node":"node-a","provider":"macvlan.default","sticky":false}}},)"
            R"("status":{"used":1}})");
}

TEST(IpBlockCodecTest, ResourceVersionIsSentOnlyWhenKnown) {
  IpBlock block = SampleBlock();
  EXPECT_EQ(EncodeIpBlock(block).find("resourceVersion"), std::string::npos);
  block.resource_version = "208";
  const std::string want = R"("labels":{"sublease.io/subnet":"macvlan",)"
                           R"("sublease.io/node":"node-a"},"resourceVersion":"208"})";
  EXPECT_NE(EncodeIpBlock(block).find(want), std::string::npos) << EncodeIpBlock(block);
}

TEST(IpBlockCodecTest, RoundTripsBothFamilies) {
  IpBlock v4 = SampleBlock();
  v4.resource_version = "211";
  IpBlock v6 = SampleBlock();
  v6.cidr = Net("fd00::40/122");
  v6.name = BlockName(v6.subnet, v6.cidr);
  v6.allocations[63] = BlockAllocation{"ns", "p", "u", "net1", "cid", "node-a", "p.ns", false, "", "", ""};
  IpBlock empty;
  empty.subnet = "s";
  empty.cidr = Net("10.0.0.0/29");
  empty.name = BlockName(empty.subnet, empty.cidr);
  for (const IpBlock& block : {v4, v6, empty}) {
    auto decoded = DecodeIpBlock(EncodeIpBlock(block));
    ASSERT_TRUE(decoded) << decoded.error().message;
    EXPECT_EQ(decoded->name, block.name);
    EXPECT_EQ(decoded->resource_version, block.resource_version);
    EXPECT_EQ(decoded->subnet, block.subnet);
    EXPECT_EQ(decoded->cidr, block.cidr);
    EXPECT_EQ(decoded->node, block.node);
    EXPECT_EQ(decoded->allocations, block.allocations);
  }
}

// What the API server sends back: server metadata, managedFields, fields a newer
// version might add; null where Go writes nil.
TEST(IpBlockCodecTest, DecodesServerObjectIgnoringUnknownFields) {
  const std::string json = R"({
    "apiVersion": "sublease.io/v1alpha1", "kind": "IPBlock",
    "metadata": {"name": "macvlan.ac110040-26", "uid": "e332d7ec", "resourceVersion": "208",
                 "generation": 1, "creationTimestamp": "2026-11-27T20:29:42Z",
                 "labels": {"sublease.io/subnet": "macvlan", "sublease.io/node": "node-a"},
                 "managedFields": [{"manager": "subleased", "fieldsV1": {"f:spec": {}}}]},
    "spec": {"subnet": "macvlan", "cidr": "172.17.0.64/26", "node": "node-a",
             "future": {"x": [1, 2]},
             "allocations": {"11": {"namespace": "default", "pod": "samplepod", "podUID": "u1",
                                    "interface": "net1", "containerID": null, "sticky": true,
                                    "comment": 7}}},
    "status": {"used": 1}
  })";
  auto block = DecodeIpBlock(json);
  ASSERT_TRUE(block) << block.error().message;
  EXPECT_EQ(block->name, "macvlan.ac110040-26");
  EXPECT_EQ(block->uid, "e332d7ec");
  EXPECT_EQ(block->resource_version, "208");
  EXPECT_EQ(block->cidr, Net("172.17.0.64/26"));
  ASSERT_EQ(block->allocations.size(), 1u);
  const BlockAllocation& a = block->allocations.at(11);
  EXPECT_EQ(a.pod_namespace, "default");
  EXPECT_EQ(a.pod_name, "samplepod");
  EXPECT_EQ(a.pod_uid, "u1");
  EXPECT_EQ(a.ifname, "net1");
  EXPECT_EQ(a.container_id, "");
  EXPECT_EQ(a.node, "");
  EXPECT_TRUE(a.sticky);
}

TEST(IpBlockCodecTest, DecodeErrorsNameTheField) {
  struct Case {
    std::string json, want;
  };
  const std::string head = R"({"metadata":{"name":"b"},"spec":{"subnet":"s","cidr":"10.0.0.0/29")";
  for (const Case& c : std::vector<Case>{
           {"not json", "not valid JSON"},
           {"[1]", "must be a JSON object"},
           {R"({"spec":{"cidr":"10.0.0.0/29"}})", "no metadata.name"},
           {R"({"metadata":{"name":5}})", "\"metadata.name\" must be a string, not a number"},
           {R"({"metadata":{"name":"b"}})", "IPBlock b has no spec"},
           {R"({"metadata":{"name":"b"},"spec":{"subnet":"s"}})", "spec.cidr is required"},
           {R"({"metadata":{"name":"b"},"spec":{"cidr":29}})", "\"spec.cidr\" must be a string"},
           {R"({"metadata":{"name":"b"},"spec":{"cidr":"10.0.0.300/29"}})",
            "spec.cidr \"10.0.0.300/29\""},
           {R"({"metadata":{"name":"b"},"spec":{"cidr":"10.0.0.0/29","node":true}})",
            "\"spec.node\" must be a string, not a boolean"},
           {head + R"(,"allocations":[]}})",
            "\"spec.allocations\" must be an object, not an array"},
           {head + R"(,"allocations":{"abc":{}}}})",
            "spec.allocations[\"abc\"] must be a decimal offset"},
           {head + R"(,"allocations":{"-1":{}}}})", "spec.allocations[\"-1\"]"},
           {head + R"(,"allocations":{"8":{}}}})", "below the block's 8 addresses"},
           {head + R"(,"allocations":{"3":"pod"}}})",
            "\"spec.allocations[\"3\"]\" must be an object, not a string"},
           {head + R"(,"allocations":{"3":{"pod":1}}}})",
            "\"spec.allocations[\"3\"].pod\" must be a string, not a number"},
           {head + R"(,"allocations":{"3":{"sticky":"yes"}}}})",
            "\"spec.allocations[\"3\"].sticky\" must be a boolean"},
       }) {
    auto r = DecodeIpBlock(c.json);
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.want), std::string::npos)
        << "json: " << c.json << "\nmessage: " << r.error().message << "\nwant: " << c.want;
  }
}

SubnetSpec SeedSubnet(std::vector<std::string> exclude) {
  SubnetSpec s;
  s.name = "macvlan";
  s.provider = "macvlan.default";
  s.cidr_block = "172.17.0.0/16";
  s.gateway = "172.17.0.1";
  s.exclude_ips = std::move(exclude);
  s.protocol = "IPv4";
  return s;
}

// The Subnet objects a real API server answered with (create, update, status patch).
TEST(DecodeSubnetTest, RecordedSubnetsDecode) {
  struct Case {
    std::string recording;
    SubnetSpec want;
  };
  for (const Case& c : std::vector<Case>{
           {"01-create-subnet-201.txt", SeedSubnet({"172.17.0.0..172.17.0.10"})},
           {"05-update-subnet-with-rv-200.txt",
            SeedSubnet({"172.17.0.0..172.17.0.10", "172.17.0.250"})},
           {"07-patch-subnet-status-merge-200.txt",
            SeedSubnet({"172.17.0.0..172.17.0.10", "172.17.0.250"})},
       }) {
    const std::string body = RecordedBody(ReadRecording(c.recording));
    ASSERT_FALSE(body.empty()) << c.recording;
    auto spec = DecodeSubnet(body);
    ASSERT_TRUE(spec) << c.recording << ": " << spec.error().message;
    EXPECT_EQ(*spec, c.want) << c.recording;
  }
}

TEST(DecodeSubnetTest, RecordedListItemsDecode) {
  auto page = ParseListPage(RecordedBody(ReadRecording("04-list-subnets.txt")));
  ASSERT_TRUE(page) << page.error().message;
  ASSERT_EQ(page->items.size(), 1u);
  auto spec = DecodeSubnet(page->items[0].raw);
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(*spec, SeedSubnet({"172.17.0.0..172.17.0.10"}));
}

TEST(DecodeSubnetTest, ReadsBlockSizeAnnotationAndDualStack) {
  auto spec = DecodeSubnet(R"({"apiVersion":"kubeovn.io/v1","kind":"Subnet",
    "metadata":{"name":"dual","annotations":{"sublease.io/block-size":"/27","other":"x"}},
    "spec":{"provider":"dual.default","cidrBlock":"10.1.0.0/24,fd00:1::/64",
            "gateway":"10.1.0.1,fd00:1::1","excludeIps":null,"vpc":"ovn-cluster","private":false}})");
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->name, "dual");
  EXPECT_EQ(spec->block_size, "/27");
  EXPECT_EQ(spec->cidr_block, "10.1.0.0/24,fd00:1::/64");
  EXPECT_EQ(spec->gateway, "10.1.0.1,fd00:1::1");
  EXPECT_TRUE(spec->exclude_ips.empty());
  EXPECT_EQ(spec->protocol, "");  // derived later, by NormalizeSubnet
}

TEST(DecodeSubnetTest, DecodeErrorsNameTheField) {
  struct Case {
    std::string json, want;
  };
  for (const Case& c : std::vector<Case>{
           {"{", "not valid JSON"},
           {R"({"spec":{}})", "Subnet has no metadata.name"},
           {R"({"metadata":{"name":"s"},"spec":{"provider":1}})",
            "Subnet s: field \"spec.provider\" must be a string"},
           {R"({"metadata":{"name":"s"},"spec":{"cidrBlock":["10.0.0.0/8"]}})",
            "\"spec.cidrBlock\" must be a string, not an array"},
           {R"({"metadata":{"name":"s"},"spec":{"excludeIps":"10.0.0.1"}})",
            "\"spec.excludeIps\" must be an array of strings"},
           {R"({"metadata":{"name":"s"},"spec":{"excludeIps":["10.0.0.1",2]}})",
            "\"spec.excludeIps[1]\" must be a string"},
           {R"({"metadata":{"name":"s","annotations":{"sublease.io/block-size":26}}})",
            "sublease.io/block-size"},
           {R"({"metadata":{"name":"s"},"spec":"x"})", "\"spec\" must be an object"},
       }) {
    auto r = DecodeSubnet(c.json);
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.want), std::string::npos)
        << "json: " << c.json << "\nmessage: " << r.error().message;
  }
}

TEST(DecodeIpPoolTest, ReadsKubeOvnsFields) {
  auto spec = DecodeIpPool(R"({"apiVersion":"kubeovn.io/v1","kind":"IPPool",
    "metadata":{"name":"blue","creationTimestamp":"2026-12-03T02:00:00Z","uid":"u"},
    "spec":{"subnet":"macvlan","ips":["10.0.0.5","10.0.1.0/30","10.0.2.1..10.0.2.9"],
            "namespaces":["ns1"],"enableAddressSet":false},"status":{"v4UsingIPs":1}})");
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(*spec, (IpPoolSpec{"blue",
                               "macvlan",
                               {"10.0.0.5", "10.0.1.0/30", "10.0.2.1..10.0.2.9"},
                               {"ns1"},
                               "2026-12-03T02:00:00Z"}));
}

TEST(DecodeIpPoolTest, WrongTypesAreNamed) {
  auto bad = DecodeIpPool(R"({"metadata":{"name":"p"},"spec":{"subnet":"s","ips":"10.0.0.5"}})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("spec.ips"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(DecodeIpPool(R"({"metadata":{},"spec":{"subnet":"s"}})"));
}

}  // namespace
}  // namespace sublease
