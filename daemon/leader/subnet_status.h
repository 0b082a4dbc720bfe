// SubnetStatus: what the leader writes into a kubeovn.io/v1 Subnet's status, as pure
// functions over values (no I/O): validation verdicts, usage numbers and ranges, the
// conditions, the merge-patch body, and the comparison that avoids no-op writes.
//
// Kube-OVN facts followed (its controller's calcSubnetStatusIP and SubnetStatus):
// - v4usingIPs / v6usingIPs: addresses allocated in the family; v4usingIPrange the same
//   set as "a-b,c" (IpRangeList::ToString).
// - v4availableIPs: usable addresses (host range minus excludeIps minus gateway) not
//   allocated; an allocated address inside excludeIps (a static reservation) counts as
//   using but is not subtracted twice. v4availableIPrange: that free set as ranges.
// - conditions: {type, status "True"/"False", reason, message, lastUpdateTime,
//   lastTransitionTime}; we write `Validated` and `Ready`. lastTransitionTime changes
//   only when status flips.
// Counts above 2^64-1 (IPv6 prefixes shorter than /64) are written as JSON doubles.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "common/subnet_spec.h"
#include "daemon/allocator/subnet.h"

namespace sublease {

// Whether a Subnet may allocate, and why not. Reasons: "InvalidCIDR",
// "InvalidProtocol", "InvalidGateway", "InvalidExcludeIps", "InvalidSpec",
// "CIDROverlap", "DuplicateProvider"; "" when valid.
struct SubnetVerdict {
  bool valid = true;
  std::string reason;
  std::string message;  // for a person: what is wrong and what to do
  std::vector<std::string> warnings;  // valid but ignored items
};

// Checks `spec` alone (NormalizeSubnet) and against the other Subnets of the same
// provider: a provider served by two Subnets is ambiguous (each node uses the one it
// saw first), and overlapping CIDRs make it worse; both Subnets get the verdict, each
// naming the other. Subnets without a provider (or "ovn") are never in conflict.
SubnetVerdict ValidateSubnet(const SubnetSpec& spec, const std::vector<SubnetSpec>& others);

struct FamilyUsage {
  U128 using_ips = 0;
  U128 available_ips = 0;
  std::string using_range;
  std::string available_range;
  friend bool operator==(const FamilyUsage&, const FamilyUsage&) = default;
};

struct SubnetCondition {
  std::string type;
  std::string status;  // "True" / "False"
  std::string reason;
  std::string message;
  std::string last_update_time;      // not compared
  std::string last_transition_time;  // not compared
};

struct SubnetStatusValue {
  FamilyUsage v4;
  FamilyUsage v6;
  std::vector<SubnetCondition> conditions;  // Validated, Ready (in that order)
};

// Usage of one family: `allocated` holds the allocated addresses' values (any family;
// only those of `fam`'s family inside its CIDR count).
FamilyUsage ComputeFamilyUsage(const SubnetFamily& fam, const std::vector<IpAddr>& allocated);
// Usage of an invalid Subnet: what is allocated (from its blocks), nothing available.
FamilyUsage AllocatedOnly(Family family, const std::vector<IpAddr>& allocated);

// The full desired status. `previous` (the object's current conditions) keeps
// lastTransitionTime when a condition's status did not change; `now` is metav1.Time.
SubnetStatusValue DesiredStatus(const SubnetVerdict& verdict, const std::optional<Subnet>& subnet,
                                const std::vector<IpAddr>& allocated,
                                const std::vector<SubnetCondition>& previous,
                                const std::string& now);

// The status keys of a Subnet ("v4availableIPs", "v4availableIPrange") or of an IPPool
// ("v4AvailableIPs", "v4AvailableIPRange"); the same values otherwise.
enum class StatusKeys { kSubnet, kIpPool };

// Reads status.{v4,v6}{available,using}{IPs,IPrange} and status.conditions from a
// Subnet object (or an IPPool's); absent fields read as 0/"". kInvalidArgument for
// malformed JSON.
Result<SubnetStatusValue> ParseSubnetStatus(std::string_view subnet_json,
                                            StatusKeys keys = StatusKeys::kSubnet);
// True when a write would change nothing a reader sees (times are ignored).
bool SameStatus(const SubnetStatusValue& a, const SubnetStatusValue& b);
// {"status":{...}} for a merge patch on the /status subresource.
std::string EncodeStatusPatch(const SubnetStatusValue& status,
                              StatusKeys keys = StatusKeys::kSubnet);

// A condition `type` with status True/False; lastTransitionTime is kept from `previous`
// when its status did not change.
SubnetCondition Condition(std::string type, bool ok, std::string reason, std::string message,
                          const std::vector<SubnetCondition>& previous, const std::string& now);

}  // namespace sublease
