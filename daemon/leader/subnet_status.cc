#include "daemon/leader/subnet_status.h"

#include <simdjson.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/json_writer.h"

namespace sublease {

namespace {

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// NormalizeSubnet's messages start with the field they are about.
std::string ReasonFor(const std::string& message) {
  if (StartsWith(message, "cidrBlock")) return "InvalidCIDR";
  if (StartsWith(message, "protocol")) return "InvalidProtocol";
  if (StartsWith(message, "gateway")) return "InvalidGateway";
  if (StartsWith(message, "excludeIps")) return "InvalidExcludeIps";
  return "InvalidSpec";
}

bool NetsOverlap(const IpNet& a, const IpNet& b) {
  return a.family() == b.family() && (a.Contains(b.first()) || b.Contains(a.first()));
}

std::optional<std::pair<IpNet, IpNet>> Overlap(const Subnet& a, const Subnet& b) {
  for (Family f : {Family::kV4, Family::kV6}) {
    const SubnetFamily* fa = a.family(f);
    const SubnetFamily* fb = b.family(f);
    if (fa && fb && NetsOverlap(fa->cidr, fb->cidr)) return std::make_pair(fa->cidr, fb->cidr);
  }
  return std::nullopt;
}

bool IsAttachmentProvider(const std::string& provider) {
  return !provider.empty() && provider != "ovn";
}

// The value as written: an integer up to 2^64-1, a double above (Kube-OVN wrote float64).
U128 Canonical(U128 v) {
  if (v <= std::numeric_limits<uint64_t>::max()) return v;
  return static_cast<U128>(static_cast<double>(v));
}

void WriteCount(JsonWriter& w, std::string_view key, U128 v) {
  w.Key(key);
  if (v <= std::numeric_limits<uint64_t>::max()) {
    w.Uint(static_cast<uint64_t>(v));
  } else {
    w.Double(static_cast<double>(v));
  }
}

}  // namespace

SubnetCondition Condition(std::string type, bool ok, std::string reason, std::string message,
                          const std::vector<SubnetCondition>& previous, const std::string& now) {
  SubnetCondition c{std::move(type), ok ? "True" : "False", std::move(reason), std::move(message),
                    now, now};
  for (const auto& p : previous) {
    if (p.type == c.type && p.status == c.status && !p.last_transition_time.empty()) {
      c.last_transition_time = p.last_transition_time;
    }
  }
  return c;
}

SubnetVerdict ValidateSubnet(const SubnetSpec& spec, const std::vector<SubnetSpec>& others) {
  SubnetVerdict v;
  auto subnet = NormalizeSubnet(spec);
  if (!subnet) {
    v.valid = false;
    v.reason = ReasonFor(subnet.error().message);
    v.message = "Subnet " + spec.name + ": " + subnet.error().message +
                ". It allocates nothing until this is fixed; existing addresses are kept.";
    return v;
  }
  v.warnings = subnet->warnings;
  if (!IsAttachmentProvider(spec.provider)) return v;
  std::vector<SubnetSpec> sorted = others;
  std::sort(sorted.begin(), sorted.end(),
            [](const SubnetSpec& a, const SubnetSpec& b) { return a.name < b.name; });
  for (const SubnetSpec& other_spec : sorted) {
    if (other_spec.name == spec.name || other_spec.provider != spec.provider) continue;
    auto other = NormalizeSubnet(other_spec);
    if (!other) continue;  // an invalid Subnet serves nothing, so it takes nothing away
    v.valid = false;
    if (auto o = Overlap(*subnet, *other)) {
      v.reason = "CIDROverlap";
      v.message = "cidrBlock " + o->first.ToString() + " overlaps " + o->second.ToString() +
                  " of Subnet " + other_spec.name + ", which has the same provider " +
                  spec.provider + "; give each provider one Subnet (change the provider or " +
                  "the CIDR of one of them)";
    } else {
      v.reason = "DuplicateProvider";
      v.message = "Subnet " + other_spec.name + " has the same provider " + spec.provider +
                  "; a provider is served by one Subnet (each node uses the one it saw " +
                  "first), so change the provider of one of them";
    }
    return v;
  }
  return v;
}

FamilyUsage ComputeFamilyUsage(const SubnetFamily& fam, const std::vector<IpAddr>& allocated) {
  IpRangeList used(fam.family);
  for (const IpAddr& a : allocated) {
    if (a.family() == fam.family && fam.cidr.Contains(a)) used.Add(a);
  }
  IpRangeList available = fam.usable.Subtract(used);
  return FamilyUsage{used.Count(), available.Count(), used.ToString(), available.ToString()};
}

FamilyUsage AllocatedOnly(Family family, const std::vector<IpAddr>& allocated) {
  IpRangeList used(family);
  for (const IpAddr& a : allocated) {
    if (a.family() == family) used.Add(a);
  }
  return FamilyUsage{used.Count(), 0, used.ToString(), ""};
}

SubnetStatusValue DesiredStatus(const SubnetVerdict& verdict, const std::optional<Subnet>& subnet,
                                const std::vector<IpAddr>& allocated,
                                const std::vector<SubnetCondition>& previous,
                                const std::string& now) {
  SubnetStatusValue s;
  if (verdict.valid && subnet) {
    if (subnet->v4) s.v4 = ComputeFamilyUsage(*subnet->v4, allocated);
    if (subnet->v6) s.v6 = ComputeFamilyUsage(*subnet->v6, allocated);
  } else {
    s.v4 = AllocatedOnly(Family::kV4, allocated);
    s.v6 = AllocatedOnly(Family::kV6, allocated);
  }
  if (verdict.valid) {
    std::string message;
    for (const auto& w : verdict.warnings) message += (message.empty() ? "" : "; ") + w;
    s.conditions.push_back(
        Condition("Validated", true, "ValidationSucceeded", message, previous, now));
    s.conditions.push_back(Condition("Ready", true, "Allocatable", "", previous, now));
  } else {
    s.conditions.push_back(
        Condition("Validated", false, verdict.reason, verdict.message, previous, now));
    s.conditions.push_back(
        Condition("Ready", false, verdict.reason, verdict.message, previous, now));
  }
  return s;
}

namespace {
// "v4availableIPs"/"v4availableIPrange" (Subnet) or "v4AvailableIPs"/"v4AvailableIPRange"
// (IPPool): `what` is "available" or "using".
std::string StatusKey(StatusKeys keys, const char* family, std::string what, bool range) {
  if (keys == StatusKeys::kIpPool) what[0] = static_cast<char>(what[0] - 'a' + 'A');
  return std::string(family) + what +
         (range ? (keys == StatusKeys::kIpPool ? "IPRange" : "IPrange") : "IPs");
}
}  // namespace

Result<SubnetStatusValue> ParseSubnetStatus(std::string_view subnet_json, StatusKeys keys) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(subnet_json.data(), subnet_json.size()).get(doc) != simdjson::SUCCESS) {
    return Fail(Error::InvalidArgument("Subnet: malformed JSON"));
  }
  SubnetStatusValue s;
  simdjson::dom::element status;
  if (doc["status"].get(status) != simdjson::SUCCESS || !status.is_object()) return s;
  auto count = [&](const std::string& key) -> U128 {
    simdjson::dom::element e;
    if (status[key].get(e) != simdjson::SUCCESS) return 0;
    uint64_t u = 0;
    if (e.get(u) == simdjson::SUCCESS) return u;
    double d = 0;
    if (e.get(d) == simdjson::SUCCESS && d > 0) return static_cast<U128>(d);
    return 0;
  };
  auto text = [](simdjson::dom::element obj, const std::string& key) -> std::string {
    std::string_view v;
    return obj[key].get(v) == simdjson::SUCCESS ? std::string(v) : std::string();
  };
  for (auto [family, usage] : {std::pair{"v4", &s.v4}, std::pair{"v6", &s.v6}}) {
    *usage = {count(StatusKey(keys, family, "using", false)),
              count(StatusKey(keys, family, "available", false)),
              text(status, StatusKey(keys, family, "using", true)),
              text(status, StatusKey(keys, family, "available", true))};
  }
  simdjson::dom::array conditions;
  if (status["conditions"].get(conditions) == simdjson::SUCCESS) {
    for (simdjson::dom::element c : conditions) {
      s.conditions.push_back({text(c, "type"), text(c, "status"), text(c, "reason"),
                              text(c, "message"), text(c, "lastUpdateTime"),
                              text(c, "lastTransitionTime")});
    }
  }
  return s;
}

