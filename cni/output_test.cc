#include "cni/output.h"

#include <gtest/gtest.h>

#include <string>

#include "cni/cni_error.h"
#include "cni/version.h"

namespace sublease::cni {
namespace {

TEST(FormatIpamResultTest, OldVersionsCarryIpVersionAndOmitEmptyGateways) {
  CniReply reply;
  reply.ips = {{"10.1.0.5/24", "10.1.0.1"}, {"fd00::5/64", ""}};
  reply.routes = {{"0.0.0.0/0", "10.1.0.1"}, {"fd01::/64", ""}};
  reply.mac = "02:00:00:00:00:05";  // not part of an IPAM result
  auto got = FormatIpamResult(reply, "0.4.0");
  ASSERT_TRUE(got) << got.error().details;
  EXPECT_EQ(
      *got,
      R"({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1"},)"
      R"({"version":"6","address":"fd00::5/64"}],)"
      R"("routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"fd01::/64"}],"dns":{}})");
}

TEST(FormatIpamResultTest, NewVersionsHaveNoIpVersionNoInterfaces) {
  CniReply reply;
  reply.ips = {{"10.1.0.5/24", "10.1.0.1"}};
  for (const char* v : {"1.0.0", "1.1.0"}) {
    auto got = FormatIpamResult(reply, v);
    ASSERT_TRUE(got);
    EXPECT_EQ(
        *got,
        std::string(R"({"cniVersion":")") + v +
            R"(","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}],"routes":[],"dns":{}})");
    EXPECT_EQ(got->find("interface"), std::string::npos);
  }
}

struct BadReplyCase {
  std::string name;
  CniReply reply;
};

class UnusableReplyTest : public ::testing::TestWithParam<BadReplyCase> {};

TEST_P(UnusableReplyTest, IsDaemonInternalError) {
  auto got = FormatIpamResult(GetParam().reply, "1.0.0");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, CniCode::kDaemonInternal);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, UnusableReplyTest,
    ::testing::Values(BadReplyCase{"NoIps", CniReply{}},
                      BadReplyCase{"NoPrefixLength", CniReply{{{"10.0.0.1", ""}}, {}, ""}},
                      BadReplyCase{"NotAnAddress", CniReply{{{"x/24", ""}}, {}, ""}},
                      BadReplyCase{"RouteWithoutDst",
                                   CniReply{{{"10.0.0.1/24", ""}}, {{"", "10.0.0.254"}}, ""}}),
    [](const ::testing::TestParamInfo<BadReplyCase>& p) { return p.param.name; });

TEST(FormatErrorTest, WritesSpecErrorShape) {
  EXPECT_EQ(FormatError({CniCode::kConflict, "requested address is already in use",
                         "10.0.0.5 is held by \"default/web-1\""},
                        "0.3.1"),
            R"({"cniVersion":"0.3.1","code":101,"msg":"requested address is already in use",)"
            R"("details":"10.0.0.5 is held by \"default/web-1\""})");
  EXPECT_EQ(FormatError({CniCode::kTryAgainLater, "later", ""}, "1.1.0"),
            R"({"cniVersion":"1.1.0","code":11,"msg":"later"})");
}

TEST(CniErrorFromDaemonTest, MapsEveryCode) {
  struct Case {
    Error in;
    CniCode want;
  };
  for (const auto& c : {Case{Error::InvalidArgument("x"), CniCode::kInvalidConfig},
                        Case{Error::NotFound("x"), CniCode::kInvalidConfig},
                        Case{Error::Conflict("x"), CniCode::kConflict},
                        Case{Error::Exhausted("x"), CniCode::kExhausted},
                        Case{Error::Unavailable("x"), CniCode::kTryAgainLater},
                        Case{Error::Internal("x"), CniCode::kDaemonInternal}}) {
    CniError e = CniErrorFromDaemon(c.in);
    EXPECT_EQ(e.code, c.want) << CodeName(c.in.code);
    EXPECT_EQ(e.details, "x");
    EXPECT_FALSE(e.msg.empty());
  }
}

TEST(VersionTest, VersionInfoListsEverySupportedVersion) {
  EXPECT_EQ(
      FormatVersionInfo(),
      R"({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
}

TEST(VersionTest, CommandsExistFromTheirSpecVersion) {
  struct Case {
    Command command;
    const char* version;
    bool allowed;
  };
  for (const auto& c : {Case{Command::kAdd, "0.3.0", true}, Case{Command::kDel, "0.3.0", true},
                        Case{Command::kCheck, "0.3.1", false}, Case{Command::kCheck, "0.4.0", true},
                        Case{Command::kCheck, "1.1.0", true}, Case{Command::kGc, "1.0.0", false},
                        Case{Command::kGc, "1.1.0", true}, Case{Command::kStatus, "0.4.0", false},
                        Case{Command::kStatus, "1.1.0", true}}) {
    auto got = CheckCommandAllowed(c.command, c.version);
    EXPECT_EQ(static_cast<bool>(got), c.allowed) << CommandName(c.command) << " " << c.version;
    if (!got) {
      EXPECT_EQ(got.error().code, CniCode::kIncompatibleVersion);
    }
  }
}

TEST(VersionTest, ParsesOnlyUpperCaseSpecNames) {
  EXPECT_EQ(ParseCommand("ADD"), Command::kAdd);
  EXPECT_EQ(ParseCommand("STATUS"), Command::kStatus);
  EXPECT_EQ(ParseCommand("add"), std::nullopt);
  EXPECT_EQ(ParseCommand(""), std::nullopt);
  EXPECT_TRUE(ResultHasIpVersion("0.3.0"));
  EXPECT_TRUE(ResultHasIpVersion("0.4.0"));
  EXPECT_FALSE(ResultHasIpVersion("1.0.0"));
}

}  // namespace
}  // namespace sublease::cni
