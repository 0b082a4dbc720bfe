// Small helpers over simdjson's DOM shared by the JSON readers that use simdjson (API
// objects, pod annotations), so their error messages name JSON types the same way as
// common/json_reader.h (the wire format, the CNI config) does. Header-only: users link
// simdjson themselves; common does not.
#pragma once

#include <simdjson.h>

#include <string_view>

namespace sublease {

// "an array", "an object", "a number", "a string", "a boolean", "null" — for messages
// like `field "ips" must be an array, not a string`.
inline std::string_view JsonTypeName(simdjson::dom::element_type t) {
  using simdjson::dom::element_type;
  switch (t) {
    case element_type::ARRAY: return "an array";
    case element_type::OBJECT: return "an object";
    case element_type::INT64:
    case element_type::UINT64:
    case element_type::DOUBLE: return "a number";
    case element_type::STRING: return "a string";
    case element_type::BOOL: return "a boolean";
    case element_type::NULL_VALUE: return "null";
  }
  return "unknown";
}

// The member `key` of `o` in `out`; false when absent or null (Go encoders write nil
// slices and maps as null, so both mean "not given").
inline bool JsonMember(const simdjson::dom::object& o, std::string_view key,
                       simdjson::dom::element& out) {
  return o.at_key(key).get(out) == simdjson::SUCCESS && !out.is_null();
}

}  // namespace sublease
