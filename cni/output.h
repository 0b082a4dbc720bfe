// What the plugin prints on stdout: the abbreviated IPAM result and CNI errors.
//
// CNI spec: an IPAM plugin returns the result without "interfaces" and without
// ips[].interface (the main plugin fills those in), in the config's cniVersion.
// 0.3.x and 0.4.0 results carry "version": "4"|"6" in each ip; 1.x results do not.
// Pure functions; no I/O.
#pragma once

#include <string>
#include <string_view>

#include "cni/cni_error.h"
#include "common/wire.h"

namespace sublease::cni {

// {"cniVersion":..,"ips":[{"address","gateway"}],"routes":[{"dst","gw"}],"dns":{}}.
// Fails with 102 when the daemon's reply cannot be a result (no ips, an address
// that is not "ip/len"). REQUIRES: cni_version is supported.
CniResult<std::string> FormatIpamResult(const CniReply& reply, std::string_view cni_version);

// {"cniVersion","code","msg","details"}; details is left out when empty.
std::string FormatError(const CniError& e, std::string_view cni_version);

}  // namespace sublease::cni
