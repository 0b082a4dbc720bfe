// CniError: what the plugin reports to the container runtime when it fails.
//
// The CNI spec reserves codes 0-99 and gives plugins 100 and up. Each stage of the
// plugin fails in one way the runtime must tell apart (environment → 4, JSON → 6,
// version → 1, config → 7), so stages before the daemon call return CniResult with
// the code fixed at the stage. Calls to the daemon return Result<T>, and
// CniErrorFromDaemon is the one place where sublease Codes become CNI codes.
// docs/cni.md has the table a person reads.
#pragma once

#include <cstdint>
#include <string>
#include <tl/expected.hpp>

#include "common/result.h"

namespace sublease::cni {

enum class CniCode : uint32_t {
  kIncompatibleVersion = 1,  // CNI spec: the config's cniVersion is not supported
  kInvalidEnvironment = 4,   // CNI spec: a CNI_* variable is missing or invalid
  kIoFailure = 5,            // CNI spec: e.g. stdin could not be read
  kDecodeFailure = 6,        // CNI spec: the config is not JSON
  kInvalidConfig = 7,        // CNI spec: the config is JSON but wrong
  kTryAgainLater = 11,       // CNI spec: transient; the runtime retries
  kNotAvailable = 50,        // CNI spec: STATUS, the plugin cannot serve ADD now
  kExhausted = 100,          // no free address in the subnet or pool
  kConflict = 101,           // the requested address is held by someone else
  kDaemonInternal = 102,     // the daemon failed or answered something unusable
  kCheckMismatch = 103,      // CHECK: the daemon's lease differs from prevResult
};

struct CniError {
  CniCode code = CniCode::kDaemonInternal;
  std::string msg;      // short: what went wrong
  std::string details;  // longer: the full cause and what to do about it
};

template <typename T>
using CniResult = tl::expected<T, CniError>;

inline tl::unexpected<CniError> FailCni(CniCode code, std::string msg, std::string details = "") {
  return tl::unexpected<CniError>(CniError{code, std::move(msg), std::move(details)});
}

// Maps an error from the daemon call (transport or the daemon's own answer) to
// the CNI error: invalid_argument, not_found → 7; exhausted → 100; conflict → 101;
// unavailable → 11; internal → 102. details carries the full message.
CniError CniErrorFromDaemon(const Error& e);

}  // namespace sublease::cni
