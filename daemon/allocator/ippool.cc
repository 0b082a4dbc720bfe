#include "daemon/allocator/ippool.h"

#include <algorithm>
#include <tuple>

#include "daemon/allocator/text.h"

namespace sublease {
namespace {

std::string Quote(std::string_view s) {
  std::string out;
  out.append(1, '"').append(s).append(1, '"');
  return out;
}

Result<IpRange> ParsePoolItem(std::string_view item) {
  std::string where = "IPPool ips item " + Quote(item);
  if (item.empty()) return Fail(Error::InvalidArgument(where + " is empty"));
  if (size_t dots = item.find(".."); dots != std::string_view::npos) {
    auto a = IpAddr::Parse(TrimSpace(item.substr(0, dots)));
    auto b = IpAddr::Parse(TrimSpace(item.substr(dots + 2)));
    if (!a || !b) {
      return Fail(Error::InvalidArgument(where + ": " + (!a ? "range start" : "range end") +
                                         " is not an IP address; write an IP, a CIDR or a..b"));
    }
    if (a->family() != b->family()) {
      return Fail(Error::InvalidArgument(where + ": range ends are of different families"));
    }
    if (*b < *a) return Fail(Error::InvalidArgument(where + ": range end is before its start"));
    return IpRange{*a, *b};
  }
  if (item.find('/') != std::string_view::npos) {
    auto net = IpNet::Parse(item);
    if (!net) {
      return Fail(Error::InvalidArgument(where + " is not a CIDR: " + net.error().message));
    }
    return IpRange{net->first(), net->last()};
  }
  auto a = IpAddr::Parse(item);
  if (!a) {
    return Fail(Error::InvalidArgument(where + " is not an IP address, a CIDR or a..b range"));
  }
  return IpRange{*a, *a};
}

// The set's part inside `cidr` (a whole family's set when cidr is absent: nothing).
IpRangeList Clip(const IpRangeList& set, const SubnetFamily* fam) {
  if (fam == nullptr) return IpRangeList(set.family());
  return set.Slice(fam->cidr.first(), fam->cidr.last());
}

// "10.0.0.5-10.0.0.7" of the overlap, for the message.
std::string OverlapText(const PoolAddresses& a, const PoolAddresses& b) {
  std::string out;
  for (Family f : {Family::kV4, Family::kV6}) {
    std::string part = a.of(f).Intersect(b.of(f)).ToString();
    if (part.empty()) continue;
    if (!out.empty()) out += ",";
    out += part;
  }
  return out;
}

}  // namespace

Result<PoolAddresses> ParsePoolIps(const std::vector<std::string>& ips) {
  PoolAddresses out;
  for (const std::string& raw : ips) {
    auto r = ParsePoolItem(TrimSpace(raw));
    if (!r) return Fail(r.error());
    out.of(r->first.family()).Add(r->first, r->last);
  }
  return out;
}

bool IsPoolName(std::string_view annotation) {
  std::string_view s = TrimSpace(annotation);
  if (s.empty() || s.find_first_of(",; \t") != std::string_view::npos) return false;
  return !IpAddr::Parse(s).has_value();
}

std::map<std::string, ResolvedPool> ResolvePools(
    const std::vector<IpPoolSpec>& pools, const std::map<std::string, const Subnet*>& subnets) {
  std::vector<const IpPoolSpec*> order;
  for (const IpPoolSpec& p : pools) order.push_back(&p);
  // The earlier pool keeps its addresses: creationTimestamp, then name.
  std::sort(order.begin(), order.end(), [](const IpPoolSpec* a, const IpPoolSpec* b) {
    return std::tie(a->creation_timestamp, a->name) < std::tie(b->creation_timestamp, b->name);
  });
  std::map<std::string, ResolvedPool> out;
  std::map<std::string, std::vector<const ResolvedPool*>> ready_by_subnet;
  for (const IpPoolSpec* spec : order) {
    ResolvedPool& r = out[spec->name];
    r.spec = *spec;
    r.reason = "UpdateIPAMFailed";
    auto subnet_it = subnets.find(spec->subnet);
    if (spec->subnet.empty()) {
      r.message = "IPPool " + spec->name +
                  " has no spec.subnet; set it to the Subnet whose addresses it holds";
      continue;
    }
    if (subnet_it == subnets.end() || subnet_it->second == nullptr) {
      r.message = "IPPool " + spec->name + ": Subnet " + spec->subnet +
                  " does not exist (or is not valid); create it, or recreate the pool with an "
                  "existing spec.subnet";
      continue;
    }
    const Subnet& subnet = *subnet_it->second;
    auto parsed = ParsePoolIps(spec->ips);
    if (!parsed) {
      r.message = "IPPool " + spec->name + ": " + parsed.error().message;
      continue;
    }
    for (Family f : {Family::kV4, Family::kV6}) {
      const SubnetFamily* fam = subnet.family(f);
      r.in_cidr.of(f) = Clip(parsed->of(f), fam);
      r.usable.of(f) = fam ? r.in_cidr.of(f).Intersect(fam->usable) : IpRangeList(f);
    }
    const ResolvedPool* conflict = nullptr;
    for (const ResolvedPool* earlier : ready_by_subnet[spec->subnet]) {
      if (!OverlapText(earlier->in_cidr, r.in_cidr).empty()) {
        conflict = earlier;
        break;
      }
    }
    if (conflict != nullptr) {
      r.message = "IPPool " + spec->name + " has conflict IPs with IPPool " + conflict->spec.name +
                  " (" + OverlapText(conflict->in_cidr, r.in_cidr) + " in Subnet " + spec->subnet +
                  "; " + conflict->spec.name +
                  " is older and keeps them); remove them from one of the pools";
      r.usable = PoolAddresses{};
      continue;
    }
    r.ready = true;
    r.reason = "UpdateIPAMSucceeded";
    ready_by_subnet[spec->subnet].push_back(&r);
  }
  return out;
}

}  // namespace sublease
