#include "common/json_reader.h"

#include <array>
#include <charconv>
#include <cstdint>
#include <system_error>

namespace sublease {

size_t Utf8SequenceLength(std::string_view s) {
  if (s.empty()) return 0;
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  }
  return n;
}

std::string_view JsonTypeName(JsonType t) {
  switch (t) {
    case JsonType::kArray:
      return "an array";
    case JsonType::kObject:
      return "an object";
    case JsonType::kNumber:
      return "a number";
    case JsonType::kString:
      return "a string";
    case JsonType::kBool:
      return "a boolean";
    case JsonType::kNull:
      return "null";
  }
  return "unknown";
}

bool JsonValue::Get(bool* out) const {
  if (type_ != JsonType::kBool) return false;
  *out = bool_;
  return true;
}

bool JsonValue::Get(double* out) const {
  if (type_ != JsonType::kNumber) return false;
  *out = number_;
  return true;
}

bool JsonValue::Get(std::string_view* out) const {
  if (type_ != JsonType::kString) return false;
  *out = string_;
  return true;
}

const JsonValue* JsonValue::Find(std::string_view key) const {
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i] == key) return items_[i].is_null() ? nullptr : &items_[i];
  }
  return nullptr;
}

// Bytes that end a plain run inside a string: quote, backslash, control characters and
// the start of a UTF-8 sequence (validated separately).
constexpr auto kSpecial = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
  return t;
}();

