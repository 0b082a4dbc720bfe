// Pools: the `<provider>.kubernetes.io/ip_pool` annotation, parsed against a subnet, and
// the choice of the entry a pod takes.
//
// Format (Kube-OVN's controller, pod.go): when the text contains ';', entries are
// ';'-separated and each is "v4", "v6" or "v4,v6"; otherwise it is a ','-separated list
// of single-address entries, except that exactly two addresses of different families
// form one dual-stack entry ("10.0.0.5,fd00::5"), as in Kube-OVN. Whitespace around
// items is tolerated. Every address must be assignable in the subnet (CheckAssignable:
// inside a CIDR, not the gateway, network or last address; excluded addresses are
// allowed, which is how Kube-OVN users keep pool addresses from dynamic allocation).
// An address listed twice is an error. An entry lacking a family the request needs
// gets that family dynamically, as Kube-OVN does for a single static address in a
// dual-stack subnet. Pure functions; the allocator supplies who holds what.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "daemon/allocator/lease.h"
#include "daemon/allocator/subnet.h"

namespace sublease {

struct PoolEntry {
  std::string text;  // as written, for error messages
  std::optional<IpAddr> v4;
  std::optional<IpAddr> v6;

  std::vector<IpAddr> addresses() const;  // v4 first
};

// Parses and validates the annotation. kInvalidArgument naming the item (malformed,
// outside the subnet, gateway/network/broadcast, duplicate, empty entry).
Result<std::vector<PoolEntry>> ParsePool(std::string_view annotation, const Subnet& subnet);

// Who holds `address` for another attachment ("pod default/a (container c1, net1)", or
// a foreign hold's description in cluster mode), or nullopt when it is free.
using PoolHolderFn = std::function<std::optional<std::string>(const IpAddr&)>;

// Which families the request needs; an entry's addresses of other families are ignored.
struct PoolFamilies {
  bool v4 = false;
  bool v6 = false;
};

// Picks the entry a pod takes and returns its index. Deployment pods (no ordinal): the
// first entry with an address of a needed family and none held by another attachment;
// kExhausted (listing holders) when there is none. StatefulSet pods: entry [ordinal];
// kExhausted when the pool is shorter, kConflict naming the holder when it is taken,
// kInvalidArgument when it has no address of a needed family.
Result<size_t> SelectPoolEntry(const std::vector<PoolEntry>& entries,
                               std::optional<uint32_t> ordinal, PoolFamilies families,
                               const PoolHolderFn& holder);

}  // namespace sublease