bool SameStatus(const SubnetStatusValue& a, const SubnetStatusValue& b) {
  auto same_usage = [](const FamilyUsage& x, const FamilyUsage& y) {
    return Canonical(x.using_ips) == Canonical(y.using_ips) &&
           Canonical(x.available_ips) == Canonical(y.available_ips) &&
           x.using_range == y.using_range && x.available_range == y.available_range;
  };
  if (!same_usage(a.v4, b.v4) || !same_usage(a.v6, b.v6)) return false;
  if (a.conditions.size() != b.conditions.size()) return false;
  for (size_t i = 0; i < a.conditions.size(); ++i) {
    const auto& x = a.conditions[i];
    const auto& y = b.conditions[i];
    if (x.type != y.type || x.status != y.status || x.reason != y.reason || x.message != y.message) {
      return false;
    }
  }
  return true;
}

std::string EncodeStatusPatch(const SubnetStatusValue& s, StatusKeys keys) {
  JsonWriter w;
  w.BeginObject().Key("status").BeginObject();
  for (auto [family, usage] : {std::pair{"v4", &s.v4}, std::pair{"v6", &s.v6}}) {
    WriteCount(w, StatusKey(keys, family, "available", false), usage->available_ips);
    WriteCount(w, StatusKey(keys, family, "using", false), usage->using_ips);
    w.Field(StatusKey(keys, family, "available", true), usage->available_range);
    w.Field(StatusKey(keys, family, "using", true), usage->using_range);
  }
  w.Key("conditions").BeginArray();
  for (const auto& c : s.conditions) {
    w.BeginObject()
        .Field("type", c.type)
        .Field("status", c.status)
        .Field("reason", c.reason)
        .Field("message", c.message)
        .Field("lastUpdateTime", c.last_update_time)
        .Field("lastTransitionTime", c.last_transition_time)
        .EndObject();
  }
  w.EndArray().EndObject().EndObject();
  return w.Take();
}

}  // namespace sublease
