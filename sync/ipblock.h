// IpBlock: the sublease.io/v1alpha1 IPBlock object, the unit of the cluster protocol.
//
// A Subnet's CIDR (per family) is cut into blocks of 2^(bits - block_prefix) addresses.
// A block object exists in the API server once some node has claimed it (create) or an
// allocation landed in it; it records its affine node and every allocation in it, by
// offset from the block's first address. Its name is derived from subnet and block CIDR
// (BlockName), so "which block holds address X" needs no lookup. docs/cluster-protocol.md
// is the reference. Pure values and codecs; no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/ip.h"
#include "common/result.h"
#include "common/subnet_spec.h"

namespace sublease {

inline constexpr std::string_view kIpBlockApiVersion = "sublease.io/v1alpha1";
inline constexpr std::string_view kIpBlockCollection = "/apis/sublease.io/v1alpha1/ipblocks";
inline constexpr std::string_view kSubnetLabel = "sublease.io/subnet";
inline constexpr std::string_view kNodeLabel = "sublease.io/node";

struct BlockAllocation {
  std::string pod_namespace;  // "namespace"
  std::string pod_name;       // "pod"
  std::string pod_uid;        // "podUID"
  std::string ifname;         // "interface"
  std::string container_id;   // "containerID" ("" when allocated ahead of the CNI call)
  std::string node;           // "node": the node that made (and releases) it
  std::string provider;       // "provider"
  bool sticky = false;        // "sticky": StatefulSet pod, outlives its pod object
  // "ownerUID": the UID of a sticky allocation's StatefulSet ("" otherwise; the key is
  // left out then). A node adopts the allocation for a re-created pod of the same name
  // only when its StatefulSet has this UID (docs/cluster-protocol.md, Adoption).
  std::string owner_uid;
  // "ipamClaim": "<namespace>/<name>" of the IPAMClaim that owns the address ("" = none;
  // the key is left out then). Such an allocation outlives its pods: a node's release
  // leaves it in the block, any pod referencing the claim adopts it (on any node), and
  // only the cluster's garbage collection removes it, once the claim is gone
  // (docs/cluster-protocol.md, IPAMClaims).
  std::string ipam_claim = {};
  // "virtualMachine": "<namespace>/<vm name>" for a KubeVirt VM's address kept the
  // Kube-OVN way (no claim): like ipamClaim, it outlives its pods and any launcher pod
  // of the VM takes it over for the same interface; the garbage collection removes it
  // once neither the VirtualMachine nor the VirtualMachineInstance exists ("" = none).
  std::string virtual_machine = {};
  // "reservedIp": the name of the Kube-OVN `IP` object (ips.kubeovn.io, labelled
  // ovn.kubernetes.io/ip_reserved=true) that reserves this address for its pod ("" =
  // none). Like ipamClaim it outlives its pods: a node's release leaves it in the block,
  // the reserved pod's node takes it over (on any node), and only the garbage collection
  // removes it, once the IP object is gone (docs/cluster-protocol.md, Reserved IPs).
  std::string reserved_ip = {};
  // "spare": an address the affine node (`node`) holds in its own block for pods it has
  // not seen yet (--spare-addresses): no pod fields. No other node allocates it; the
  // node hands it out with no API write and records the pod in it later
  // (docs/cluster-protocol.md, Spares). Omitted when false. Decoded true also for an
  // entry of the affine node with no pod and no keeper: a spare whose flag an older
  // version (or an older CRD's pruning) dropped.
  bool spare = false;
  friend bool operator==(const BlockAllocation&, const BlockAllocation&) = default;
};

// Who keeps an allocation beyond its pods: "claim <ns>/<name>" (an IPAMClaim), "vm
// <ns>/<vm> <ifname>" (a KubeVirt VM, Kube-OVN's rules), "reserved IP <name>" (a
// Kube-OVN IP object reserving it), "" = its pod.
std::string KeptFor(const BlockAllocation& a);

struct IpBlock {
  std::string name;              // metadata.name = BlockName(subnet, cidr)
  std::string resource_version;  // "" until created
  std::string uid;
  std::string subnet;            // spec.subnet
  IpNet cidr;                    // spec.cidr
  std::string node;              // spec.node: the affine node
  std::map<uint64_t, BlockAllocation> allocations;  // spec.allocations, offset -> holder
  // spec.returnSpares: another node found no free address but this node's spares and
  // asks it to give back those it has not handed out (omitted when false).
  bool return_spares = false;

