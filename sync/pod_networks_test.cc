#include "sync/pod_networks.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sync/kube_object.h"
#include "sync/line_splitter.h"
#include "sync/test_support.h"

namespace sublease {
namespace {

using testing::DechunkedBody;
using testing::ReadRecording;
using testing::RecordedBody;

// namespace/name@ifname, the part of a selection every form has.
std::vector<std::string> Triples(const std::vector<NetworkSelection>& selections) {
  std::vector<std::string> out;
  for (const auto& s : selections) out.push_back(s.namespace_name + "/" + s.name + "@" + s.ifname);
  return out;
}

TEST(NetworksAnnotationTest, TextFormsWithMultusDefaults) {
  struct Case {
    std::string value;
    std::vector<std::string> want;
  };
  for (const Case& c : std::vector<Case>{
           {"macvlan", {"default/macvlan@net1"}},
           {"default/macvlan", {"default/macvlan@net1"}},
           {"macvlan@eth9", {"default/macvlan@eth9"}},
           {"other/macvlan@eth9", {"other/macvlan@eth9"}},
           {" a , b@x1 ,\tkube-system/c ",
            {"default/a@net1", "default/b@x1", "kube-system/c@net3"}},
           {"ns / a @ if0", {"ns/a@if0"}},
           // Multus numbers by position in the list, whatever the others asked for.
           {"a@net5,b,c", {"default/a@net5", "default/b@net2", "default/c@net3"}},
           {"a,a", {"default/a@net1", "default/a@net2"}},
           {"", {}},
           {"   ", {}},
       }) {
    auto r = ParseNetworksAnnotation(c.value, "default");
    ASSERT_TRUE(r) << "\"" << c.value << "\": " << r.error().message;
    EXPECT_EQ(Triples(*r), c.want) << c.value;
    for (const auto& sel : *r) {
      EXPECT_TRUE(sel.ips.empty() && sel.mac.empty() && sel.default_route.empty());
    }
  }
}

TEST(NetworksAnnotationTest, JsonFormReadsEveryMultusField) {
  auto r = ParseNetworksAnnotation(R"([
      {"name": "macvlan", "namespace": "default", "default-route": ["172.17.0.1"]},
      {"name": "attachnet", "interface": "eth7", "ips": ["172.18.0.5/24", "fd00::5"],
       "mac": "02:00:00:53:6b:bb", "cni-args": {"x": 1}, "bandwidth": {"ingressRate": 1}},
      {"name": "old", "namespace": "other", "interfaceRequest": "legacy0"},
      {"name": "plain", "namespace": null, "ips": null}
    ])",
                                   "team");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0], (NetworkSelection{"macvlan", "default", "net1", {}, "", {"172.17.0.1"}}));
  EXPECT_EQ(
      (*r)[1],
      (NetworkSelection{
          "attachnet", "team", "eth7", {"172.18.0.5/24", "fd00::5"}, "02:00:00:53:6b:bb", {}}));
  EXPECT_EQ((*r)[2], (NetworkSelection{"old", "other", "legacy0", {}, "", {}}));
  EXPECT_EQ((*r)[3], (NetworkSelection{"plain", "team", "net4", {}, "", {}}));
}

TEST(NetworksAnnotationTest, JsonFormReadsTheIpamClaimReference) {
  auto r = ParseNetworksAnnotation(
      R"([{"name":"tenant","interface":"net1","ipam-claim-reference":"vm-a.tenant"},)"
      R"({"name":"other"}])",
      "vms");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].ipam_claim, "vm-a.tenant");
  EXPECT_EQ((*r)[1].ipam_claim, "");
  PodInfo pod;
  pod.namespace_name = "vms";
  pod.name = "virt-launcher-vm-a-x1";
  auto wanted = AttachmentsOf(pod, *r);
  ASSERT_TRUE(wanted) << wanted.error().message;
  EXPECT_EQ((*wanted)[0].ipam_claim, "vm-a.tenant");
  EXPECT_EQ((*wanted)[0].provider, "tenant.vms");
  EXPECT_EQ((*wanted)[1].ipam_claim, "");
  auto bad = ParseNetworksAnnotation(R"([{"name":"tenant","ipam-claim-reference":7}])", "vms");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("ipam-claim-reference"), std::string::npos);
}

