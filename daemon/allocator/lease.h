// Leases: who holds which address of which subnet.
//
// An attachment is one interface of one container. Its identity (AttachmentKey) is the
// pod (namespace/name) when the runtime tells us the pod, so that a sandbox re-created
// by the runtime keeps its address, and the container ID otherwise; plus the interface
// name and the subnet. A dual-stack lease holds one address of each family.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip.h"

namespace sublease {

enum class LeaseState : uint8_t { kPending, kCommitted, kReleased };
std::string_view LeaseStateName(LeaseState s);  // "pending", "committed", "released"

struct Owner {
  std::string pod_namespace;  // empty when the runtime gave no pod identity
  std::string pod_name;
  std::string pod_uid;
  std::string container_id;   // the sandbox currently holding the lease
  std::string ifname;         // interface inside the container, e.g. "net1"
  friend bool operator==(const Owner&, const Owner&) = default;
};

struct AttachmentKey {
  std::string subnet;
  std::string owner;   // "pod:<ns>/<name>" or "container:<id>"
  std::string ifname;

  static AttachmentKey For(const std::string& subnet, const Owner& o);
  friend bool operator==(const AttachmentKey&, const AttachmentKey&) = default;
  friend auto operator<=>(const AttachmentKey&, const AttachmentKey&) = default;
  std::string ToString() const;  // "subnet/owner/ifname" for logs and errors
};

struct Lease {
  std::string subnet;
  Owner owner;
  std::optional<IpAddr> v4;
  std::optional<IpAddr> v6;
  LeaseState state = LeaseState::kPending;
  bool sticky = false;    // StatefulSet pod: outlives its pod object
  std::string mac;        // requested MAC, recorded and reported
  std::string provider;

  AttachmentKey key() const { return AttachmentKey::For(subnet, owner); }
  std::vector<IpAddr> addresses() const;  // v4 first
  // "ns/name (container c1, net1)" or "container c1 (net1)", for error messages.
  std::string HolderDescription() const;
  friend bool operator==(const Lease&, const Lease&) = default;
};

}  // namespace sublease

template <>
struct std::hash<sublease::AttachmentKey> {
  size_t operator()(const sublease::AttachmentKey& k) const noexcept {
    std::hash<std::string> h;
    return h(k.subnet) ^ (h(k.owner) * 31) ^ (h(k.ifname) * 1000003);
  }
};
