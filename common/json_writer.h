// JsonWriter: a small streaming JSON writer (simdjson only parses).
//
// Writes compact JSON into a std::string with correct string escaping (RFC 8259:
// quotes, backslash, control characters as \u00XX; UTF-8 passed through). Commas are
// inserted automatically. Misuse (a value where a key is needed) is a programming
// error checked by assert in debug builds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sublease {

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view k);
  JsonWriter& String(std::string_view v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Double(double v);
  JsonWriter& Bool(bool v);
  JsonWriter& Null();
  // Inserts already-encoded JSON as one value (e.g. a prevResult passed through).
  JsonWriter& Raw(std::string_view json);

  // Shorthands for "key": value.
  JsonWriter& Field(std::string_view k, std::string_view v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, const char* v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, int64_t v) { return Key(k).Int(v); }
  JsonWriter& Field(std::string_view k, bool v) { return Key(k).Bool(v); }

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void BeforeValue();
  std::string out_;
  std::vector<bool> first_;      // per open container: no element written yet
  std::vector<bool> in_object_;  // per open container: object (true) or array
  bool after_key_ = false;
};

// Appends s as a quoted, escaped JSON string.
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace sublease
