// SubnetSpec: a kubeovn.io/v1 Subnet's IPAM fields, as the user wrote them.
//
// Shared vocabulary: standalone manifests (daemon/service), the API server's Subnet
// objects (sync/) and the allocator's normalisation (daemon/allocator) all speak it.
// Plain text, not validated here: NormalizeSubnet (daemon/allocator/subnet.h) checks it.
#pragma once

#include <string>
#include <vector>

namespace sublease {

struct SubnetSpec {
  std::string name;
  std::string provider;
  std::string cidr_block;                // "10.0.0.0/24" or "10.0.0.0/24,fd00::/64"
  std::string gateway;                   // "" = default; dual stack "gw4,gw6"
  std::vector<std::string> exclude_ips;  // "ip" or "first..last"
  std::string protocol;                  // "", "IPv4", "IPv6", "Dual"
  // Cluster mode: block size override from the `sublease.io/block-size` annotation,
  // e.g. "/26" or "26"; "" = the default (docs/cluster-protocol.md).
  std::string block_size;
  friend bool operator==(const SubnetSpec&, const SubnetSpec&) = default;
};

// A kubeovn.io/v1 IPPool's fields that allocation depends on, as written (checked by
// ResolvePools, daemon/allocator/ippool.h).
struct IpPoolSpec {
  std::string name;
  std::string subnet;                   // spec.subnet
  std::vector<std::string> ips;         // "ip", "cidr" or "first..last"
  std::vector<std::string> namespaces;  // spec.namespaces (default network only in Kube-OVN)
  std::string creation_timestamp;       // metadata.creationTimestamp (RFC 3339)
  friend bool operator==(const IpPoolSpec&, const IpPoolSpec&) = default;
};

}  // namespace sublease