// Recursive descent over the text; pos_ is the next unread byte. Every Parse* either
// consumes a whole production or sets error_ and returns false.
class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  Result<JsonValue> Run() {
    JsonValue root;
    SkipSpace();
    if (pos_ == text_.size()) return Fail(Error::InvalidArgument("empty document"));
    if (!ParseValue(root, 0)) return Fail(Error::InvalidArgument(error_));
    SkipSpace();
    if (pos_ != text_.size()) {
      Err("unexpected data after the value");
      return Fail(Error::InvalidArgument(error_));
    }
    return root;
  }

 private:
  bool Err(std::string_view what) {
    if (error_.empty()) error_ = std::string(what) + " at byte " + std::to_string(pos_);
    return false;
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }

  void SkipSpace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\n' || Peek() == '\r')) {
      ++pos_;
    }
  }

  bool Expect(char c, std::string_view what) {
    SkipSpace();
    if (AtEnd()) return Err("unexpected end, expected " + std::string(what));
    if (Peek() != c) return Err("expected " + std::string(what));
    ++pos_;
    return true;
  }

  bool ParseValue(JsonValue& v, int depth) {
    SkipSpace();
    if (AtEnd()) return Err("unexpected end, expected a value");
    switch (Peek()) {
      case '{':
        return ParseObject(v, depth + 1);
      case '[':
        return ParseArray(v, depth + 1);
      case '"':
        v.type_ = JsonType::kString;
        return ParseString(v.string_);
      case 't':
        return ParseLiteral("true", v, JsonType::kBool, true);
      case 'f':
        return ParseLiteral("false", v, JsonType::kBool, false);
      case 'n':
        return ParseLiteral("null", v, JsonType::kNull, false);
      default:
        break;
    }
    if (Peek() == '-' || (Peek() >= '0' && Peek() <= '9')) return ParseNumber(v);
    return Err("expected a value");
  }

  bool ParseLiteral(std::string_view word, JsonValue& v, JsonType type, bool b) {
    if (text_.substr(pos_, word.size()) != word) return Err("invalid literal");
    pos_ += word.size();
    v.type_ = type;
    v.bool_ = b;
    return true;
  }

  bool ParseObject(JsonValue& v, int depth) {
    if (depth > kMaxJsonDepth) return Err("nested too deeply");
    ++pos_;  // '{'
    v.type_ = JsonType::kObject;
    // The root object of the documents read here has a handful of members: one
    // allocation each. Only the root: reserving in every object let 3 bytes of input
    // ("{},") cost 1 KiB, so a 4 MiB config of empty objects took 1.5 GiB.
    if (depth == 1) {
      v.keys_.reserve(8);
      v.items_.reserve(8);
    }
    SkipSpace();
    if (!AtEnd() && Peek() == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      SkipSpace();
      if (AtEnd()) return Err("unexpected end, expected a key");
      if (Peek() != '"') return Err("expected a key in double quotes");
      std::string key;
      if (!ParseString(key)) return false;
      if (!Expect(':', "':'")) return false;
      v.keys_.push_back(std::move(key));
      v.items_.emplace_back();
      if (!ParseValue(v.items_.back(), depth)) return false;
      SkipSpace();
      if (AtEnd()) return Err("unexpected end, expected ',' or '}'");
      char c = text_[pos_++];
      if (c == '}') return true;
      if (c != ',') {
        --pos_;
        return Err("expected ',' or '}'");
      }
    }
  }

  bool ParseArray(JsonValue& v, int depth) {
    if (depth > kMaxJsonDepth) return Err("nested too deeply");
    ++pos_;  // '['
    v.type_ = JsonType::kArray;
    SkipSpace();
    if (!AtEnd() && Peek() == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      v.items_.emplace_back();
      if (!ParseValue(v.items_.back(), depth)) return false;
      SkipSpace();
      if (AtEnd()) return Err("unexpected end, expected ',' or ']'");
      char c = text_[pos_++];
      if (c == ']') return true;
      if (c != ',') {
        --pos_;
        return Err("expected ',' or ']'");
      }
    }
  }

  // RFC 8259 section 6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  bool ParseNumber(JsonValue& v) {
    size_t start = pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (!AtEnd() && Peek() >= '0' && Peek() <= '9') ++pos_;
      return pos_ - from;
    };
    if (Peek() == '-') ++pos_;
    if (AtEnd()) return Err("invalid number");
    if (Peek() == '0') {
      ++pos_;
      if (!AtEnd() && Peek() >= '0' && Peek() <= '9') return Err("invalid number (leading zero)");
    } else if (digits() == 0) {
      return Err("invalid number");
    }
    if (!AtEnd() && Peek() == '.') {
      ++pos_;
      if (digits() == 0) return Err("invalid number (no digit after '.')");
    }
    if (!AtEnd() && (Peek() == 'e' || Peek() == 'E')) {
      ++pos_;
      if (!AtEnd() && (Peek() == '+' || Peek() == '-')) ++pos_;
      if (digits() == 0) return Err("invalid number (no digit in the exponent)");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    auto [end, ec] = std::from_chars(first, last, v.number_);
    if (ec != std::errc() || end != last) {
      pos_ = start;
      return Err("number out of range");
    }
    v.type_ = JsonType::kNumber;
    return true;
  }

  int Hex4() {
    if (text_.size() - pos_ < 4) return -1;
    int value = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_ + static_cast<size_t>(i)];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) return -1;
      value = value * 16 + d;
    }
    pos_ += 4;
    return value;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // After "\u" (pos_ at the hex digits): one code point, joining a surrogate pair.
  bool ParseUnicodeEscape(std::string& out) {
    int hi = Hex4();
    if (hi < 0) return Err("invalid \\u escape");
    uint32_t cp = static_cast<uint32_t>(hi);
    if (cp >= 0xDC00 && cp <= 0xDFFF) return Err("lone low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (text_.substr(pos_, 2) != "\\u") return Err("lone high surrogate in \\u escape");
      pos_ += 2;
      int lo = Hex4();
      if (lo < 0) return Err("invalid \\u escape");
      if (lo < 0xDC00 || lo > 0xDFFF) return Err("high surrogate without a low one in \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (static_cast<uint32_t>(lo) - 0xDC00);
    }
    AppendUtf8(out, cp);
    return true;
  }

  // One UTF-8 sequence starting at a byte >= 0x80, copied to out as is.
  bool CopyUtf8(std::string& out) {
    size_t n = Utf8SequenceLength(text_.substr(pos_));
    if (n < 2) return Err("invalid UTF-8 in a string");
    out.append(text_.substr(pos_, n));
    pos_ += n;
    return true;
  }

  bool ParseString(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      // Copy the plain run in one go.
      size_t run = pos_;
      while (pos_ < text_.size() && !kSpecial[static_cast<unsigned char>(text_[pos_])]) ++pos_;
      out.append(text_.data() + run, pos_ - run);
      if (AtEnd()) return Err("unterminated string");
      auto c = static_cast<unsigned char>(Peek());
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return Err("control character in a string");
      if (c >= 0x80) {
        if (!CopyUtf8(out)) return false;
        continue;
      }
      // A backslash.
      ++pos_;
      if (AtEnd()) return Err("unterminated string");
      char e = text_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          if (!ParseUnicodeEscape(out)) return false;
          break;
        default:
          --pos_;
          return Err("invalid escape in a string");
      }
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::string error_;
};

Result<JsonValue> ParseJson(std::string_view text) { return JsonParser(text).Run(); }

}  // namespace sublease