TEST(NetworksAnnotationTest, MalformedValuesAreRejectedNamingTheEntry) {
  struct Case {
    std::string value, want;
  };
  for (const Case& c : std::vector<Case>{
           {"a,,b", "entry 2 is empty"},
           {"a,", "entry 2 is empty"},
           {"a/b/c", "entry 1 \"a/b/c\" has more than one '/'"},
           {"a@b@c", "more than one '@'"},
           {"Macvlan", "name \"Macvlan\" must be lowercase"},
           {"ns/", "name \"\" must be lowercase"},
           {"/a", "namespace \"\" must be lowercase"},
           {"a@", "interface \"\" must be lowercase"},
           {"a,b_c", "entry 2 \"b_c\": name \"b_c\""},
           {"a@net2,b", "entry 2 (default/b): interface \"net2\" is already used"},
           {"a@averyveryverylongname", "longer than 15 characters"},
           {"[{", "is not valid JSON"},
           {R"({"name":"a"})", "must be a JSON list of network selection objects, not an object"},
           {R"(["a"])", "entry 1 must be an object, not a string"},
           {R"([{"namespace":"x"}])", "entry 1 has no \"name\""},
           {R"([{"name":5}])", "entry 1.name must be a string, not a number"},
           {R"([{"name":"a","ips":"1.2.3.4"}])", "entry 1.ips must be an array"},
           {R"([{"name":"a","ips":[1]}])", "entry 1.ips[0] must be a string"},
           {R"([{"name":"a","ips":["1.2.3.999"]}])", "entry 1.ips[0] \"1.2.3.999\" is not an IP"},
           {R"([{"name":"a","mac":"zz:00:00:00:00:00"}])",
            "entry 1.mac \"zz:00:00:00:00:00\" is not a MAC"},
           {R"([{"name":"a","default-route":["gw"]}])", "entry 1.default-route[0] \"gw\""},
           {R"([{"name":"a","interface":"x"},{"name":"b","interface":"x"}])",
            "interface \"x\" is already used"},
       }) {
    auto r = ParseNetworksAnnotation(c.value, "default");
    ASSERT_FALSE(r) << c.value;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.want), std::string::npos)
        << "value: " << c.value << "\nmessage: " << r.error().message << "\nwant: " << c.want;
    EXPECT_NE(r.error().message.find(kNetworksAnnotation), std::string::npos) << r.error().message;
  }
}

TEST(NetworksAnnotationTest, MacFormsGoAccepts) {
  for (const std::string mac :
       {"02:00:00:53:6B:BB", "02-00-00-53-6b-bb", "0200.0053.6bbb", "02:00:00:00:00:00:00:01"}) {
    auto r = ParseNetworksAnnotation(R"([{"name":"a","mac":")" + mac + R"("}])", "d");
    EXPECT_TRUE(r) << mac << ": " << (r ? "" : r.error().message);
  }
  for (const std::string mac :
       {"02:00:00:53:6B", "02:00:00:53:6B:B", "02:00-00:53:6B:BB", "0200.0053", "hello"}) {
    EXPECT_FALSE(ParseNetworksAnnotation(R"([{"name":"a","mac":")" + mac + R"("}])", "d")) << mac;
  }
}

KubeObject PodObject(const std::string& json) {
  auto obj = ParseKubeObject(json);
  EXPECT_TRUE(obj) << (obj ? "" : obj.error().message);
  return obj.value_or(KubeObject());
}

// The pod of the seed document after sublease patched it (recording 24).
TEST(ParsePodTest, RecordedPodParses) {
  KubeObject obj = PodObject(RecordedBody(ReadRecording("24-patch-pod-annotations-merge-200.txt")));
  auto pod = ParsePod(obj);
  ASSERT_TRUE(pod) << pod.error().message;
  EXPECT_EQ(pod->namespace_name, "default");
  EXPECT_EQ(pod->name, "samplepod");
  EXPECT_EQ(pod->uid, "6d5ee978-8144-4c8e-bcf1-4798bdf2a0c7");
  EXPECT_EQ(pod->node_name, "node-a");
  EXPECT_EQ(pod->phase, "Pending");
  EXPECT_FALSE(pod->finished);
  EXPECT_FALSE(pod->deleting);
  EXPECT_EQ(pod->stateful_set, "");
  EXPECT_FALSE(pod->IsStatefulSetMember());
  EXPECT_EQ(pod->annotations.size(), 5u);
  EXPECT_EQ(pod->annotations.at("k8s.v1.cni.cncf.io/networks"), "macvlan");
  EXPECT_TRUE(IsAllocated(*pod, "macvlan.default"));
  EXPECT_FALSE(IsAllocated(*pod, "other.default"));
  EXPECT_FALSE(IsAllocated(*pod, "macvlan.default", "net1"));  // no per-interface marker
}

