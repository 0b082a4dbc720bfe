// IpRangeList: a sorted set of disjoint, non-adjacent address ranges of one family.
//
// The allocator's free sets and a subnet's usable/excluded sets are IpRangeLists
// (Kube-OVN's IPRangeList plays the same part). Ranges are merged on insert and split
// on removal, so every operation costs O(log R) in the number of ranges R, never in
// the number of addresses. Count() is kept up to date, not recomputed.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "common/ip.h"

namespace sublease {

struct IpRange {
  IpAddr first;
  IpAddr last;  // inclusive
  U128 Count() const { return last.value() - first.value() + 1; }  // 0 means 2^128
  std::string ToString() const;  // "a" or "a-b"
  friend bool operator==(const IpRange&, const IpRange&) = default;
};

class IpRangeList {
 public:
  explicit IpRangeList(Family family = Family::kV4) : family_(family) {}

  Family family() const { return family_; }
  bool empty() const { return ranges_.empty(); }
  size_t RangeCount() const { return ranges_.size(); }
  // Number of addresses held (saturates at 2^128-1 for a full IPv6 space).
  // count_ is kept modulo 2^128, so it is exact except for the full space, where it
  // wraps to 0 while ranges_ is non-empty.
  U128 Count() const { return count_ == 0 && !ranges_.empty() ? ~U128{0} : count_; }

  // REQUIRES: first <= last, both of this list's family.
  void Add(const IpAddr& first, const IpAddr& last);
  void Add(const IpAddr& a) { Add(a, a); }
  void Remove(const IpAddr& first, const IpAddr& last);
  void Remove(const IpAddr& a) { Remove(a, a); }
  bool Contains(const IpAddr& a) const;
  // True if any address of [first,last] is in the set.
  bool Overlaps(const IpAddr& first, const IpAddr& last) const;

  std::optional<IpAddr> Lowest() const;
  // The lowest address >= from, if any.
  std::optional<IpAddr> LowestAtOrAbove(const IpAddr& from) const;

  // The part of the set inside [first, last]: O(log R + k) for k ranges in the window.
  IpRangeList Slice(const IpAddr& first, const IpAddr& last) const;
  IpRangeList Intersect(const IpRangeList& other) const;
  IpRangeList Subtract(const IpRangeList& other) const;
  // Calls fn for each range in ascending order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [f, l] : ranges_) fn(IpRange{IpAddr(family_, f), IpAddr(family_, l)});
  }
  // Kube-OVN's status format: "10.0.0.2-10.0.0.9,10.0.0.11" ("" when empty).
  std::string ToString() const;

  friend bool operator==(const IpRangeList& a, const IpRangeList& b) {
    return a.family_ == b.family_ && a.ranges_ == b.ranges_;
  }

 private:
  Family family_;
  std::map<U128, U128> ranges_;  // first -> last, disjoint and non-adjacent
  U128 count_ = 0;
};

}  // namespace sublease
