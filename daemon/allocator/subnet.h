// Subnets as Kube-OVN defines them (kubeovn.io/v1 Subnet), normalised for allocation.
//
// SubnetSpec is the user's text, exactly as in the manifest. NormalizeSubnet applies
// Kube-OVN's rules and returns a Subnet whose per-family `usable` set is exactly the
// addresses dynamic allocation may hand out. Pure values; no I/O. The rules:
//   - cidrBlock is "v4", "v6" or "v4,v6" (either order; whitespace around items is
//     tolerated; two blocks of one family are an error). Host bits are cleared.
//   - protocol IPv4|IPv6|Dual is derived when empty; a given one that contradicts
//     cidrBlock is an error (Kube-OVN silently overwrites it; we tell the user).
//   - Host range (HostRange): every address but the network and the last one, IPv6
//     too (Kube-OVN's util.FirstIP/LastIP); /31 and /127 use both addresses; /32 and
//     /128 hold their one address.
//   - gateway: "gw" or "gw4,gw6"; a family left out defaults to the first address of
//     its host range (Kube-OVN's util.FirstIP, so a /31's default gateway is its first
//     address); /32 and /128 get no default gateway. A gateway outside its CIDR, on
//     the network or last address, or of a family the subnet lacks is an error
//     (Kube-OVN's ValidateSubnet). The gateway is always excluded.
//   - excludeIps items are "ip" or "a..b" (whitespace tolerated). A malformed item, a
//     range whose ends differ in family, or a reversed range is an error naming the
//     item (Kube-OVN's webhook rejects these too; its IPAM drops them). Valid items are
//     clipped to the host range; an item that keeps no address after clipping (outside
//     the CIDR, only network/broadcast, or of a family the subnet lacks) is ignored, as
//     Kube-OVN's util.ExpandExcludeIPs does, and noted in `warnings` for the status.
//   - Excluded addresses are never handed out dynamically, but may be requested
//     statically or through an ip_pool (CheckAssignable): Kube-OVN users reserve
//     addresses for static pods that way (Kube-OVN's Subnet.GetStaticAddress accepts
//     reserved addresses). The gateway, network and last address never may.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "common/subnet_spec.h"
#include "daemon/allocator/ip_range_list.h"

namespace sublease {


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
  // Items that were valid but ignored (e.g. an excludeIps range outside the CIDR), for
  // the Subnet's Validated condition. Empty when everything given was used.
  std::vector<std::string> warnings;

  const SubnetFamily* family(Family f) const { return f == Family::kV4 ? (v4 ? &*v4 : nullptr) : (v6 ? &*v6 : nullptr); }
};

// Applies Kube-OVN's rules (above). Errors are kInvalidArgument and name the field or item.
Result<Subnet> NormalizeSubnet(const SubnetSpec& spec);

// The subnet's CIDRs as Kube-OVN writes a cidrBlock: "v4", "v6" or "v4,v6".
std::string CidrText(const Subnet& subnet);

// The addresses of `cidr` that may be handed out before exclusions (rules above).
IpRange HostRange(const IpNet& cidr);

// OK when `address` may be requested statically or from a pool: inside one of the
// subnet's CIDRs and not its gateway, network or last address. Excluded addresses
// pass. kInvalidArgument otherwise, naming the address, the subnet and the reason.
Result<void> CheckAssignable(const Subnet& subnet, const IpAddr& address);

}  // namespace sublease