// The recorded watch of a node's pods: created unallocated, allocated, then deleting.
TEST(ParsePodTest, RecordedWatchShowsAllocationThenDeletion) {
  const std::string body = DechunkedBody(ReadRecording("21-watch-pods-on-node.raw"));
  LineSplitter splitter;
  std::vector<std::string> lines;
  splitter.Feed(body, [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  });
  ASSERT_GE(lines.size(), 3u);
  std::vector<std::string> seen;
  for (const auto& line : lines) {
    auto event = ParseWatchEvent(line);
    ASSERT_TRUE(event) << event.error().message;
    if (event->type == WatchEventType::kBookmark || event->type == WatchEventType::kError) continue;
    auto pod = ParsePod(event->object);
    ASSERT_TRUE(pod) << pod.error().message;
    seen.push_back(std::string(WatchEventTypeName(event->type)) +
                   (IsAllocated(*pod, "macvlan.default") ? " allocated" : " unallocated") +
                   (pod->deleting ? " deleting" : ""));
  }
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[0], "ADDED unallocated");
  EXPECT_EQ(seen[1], "MODIFIED allocated");
  EXPECT_EQ(seen[2], "MODIFIED allocated deleting");
}

std::string PodJson(const std::string& name, const std::string& owners,
                    const std::string& extra = "") {
  return R"({"kind":"Pod","metadata":{"name":")" + name +
         R"(","namespace":"db","uid":"u1","ownerReferences":)" + owners + extra +
         R"(},"spec":{"nodeName":"node-a"},"status":{"phase":"Running"}})";
}

std::string Owner(const std::string& kind, const std::string& api_version, const std::string& name,
                  const std::string& controller) {
  return R"([{"apiVersion":")" + api_version + R"(","kind":")" + kind + R"(","name":")" + name +
         R"(","uid":"sts-uid","controller":)" + controller + R"(,"blockOwnerDeletion":true}])";
}

TEST(ParsePodTest, StatefulSetOwnershipAndOrdinal) {
  struct Case {
    std::string pod_name, owners, want_sts;
    std::optional<uint32_t> want_ordinal;
  };
  for (const Case& c : std::vector<Case>{
           {"web-2", Owner("StatefulSet", "apps/v1", "web", "true"), "web", 2},
           {"web-0", Owner("StatefulSet", "apps/v1", "web", "true"), "web", 0},
           {"my-web-10", Owner("StatefulSet", "apps/v1", "my-web", "true"), "my-web", 10},
           {"web-2", Owner("StatefulSet", "apps/v1", "web", "false"), "", std::nullopt},
           {"web-2", Owner("StatefulSet", "apps/v1", "web", "null"), "", std::nullopt},
           {"web-2", Owner("ReplicaSet", "apps/v1", "web", "true"), "", std::nullopt},
           {"web-2", Owner("StatefulSet", "apps/v1beta1", "web", "true"), "", std::nullopt},
           {"web-2", "[]", "", std::nullopt},
           {"webx-2", Owner("StatefulSet", "apps/v1", "web", "true"), "web", std::nullopt},
           {"web-2", Owner("StatefulSet", "apps/v1", "we", "true"), "we", std::nullopt},
           {"web-", Owner("StatefulSet", "apps/v1", "web", "true"), "web", std::nullopt},
           {"web-x1", Owner("StatefulSet", "apps/v1", "web", "true"), "web", std::nullopt},
           {"web-99999999999", Owner("StatefulSet", "apps/v1", "web", "true"), "web", std::nullopt},
       }) {
    auto pod = ParsePod(PodObject(PodJson(c.pod_name, c.owners)));
    ASSERT_TRUE(pod) << c.pod_name << ": " << pod.error().message;
    EXPECT_EQ(pod->stateful_set, c.want_sts) << c.pod_name << " " << c.owners;
    EXPECT_EQ(pod->ordinal, c.want_ordinal) << c.pod_name << " " << c.owners;
    EXPECT_EQ(pod->stateful_set_uid, c.want_sts.empty() ? "" : "sts-uid");
    EXPECT_EQ(pod->IsStatefulSetMember(), !c.want_sts.empty() && c.want_ordinal.has_value());
  }
}

