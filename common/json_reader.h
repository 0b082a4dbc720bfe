// JsonValue and ParseJson: a small, strict JSON reader (RFC 8259) for the messages the
// plugin and the daemon exchange and for the CNI network config.
//
// Why not simdjson here: the plugin is exec'd once per CNI call and must start fast,
// which means a static binary; Debian ships simdjson only as a shared library. These
// documents are a few hundred bytes, so a plain recursive-descent parser into a tree
// is as fast as anything. The parser rejects what RFC 8259 rejects: trailing commas,
// comments, single quotes, control characters and invalid UTF-8 in strings, lone
// surrogates in \u escapes, leading zeros, NaN/Infinity, and anything after the value.
// Nesting is limited to kMaxJsonDepth. Pure values; no I/O; any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sublease {

inline constexpr int kMaxJsonDepth = 256;

enum class JsonType { kNull, kBool, kNumber, kString, kArray, kObject };

// "an array", "an object", "a number", "a string", "a boolean", "null" — for messages
// like `field "ips" must be an array, not a string` (the words json_types.h uses).
std::string_view JsonTypeName(JsonType t);

// Length of the well-formed UTF-8 sequence that starts `s` (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF): 1 for ASCII, 0 if there is none.
size_t Utf8SequenceLength(std::string_view s);

class JsonValue {
 public:
  JsonType type() const { return type_; }
  bool is_null() const { return type_ == JsonType::kNull; }

  // Each returns false (and leaves *out alone) when the value has another type.
  bool Get(bool* out) const;
  bool Get(double* out) const;  // every JSON number; integers beyond 2^53 round
  bool Get(std::string_view* out) const;

  // Array elements, or an object's values (in document order); empty for scalars.
  const std::vector<JsonValue>& items() const { return items_; }
  // An object's keys, parallel to items(); empty otherwise.
  const std::vector<std::string>& keys() const { return keys_; }

  // The member `key` of an object; nullptr when absent, null, or when this is not an
  // object (absent and null both mean "not given": Go encoders write nil as null).
  // With duplicate keys, the first wins.
  const JsonValue* Find(std::string_view key) const;

 private:
  friend class JsonParser;
  JsonType type_ = JsonType::kNull;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<JsonValue> items_;
  std::vector<std::string> keys_;
};

// Parses one JSON text. kInvalidArgument with what was wrong and the byte offset,
// e.g. "expected ',' or '}' at byte 14".
Result<JsonValue> ParseJson(std::string_view text);

}  // namespace sublease
