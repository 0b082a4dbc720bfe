#include "daemon/allocator/subnet.h"

#include <utility>

#include "daemon/allocator/text.h"

namespace sublease {
namespace {

std::string Quote(std::string_view s) {
  std::string out;  // built by appending: GCC 12 warns falsely on "lit" + string&& (PR 105329)
  out.reserve(s.size() + 2);
  out.append(1, '"').append(s).append(1, '"');
  return out;
}

SubnetFamily* FamilyOf(Subnet& s, Family f) {
  return f == Family::kV4 ? (s.v4 ? &*s.v4 : nullptr) : (s.v6 ? &*s.v6 : nullptr);
}


// cidrBlock: one block, or two of different families in either order.
Result<void> ParseCidrBlock(std::string_view text, Subnet& out) {
  if (TrimSpace(text).empty()) {
    return Fail(Error::InvalidArgument("cidrBlock is empty; write 10.16.0.0/16, fd00::/64 or both"));
  }
  auto items = SplitTrimmed(text, ',');
  if (items.size() > 2) {
    return Fail(Error::InvalidArgument("cidrBlock " + Quote(text) +
                                       " has more than two blocks; write v4, v6 or v4,v6"));
  }
  for (std::string_view item : items) {
    auto net = IpNet::Parse(item);
    if (!net) return Fail(net.error().Wrap("cidrBlock item " + Quote(item)));
    std::optional<SubnetFamily>& slot = net->family() == Family::kV4 ? out.v4 : out.v6;
    if (slot) {
      return Fail(Error::InvalidArgument("cidrBlock " + Quote(text) + " has two " +
                                         std::string(FamilyName(net->family())) +
                                         " blocks; a dual-stack subnet has one of each"));
    }
    slot = SubnetFamily{net->family(), *net, std::nullopt, IpRangeList(net->family()),
                        IpRangeList(net->family())};
  }
  if (out.v4 && out.v6) out.protocol = Protocol::kDual;
  else out.protocol = out.v4 ? Protocol::kIPv4 : Protocol::kIPv6;
  return Ok();
}

Result<void> CheckProtocol(std::string_view text, const Subnet& s) {
  if (text.empty()) return Ok();
  if (text != "IPv4" && text != "IPv6" && text != "Dual") {
    return Fail(Error::InvalidArgument("protocol " + Quote(text) + " is not IPv4, IPv6 or Dual"));
  }
  if (text != ProtocolName(s.protocol)) {
    return Fail(Error::InvalidArgument(
        "protocol " + Quote(text) + " does not match cidrBlock " + Quote(s.spec.cidr_block) +
        ", which is " + std::string(ProtocolName(s.protocol)) +
        "; fix one of them or leave protocol empty"));
  }
  return Ok();
}

// True when a has a network and a last address of its own to keep out (not /31, /32,
// /127, /128).
bool HasNetworkAndLast(const IpNet& n) { return n.prefix_len() < FamilyBits(n.family()) - 1; }

Result<void> SetGateway(std::string_view item, Subnet& s) {
  auto addr = IpAddr::Parse(item);
  if (!addr) return Fail(addr.error().Wrap("gateway " + Quote(s.spec.gateway)));
  SubnetFamily* fam = FamilyOf(s, addr->family());
  std::string where = "gateway " + Quote(item);
  if (fam == nullptr) {
    return Fail(Error::InvalidArgument(where + " is " + std::string(FamilyName(addr->family())) +
                                       " but cidrBlock " + Quote(CidrText(s)) + " has no such block"));
  }
  if (fam->gateway) {
    return Fail(Error::InvalidArgument("gateway " + Quote(s.spec.gateway) + " names two " +
                                       std::string(FamilyName(addr->family())) + " gateways"));
  }
  if (!fam->cidr.Contains(*addr)) {
    return Fail(Error::InvalidArgument(where + " is not in cidr " + fam->cidr.ToString()));
  }
  if (HasNetworkAndLast(fam->cidr)) {
    if (*addr == fam->cidr.first()) {
      return Fail(Error::InvalidArgument(where + " is the network address of " + fam->cidr.ToString()));
    }
    if (*addr == fam->cidr.last()) {
      return Fail(Error::InvalidArgument(where + " is the " +
                                         (addr->is_v4() ? "broadcast" : "last") + " address of " +
                                         fam->cidr.ToString()));
    }
  }
  fam->gateway = *addr;
  return Ok();
}

Result<void> ParseGateways(Subnet& s) {
  if (!TrimSpace(s.spec.gateway).empty()) {
    auto items = SplitTrimmed(s.spec.gateway, ',');
    if (items.size() > 2) {
      return Fail(Error::InvalidArgument("gateway " + Quote(s.spec.gateway) +
                                         " has more than two addresses"));
    }
    for (std::string_view item : items) {
      if (auto r = SetGateway(item, s); !r) return r;
    }
  }
  // Defaults: the first host address (Kube-OVN's util.FirstIP), except where the CIDR
  // holds a single address, which a gateway would leave unusable.
  for (SubnetFamily* fam : {FamilyOf(s, Family::kV4), FamilyOf(s, Family::kV6)}) {
    if (fam == nullptr || fam->gateway) continue;
    if (fam->cidr.prefix_len() == FamilyBits(fam->family)) continue;
    fam->gateway = HostRange(fam->cidr).first;
  }
  return Ok();
}

Result<IpRange> ParseExcludeItem(std::string_view item) {
  std::string where = "excludeIps item " + Quote(item);
  size_t dots = item.find("..");
  if (dots == std::string_view::npos) {
    auto a = IpAddr::Parse(item);
    if (!a) return Fail(Error::InvalidArgument(where + ": not an IP address or a..b range"));
    return IpRange{*a, *a};
  }
  auto a = IpAddr::Parse(TrimSpace(item.substr(0, dots)));
  auto b = IpAddr::Parse(TrimSpace(item.substr(dots + 2)));
  if (!a || !b) {
    return Fail(Error::InvalidArgument(where + ": " + (!a ? "range start" : "range end") +
                                       " is not an IP address"));
  }
  if (a->family() != b->family()) {
    return Fail(Error::InvalidArgument(where + ": range ends are of different families"));
  }
  if (*b < *a) return Fail(Error::InvalidArgument(where + ": range end is before its start"));
  return IpRange{*a, *b};
}

// Adds a valid item to its family's excluded set, clipped to the host range, or
// records why it was ignored.
void ApplyExcludeItem(std::string_view item, const IpRange& r, Subnet& s) {
  SubnetFamily* fam = FamilyOf(s, r.first.family());
  if (fam == nullptr) {
    s.warnings.push_back("excludeIps item " + Quote(item) + " ignored: the subnet has no " +
                         std::string(FamilyName(r.first.family())) + " block");
    return;
  }
  IpRange host = HostRange(fam->cidr);
  IpAddr lo = std::max(r.first, host.first), hi = std::min(r.last, host.last);
  if (hi < lo) {
    s.warnings.push_back("excludeIps item " + Quote(item) + " ignored: no address of it is usable in " +
                         fam->cidr.ToString());
    return;
  }
  fam->excluded.Add(lo, hi);
}

Result<void> ParseExcludeIps(Subnet& s) {
  for (const std::string& raw : s.spec.exclude_ips) {
    std::string_view item = TrimSpace(raw);
    auto r = ParseExcludeItem(item);
    if (!r) return Fail(r.error());
    ApplyExcludeItem(item, *r, s);
  }
  return Ok();
}

}  // namespace

std::string_view ProtocolName(Protocol p) {
  switch (p) {
    case Protocol::kIPv4: return "IPv4";
    case Protocol::kIPv6: return "IPv6";
    case Protocol::kDual: return "Dual";
  }
  return "IPv4";
}

IpRange HostRange(const IpNet& cidr) {
  if (!HasNetworkAndLast(cidr)) return {cidr.first(), cidr.last()};
  return {cidr.first().Plus(1), cidr.last().Minus(1)};
}

Result<Subnet> NormalizeSubnet(const SubnetSpec& spec) {
  Subnet s;
  s.name = spec.name;
  s.provider = spec.provider;
  s.spec = spec;
  if (auto r = ParseCidrBlock(spec.cidr_block, s); !r) return Fail(r.error());
  if (auto r = CheckProtocol(spec.protocol, s); !r) return Fail(r.error());
  if (auto r = ParseGateways(s); !r) return Fail(r.error());
  if (auto r = ParseExcludeIps(s); !r) return Fail(r.error());
  for (SubnetFamily* fam : {FamilyOf(s, Family::kV4), FamilyOf(s, Family::kV6)}) {
    if (fam == nullptr) continue;
    // Invariant: the gateway is inside the host range (SetGateway/ParseGateways), so
    // excluded stays within it and usable = host range - excluded.
    if (fam->gateway) fam->excluded.Add(*fam->gateway);
    IpRange host = HostRange(fam->cidr);
    fam->usable = IpRangeList(fam->family);
    fam->usable.Add(host.first, host.last);
    fam->usable = fam->usable.Subtract(fam->excluded);
  }
  return s;
}

Result<void> CheckAssignable(const Subnet& subnet, const IpAddr& address) {
  std::string what = "address " + address.ToString();
  const SubnetFamily* fam = subnet.family(address.family());
  std::string cidrs = fam ? fam->cidr.ToString() : "";
  if (fam == nullptr || !fam->cidr.Contains(address)) {
    return Fail(Error::InvalidArgument(what + " is not in subnet " + subnet.name + " (" +
                                       CidrText(subnet) + ")"));
  }
  if (fam->gateway && *fam->gateway == address) {
    return Fail(Error::InvalidArgument(what + " is the gateway of subnet " + subnet.name + " (" +
                                       cidrs + ")"));
  }
  IpRange host = HostRange(fam->cidr);
  if (address < host.first) {
    return Fail(Error::InvalidArgument(what + " is the network address of subnet " + subnet.name +
                                       " (" + cidrs + ")"));
  }
  if (host.last < address) {
    return Fail(Error::InvalidArgument(what + " is the " +
                                       (address.is_v4() ? "broadcast" : "last (reserved)") +
                                       " address of subnet " + subnet.name + " (" + cidrs + ")"));
  }
  return Ok();
}

std::string CidrText(const Subnet& s) {
  std::string out;
  if (s.v4) out = s.v4->cidr.ToString();
  if (s.v6) {
    if (!out.empty()) out += ',';
    out += s.v6->cidr.ToString();
  }
  return out;
}

}  // namespace sublease