TEST(ParsePodTest, KubeVirtLauncherPodNamesItsVirtualMachine) {
  auto launcher = ParsePod(PodObject(
      R"({"metadata":{"name":"virt-launcher-vm-a-x7k2p","namespace":"vms","uid":"u1",)"
      R"("ownerReferences":[{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance",)"
      R"("name":"vm-a","uid":"vmi-1","controller":true,"blockOwnerDeletion":true}]}})"));
  ASSERT_TRUE(launcher) << launcher.error().message;
  EXPECT_EQ(launcher->virtual_machine, "vm-a");
  EXPECT_FALSE(launcher->IsStatefulSetMember());
  // Another group's kind of the same name is not KubeVirt's.
  auto other = ParsePod(PodObject(
      R"({"metadata":{"name":"p","namespace":"vms","uid":"u2","ownerReferences":)"
      R"([{"apiVersion":"example.com/v1","kind":"VirtualMachineInstance","name":"x","uid":"z"}]}})"));
  ASSERT_TRUE(other) << other.error().message;
  EXPECT_EQ(other->virtual_machine, "");
  AllocatedAnnotations a;
  a.provider = "tenant.vms";
  a.addresses = "172.19.0.2";
  a.cidr = "172.19.0.0/16";
  a.virtual_machine = "vm-a";
  EXPECT_NE(
      AllocatedAnnotationsPatch(a).find(R"("tenant.vms.kubernetes.io/virtualmachine":"vm-a")"),
      std::string::npos);
}

TEST(ParsePodTest, PhaseAndDeletion) {
  struct Case {
    std::string status;
    bool deleting;
    bool want_finished;
  };
  for (const Case& c : std::vector<Case>{
           {"Succeeded", false, true},
           {"Failed", false, true},
           {"Running", false, false},
           {"Pending", true, false},
           {"Unknown", false, false},
       }) {
    std::string json =
        R"({"metadata":{"name":"p","namespace":"n")" +
        std::string(c.deleting ? R"(,"deletionTimestamp":"2026-11-27T20:30:13Z")" : "") +
        R"(},"status":{"phase":")" + c.status + R"("}})";
    auto pod = ParsePod(PodObject(json));
    ASSERT_TRUE(pod) << pod.error().message;
    EXPECT_EQ(pod->phase, c.status);
    EXPECT_EQ(pod->finished, c.want_finished) << c.status;
    EXPECT_EQ(pod->deleting, c.deleting);
    EXPECT_EQ(pod->node_name, "");
  }
}

TEST(ParsePodTest, WrongTypesAreRejectedNamingTheField) {
  struct Case {
    std::string json, want;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"metadata":{"name":"p","namespace":"n","annotations":{"a":1}}})",
            "metadata.annotations[\"a\"] must be a string"},
           {R"({"metadata":{"name":"p","namespace":"n","annotations":[]}})",
            "metadata.annotations must be an object"},
           {R"({"metadata":{"name":"p","namespace":"n","ownerReferences":{}}})",
            "metadata.ownerReferences must be an array"},
           {R"({"metadata":{"name":"p","namespace":"n","ownerReferences":[{"controller":"yes"}]}})",
            "metadata.ownerReferences[0].controller must be a boolean"},
           {R"({"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":7}})",
            "spec.nodeName must be a string"},
           {R"({"metadata":{"name":"p","namespace":"n"},"status":{"phase":false}})",
            "status.phase must be a string"},
       }) {
    auto pod = ParsePod(PodObject(c.json));
    ASSERT_FALSE(pod) << c.json;
    EXPECT_NE(pod.error().message.find(c.want), std::string::npos)
        << "json: " << c.json << "\nmessage: " << pod.error().message;
    EXPECT_NE(pod.error().message.find("pod n/p"), std::string::npos) << pod.error().message;
  }
}

