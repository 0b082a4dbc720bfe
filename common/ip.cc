#include "common/ip.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace sublease {

std::string_view FamilyName(Family f) { return f == Family::kV4 ? "IPv4" : "IPv6"; }

U128 FamilyMax(Family f) {
  return f == Family::kV4 ? U128{0xffffffffu} : ~U128{0};
}

Result<IpAddr> IpAddr::Parse(std::string_view text) {
  // inet_pton needs a NUL-terminated string; addresses are short. A NUL inside the
  // text would end inet_pton's input early and accept "10.0.0.1\0junk".
  if (text.empty() || text.size() > 45 || text.find('\0') != std::string_view::npos) {
    return Fail(Error::InvalidArgument("'" + std::string(text) + "' is not an IP address"));
  }
  char buf[46];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  uint8_t bytes[16];
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, bytes) == 1) return FromBytes(bytes, 4);
  } else if (inet_pton(AF_INET6, buf, bytes) == 1) {
    return FromBytes(bytes, 16);
  }
  return Fail(Error::InvalidArgument("'" + std::string(text) + "' is not an IP address"));
}

Result<IpAddr> IpAddr::FromBytes(const uint8_t* data, size_t size) {
  if (size != 4 && size != 16) {
    return Fail(Error::Internal("an address has 4 or 16 bytes, not " + std::to_string(size)));
  }
  U128 v = 0;
  for (size_t i = 0; i < size; ++i) v = (v << 8) | data[i];
  return IpAddr(size == 4 ? Family::kV4 : Family::kV6, v);
}

std::array<uint8_t, 16> IpAddr::Bytes() const {
  std::array<uint8_t, 16> out{};
  size_t n = ByteSize();
  U128 v = value_;
  for (size_t i = 0; i < n; ++i) {
    out[n - 1 - i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return out;
}

std::string IpAddr::ToString() const {
  auto b = Bytes();
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(is_v4() ? AF_INET : AF_INET6, b.data(), buf, sizeof buf);
  return buf;
}

namespace {
U128 HostMask(Family f, int prefix_len) {
  int host_bits = FamilyBits(f) - prefix_len;
  if (host_bits <= 0) return 0;
  if (host_bits >= 128) return ~U128{0};
  return (U128{1} << host_bits) - 1;
}
}  // namespace

IpNet::IpNet(IpAddr base, int prefix_len)
    : first_(base.family(), base.value() & ~HostMask(base.family(), prefix_len) &
                                FamilyMax(base.family())),
      prefix_len_(prefix_len) {}

Result<IpNet> IpNet::Parse(std::string_view text) {
  auto slash = text.find('/');
  auto bad = [&](std::string why) {
    return Fail(Error::InvalidArgument("'" + std::string(text) + "' is not a CIDR (" + why +
                                       "); write it as 10.16.0.0/16 or fd00::/64"));
  };
  if (slash == std::string_view::npos) return bad("no /prefix");
  auto addr = IpAddr::Parse(text.substr(0, slash));
  if (!addr) return bad("bad address");
  auto len_text = text.substr(slash + 1);
  int len = -1;
  auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (ec != std::errc() || ptr != len_text.data() + len_text.size() || len_text.empty()) {
    return bad("bad prefix length");
  }
  if (len < 0 || len > FamilyBits(addr->family())) return bad("prefix length out of range");
  return IpNet(*addr, len);
}

IpAddr IpNet::last() const {
  return {family(), first_.value() | HostMask(family(), prefix_len_)};
}

bool IpNet::Contains(const IpAddr& a) const {
  return a.family() == family() && a.value() >= first_.value() && a.value() <= last().value();
}

U128 IpNet::SizeMinusOne() const { return HostMask(family(), prefix_len_); }

std::string IpNet::ToString() const { return first_.ToString() + "/" + std::to_string(prefix_len_); }

std::string U128ToString(U128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

}  // namespace sublease
