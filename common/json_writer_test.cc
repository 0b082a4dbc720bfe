#include "common/json_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace sublease {
namespace {

struct EscapeCase {
  std::string name;
  std::string input;
  std::string want;
};

class JsonStringEscapeTest : public testing::TestWithParam<EscapeCase> {};

TEST_P(JsonStringEscapeTest, EscapesPerRfc8259) {
  std::string out;
  AppendJsonString(out, GetParam().input);
  EXPECT_EQ(out, GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JsonStringEscapeTest,
    testing::Values(EscapeCase{"Empty", "", R"("")"},
                    EscapeCase{"Plain", "macvlan.default", R"("macvlan.default")"},
                    EscapeCase{"Quote", "a\"b", R"("a\"b")"},
                    EscapeCase{"Backslash", "a\\b", R"("a\\b")"},
                    EscapeCase{"ShortForms", "\b\f\n\r\t", R"("\b\f\n\r\t")"},
                    EscapeCase{"NulByte", std::string("a\0b", 3), R"("a\u0000b")"},
                    EscapeCase{"OtherControls", "\x01\x1f", R"("\u0001\u001f")"},
                    EscapeCase{"DelIsLiteral", "\x7f", "\"\x7f\""},
                    EscapeCase{"SlashIsLiteral", "/run/x.sock", R"("/run/x.sock")"},
                    EscapeCase{"Utf8PassesThrough", "caf\xc3\xa9 \xe2\x82\xac",
                               "\"caf\xc3\xa9 \xe2\x82\xac\""}),
    [](const testing::TestParamInfo<EscapeCase>& p) { return p.param.name; });

TEST(JsonWriterTest, InsertsCommasBetweenMembersAndElements) {
  JsonWriter w;
  w.BeginObject()
      .Field("a", int64_t{1})
      .Key("list")
      .BeginArray()
      .Int(1)
      .String("two")
      .Bool(false)
      .Null()
      .BeginObject()
      .EndObject()
      .BeginArray()
      .EndArray()
      .EndArray()
      .Field("ok", true)
      .EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"list":[1,"two",false,null,{},[]],"ok":true})");
}

TEST(JsonWriterTest, EmptyContainers) {
  EXPECT_EQ(JsonWriter().BeginObject().EndObject().str(), "{}");
  EXPECT_EQ(JsonWriter().BeginArray().EndArray().str(), "[]");
}

TEST(JsonWriterTest, EscapesKeysAndValues) {
  JsonWriter w;
  w.BeginObject().Field("k\"ey", "v\nal").EndObject();
  EXPECT_EQ(w.str(), R"({"k\"ey":"v\nal"})");
}

TEST(JsonWriterTest, RawIsInsertedAsOneValue) {
  JsonWriter w;
  w.BeginObject().Key("prevResult").Raw(R"({"ips":[]})").Field("x", "y").EndObject();
  EXPECT_EQ(w.str(), R"({"prevResult":{"ips":[]},"x":"y"})");
  JsonWriter a;
  a.BeginArray().Raw("1").Raw("[2]").EndArray();
  EXPECT_EQ(a.str(), "[1,[2]]");
}

TEST(JsonWriterTest, IntegerExtremes) {
  JsonWriter w;
  w.BeginArray()
      .Int(std::numeric_limits<int64_t>::min())
      .Int(0)
      .Uint(std::numeric_limits<uint64_t>::max())
      .EndArray();
  EXPECT_EQ(w.str(), "[-9223372036854775808,0,18446744073709551615]");
}

TEST(JsonWriterTest, DoublesRoundTripAndNonFiniteBecomesNull) {
  JsonWriter w;
  w.BeginArray()
      .Double(0.5)
      .Double(-2.0)
      .Double(0.1)
      .Double(std::nan(""))
      .Double(std::numeric_limits<double>::infinity())
      .EndArray();
  EXPECT_EQ(w.str(), "[0.5,-2,0.1,null,null]");
}

TEST(JsonWriterTest, TopLevelScalar) { EXPECT_EQ(JsonWriter().String("x").str(), R"("x")"); }

TEST(JsonWriterTest, TakeMovesTheText) {
  JsonWriter w;
  w.BeginObject().Field("a", "b").EndObject();
  EXPECT_EQ(w.Take(), R"({"a":"b"})");
}

#ifndef NDEBUG
TEST(JsonWriterDeathTest, ValueWithoutKeyInObjectAsserts) {
  EXPECT_DEATH(
      {
        JsonWriter w;
        w.BeginObject().String("no key");
      },
      "needs a Key");
}
#endif

}  // namespace
}  // namespace sublease