PodInfo Pod(std::map<std::string, std::string> annotations) {
  PodInfo pod;
  pod.namespace_name = "default";
  pod.name = "static-ip";
  pod.annotations = std::move(annotations);
  return pod;
}

Result<std::vector<AttachmentRequest>> Attachments(const PodInfo& pod) {
  auto selections =
      ParseNetworksAnnotation(pod.annotations.count(std::string(kNetworksAnnotation))
                                  ? pod.annotations.at(std::string(kNetworksAnnotation))
                                  : "",
                              pod.namespace_name);
  if (!selections) return Fail(selections.error());
  return AttachmentsOf(pod, *selections);
}

// The seed document's static-IP pod, verbatim.
TEST(AttachmentsOfTest, SeedStaticPod) {
  auto r = Attachments(Pod({{"k8s.v1.cni.cncf.io/networks", "macvlan"},
                            {"ovn.kubernetes.io/ip_address", "10.16.0.15"},
                            {"ovn.kubernetes.io/mac_address", "00:00:00:53:6B:B6"},
                            {"macvlan.default.kubernetes.io/ip_address", "172.17.0.100"},
                            {"macvlan.default.kubernetes.io/mac_address", "00:00:00:53:6B:BB"}}));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  AttachmentRequest want;
  want.provider = "macvlan.default";
  want.ifname = "net1";
  want.static_ips = {"172.17.0.100"};
  want.mac = "00:00:00:53:6B:BB";
  want.mac_annotation = "macvlan.default.kubernetes.io/mac_address";  // the node warns
  EXPECT_EQ((*r)[0], want);
}

TEST(AttachmentsOfTest, SeedPoolPodOfAStatefulSet) {
  PodInfo pod =
      Pod({{"k8s.v1.cni.cncf.io/networks", "macvlan"},
           {"ovn.kubernetes.io/ip_pool", "10.16.0.15,10.16.0.16,10.16.0.17"},
           {"macvlan.default.kubernetes.io/ip_pool", "172.17.0.200,172.17.0.201,172.17.0.202"}});
  pod.stateful_set = "web";
  pod.ordinal = 1;
  auto r = AttachmentsOf(pod, {NetworkSelection{"macvlan", "default", "net1", {}, "", {}}});
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].pool, "172.17.0.200,172.17.0.201,172.17.0.202");
  EXPECT_EQ((*r)[0].ordinal, 1u);
  EXPECT_TRUE((*r)[0].sticky);
  EXPECT_TRUE((*r)[0].static_ips.empty());
}

// Static addresses: ip_address.<ifname> wins over ip_address, which wins over Multus ips.
TEST(AttachmentsOfTest, StaticAddressPrecedence) {
  const std::string networks =
      R"([{"name":"m","interface":"eth1","ips":["10.0.0.9/24"],"mac":"02:00:00:00:00:09"}])";
  struct Case {
    std::map<std::string, std::string> annotations;
    std::vector<std::string> want_ips;
    std::string want_mac;
    std::string want_mac_annotation = {};  // "" = the MAC is Multus' own
  };
  for (const Case& c : std::vector<Case>{
           {{}, {"10.0.0.9/24"}, "02:00:00:00:00:09"},
           {{{"m.default.kubernetes.io/ip_address", "10.0.0.5, fd00::5"},
             {"m.default.kubernetes.io/mac_address", "02:00:00:00:00:05"}},
            {"10.0.0.5", "fd00::5"},
            "02:00:00:00:00:05",
            "m.default.kubernetes.io/mac_address"},
           {{{"m.default.kubernetes.io/ip_address", "10.0.0.5"},
             {"m.default.kubernetes.io/ip_address.eth1", "10.0.0.6"},
             {"m.default.kubernetes.io/mac_address.eth1", "02:00:00:00:00:06"}},
            {"10.0.0.6"},
            "02:00:00:00:00:06",
            "m.default.kubernetes.io/mac_address.eth1"},
           // Another interface's or another provider's keys do not apply.
           {{{"m.default.kubernetes.io/ip_address.net1", "10.0.0.7"},
             {"other.default.kubernetes.io/ip_address", "10.0.0.8"}},
            {"10.0.0.9/24"},
            "02:00:00:00:00:09"},
       }) {
    PodInfo pod = Pod(c.annotations);
    pod.annotations[std::string(kNetworksAnnotation)] = networks;
    auto r = Attachments(pod);
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->size(), 1u);
    EXPECT_EQ((*r)[0].static_ips, c.want_ips);
    EXPECT_EQ((*r)[0].mac, c.want_mac);
    EXPECT_EQ((*r)[0].mac_annotation, c.want_mac_annotation);
    EXPECT_FALSE((*r)[0].per_interface);
  }
}

