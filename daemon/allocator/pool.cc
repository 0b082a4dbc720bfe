#include "daemon/allocator/pool.h"

#include <set>

#include "daemon/allocator/text.h"

namespace sublease {
namespace {

std::string Quote(std::string_view s) {
  std::string out;  // built by appending: GCC 12 warns falsely on "lit" + string&& (PR 105329)
  out.reserve(s.size() + 2);
  out.append(1, '"').append(s).append(1, '"');
  return out;
}

// One entry: "a" or "a,b" with a and b of different families.
Result<PoolEntry> ParseEntry(std::string_view text, const std::vector<std::string_view>& items,
                             const Subnet& subnet) {
  PoolEntry entry{std::string(text), std::nullopt, std::nullopt};
  if (items.size() > 2) {
    return Fail(Error::InvalidArgument("ip_pool entry " + Quote(text) +
                                       " has more than two addresses; write v4, v6 or v4,v6"));
  }
  for (std::string_view item : items) {
    if (item.empty()) return Fail(Error::InvalidArgument("ip_pool entry " + Quote(text) + " is empty"));
    auto addr = IpAddr::Parse(item);
    if (!addr) {
      return Fail(Error::InvalidArgument("ip_pool item " + Quote(item) + " is not an IP address"));
    }
    if (auto ok = CheckAssignable(subnet, *addr); !ok) return Fail(ok.error().Wrap("ip_pool"));
    std::optional<IpAddr>& slot = addr->is_v4() ? entry.v4 : entry.v6;
    if (slot) {
      return Fail(Error::InvalidArgument("ip_pool entry " + Quote(text) + " has two " +
                                         std::string(FamilyName(addr->family())) +
                                         " addresses; separate entries with ';'"));
    }
    slot = *addr;
  }
  return entry;
}

// Splits the annotation into entries, each a list of address items.
std::vector<std::pair<std::string_view, std::vector<std::string_view>>> SplitEntries(
    std::string_view text) {
  std::vector<std::pair<std::string_view, std::vector<std::string_view>>> out;
  if (text.find(';') != std::string_view::npos) {
    for (std::string_view entry : SplitTrimmed(text, ';')) out.emplace_back(entry, SplitTrimmed(entry, ','));
    return out;
  }
  auto items = SplitTrimmed(text, ',');
  // Kube-OVN: "v4,v6" without ';' is one dual-stack entry.
  if (items.size() == 2) {
    auto a = IpAddr::Parse(items[0]), b = IpAddr::Parse(items[1]);
    if (a && b && a->family() != b->family()) {
      out.emplace_back(text, items);
      return out;
    }
  }
  for (std::string_view item : items) out.emplace_back(item, std::vector<std::string_view>{item});
  return out;
}

std::vector<IpAddr> Needed(const PoolEntry& e, PoolFamilies f) {
  std::vector<IpAddr> out;
  if (f.v4 && e.v4) out.push_back(*e.v4);
  if (f.v6 && e.v6) out.push_back(*e.v6);
  return out;
}

std::string HeldBy(const IpAddr& a, const std::string& holder) {
  return a.ToString() + " is held by " + holder;
}

}  // namespace

std::vector<IpAddr> PoolEntry::addresses() const {
  std::vector<IpAddr> out;
  if (v4) out.push_back(*v4);
  if (v6) out.push_back(*v6);
  return out;
}

Result<std::vector<PoolEntry>> ParsePool(std::string_view annotation, const Subnet& subnet) {
  std::string_view text = TrimSpace(annotation);
  if (text.empty()) return Fail(Error::InvalidArgument("ip_pool is empty"));
  std::vector<PoolEntry> entries;
  std::set<IpAddr> seen;
  for (const auto& [entry_text, items] : SplitEntries(text)) {
    auto entry = ParseEntry(entry_text, items, subnet);
    if (!entry) return Fail(entry.error());
    for (const IpAddr& a : entry->addresses()) {
      if (!seen.insert(a).second) {
        return Fail(Error::InvalidArgument("ip_pool lists " + a.ToString() + " twice"));
      }
    }
    entries.push_back(std::move(*entry));
  }
  return entries;
}

Result<size_t> SelectPoolEntry(const std::vector<PoolEntry>& entries,
                               std::optional<uint32_t> ordinal, PoolFamilies families,
                               const PoolHolderFn& holder) {
  if (ordinal) {
    // StatefulSet: the pod's ordinal names its entry (Kube-OVN's controller, pod.go).
    if (*ordinal >= entries.size()) {
      return Fail(Error::Exhausted("ip_pool has " + std::to_string(entries.size()) +
                                   " entries; StatefulSet pod ordinal " + std::to_string(*ordinal) +
                                   " has none (add entries or scale down)"));
    }
    const PoolEntry& e = entries[*ordinal];
    std::vector<IpAddr> need = Needed(e, families);
    if (need.empty()) {
      return Fail(Error::InvalidArgument("ip_pool entry [" + std::to_string(*ordinal) + "] " +
                                         Quote(e.text) + " has no address of the family requested"));
    }
    for (const IpAddr& a : need) {
      if (auto h = holder(a)) {
        return Fail(Error::Conflict("ip_pool entry [" + std::to_string(*ordinal) + "]: " + HeldBy(a, *h)));
      }
    }
    return static_cast<size_t>(*ordinal);
  }
  std::string taken;
  size_t taken_count = 0;
  bool any_family = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    std::vector<IpAddr> need = Needed(entries[i], families);
    if (need.empty()) continue;
    any_family = true;
    std::optional<std::string> held;
    IpAddr held_addr;
    for (const IpAddr& a : need) {
      if ((held = holder(a))) {
        held_addr = a;
        break;
      }
    }
    if (!held) return i;
    // Name a few holders: enough to act on, bounded for a long pool.
    if (++taken_count <= 3) {
      if (!taken.empty()) taken += "; ";
      taken += HeldBy(held_addr, *held);
    }
  }
  if (!any_family) {
    return Fail(Error::InvalidArgument("ip_pool has no address of the family requested"));
  }
  return Fail(Error::Exhausted("every ip_pool entry is taken (" + taken +
                               (taken_count > 3 ? "; ..." : "") + ")"));
}

}  // namespace sublease
