#include "common/result.h"

namespace sublease {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kNotFound: return "not_found";
    case Code::kConflict: return "conflict";
    case Code::kExhausted: return "exhausted";
    case Code::kUnavailable: return "unavailable";
    case Code::kInternal: return "internal";
  }
  return "internal";
}

Error Error::Wrap(std::string_view context) const {
  std::string m(context);
  m += ": ";
  m += message;
  return {code, std::move(m)};
}

}  // namespace sublease
