// The network config the runtime writes to stdin, reduced to what sublease uses.
//
// The plugin receives the whole network config (the main plugin's keys too) and
// reads: cniVersion, name, allowPersistentIPs, ipam.{type, server_socket, provider, routes,
// timeout_seconds}, runtimeConfig.{ips, mac} (Multus capabilities), args.cni.ips,
// prevResult (CHECK) and cni.dev/valid-attachments (GC). Other keys are ignored.
// Failures: 6 when stdin is not JSON, 1 when cniVersion is unsupported or missing,
// 7 naming the field for anything else. docs/cni.md documents every key.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cni/cni_error.h"
#include "common/result.h"
#include "common/wire.h"

namespace sublease::cni {

inline constexpr double kDefaultTimeoutSeconds = 10;
inline constexpr double kMaxTimeoutSeconds = 300;

struct NetConf {
  std::string cni_version;
  std::string name;
  bool allow_persistent_ips = false;  // top-level allowPersistentIPs (IPAMClaims)
  std::string ipam_type;
  std::string server_socket;  // ipam.server_socket (required)
  std::string provider;       // ipam.provider (required)
  // ipam.routes; a route without dst is a default route and keeps dst "".
  std::vector<WireRoute> routes;
  double timeout_seconds = kDefaultTimeoutSeconds;  // ipam.timeout_seconds
  std::vector<std::string> runtime_ips;             // runtimeConfig.ips
  std::string runtime_mac;                          // runtimeConfig.mac
  std::vector<std::string> args_ips;                // args.cni.ips
  bool has_prev_result = false;
  std::vector<std::string> prev_result_ips;  // prevResult.ips[].address
  // cni.dev/valid-attachments (or libcni's alias cni.dev/attachments); nullopt if absent.
  std::optional<std::vector<WireAttachment>> valid_attachments;
};

// Parses and checks the config. *version receives cniVersion as soon as it is known
// to be supported, so that later errors can be reported in that version.
CniResult<NetConf> ParseNetConf(std::string_view json, std::string* version);

// "10.0.0.5", "fd00::5" or the same with "/len": what a static address request may
// look like. kInvalidArgument with the reason otherwise.
Result<void> ValidateStaticAddress(std::string_view text);

}  // namespace sublease::cni
