// libFuzzer harness: ParseJson on arbitrary bytes, then every accessor over the tree.
// Invariants checked: an accepted document's tree is consistent (keys parallel to
// items for objects, none for other types; Get succeeds for exactly its own type).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/json_reader.h"

namespace {

using sublease::JsonType;
using sublease::JsonValue;

void Check(bool ok) {
  if (!ok) std::abort();
}

// Recursion is bounded by kMaxJsonDepth, the deepest tree ParseJson accepts.
void Walk(const JsonValue& v) {
  bool b = false;
  double d = 0;
  std::string_view s;
  Check(v.Get(&b) == (v.type() == JsonType::kBool));
  Check(v.Get(&d) == (v.type() == JsonType::kNumber));
  Check(v.Get(&s) == (v.type() == JsonType::kString));
  Check(v.is_null() == (v.type() == JsonType::kNull));
  Check(!sublease::JsonTypeName(v.type()).empty());
  if (v.type() == JsonType::kObject) {
    Check(v.keys().size() == v.items().size());
    for (size_t i = 0; i < v.keys().size(); ++i) {
      const JsonValue* found = v.Find(v.keys()[i]);
      // The first member with this key wins; null reads as absent.
      Check(found == nullptr || found->type() != JsonType::kNull);
    }
    Check(v.Find("\xff not a key that valid UTF-8 can hold") == nullptr);
  } else {
    Check(v.keys().empty());
    Check(v.Find("") == nullptr);
    if (v.type() != JsonType::kArray) Check(v.items().empty());
  }
  for (const JsonValue& item : v.items()) Walk(item);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = sublease::ParseJson(text);
  if (parsed) {
    Walk(*parsed);
  } else {
    Check(!parsed.error().message.empty());
  }
  return 0;
}
