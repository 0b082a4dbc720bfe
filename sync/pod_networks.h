// PodNetworks: what a pod asks of sublease, read from its object — pure parsing for the
// node's controller shard (ahead-of-time allocation, DESIGN §3.3) — and the annotations
// written back once an allocation is committed. No I/O; any thread.
//
// Outside facts this follows (DESIGN §1.3):
// - Multus' `k8s.v1.cni.cncf.io/networks`: a comma-separated list of `name`,
//   `ns/name`, `name@ifname`, `ns/name@ifname` (whitespace around items and parts
//   tolerated; each part a DNS-1123 label), or, when the value contains any of `[{"`,
//   a JSON list of selection objects (`name`, `namespace`, `interface`, `ips`, `mac`,
//   `default-route`, `ipam-claim-reference`; others ignored). The namespace defaults to the pod's.
//   An attachment without an interface name gets Multus' `net<i>`, i = its 1-based position in the
//   list (the cluster network is delegate 0), whatever the others ask.
// - Kube-OVN's per-attachment annotations, keyed by provider `<nad name>.<nad ns>`:
//   `<P>.kubernetes.io/{ip_address,mac_address,ip_pool,ip_family,routes,default_route}`,
//   and the per-interface `<P>.kubernetes.io/{ip_address,mac_address}.<ifname>` that
//   win over the flat ones (for one NAD attached more than once).
// - What Kube-OVN's controller writes once an address is allocated:
//   `<P>.kubernetes.io/{ip_address,mac_address,cidr,gateway}` and `allocated: "true"`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "common/wire.h"
#include "sync/kube_object.h"

namespace sublease {

inline constexpr std::string_view kNetworksAnnotation = "k8s.v1.cni.cncf.io/networks";

// One entry of the networks annotation, defaults applied.
struct NetworkSelection {
  std::string name;                        // the NetworkAttachmentDefinition's name
  std::string namespace_name;              // its namespace (the pod's when not given)
  std::string ifname;                      // requested, or Multus' default net<position>
  std::vector<std::string> ips;            // JSON "ips": "a" or "a/len", validated
  std::string mac;                         // JSON "mac", validated
  std::vector<std::string> default_route;  // JSON "default-route": gateway addresses
  // JSON "ipam-claim-reference": an IPAMClaim in the pod's namespace (docs/kubevirt.md).
  std::string ipam_claim = {};
  friend bool operator==(const NetworkSelection&, const NetworkSelection&) = default;
};

// Parses the networks annotation. "" (or only whitespace) is no attachments.
// kInvalidArgument naming the entry for: malformed JSON or a wrong field type, an
// empty entry or name, a part that is not a DNS-1123 label in the text form, an
// unparsable address or MAC, an interface name longer than 15 characters or used twice.
Result<std::vector<NetworkSelection>> ParseNetworksAnnotation(std::string_view value,
                                                              std::string_view pod_namespace);

struct PodInfo {
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string node_name;  // spec.nodeName; "" while unscheduled
  std::map<std::string, std::string> annotations;
  bool deleting = false;  // metadata.deletionTimestamp is set
  std::string phase;      // status.phase
  bool finished = false;  // phase Succeeded or Failed: its sandbox will not run again
  // The controlling StatefulSet (ownerReference kind StatefulSet, apiVersion apps/v1,
  // controller true), "" when there is none; and its UID (a re-created StatefulSet has
  // a new one).
  std::string stateful_set;
  std::string stateful_set_uid;
  // The digits after the pod name's last '-', when the part before it is the
  // StatefulSet's name ("web-2" of StatefulSet "web" -> 2).
  std::optional<uint32_t> ordinal;
  // KubeVirt: the VirtualMachineInstance this pod is the launcher of (an ownerReference
  // of kind VirtualMachineInstance, apiVersion kubevirt.io/*; its name is the VM's), "".
  std::string virtual_machine = {};

