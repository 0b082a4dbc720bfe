// StringPool: interned strings that many leases repeat (subnet, pod namespace, provider,
// interface name), each stored once and referred to by a 32-bit id.
//
// Reference-counted: Intern() adds a reference, Unref() drops one, and a string whose
// last reference goes is freed and its id reused, so namespaces that come and go do not
// accumulate. Ids are stable while referenced. Single-threaded, like the Allocator.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sublease {

class StringPool {
 public:
  using Id = uint32_t;

  // The id of `text`, interned now if it was not; adds one reference.
  Id Intern(std::string_view text);
  // Drops one reference. REQUIRES: `id` is referenced.
  void Unref(Id id);
  // REQUIRES: `id` is referenced.
  const std::string& Get(Id id) const { return entries_[id].text; }
  // The id of `text` when interned, without adding a reference.
  std::optional<Id> Lookup(std::string_view text) const;
  // Distinct strings currently referenced.
  size_t size() const { return ids_.size(); }

 private:
  struct Entry {
    std::string text;
    uint32_t refs = 0;
  };
  // A deque: entries never move, so the views in ids_ stay valid.
  std::deque<Entry> entries_;
  std::vector<Id> free_;
  std::unordered_map<std::string_view, Id> ids_;  // views into entries_[id].text
};

}  // namespace sublease
