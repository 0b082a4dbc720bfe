// IpReservation: a Kube-OVN `IP` object (ips.kubeovn.io, kubeovn.io/v1, cluster-scoped)
// that a user creates to reserve an address for a pod that may not exist yet (Kube-OVN's
// "reserved IP", docs/kubeovn-compat.md). Pure values and codecs; no I/O.
//
// Which IP objects are reservations: those labelled ovn.kubernetes.io/ip_reserved=true,
// and those without that label at all (a user's new object; the leader labels it
// "true"). An object labelled "false" is a record of an allocation (sublease's own
// mirror, or Kube-OVN's), never a reservation. The name is `<pod>.<namespace>.<provider>`
// (`.<interface>` appended in per-interface mode); spec.subnet is required, spec.podName
// and spec.namespace name the pod, spec.v4IpAddress / v6IpAddress (or the older
// `ipAddress: "v4,v6"`) the addresses, empty for "pick one and fill it in".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "sync/kube_object.h"

namespace sublease {

inline constexpr std::string_view kIpObjectCollection = "/apis/kubeovn.io/v1/ips";
inline constexpr std::string_view kIpReservedLabel = "ovn.kubernetes.io/ip_reserved";

// Labelled ip_reserved=true, or carrying no ip_reserved label (see above).
bool IsReservation(const KubeObject& object);

struct IpReservation {
  std::string name;
  std::string resource_version;
  std::string subnet;          // spec.subnet
  std::string pod_name;        // spec.podName
  std::string namespace_name;  // spec.namespace
  std::string v4, v6;          // spec.v4IpAddress / v6IpAddress ("" = none)
  std::string node_name;       // spec.nodeName: where its pod runs ("" = none yet)
  bool labelled = false;       // already labelled ovn.kubernetes.io/ip_reserved=true
  // The addresses, v4 first ("" entries left out).
  std::vector<std::string> addresses() const;
};

// From a GET answer or a watch event's object. kInvalidArgument, with a message for the
// object's owner, when spec.subnet, spec.podName or spec.namespace is missing, a field
// has the wrong type, or an address does not parse or is of the wrong family.
Result<IpReservation> DecodeIpReservation(std::string_view json);

// The merge patch the leader writes once the reservation's addresses are committed to
// the IPBlocks: spec.v4IpAddress, v6IpAddress and ipAddress ("v4,v6"), the labels
// Kube-OVN puts on IP objects (ovn.kubernetes.io/subnet, `<subnet>: ""`) and
// ovn.kubernetes.io/ip_reserved=true; metadata.resourceVersion as a precondition (409
// if the user changed the object meanwhile).
std::string EncodeReservationFill(const IpReservation& reservation, const std::string& v4,
                                  const std::string& v6);

}  // namespace sublease
