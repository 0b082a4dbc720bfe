#include "common/json_reader.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <random>
#include <string>

namespace sublease {
namespace {

std::string StringOf(const JsonValue& v) {
  std::string_view s;
  EXPECT_TRUE(v.Get(&s));
  return std::string(s);
}

TEST(JsonReaderTest, ReadsEveryTypeAndKeepsOrder) {
  auto doc = ParseJson(
      R"( {"s":"x","n":-12.5e1,"t":true,"f":false,"z":null,"a":[1,"two",[]],"o":{"k":{}}} )");
  ASSERT_TRUE(doc) << doc.error().message;
  ASSERT_EQ(doc->type(), JsonType::kObject);
  EXPECT_EQ(doc->keys(), (std::vector<std::string>{"s", "n", "t", "f", "z", "a", "o"}));
  EXPECT_EQ(StringOf(*doc->Find("s")), "x");
  double n = 0;
  ASSERT_TRUE(doc->Find("n")->Get(&n));
  EXPECT_EQ(n, -125);
  bool b = false;
  ASSERT_TRUE(doc->Find("t")->Get(&b));
  EXPECT_TRUE(b);
  ASSERT_TRUE(doc->Find("f")->Get(&b));
  EXPECT_FALSE(b);
  const JsonValue* a = doc->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->type(), JsonType::kArray);
  ASSERT_EQ(a->items().size(), 3u);
  EXPECT_EQ(a->items()[0].type(), JsonType::kNumber);
  EXPECT_EQ(StringOf(a->items()[1]), "two");
  EXPECT_EQ(a->items()[2].type(), JsonType::kArray);
  EXPECT_EQ(doc->Find("o")->Find("k")->type(), JsonType::kObject);
}

TEST(JsonReaderTest, NullAndAbsentBothReadAsNotGiven) {
  auto doc = ParseJson(R"({"z":null})");
  ASSERT_TRUE(doc);
  EXPECT_EQ(doc->Find("z"), nullptr);
  EXPECT_EQ(doc->Find("missing"), nullptr);
  auto arr = ParseJson("[1]");
  ASSERT_TRUE(arr);
  EXPECT_EQ(arr->Find("0"), nullptr);  // not an object
}

TEST(JsonReaderTest, FirstDuplicateKeyWins) {
  auto doc = ParseJson(R"({"k":"first","k":"second"})");
  ASSERT_TRUE(doc);
  EXPECT_EQ(StringOf(*doc->Find("k")), "first");
}

TEST(JsonReaderTest, GetRefusesOtherTypes) {
  auto doc = ParseJson(R"(["1",1,true])");
  ASSERT_TRUE(doc);
  double d = 7;
  bool b = false;
  std::string_view s = "unchanged";
  EXPECT_FALSE(doc->items()[0].Get(&d));
  EXPECT_FALSE(doc->items()[1].Get(&s));
  EXPECT_FALSE(doc->items()[1].Get(&b));
  EXPECT_FALSE(doc->items()[2].Get(&d));
  EXPECT_EQ(d, 7);
  EXPECT_EQ(s, "unchanged");
}

struct StringCase {
  const char* name;
  std::string json;
  std::string want;
};

class JsonStringTest : public testing::TestWithParam<StringCase> {};

TEST_P(JsonStringTest, Decodes) {
  auto doc = ParseJson(GetParam().json);
  ASSERT_TRUE(doc) << doc.error().message;
  EXPECT_EQ(StringOf(*doc), GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JsonStringTest,
    testing::Values(StringCase{"Plain", R"("abc")", "abc"}, StringCase{"Empty", R"("")", ""},
                    StringCase{"Escapes", R"("\"\\\/\b\f\n\r\t")", "\"\\/\b\f\n\r\t"},
                    StringCase{"UnicodeEscape", R"("\u00e9\u20AC")", "\xc3\xa9\xe2\x82\xac"},
                    StringCase{"SurrogatePair", R"("\ud83d\ude00")", "\xf0\x9f\x98\x80"},
                    StringCase{"RawUtf8", "\"\xc3\xa9\xf0\x9f\x98\x80\"",
                               "\xc3\xa9\xf0\x9f\x98\x80"},
                    StringCase{"EscapedNul", R"("a\u0000b")", std::string("a\0b", 3)}),
    [](const testing::TestParamInfo<StringCase>& p) { return p.param.name; });

struct NumberCase {
  const char* name;
  const char* json;
  double want;
};

class JsonNumberTest : public testing::TestWithParam<NumberCase> {};

TEST_P(JsonNumberTest, Decodes) {
  auto doc = ParseJson(GetParam().json);
  ASSERT_TRUE(doc) << doc.error().message;
  double d = -1;
  ASSERT_TRUE(doc->Get(&d));
  EXPECT_DOUBLE_EQ(d, GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(Cases, JsonNumberTest,
                         testing::Values(NumberCase{"Zero", "0", 0}, NumberCase{"Int", "300", 300},
                                         NumberCase{"Negative", "-7", -7},
                                         NumberCase{"Fraction", "0.25", 0.25},
                                         NumberCase{"Exponent", "1E3", 1000},
                                         NumberCase{"NegExponent", "25e-2", 0.25},
                                         NumberCase{"PlusExponent", "2.5e+1", 25}),
                         [](const testing::TestParamInfo<NumberCase>& p) { return p.param.name; });

struct BadCase {
  const char* name;
  std::string json;
  const char* must_mention;
};

class JsonRejectTest : public testing::TestWithParam<BadCase> {};

TEST_P(JsonRejectTest, RejectsWithReasonAndOffset) {
  auto doc = ParseJson(GetParam().json);
  ASSERT_FALSE(doc) << GetParam().json;
  EXPECT_EQ(doc.error().code, Code::kInvalidArgument);
  EXPECT_NE(doc.error().message.find(GetParam().must_mention), std::string::npos)
      << doc.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JsonRejectTest,
    testing::Values(
        BadCase{"Empty", "", "empty document"}, BadCase{"OnlySpace", " \n\t", "empty document"},
        BadCase{"Truncated", R"({"cniVersion":)", "unexpected end, expected a value at byte 14"},
        BadCase{"UnclosedObject", R"({"a":1)", "expected ',' or '}'"},
        BadCase{"UnclosedArray", "[1,2", "expected ',' or ']'"},
        BadCase{"TrailingCommaObject", R"({"a":1,})", "expected a key"},
        BadCase{"TrailingCommaArray", "[1,]", "expected a value"},
        BadCase{"MissingColon", R"({"a" 1})", "expected ':'"},
        BadCase{"SingleQuotes", "{'a':1}", "expected a key in double quotes"},
        BadCase{"UnquotedKey", "{a:1}", "expected a key"},
        BadCase{"Comment", "{} // x", "unexpected data after the value"},
        BadCase{"TwoValues", "1 2", "unexpected data after the value"},
        BadCase{"BadLiteral", "tru", "invalid literal"},
        BadCase{"CapitalLiteral", "True", "expected a value"},
        BadCase{"NaN", "NaN", "expected a value"}, BadCase{"LeadingZero", "01", "leading zero"},
        BadCase{"LonePlus", "+1", "expected a value"}, BadCase{"BareMinus", "-", "invalid number"},
        BadCase{"DotNoDigit", "1.", "no digit after '.'"},
        BadCase{"LeadingDot", ".5", "expected a value"},
        BadCase{"ExpNoDigit", "1e+", "no digit in the exponent"},
        BadCase{"Huge", "1e400", "number out of range"},
        BadCase{"UnterminatedString", R"("abc)", "unterminated string"},
        BadCase{"ControlChar", "\"a\tb\"", "control character"},
        BadCase{"BadEscape", R"("\x41")", "invalid escape"},
        BadCase{"ShortUnicode", R"("\u12")", "invalid \\u escape"},
        BadCase{"LoneHigh", R"("\ud83d")", "lone high surrogate"},
        BadCase{"LoneLow", R"("\ude00")", "lone low surrogate"},
        BadCase{"HighThenNotLow", R"("\ud83d\u0041")", "without a low one"},
        BadCase{"BadUtf8Byte", "\"\xff\"", "invalid UTF-8"},
        BadCase{"Overlong", "\"\xc0\xaf\"", "invalid UTF-8"},
        BadCase{"Utf8Surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8"},
        BadCase{"Utf8TooHigh", "\"\xf4\x90\x80\x80\"", "invalid UTF-8"},
        BadCase{"TruncatedUtf8", "\"\xe2\x82", "invalid UTF-8"},
        BadCase{"NulOutsideString", std::string("{}\0", 3), "unexpected data after the value"},
        BadCase{"TooDeep", std::string(300, '['), "nested too deeply"},
        // Deep input fails at the limit, not 100,000 frames into the stack.
        BadCase{"HundredThousandBrackets", std::string(100000, '[') + std::string(100000, ']'),
                "nested too deeply at byte 256"},
        BadCase{"HundredThousandObjects",
                [] {
                  std::string s;
                  for (int i = 0; i < 100000; ++i) s += R"({"a":)";
                  return s;
                }(),
                "nested too deeply at byte 1280"},
        BadCase{"HugeNegative", "-1e400", "number out of range"},
        BadCase{"Underflow", "1e-400", "number out of range"},
        BadCase{"HugeExponent", "1e999999999999999999999", "number out of range"},
        BadCase{"MillionDigits", std::string(1000000, '9'), "number out of range"}),
    [](const testing::TestParamInfo<BadCase>& p) { return p.param.name; });

TEST(JsonReaderTest, AcceptsNestingUpToTheLimit) {
  std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(ParseJson(ok));
  std::string deep = std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']');
  EXPECT_FALSE(ParseJson(deep));
}

TEST(JsonReaderTest, LongStringsAndLongNumbersWithinRangeDecode) {
  auto s = ParseJson("\"" + std::string(1 << 20, 'x') + "\"");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(StringOf(*s).size(), 1u << 20);
  double d = 0;
  auto digits = ParseJson("0." + std::string(100000, '5'));
  ASSERT_TRUE(digits && digits->Get(&d));
  EXPECT_DOUBLE_EQ(d, 0.5555555555555556);
  auto zero = ParseJson("0e99999999999999999999");
  ASSERT_TRUE(zero && zero->Get(&d));
  EXPECT_EQ(d, 0);
}

// Regression: every object reserved room for 8 members, so "[{},{},...]" cost ~1 KiB
// of memory per 3 bytes of input (a 4 MiB CNI config of empty objects took 1.5 GiB).
// Only the root object reserves now.
TEST(JsonReaderTest, NestedObjectsReserveNoMemberSlots) {
  auto doc = ParseJson(R"({"a":{},"b":[{},{"k":1}]})");
  ASSERT_TRUE(doc) << doc.error().message;
  const JsonValue* a = doc->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->items().capacity(), 0u);
  EXPECT_EQ(a->keys().capacity(), 0u);
  const JsonValue* b = doc->Find("b");
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->items().size(), 2u);
  EXPECT_EQ(b->items()[0].items().capacity(), 0u);
  EXPECT_LE(b->items()[1].items().capacity(), 1u);
}

