// Small text helpers for the allocator's parsers (annotations, Subnet fields).
// Header-only; pure.
#pragma once

#include <string_view>
#include <vector>

namespace sublease {

// Strips ASCII spaces and tabs (YAML and annotations often carry them around items).
inline std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits on `sep` and trims each piece. "" gives one empty piece; "a," gives "a", "".
inline std::vector<std::string_view> SplitTrimmed(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t end = s.find(sep, start);
    out.push_back(TrimSpace(s.substr(start, end == std::string_view::npos ? end : end - start)));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

}  // namespace sublease