// Kube-OVN's "Per-Interface Static IP/MAC on the Same Switch" example.
TEST(AttachmentsOfTest, SameNadTwiceUsesPerInterfaceAnnotations) {
  auto r =
      Attachments(Pod({{"k8s.v1.cni.cncf.io/networks",
                        R"([{"name": "attachnet", "namespace": "default", "interface": "net1"},)"
                        R"( {"name": "attachnet", "namespace": "default", "interface": "net2"}])"},
                       {"attachnet.default.kubernetes.io/ip_address.net1", "172.17.0.100"},
                       {"attachnet.default.kubernetes.io/mac_address.net1", "00:00:00:53:6B:B1"},
                       {"attachnet.default.kubernetes.io/ip_address.net2", "172.17.0.101"},
                       {"attachnet.default.kubernetes.io/mac_address.net2", "00:00:00:53:6B:B2"}}));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*r)[i].provider, "attachnet.default");
    EXPECT_EQ((*r)[i].ifname, "net" + std::to_string(i + 1));
    EXPECT_TRUE((*r)[i].per_interface);
    EXPECT_EQ((*r)[i].static_ips, std::vector<std::string>{"172.17.0.10" + std::to_string(i)});
    EXPECT_EQ((*r)[i].mac, "00:00:00:53:6B:B" + std::to_string(i + 1));
  }
}

TEST(AttachmentsOfTest, RoutesFamilyAndDefaultRoute) {
  auto r =
      Attachments(Pod({{"k8s.v1.cni.cncf.io/networks",
                        R"([{"name":"macvlan","default-route":["172.17.0.1"]}, {"name":"b"}])"},
                       {"macvlan.default.kubernetes.io/routes",
                        "[{\n \"dst\": \"192.168.0.101/24\",\n \"gw\": \"172.17.0.254\"\n}, "
                        "{\n \"gw\": \"172.17.0.254\"\n}]"},
                       {"macvlan.default.kubernetes.io/ip_family", "IPv6"},
                       {"b.default.kubernetes.io/ip_family", "ipv4"},
                       {"b.default.kubernetes.io/default_route", "true"}}));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  const AttachmentRequest& m = (*r)[0];
  EXPECT_EQ(m.routes,
            (std::vector<WireRoute>{{"192.168.0.101/24", "172.17.0.254"}, {"", "172.17.0.254"}}));
  EXPECT_EQ(m.family, Family::kV6);
  EXPECT_FALSE(m.default_route);  // Multus installs the selection's default-route itself
  EXPECT_EQ(m.default_route_gateways, std::vector<std::string>{"172.17.0.1"});
  const AttachmentRequest& b = (*r)[1];
  EXPECT_TRUE(b.routes.empty());
  EXPECT_EQ(b.family, Family::kV4);
  EXPECT_TRUE(b.default_route);
  EXPECT_TRUE(b.default_route_gateways.empty());
}