// Differential check against simdjson (what these documents were parsed with before,
// and what the daemon still uses for API objects): seeded random edits of realistic
// documents must be accepted or rejected by both alike. Bounded: 20,000 inputs.
TEST(JsonReaderTest, AgreesWithSimdjsonOnMutatedDocuments) {
  const std::vector<std::string> seeds = {
      R"({"cniVersion":"1.0.0","name":"x","ipam":{"type":"sublease","server_socket":"/run/s)"
      R"(.sock","provider":"a.b","routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"timeout_s)"
      R"(econds":2.5},"runtimeConfig":{"ips":["10.0.0.5/24"],"mac":"aa:bb"},"x":[true,false,)"
      R"(null,-0.5e-3,"\u00e9\ud83d\ude00\n"]})",
      R"([1,2,3,{"a":"b\"c\\d"}])", "\"caf\\u00e9 \xc3\xa9 \xe2\x82\xac\"",
      "[-0, 0.0e+1, 123456789]"};
  const std::string alphabet =
      "{}[]\",:\\/u0123456789abcdefEe+-.tnrl \t\n\x01\x7f\xc3\xa9\xed\xa0\xff";
  std::mt19937 rng(42);
  simdjson::dom::parser parser;
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    for (int edits = 1 + static_cast<int>(rng() % 4); edits > 0; --edits) {
      size_t pos = s.empty() ? 0 : rng() % s.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          if (!s.empty()) s.erase(pos, 1 + rng() % 3);
          break;
        case 1:
          s.insert(pos, 1, c);
          break;
        default:
          if (!s.empty()) s[pos] = c;
      }
    }
    bool ours = static_cast<bool>(ParseJson(s));
    simdjson::padded_string padded(s);
    simdjson::dom::element root;
    bool theirs = parser.parse(padded).get(root) == simdjson::SUCCESS;
    ASSERT_EQ(ours, theirs) << "input " << i << ": " << s;
    accepted += ours;
  }
  EXPECT_GT(accepted, 1000);  // the edits leave enough valid documents to compare
}

}  // namespace
}  // namespace sublease