  // Address at `offset` (REQUIRES: offset < size).
  IpAddr AddressAt(uint64_t offset) const { return cidr.first().Plus(offset); }
  // Offset of `a` if the block contains it.
  std::optional<uint64_t> OffsetOf(const IpAddr& a) const;
};

// "<subnet>.<hex of the block's first address>-<prefix>", e.g. "macvlan.ac110040-26",
// "macvlan.fd000000000000000000000000000040-122". Lowercase, a DNS-1123 subdomain when
// the subnet name is one.
std::string BlockName(const std::string& subnet, const IpNet& block_cidr);

// The default block prefix for a subnet CIDR: at least 32 blocks per subnet where the
// subnet allows, with 8 to 64 addresses per block and never a block larger than the
// subnet — a /24 gets /29 blocks (enough for 20 nodes to hold one each), a /16 gets /26,
// a /26 gets /29, a /30 is one block, an IPv6 /64 gets /122.
int DefaultBlockPrefix(const IpNet& subnet_cidr);
// The block prefix for one family of a subnet. `override` ("/26", "26"; "" = default)
// is written as an IPv4 prefix length and means a block size (/26 = 64 addresses); an
// IPv6 family uses blocks of the same size (/122). Clamped to the CIDR (a block is never
// larger than its subnet). kInvalidArgument naming the value when it is malformed or
// outside 1..32.
Result<int> BlockPrefixFor(const IpNet& subnet_cidr, const std::string& override);
// The block of `block_prefix` that holds `a`.
IpNet BlockOf(const IpAddr& a, int block_prefix);

// The number of allocations that hold an address for a pod (spares excluded).
size_t UsedCount(const IpBlock& block);
// True when every allocation in `block` is a spare (or there is none).
bool OnlySpares(const IpBlock& block);

// The whole object for create and update (apiVersion, kind, metadata.name, labels
// subnet and node, metadata.resourceVersion when set, spec, and status.used = the
// number of allocations but spares (UsedCount): the CRD has no status subresource, so it rides in the same
// write and feeds the `Used` printer column). Offsets are decimal keys.
std::string EncodeIpBlock(const IpBlock& block);
// From an API object (a get, a list item, a watch event's object): metadata.name,
// .resourceVersion, .uid and spec; unknown fields (and status) are ignored, absent and
// null fields read as empty. kInvalidArgument naming the field for a wrong type, a
// missing metadata.name or spec.cidr, or an allocation key that is not a decimal offset
// inside the block.
Result<IpBlock> DecodeIpBlock(std::string_view json);

// A kubeovn.io/v1 Subnet object (raw JSON) -> its IPAM fields (metadata.name,
// spec.provider, .cidrBlock, .gateway, .excludeIps, .protocol) as written, not
// validated; the block-size override comes from the `sublease.io/block-size`
// annotation. Kube-OVN's other fields are ignored. kInvalidArgument naming the field
// for a wrong type or a missing metadata.name.
Result<SubnetSpec> DecodeSubnet(std::string_view json);

// A kubeovn.io/v1 IPPool object (raw JSON) -> metadata.name, .creationTimestamp,
// spec.subnet, .ips, .namespaces, as written. kInvalidArgument naming the field for a
// wrong type or a missing metadata.name.
Result<IpPoolSpec> DecodeIpPool(std::string_view json);

}  // namespace sublease
