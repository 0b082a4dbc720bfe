#include "daemon/allocator/ip_range_list.h"

#include <algorithm>
#include <cassert>
#include <iterator>

namespace sublease {

std::string IpRange::ToString() const {
  if (first == last) return first.ToString();
  return first.ToString() + "-" + last.ToString();
}

void IpRangeList::Add(const IpAddr& first_addr, const IpAddr& last_addr) {
  assert(first_addr.family() == family_ && last_addr.family() == family_);
  assert(first_addr <= last_addr);
  U128 first = first_addr.value(), last = last_addr.value();
  // Merge with a range that overlaps or touches on the left.
  auto it = ranges_.upper_bound(first);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= first || prev->second + 1 == first) {
      if (prev->second >= last) return;  // already covered
      first = prev->first;
      count_ -= prev->second - prev->first + 1;
      it = ranges_.erase(prev);
    }
  }
  // Swallow every range that starts inside or right after [first, last].
  while (it != ranges_.end() && (it->first <= last || (last != ~U128{0} && it->first == last + 1))) {
    if (it->second > last) last = it->second;
    count_ -= it->second - it->first + 1;
    it = ranges_.erase(it);
  }
  ranges_.emplace_hint(it, first, last);
  count_ += last - first + 1;
}

void IpRangeList::Remove(const IpAddr& first_addr, const IpAddr& last_addr) {
  assert(first_addr.family() == family_ && last_addr.family() == family_);
  assert(first_addr <= last_addr);
  U128 first = first_addr.value(), last = last_addr.value();
  auto it = ranges_.upper_bound(first);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first <= last) {
    U128 rf = it->first, rl = it->second;
    if (rl < first) {
      ++it;
      continue;
    }
    count_ -= rl - rf + 1;
    it = ranges_.erase(it);
    if (rf < first) {
      ranges_.emplace_hint(it, rf, first - 1);
      count_ += first - rf;
    }
    if (rl > last) {
      it = ranges_.emplace_hint(it, last + 1, rl);
      count_ += rl - last;
      break;
    }
  }
}

bool IpRangeList::Contains(const IpAddr& a) const {
  if (a.family() != family_) return false;
  auto it = ranges_.upper_bound(a.value());
  if (it == ranges_.begin()) return false;
  --it;
  return a.value() <= it->second;
}

bool IpRangeList::Overlaps(const IpAddr& first, const IpAddr& last) const {
  if (first.family() != family_) return false;
  auto it = ranges_.upper_bound(last.value());
  if (it == ranges_.begin()) return false;
  --it;  // the last range starting at or before `last`
  return it->second >= first.value();
}

std::optional<IpAddr> IpRangeList::Lowest() const {
  if (ranges_.empty()) return std::nullopt;
  return IpAddr(family_, ranges_.begin()->first);
}

std::optional<IpAddr> IpRangeList::LowestAtOrAbove(const IpAddr& from) const {
  if (from.family() != family_) return std::nullopt;
  auto it = ranges_.upper_bound(from.value());
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= from.value()) return from;
  }
  if (it == ranges_.end()) return std::nullopt;
  return IpAddr(family_, it->first);
}

IpRangeList IpRangeList::Slice(const IpAddr& first, const IpAddr& last) const {
  IpRangeList out(family_);
  if (first.family() != family_ || last < first) return out;
  auto it = ranges_.upper_bound(first.value());
  if (it != ranges_.begin()) --it;  // the range that may hold `first`
  for (; it != ranges_.end() && it->first <= last.value(); ++it) {
    U128 lo = std::max(it->first, first.value());
    U128 hi = std::min(it->second, last.value());
    if (lo <= hi) out.Add(IpAddr(family_, lo), IpAddr(family_, hi));
  }
  return out;
}

IpRangeList IpRangeList::Intersect(const IpRangeList& other) const {
  IpRangeList out(family_);
  if (other.family_ != family_) return out;
  auto a = ranges_.begin();
  auto b = other.ranges_.begin();
  while (a != ranges_.end() && b != other.ranges_.end()) {
    U128 lo = std::max(a->first, b->first);
    U128 hi = std::min(a->second, b->second);
    if (lo <= hi) out.Add(IpAddr(family_, lo), IpAddr(family_, hi));
    if (a->second < b->second) ++a; else ++b;
  }
  return out;
}

IpRangeList IpRangeList::Subtract(const IpRangeList& other) const {
  IpRangeList out = *this;
  if (other.family_ != family_) return out;
  for (const auto& [f, l] : other.ranges_) out.Remove(IpAddr(family_, f), IpAddr(family_, l));
  return out;
}

std::string IpRangeList::ToString() const {
  std::string s;
  for (const auto& [f, l] : ranges_) {
    if (!s.empty()) s += ',';
    s += IpRange{IpAddr(family_, f), IpAddr(family_, l)}.ToString();
  }
  return s;
}

}  // namespace sublease
