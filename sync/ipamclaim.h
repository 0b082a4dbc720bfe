// IpamClaim: the k8s.cni.cncf.io/v1alpha1 IPAMClaim object (multi-net-spec v1.3 §8.2),
// the persistent address of a KubeVirt VM on one attachment network. Pure values and
// codecs; no I/O. docs/kubevirt.md is the user's reference.
//
// Outside facts this follows (k8snetworkplumbingwg/ipamclaims, OVN-Kubernetes):
// - namespaced, status subresource; spec.network = the network config's `name`;
//   spec.interface (usually "");
// - status.ips: addresses with prefix ("172.17.0.20/16"); status.ownerPod.name: the pod
//   holding it; status.conditions: type IPsAllocated, reasons SuccessfulAllocation
//   (True), SubnetExhausted / IPAddressConflict (False, with status.ips = []).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sublease {

inline constexpr std::string_view kIpamClaimApiVersion = "k8s.cni.cncf.io/v1alpha1";
inline constexpr std::string_view kIpsAllocated = "IPsAllocated";

struct IpamClaim {
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string resource_version;
  std::string network;           // spec.network
  std::string interface_name;    // spec.interface
  std::vector<std::string> ips;  // status.ips, "a/len"
  std::string owner_pod;         // status.ownerPod.name
  std::string Key() const { return namespace_name + "/" + name; }
};

// "/apis/k8s.cni.cncf.io/v1alpha1/namespaces/<ns>/ipamclaims/<name>".
std::string IpamClaimPath(std::string_view namespace_name, std::string_view name);

// From a GET answer or a watch event's object. kInvalidArgument naming the field for a
// wrong type, a missing metadata.name or an unparsable status.ips entry.
Result<IpamClaim> DecodeIpamClaim(std::string_view json);

// The body of a PUT to the claim's /status subresource: the claim as read (apiVersion,
// kind, metadata.name, .namespace, .resourceVersion — a precondition: 409 if the claim
// changed meanwhile — spec) with status {ips, ownerPod{name}, conditions[IPsAllocated]}.
// `reason` is SuccessfulAllocation (status True) or a failure reason (False; ips must be
// empty then). `now` is an RFC 3339 time for lastTransitionTime.
std::string EncodeIpamClaimStatus(const IpamClaim& claim, const std::vector<std::string>& ips,
                                  const std::string& owner_pod, const std::string& reason,
                                  const std::string& message, const std::string& now);

}  // namespace sublease