TEST(AttachmentsOfTest, MalformedAnnotationsAreRejectedNamingTheKey) {
  struct Case {
    std::map<std::string, std::string> annotations;
    std::string want;
  };
  const std::string p = "macvlan.default.kubernetes.io/";
  for (const Case& c : std::vector<Case>{
           {{{p + "ip_address", "172.17.0.999"}},
            p + "ip_address: \"172.17.0.999\" is not an IP address"},
           {{{p + "ip_address", "10.0.0.1,10.0.0.2"}}, "has two IPv4 addresses"},
           {{{p + "ip_address", "10.0.0.1,"}}, p + "ip_address: \"\" is not an IP address"},
           {{{p + "ip_address.net1", "x"}}, p + "ip_address.net1: \"x\""},
           {{{p + "mac_address", "00:00:00:53:6B"}},
            p + "mac_address: \"00:00:00:53:6B\" is not a MAC"},
           {{{p + "mac_address.net1", "00-00"}}, p + "mac_address.net1: \"00-00\" is not a MAC"},
           {{{p + "ip_family", "dual"}},
            p + "ip_family: \"dual\" is not a family; write \"ipv4\" or \"ipv6\""},
           {{{p + "default_route", "yes"}},
            p + "default_route: \"yes\" must be \"true\" or \"false\""},
           {{{p + "routes", "not json"}}, p + "routes is not valid JSON"},
           {{{p + "routes", R"({"dst":"1.0.0.0/8"})"}},
            "must be a JSON list of {\"dst\", \"gw\"} objects"},
           {{{p + "routes", R"([{"dst":"1.0.0.0/88","gw":"10.0.0.1"}])"}},
            "route 0: dst \"1.0.0.0/88\" is not a CIDR"},
           {{{p + "routes", R"([{"gw":"10.0.0.1"},{"gw":"10.0.0.x"}])"}},
            "route 1: gw \"10.0.0.x\" is not an IP"},
           {{{p + "routes", R"([{"dst":"fd00::/8","gw":"10.0.0.1"}])"}}, "different families"},
           {{{p + "routes", R"([{}])"}}, "route 0 has neither \"dst\" nor \"gw\""},
           {{{p + "routes", R"([{"dst":1}])"}}, "route 0 dst must be a string, not a number"},
       }) {
    PodInfo pod = Pod(c.annotations);
    pod.annotations[std::string(kNetworksAnnotation)] = "macvlan";
    auto r = Attachments(pod);
    ASSERT_FALSE(r) << c.want;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
    EXPECT_NE(r.error().message.find(c.want), std::string::npos)
        << "message: " << r.error().message << "\nwant: " << c.want;
    EXPECT_NE(r.error().message.find("pod default/static-ip"), std::string::npos)
        << r.error().message;
  }
}

TEST(AttachmentsOfTest, FlatStaticAddressCannotServeTwoInterfacesOfOneProvider) {
  auto r = Attachments(Pod({{"k8s.v1.cni.cncf.io/networks", "macvlan,macvlan"},
                            {"macvlan.default.kubernetes.io/ip_address", "172.17.0.100"}}));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("use macvlan.default.kubernetes.io/ip_address.net1"),
            std::string::npos)
      << r.error().message;
  // A pool is fine: each interface takes the next free entry.
  auto pool =
      Attachments(Pod({{"k8s.v1.cni.cncf.io/networks", "macvlan,macvlan"},
                       {"macvlan.default.kubernetes.io/ip_pool", "172.17.0.200,172.17.0.201"}}));
  ASSERT_TRUE(pool) << pool.error().message;
  EXPECT_EQ(pool->size(), 2u);
}

// The request body that the recorded API server accepted (recording 24).
TEST(AllocatedAnnotationsPatchTest, MatchesWhatKubeOvnWritesAndTheServerAccepted) {
  const std::string recording = ReadRecording("24-patch-pod-annotations-merge-200.txt");
  const std::string marker = "# request body: ";
  size_t at = recording.find(marker);
  ASSERT_NE(at, std::string::npos);
  const std::string recorded_body =
      recording.substr(at + marker.size(), recording.find('\n', at) - at - marker.size());
  EXPECT_EQ(AllocatedAnnotationsPatch(
                {"macvlan.default", "", "172.17.0.11", "172.17.0.0/16", "172.17.0.1", ""}),
            recorded_body);
}

TEST(AllocatedAnnotationsPatchTest, ExactBodies) {
  struct Case {
    AllocatedAnnotations in;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {{"macvlan.default", "", "172.17.0.11,fd00::b", "172.17.0.0/16,fd00::/64",
             "172.17.0.1,fd00::1", "02:00:00:53:6b:bb"},
            R"({"metadata":{"annotations":{)"
            R"("macvlan.default.kubernetes.io/ip_address":"172.17.0.11,fd00::b",)"
            R"("macvlan.default.kubernetes.io/mac_address":"02:00:00:53:6b:bb",)"
            R"("macvlan.default.kubernetes.io/cidr":"172.17.0.0/16,fd00::/64",)"
            R"("macvlan.default.kubernetes.io/gateway":"172.17.0.1,fd00::1",)"
            R"("macvlan.default.kubernetes.io/allocated":"true"}}})"},
           {{"attachnet.default", "net2", "172.17.0.101", "172.17.0.0/16", "", "00:00:00:53:6B:B2"},
            R"({"metadata":{"annotations":{)"
            R"("attachnet.default.kubernetes.io/ip_address.net2":"172.17.0.101",)"
            R"("attachnet.default.kubernetes.io/mac_address.net2":"00:00:00:53:6B:B2",)"
            R"("attachnet.default.kubernetes.io/cidr":"172.17.0.0/16",)"
            R"("attachnet.default.kubernetes.io/allocated.net2":"true"}}})"},
       }) {
    EXPECT_EQ(AllocatedAnnotationsPatch(c.in), c.want);
  }
}

