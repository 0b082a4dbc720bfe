#include "cni/env.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace sublease::cni {
namespace {

using Env = std::map<std::string, std::string>;

CniResult<CniEnv> Read(const Env& env) {
  return ReadEnv([&env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end() || it->second.empty()) return std::nullopt;
    return it->second;
  });
}

Env Full(std::string command) {
  return {{"CNI_COMMAND", std::move(command)},
          {"CNI_CONTAINERID", "abc123"},
          {"CNI_NETNS", "/var/run/netns/x"},
          {"CNI_IFNAME", "net1"},
          {"CNI_PATH", "/opt/cni/bin"}};
}

TEST(ReadEnvTest, ReadsTheAttachmentVariables) {
  Env env = Full("ADD");
  env["CNI_ARGS"] = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=u";
  auto got = Read(env);
  ASSERT_TRUE(got) << got.error().msg;
  EXPECT_EQ(got->command, Command::kAdd);
  EXPECT_EQ(got->container_id, "abc123");
  EXPECT_EQ(got->netns, "/var/run/netns/x");
  EXPECT_EQ(got->ifname, "net1");
  EXPECT_EQ(got->args.pod_namespace, "ns");
  EXPECT_EQ(got->args.pod_name, "pod");
  EXPECT_EQ(got->args.pod_uid, "u");
}

struct MissingCase {
  std::string name;
  std::string command;
  std::string unset;  // variable removed from Full(command); "" removes nothing
  bool want_ok;
};

class RequiredVariableTest : public ::testing::TestWithParam<MissingCase> {};

TEST_P(RequiredVariableTest, FollowsTheSpecPerCommand) {
  const auto& c = GetParam();
  Env env = Full(c.command);
  env.erase(c.unset);
  auto got = Read(env);
  if (c.want_ok) {
    EXPECT_TRUE(got) << got.error().msg;
    return;
  }
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, CniCode::kInvalidEnvironment);
  EXPECT_NE(got.error().msg.find(c.unset), std::string::npos) << got.error().msg;
}

INSTANTIATE_TEST_SUITE_P(
    Commands, RequiredVariableTest,
    ::testing::Values(MissingCase{"AddNeedsContainerId", "ADD", "CNI_CONTAINERID", false},
                      MissingCase{"AddNeedsNetns", "ADD", "CNI_NETNS", false},
                      MissingCase{"AddNeedsIfname", "ADD", "CNI_IFNAME", false},
                      MissingCase{"AddWithoutPathIsFine", "ADD", "CNI_PATH", true},
                      MissingCase{"DelNeedsContainerId", "DEL", "CNI_CONTAINERID", false},
                      MissingCase{"DelNeedsIfname", "DEL", "CNI_IFNAME", false},
                      MissingCase{"DelWithoutNetnsIsFine", "DEL", "CNI_NETNS", true},
                      MissingCase{"CheckNeedsNetns", "CHECK", "CNI_NETNS", false},
                      MissingCase{"GcNeedsPath", "GC", "CNI_PATH", false},
                      MissingCase{"GcWithoutAttachmentVariablesIsFine", "GC", "CNI_CONTAINERID",
                                  true},
                      MissingCase{"StatusWithoutPathIsFine", "STATUS", "CNI_PATH", true},
                      MissingCase{"VersionNeedsOnlyTheCommand", "VERSION", "CNI_IFNAME", true},
                      MissingCase{"CommandItself", "ADD", "CNI_COMMAND", false}),
    [](const ::testing::TestParamInfo<MissingCase>& p) { return p.param.name; });

TEST(ReadEnvTest, NamesAllMissingVariablesAtOnce) {
  auto got = Read({{"CNI_COMMAND", "ADD"}});
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().msg,
            "required environment variables missing: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME");
}

struct InvalidCase {
  std::string name;
  std::string variable;
  std::string value;
};

class InvalidVariableTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidVariableTest, IsBadEnvironmentNamingTheVariable) {
  Env env = Full("ADD");
  env[GetParam().variable] = GetParam().value;
  auto got = Read(env);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, CniCode::kInvalidEnvironment);
  EXPECT_NE((got.error().msg + got.error().details).find(GetParam().variable), std::string::npos)
      << got.error().msg;
}

INSTANTIATE_TEST_SUITE_P(
    Values, InvalidVariableTest,
    ::testing::Values(InvalidCase{"UnknownCommand", "CNI_COMMAND", "add"},
                      InvalidCase{"ContainerIdStartsWithDash", "CNI_CONTAINERID", "-abc"},
                      InvalidCase{"ContainerIdWithSlash", "CNI_CONTAINERID", "a/b"},
                      InvalidCase{"IfnameTooLong", "CNI_IFNAME", "abcdefghijklmnop"},
                      InvalidCase{"IfnameDot", "CNI_IFNAME", "."},
                      InvalidCase{"IfnameWithColon", "CNI_IFNAME", "eth0:1"},
                      InvalidCase{"IfnameWithSpace", "CNI_IFNAME", "net 1"},
                      InvalidCase{"ArgsUnknownKey", "CNI_ARGS", "FOO=bar"}),
    [](const ::testing::TestParamInfo<InvalidCase>& p) { return p.param.name; });

TEST(CniArgsTest, ReadsKubernetesKeysAndLegacyStaticAddresses) {
  auto got = ParseCniArgs(
      "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;"
      "K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.0.0.5,fd00::5/64;MAC=02:00:00:00:00:01");
  ASSERT_TRUE(got) << got.error().msg;
  EXPECT_EQ(got->pod_namespace, "default");
  EXPECT_EQ(got->pod_name, "web-0");
  EXPECT_EQ(got->pod_uid, "u-1");
  EXPECT_EQ(got->infra_container_id, "abc");
  EXPECT_EQ(got->ips, (std::vector<std::string>{"10.0.0.5", "fd00::5/64"}));
  EXPECT_EQ(got->mac, "02:00:00:00:00:01");
}

TEST(CniArgsTest, EmptyAndTrailingSeparatorsAreFine) {
  EXPECT_TRUE(ParseCniArgs(""));
  auto got = ParseCniArgs(";K8S_POD_NAME=a;;");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->pod_name, "a");
}

TEST(CniArgsTest, ValueMayContainEquals) {
  auto got = ParseCniArgs("K8S_POD_NAME=a=b");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->pod_name, "a=b");
}

struct IgnoreCase {
  std::string args;
  bool want_ok;
};

class CniArgsValidityTest : public ::testing::TestWithParam<IgnoreCase> {};

TEST_P(CniArgsValidityTest, RejectsMalformedPairsAndUnknownKeysUnlessIgnored) {
  auto got = ParseCniArgs(GetParam().args);
  EXPECT_EQ(static_cast<bool>(got), GetParam().want_ok) << GetParam().args;
  if (!got) {
    EXPECT_EQ(got.error().code, CniCode::kInvalidEnvironment);
    EXPECT_NE(got.error().msg.find("CNI_ARGS"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CniArgsValidityTest,
    ::testing::Values(IgnoreCase{"FOO=1", false}, IgnoreCase{"IgnoreUnknown=1;FOO=1", true},
                      IgnoreCase{"FOO=1;IgnoreUnknown=true", true},
                      IgnoreCase{"FOO=1;IgnoreUnknown=TRUE", true},
                      IgnoreCase{"IgnoreUnknown=0;FOO=1", false},
                      IgnoreCase{"IgnoreUnknown=false;FOO=1", false},
                      IgnoreCase{"IgnoreUnknown=maybe", false}, IgnoreCase{"NOEQUALS", false},
                      IgnoreCase{"=value", false}, IgnoreCase{"IP=10.0.0.300", false},
                      IgnoreCase{"IP=10.0.0.1/33", false}));

}  // namespace
}  // namespace sublease::cni
