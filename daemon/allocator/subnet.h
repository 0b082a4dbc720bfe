// Subnets as Kube-OVN defines them (kubeovn.io/v1 Subnet), normalised for allocation.
//
// SubnetSpec is the user's text, exactly as in the manifest. NormalizeSubnet applies
// Kube-OVN's rules and returns a Subnet whose per-family `usable` set is exactly the
// addresses that may ever be handed out:
//   - cidrBlock "v4", "v6" or "v4,v6"; protocol IPv4|IPv6|Dual derived when empty and
//     checked against cidrBlock when given;
//   - gateway defaults to the first usable address of each family; it is always excluded;
//   - network and last (broadcast) addresses are never usable, IPv6 too; /31 and /127 use
//     both addresses, /32 and /128 hold their one address (no default gateway there);
//   - excludeIps items are "ip" or "a..b", clipped to the usable range; a malformed item is
//     an error naming the item (Kube-OVN drops them silently; we tell the user).
// Pure values; no I/O.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "daemon/allocator/ip_range_list.h"

namespace sublease {

// The Subnet manifest's fields that matter to IPAM, as text.
struct SubnetSpec {
  std::string name;
  std::string provider;
  std::string cidr_block;                // "10.0.0.0/24" or "10.0.0.0/24,fd00::/64"
  std::string gateway;                   // "" = default; dual stack "gw4,gw6"
  std::vector<std::string> exclude_ips;  // "ip" or "first..last"
  std::string protocol;                  // "", "IPv4", "IPv6", "Dual"
  std::string block_size;                // cluster mode override, e.g. "/26"; "" = default
};

enum class Protocol { kIPv4, kIPv6, kDual };
std::string_view ProtocolName(Protocol p);  // "IPv4", "IPv6", "Dual"

struct SubnetFamily {
  Family family = Family::kV4;
  IpNet cidr;
  std::optional<IpAddr> gateway;  // none only for /32 and /128 without an explicit one
  IpRangeList excluded;           // normalised excludeIps + gateway, clipped to the CIDR
  IpRangeList usable;             // CIDR minus network/broadcast minus excluded
};

struct Subnet {
  std::string name;
  std::string provider;
  Protocol protocol = Protocol::kIPv4;
  std::optional<SubnetFamily> v4;
  std::optional<SubnetFamily> v6;
  SubnetSpec spec;  // as given, for the store and for status

  const SubnetFamily* family(Family f) const { return f == Family::kV4 ? (v4 ? &*v4 : nullptr) : (v6 ? &*v6 : nullptr); }
};

// Applies Kube-OVN's rules (above). Errors are kInvalidArgument and name the field or item.
Result<Subnet> NormalizeSubnet(const SubnetSpec& spec);

}  // namespace sublease
