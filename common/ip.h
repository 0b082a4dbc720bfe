// IP addresses and prefixes as values: parsing, formatting, ordering, arithmetic.
//
// An IpAddr is a family plus a 128-bit unsigned value (IPv4 uses the low 32
// bits), so address arithmetic for both families is integer arithmetic and
// ordering is numeric. Bytes() gives the big-endian form (4 or 16 bytes) that
// the store keeps in BLOB columns, where memcmp order equals numeric order.
// Pure values; safe to copy; no allocation except in ToString.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace sublease {

using U128 = unsigned __int128;

enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

std::string_view FamilyName(Family f);  // "IPv4" / "IPv6"
inline int FamilyBits(Family f) { return f == Family::kV4 ? 32 : 128; }

class IpAddr {
 public:
  IpAddr() = default;
  IpAddr(Family family, U128 value) : family_(family), value_(value) {}

  // Parses dotted-quad IPv4 or RFC 4291 IPv6 text. No zone ids, no prefixes.
  static Result<IpAddr> Parse(std::string_view text);
  // From the big-endian bytes Bytes() produced (4 or 16 of them).
  static Result<IpAddr> FromBytes(const uint8_t* data, size_t size);

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::kV4; }
  U128 value() const { return value_; }

  std::string ToString() const;
  // Big-endian bytes; first ByteSize() of the array are meaningful.
  std::array<uint8_t, 16> Bytes() const;
  size_t ByteSize() const { return is_v4() ? 4 : 16; }

  // Value + n within the family. REQUIRES: no overflow past the family's max.
  IpAddr Plus(U128 n) const { return {family_, value_ + n}; }
  IpAddr Minus(U128 n) const { return {family_, value_ - n}; }

  // Order: IPv4 before IPv6, then numeric.
  friend auto operator<=>(const IpAddr&, const IpAddr&) = default;
  friend bool operator==(const IpAddr&, const IpAddr&) = default;

 private:
  Family family_ = Family::kV4;
  U128 value_ = 0;
};

// The largest value an address of this family can hold.
U128 FamilyMax(Family f);

// A CIDR prefix, always stored canonically (host bits cleared).
class IpNet {
 public:
  IpNet() = default;
  IpNet(IpAddr base, int prefix_len);  // clears host bits

  // "10.0.0.0/24", "fd00::/64". Host bits set ("10.0.0.5/24") is accepted and
  // canonicalised, as Kubernetes and Kube-OVN do.
  static Result<IpNet> Parse(std::string_view text);

  Family family() const { return first_.family(); }
  int prefix_len() const { return prefix_len_; }
  IpAddr first() const { return first_; }  // network address
  IpAddr last() const;                     // broadcast / last address
  bool Contains(const IpAddr& a) const;
  // Number of addresses minus one (fits for /0 IPv6 too).
  U128 SizeMinusOne() const;
  std::string ToString() const;

  friend bool operator==(const IpNet&, const IpNet&) = default;

 private:
  IpAddr first_;
  int prefix_len_ = 0;
};

// Decimal text of a 128-bit value (for counts and logs).
std::string U128ToString(U128 v);

}  // namespace sublease

template <>
struct std::hash<sublease::IpAddr> {
  size_t operator()(const sublease::IpAddr& a) const noexcept {
    auto v = a.value();
    uint64_t lo = static_cast<uint64_t>(v), hi = static_cast<uint64_t>(v >> 64);
    return std::hash<uint64_t>()(lo ^ (hi * 0x9e3779b97f4a7c15ULL) ^ static_cast<uint64_t>(a.family()));
  }
};