  // A StatefulSet member keeps its addresses across pod re-creation (sticky leases).
  bool IsStatefulSetMember() const { return !stateful_set.empty() && ordinal.has_value(); }
  // "namespace/name".
  std::string Key() const { return namespace_name + "/" + name; }
};

// From a pod object (list item or watch event). kInvalidArgument naming the field when
// the JSON is malformed or a field has the wrong type.
Result<PodInfo> ParsePod(const KubeObject& pod);

// One attachment a pod wants, with everything the allocator needs
// (daemon/allocator AllocateRequest) and the CNI reply's routes.
struct AttachmentRequest {
  std::string provider;  // "<nad name>.<nad namespace>"
  std::string ifname;
  // True when the pod attaches this provider more than once: then its addresses are
  // written back under per-interface keys (AllocatedAnnotations::ifname).
  bool per_interface = false;
  // Static addresses, one per family at most ("a" or "a/len"): from ip_address.<ifname>,
  // else ip_address ("v4,v6"), else the selection's Multus `ips`; empty = none.
  std::vector<std::string> static_ips;
  std::string mac;                  // mac_address.<ifname>, else mac_address, else Multus `mac`
  // The annotation key `mac` came from ("<P>.kubernetes.io/mac_address[.<ifname>]"); ""
  // when it is Multus' `mac` or absent. An IPAM plugin cannot set a MAC: the node warns.
  std::string mac_annotation = {};
  std::string pool;                 // the raw ip_pool annotation; the allocator parses it
  std::optional<uint32_t> ordinal;  // StatefulSet ordinal: selects pool entry [ordinal]
  bool sticky = false;              // StatefulSet member
  std::optional<Family> family;     // ip_family "ipv4" / "ipv6"
  // The routes annotation, as Kube-OVN writes it: `[{"dst","gw"}]`; a route with no
  // dst is the default route (dst "" here, as in CniRequest::routes).
  std::vector<WireRoute> routes;
  // default_route: "true": the attachment should carry the default route.
  bool default_route = false;
  // The selection's Multus `default-route` gateways. Multus itself installs these
  // after the plugin returns (netlink add, which fails if the route exists), so an IPAM
  // result must not add a default route for them; they are informational here.
  std::vector<std::string> default_route_gateways;
  // The selection's `ipam-claim-reference` (a claim in the pod's namespace); "" = none.
  // Honoured only for a network config with allowPersistentIPs (the CNI request says).
  std::string ipam_claim = {};
  friend bool operator==(const AttachmentRequest&, const AttachmentRequest&) = default;
};

// One request per selection, in the annotation's order. kInvalidArgument naming the
// annotation for a malformed ip_address, mac_address, ip_family, routes or
// default_route value, or a flat ip_address shared by two interfaces of one provider.
Result<std::vector<AttachmentRequest>> AttachmentsOf(
    const PodInfo& pod, const std::vector<NetworkSelection>& selections);

// What an allocation writes back to its pod.
struct AllocatedAnnotations {
  std::string provider;
  std::string ifname;     // "" = flat keys; set for AttachmentRequest::per_interface
  std::string addresses;  // "v4", "v6" or "v4,v6"
  std::string cidr;       // the subnet's cidrBlock, "c4,c6"
  std::string gateway;    // "g4,g6"; "" = key left out
  std::string mac;        // "" = key left out
  // "" = key left out; else `<P>.kubernetes.io/virtualmachine` (Kube-OVN's, for a VM's pod).
  std::string virtual_machine = {};
};
// A JSON merge-patch body for KubeClient::MergePatch:
// {"metadata":{"annotations":{"<P>.kubernetes.io/ip_address":…, "mac_address" (when
// known), "cidr", "gateway", "allocated":"true"}}}. With an ifname, ip_address and
// mac_address take Kube-OVN's per-interface form `….<ifname>` and the marker is
// `allocated.<ifname>` (sublease's: Kube-OVN has no per-interface marker).
std::string AllocatedAnnotationsPatch(const AllocatedAnnotations& a);
// One patch for several attachments of one pod (the shard coalesces a pod's writes):
// each attachment's keys in order; a key two attachments share (the flat `cidr` and
// `gateway` of one provider) is written once, with the last value.
// With `pod_uid`, the patch also carries metadata.uid: the API server then applies it
// only to that pod, and answers 409 Conflict ("Precondition failed: UID in precondition")
// when the name now belongs to a pod re-created meanwhile (as the kubelet's status
// patches do).
std::string AllocatedAnnotationsPatch(const std::vector<AllocatedAnnotations>& all,
                                      const std::string& pod_uid = "");

// Whether the pod's annotations say the provider's address was written back
// (`<P>.kubernetes.io/allocated` is "true"; with an ifname, `allocated.<ifname>`).
bool IsAllocated(const PodInfo& pod, std::string_view provider, std::string_view ifname = "");

}  // namespace sublease
