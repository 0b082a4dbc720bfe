#include "cni/unix_http.h"

#include <gtest/gtest.h>

#include <string>

namespace sublease::cni {
namespace {

TEST(ParseHttpResponseTest, StopsAtContentLength) {
  auto got =
      ParseHttpResponse("HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}trailing", false);
  ASSERT_TRUE(got);
  ASSERT_TRUE(*got);
  EXPECT_EQ((*got)->status, 409);
  EXPECT_EQ((*got)->body, "{}");
}

TEST(ParseHttpResponseTest, AsksForMoreUntilTheBodyIsComplete) {
  const std::string full = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
  for (size_t cut : {size_t{5}, size_t{20}, full.size() - 1}) {
    auto got = ParseHttpResponse(full.substr(0, cut), false);
    ASSERT_TRUE(got) << cut;
    EXPECT_FALSE(*got) << cut;
  }
  auto got = ParseHttpResponse(full, false);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->body, "0123456789");
}

TEST(ParseHttpResponseTest, BodyWithoutLengthRunsToEof) {
  auto partial = ParseHttpResponse("HTTP/1.0 200 OK\r\n\r\n{\"ready\"", false);
  ASSERT_TRUE(partial);
  EXPECT_FALSE(*partial);
  auto got = ParseHttpResponse("HTTP/1.0 200 OK\r\n\r\n{\"ready\":true}", true);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->body, "{\"ready\":true}");
}

struct BadCase {
  std::string name;
  std::string raw;
  Code want;
};

class BadResponseTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadResponseTest, IsRejected) {
  auto got = ParseHttpResponse(GetParam().raw, true);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, GetParam().want) << got.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadResponseTest,
    ::testing::Values(
        BadCase{"NotHttp", "SSH-2.0-OpenSSH\r\n\r\n", Code::kInternal},
        BadCase{"BadStatus", "HTTP/1.1 abc OK\r\n\r\n", Code::kInternal},
        BadCase{"HeadersCutShort", "HTTP/1.1 200 OK\r\nContent-Le", Code::kInternal},
        BadCase{"BodyCutShort", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
                Code::kUnavailable},
        BadCase{"BadLength", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Code::kInternal},
        BadCase{"Chunked",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                Code::kInternal}),
    [](const ::testing::TestParamInfo<BadCase>& p) { return p.param.name; });

TEST(UnixHttpExchangeTest, RejectsSocketPathsThatCannotBeUnixAddresses) {
  auto got =
      UnixHttpExchange(std::string(200, 'x'), {"GET", "/", ""}, std::chrono::milliseconds(100));
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Code::kInvalidArgument);
}

}  // namespace
}  // namespace sublease::cni