// A pod's attachments written together: every attachment's keys, a shared flat key once.
TEST(AllocatedAnnotationsPatchTest, SeveralAttachmentsInOnePatch) {
  std::vector<AllocatedAnnotations> all = {
      {"a.default", "", "10.0.0.5", "10.0.0.0/24", "10.0.0.1", ""},
      {"b.default", "net2", "10.1.0.5", "10.1.0.0/24", "", "02:00:00:00:00:01"},
      {"b.default", "net3", "10.1.0.6", "10.1.0.0/24", "", ""},
  };
  EXPECT_EQ(AllocatedAnnotationsPatch(all),
            R"({"metadata":{"annotations":{)"
            R"("a.default.kubernetes.io/ip_address":"10.0.0.5",)"
            R"("a.default.kubernetes.io/cidr":"10.0.0.0/24",)"
            R"("a.default.kubernetes.io/gateway":"10.0.0.1",)"
            R"("a.default.kubernetes.io/allocated":"true",)"
            R"("b.default.kubernetes.io/ip_address.net2":"10.1.0.5",)"
            R"("b.default.kubernetes.io/mac_address.net2":"02:00:00:00:00:01",)"
            R"("b.default.kubernetes.io/cidr":"10.1.0.0/24",)"
            R"("b.default.kubernetes.io/allocated.net2":"true",)"
            R"("b.default.kubernetes.io/ip_address.net3":"10.1.0.6",)"
            R"("b.default.kubernetes.io/allocated.net3":"true"}}})");
  EXPECT_EQ(AllocatedAnnotationsPatch(std::vector<AllocatedAnnotations>{all[0]}),
            AllocatedAnnotationsPatch(all[0]));
  EXPECT_EQ(AllocatedAnnotationsPatch({all[0]}, "0b8c5f1e-6a86-4a1c-9b1e-3c1d2f3a4b5c"),
            R"({"metadata":{"uid":"0b8c5f1e-6a86-4a1c-9b1e-3c1d2f3a4b5c","annotations":{)"
            R"("a.default.kubernetes.io/ip_address":"10.0.0.5",)"
            R"("a.default.kubernetes.io/cidr":"10.0.0.0/24",)"
            R"("a.default.kubernetes.io/gateway":"10.0.0.1",)"
            R"("a.default.kubernetes.io/allocated":"true"}}})");
}

// What the patch writes, read back, is what IsAllocated and AttachmentsOf see.
TEST(AllocatedAnnotationsPatchTest, PatchedPodReadsAsAllocatedWithItsAddresses) {
  const std::string patch = AllocatedAnnotationsPatch(
      {"attachnet.default", "net2", "172.17.0.101", "172.17.0.0/16", "172.17.0.1", ""});
  // A pod object whose metadata is the patch's (what a merge patch onto no annotations gives).
  std::string json = patch;
  json.insert(json.find("\"annotations\""), R"("name":"p","namespace":"default",)");
  auto pod = ParsePod(PodObject(json));
  ASSERT_TRUE(pod) << pod.error().message;
  EXPECT_TRUE(IsAllocated(*pod, "attachnet.default", "net2"));
  EXPECT_FALSE(IsAllocated(*pod, "attachnet.default", "net1"));
  EXPECT_FALSE(IsAllocated(*pod, "attachnet.default"));
  pod->annotations[std::string(kNetworksAnnotation)] = "attachnet@net1,attachnet@net2";
  auto r = Attachments(*pod);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_TRUE((*r)[0].static_ips.empty());
  EXPECT_EQ((*r)[1].static_ips, std::vector<std::string>{"172.17.0.101"});
}

}  // namespace
}  // namespace sublease
