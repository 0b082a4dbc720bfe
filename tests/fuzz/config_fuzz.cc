// libFuzzer harness: the CNI network config the plugin reads from stdin (ParseNetConf).
// Invariants checked: an accepted config has what ParseNetConf promises (a supported
// version, an absolute socket path that fits sun_path, a provider, a sane timeout).
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cni/config.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sublease::cni;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string version;
  auto conf = ParseNetConf(text, &version);
  if (!conf) {
    Check(!conf.error().msg.empty());
    return 0;
  }
  Check(version == conf->cni_version);
  Check(!conf->server_socket.empty() && conf->server_socket[0] == '/');
  Check(conf->server_socket.size() < sizeof(sockaddr_un{}.sun_path));
  Check(!conf->provider.empty());
  Check(conf->timeout_seconds > 0 && conf->timeout_seconds <= kMaxTimeoutSeconds);
  // An accepted address is all address: inet_pton must not have stopped at a NUL.
  for (const auto* ips : {&conf->runtime_ips, &conf->args_ips}) {
    for (const auto& ip : *ips) {
      Check(ValidateStaticAddress(ip).has_value());
      Check(ip.find('\0') == std::string::npos);
    }
  }
  for (const auto& route : conf->routes) {
    Check(route.dst.find('\0') == std::string::npos && route.gw.find('\0') == std::string::npos);
  }
  return 0;
}
