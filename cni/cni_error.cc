#include "cni/cni_error.h"

namespace sublease::cni {

CniError CniErrorFromDaemon(const Error& e) {
  switch (e.code) {
    case Code::kInvalidArgument:
      return {CniCode::kInvalidConfig, "the sublease daemon rejected the request", e.message};
    case Code::kNotFound:
      // Typically no Subnet serves ipam.provider: a configuration problem.
      return {CniCode::kInvalidConfig, "the sublease daemon found nothing for this request",
              e.message};
    case Code::kConflict:
      return {CniCode::kConflict, "requested address is already in use", e.message};
    case Code::kExhausted: return {CniCode::kExhausted, "no free address left", e.message};
    case Code::kUnavailable:
      return {CniCode::kTryAgainLater, "sublease daemon unavailable; try again later", e.message};
    case Code::kInternal: break;
  }
  return {CniCode::kDaemonInternal, "sublease daemon internal error", e.message};
}

}  // namespace sublease::cni
