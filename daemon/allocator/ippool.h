// Named pools: Kube-OVN's `kubeovn.io/v1 IPPool` objects, as pure values.
//
// An IPPool names a Subnet (`spec.subnet`) and lists addresses (`spec.ips`, items "ip",
// "cidr" or "a..b", IPv4 and IPv6). Kube-OVN's rules (ipam/subnet.go AddOrUpdateIPPool),
// which ResolvePools applies to the pools of every subnet:
//   - a pool's usable addresses are its `ips` inside the subnet's usable set (the CIDR
//     without network, last address, gateway and excludeIps: the pool inherits them);
//   - two pools of one subnet may not overlap (on their `ips` inside the CIDR): the
//     later one (creationTimestamp, then name) is not Ready, and its message names both;
//   - a Ready pool's addresses leave the subnet's dynamic allocation (the allocator's
//     SetNamedPools); a pool that is not Ready takes nothing away and gives nothing.
// Pure functions; no I/O.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/subnet_spec.h"
#include "daemon/allocator/ip_range_list.h"
#include "daemon/allocator/subnet.h"

namespace sublease {

// The addresses of `ips`, per family. kInvalidArgument naming the item: not an address,
// a CIDR or "a..b"; a range whose ends differ in family or are reversed; empty.
struct PoolAddresses {
  IpRangeList v4{Family::kV4};
  IpRangeList v6{Family::kV6};
  const IpRangeList& of(Family f) const { return f == Family::kV4 ? v4 : v6; }
  IpRangeList& of(Family f) { return f == Family::kV4 ? v4 : v6; }
  friend bool operator==(const PoolAddresses&, const PoolAddresses&) = default;
};
Result<PoolAddresses> ParsePoolIps(const std::vector<std::string>& ips);

// Whether an ip_pool annotation names an IPPool: a single token (no ',' or ';') that is
// not an IP address (Kube-OVN's acquireStaticAddressHelper).
bool IsPoolName(std::string_view annotation);

// A pool as the allocator and the status see it.
struct ResolvedPool {
  IpPoolSpec spec;
  bool ready = false;
  std::string reason;     // Kube-OVN's: "UpdateIPAMSucceeded" / "UpdateIPAMFailed"
  std::string message;    // for a person: what is wrong and what to do ("" when Ready)
  PoolAddresses in_cidr;  // `ips` inside the subnet's CIDRs (empty when unparsable)
  PoolAddresses usable;   // in_cidr ∩ the subnet's usable set: what it hands out
};

// Applies the rules above to every pool. `subnets` by name; a pool whose subnet is not
// there is not Ready. Returned by pool name.
std::map<std::string, ResolvedPool> ResolvePools(
    const std::vector<IpPoolSpec>& pools, const std::map<std::string, const Subnet*>& subnets);

}  // namespace sublease
