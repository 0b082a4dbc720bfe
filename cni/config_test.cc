#include "cni/config.h"

#include <gtest/gtest.h>

#include <string>

namespace sublease::cni {
namespace {

// A valid config with `ipam_extra` spliced into ipam and `extra` at the top level.
std::string Conf(const std::string& ipam_extra = "", const std::string& extra = "") {
  return R"({"cniVersion":"1.0.0","name":"attach","type":"macvlan",)" + extra +
         R"("ipam":{"type":"kube-ovn","server_socket":"/run/sublease.sock","provider":"attach.default")" +
         ipam_extra + "}}";
}

TEST(ParseNetConfTest, ReadsTheSeedConfig) {
  std::string version;
  auto got = ParseNetConf(
      R"({"cniVersion":"0.3.1","name":"macvlan","type":"macvlan","master":"eth0","mode":"bridge",)"
      R"("ipam":{"type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock",)"
      R"("provider":"macvlan.default"}})",
      &version);
  ASSERT_TRUE(got) << got.error().msg;
  EXPECT_EQ(version, "0.3.1");
  EXPECT_EQ(got->cni_version, "0.3.1");
  EXPECT_EQ(got->name, "macvlan");
  EXPECT_EQ(got->ipam_type, "kube-ovn");
  EXPECT_EQ(got->server_socket, "/run/openvswitch/kube-ovn-daemon.sock");
  EXPECT_EQ(got->provider, "macvlan.default");
  EXPECT_EQ(got->timeout_seconds, kDefaultTimeoutSeconds);
  EXPECT_FALSE(got->has_prev_result);
  EXPECT_FALSE(got->valid_attachments);
}

TEST(ParseNetConfTest, ReadsAllowPersistentIps) {
  std::string version;
  auto off = ParseNetConf(Conf(), &version);
  ASSERT_TRUE(off) << off.error().msg;
  EXPECT_FALSE(off->allow_persistent_ips);
  auto on = ParseNetConf(Conf("", R"("allowPersistentIPs":true,)"), &version);
  ASSERT_TRUE(on) << on.error().msg;
  EXPECT_TRUE(on->allow_persistent_ips);
  EXPECT_EQ(on->name, "attach");
  auto bad = ParseNetConf(Conf("", R"("allowPersistentIPs":"true",)"), &version);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, CniCode::kInvalidConfig);
  EXPECT_NE(bad.error().msg.find("allowPersistentIPs"), std::string::npos);
}

TEST(ParseNetConfTest, ReadsOptionalKeys) {
  auto got = ParseNetConf(
      Conf(
          R"(,"routes":[{"dst":"10.0.0.0/8","gw":"10.1.0.254"},{"gw":"10.1.0.1"},{"dst":"fd01::/64"}],)"
          R"("timeout_seconds":3)",
          R"("runtimeConfig":{"ips":["10.1.0.9/24"],"mac":"02:00:00:00:00:09"},)"
          R"("args":{"cni":{"ips":["10.1.0.8"]},"labels":{"x":"y"}},)"
          R"("prevResult":{"ips":[{"address":"10.1.0.9/24","interface":0}]},)"
          R"("cni.dev/valid-attachments":[{"containerID":"c1","ifname":"net1"}],)"),
      nullptr);
  ASSERT_TRUE(got) << got.error().msg;
  EXPECT_EQ(got->routes, (std::vector<WireRoute>{
                             {"10.0.0.0/8", "10.1.0.254"}, {"", "10.1.0.1"}, {"fd01::/64", ""}}));
  EXPECT_EQ(got->timeout_seconds, 3);
  EXPECT_EQ(got->runtime_ips, std::vector<std::string>{"10.1.0.9/24"});
  EXPECT_EQ(got->runtime_mac, "02:00:00:00:00:09");
  EXPECT_EQ(got->args_ips, std::vector<std::string>{"10.1.0.8"});
  EXPECT_TRUE(got->has_prev_result);
  EXPECT_EQ(got->prev_result_ips, std::vector<std::string>{"10.1.0.9/24"});
  ASSERT_TRUE(got->valid_attachments);
  EXPECT_EQ(*got->valid_attachments, (std::vector<WireAttachment>{{"c1", "net1"}}));
}

TEST(ParseNetConfTest, AcceptsLibcniAliasForValidAttachmentsAndFractionalTimeout) {
  auto got =
      ParseNetConf(Conf(R"(,"timeout_seconds":0.25)", R"("cni.dev/attachments":[],)"), nullptr);
  ASSERT_TRUE(got) << got.error().msg;
  ASSERT_TRUE(got->valid_attachments);
  EXPECT_TRUE(got->valid_attachments->empty());
  EXPECT_EQ(got->timeout_seconds, 0.25);
}

struct BadConfCase {
  std::string name;
  std::string json;
  CniCode want_code;
  std::string msg_mentions;
};

class BadNetConfTest : public ::testing::TestWithParam<BadConfCase> {};

TEST_P(BadNetConfTest, FailsWithTheRightCodeNamingTheField) {
  auto got = ParseNetConf(GetParam().json, nullptr);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, GetParam().want_code) << got.error().msg;
  EXPECT_NE(got.error().msg.find(GetParam().msg_mentions), std::string::npos) << got.error().msg;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadNetConfTest,
    ::testing::Values(
        BadConfCase{"NotJson", "{\"cniVersion\":", CniCode::kDecodeFailure, "not valid JSON"},
        BadConfCase{"Empty", "", CniCode::kDecodeFailure, "not valid JSON"},
        BadConfCase{"NotAnObject", "[]", CniCode::kDecodeFailure, "not a JSON object"},
        BadConfCase{"NoVersion", R"({"ipam":{}})", CniCode::kIncompatibleVersion, "no cniVersion"},
        BadConfCase{"OldVersion", R"({"cniVersion":"0.2.0"})", CniCode::kIncompatibleVersion,
                    "0.2.0"},
        BadConfCase{"FutureVersion", R"({"cniVersion":"2.0.0"})", CniCode::kIncompatibleVersion,
                    "2.0.0"},
        BadConfCase{"VersionNotString", R"({"cniVersion":1})", CniCode::kInvalidConfig,
                    "cniVersion must be a string"},
        BadConfCase{"NameNotString", R"({"cniVersion":"1.0.0","name":[]})", CniCode::kInvalidConfig,
                    "name must be a string"},
        BadConfCase{"NoIpam", R"({"cniVersion":"1.0.0"})", CniCode::kInvalidConfig,
                    "ipam is missing"},
        BadConfCase{"IpamNotObject", R"({"cniVersion":"1.0.0","ipam":"x"})",
                    CniCode::kInvalidConfig, "ipam must be an object"},
        BadConfCase{"NoSocket", R"({"cniVersion":"1.0.0","ipam":{"provider":"a.b"}})",
                    CniCode::kInvalidConfig, "ipam.server_socket is required"},
        BadConfCase{"SocketNotString", R"({"cniVersion":"1.0.0","ipam":{"server_socket":5}})",
                    CniCode::kInvalidConfig, "ipam.server_socket must be a string"},
        BadConfCase{"SocketRelative", R"({"cniVersion":"1.0.0","ipam":{"server_socket":"x.sock"}})",
                    CniCode::kInvalidConfig, "absolute"},
        BadConfCase{"SocketTooLong",
                    R"({"cniVersion":"1.0.0","ipam":{"server_socket":"/)" + std::string(120, 'x') +
                        R"("}})",
                    CniCode::kInvalidConfig, "too long"},
        BadConfCase{"NoProvider", R"({"cniVersion":"1.0.0","ipam":{"server_socket":"/s"}})",
                    CniCode::kInvalidConfig, "ipam.provider is required"},
        BadConfCase{"ProviderNotString",
                    R"({"cniVersion":"1.0.0","ipam":{"server_socket":"/s","provider":{}}})",
                    CniCode::kInvalidConfig, "ipam.provider must be a string"},
        BadConfCase{"TypeNotString", R"({"cniVersion":"1.0.0","ipam":{"type":1}})",
                    CniCode::kInvalidConfig, "ipam.type must be a string"},
        BadConfCase{"RoutesNotArray", Conf(R"(,"routes":{})"), CniCode::kInvalidConfig,
                    "ipam.routes must be an array"},
        BadConfCase{"RouteNotObject", Conf(R"(,"routes":["0.0.0.0/0"])"), CniCode::kInvalidConfig,
                    "ipam.routes[0] must be an object"},
        BadConfCase{"RouteDstNotString", Conf(R"(,"routes":[{"dst":1}])"), CniCode::kInvalidConfig,
                    "ipam.routes[0].dst must be a string"},
        BadConfCase{"RouteDstNotCidr", Conf(R"(,"routes":[{"dst":"10.0.0.0/8"},{"dst":"banana"}])"),
                    CniCode::kInvalidConfig, "ipam.routes[1].dst is not a CIDR"},
        BadConfCase{"RouteGwNotIp", Conf(R"(,"routes":[{"gw":"10.0.0"}])"), CniCode::kInvalidConfig,
                    "ipam.routes[0].gw is not an IP"},
        BadConfCase{"RouteMixedFamilies", Conf(R"(,"routes":[{"dst":"fd00::/8","gw":"10.0.0.1"}])"),
                    CniCode::kInvalidConfig, "mixes address families"},
        BadConfCase{"TimeoutNotNumber", Conf(R"(,"timeout_seconds":"10")"), CniCode::kInvalidConfig,
                    "ipam.timeout_seconds must be a number"},
        BadConfCase{"TimeoutZero", Conf(R"(,"timeout_seconds":0)"), CniCode::kInvalidConfig,
                    "ipam.timeout_seconds must be more than 0"},
        BadConfCase{"TimeoutHuge", Conf(R"(,"timeout_seconds":301)"), CniCode::kInvalidConfig,
                    "at most 300"},
        BadConfCase{"RuntimeConfigNotObject", Conf("", R"("runtimeConfig":[],)"),
                    CniCode::kInvalidConfig, "runtimeConfig must be an object"},
        BadConfCase{"RuntimeIpsNotArray", Conf("", R"("runtimeConfig":{"ips":"10.0.0.1"},)"),
                    CniCode::kInvalidConfig, "runtimeConfig.ips must be an array"},
        BadConfCase{"RuntimeIpNotString", Conf("", R"("runtimeConfig":{"ips":["10.0.0.1",2]},)"),
                    CniCode::kInvalidConfig, "runtimeConfig.ips[1] must be a string"},
        BadConfCase{"RuntimeIpNotAddress", Conf("", R"("runtimeConfig":{"ips":["10.0.0.1/40"]},)"),
                    CniCode::kInvalidConfig, "runtimeConfig.ips[0] is not an IP address"},
        // Regression: a NUL ended inet_pton's input, so this passed as 10.0.0.1.
        BadConfCase{"RuntimeIpWithNul",
                    Conf("", R"("runtimeConfig":{"ips":["10.0.0.1\u0000junk"]},)"),
                    CniCode::kInvalidConfig, "runtimeConfig.ips[0] is not an IP address"},
        BadConfCase{"RouteGwWithNul", Conf(R"(,"routes":[{"gw":"10.0.0.1\u0000"}])"),
                    CniCode::kInvalidConfig, "ipam.routes[0].gw is not an IP"},
        BadConfCase{"RuntimeMacNotString", Conf("", R"("runtimeConfig":{"mac":1},)"),
                    CniCode::kInvalidConfig, "runtimeConfig.mac must be a string"},
        BadConfCase{"ArgsCniNotObject", Conf("", R"("args":{"cni":true},)"),
                    CniCode::kInvalidConfig, "args.cni must be an object"},
        BadConfCase{"ArgsCniIpNotAddress", Conf("", R"("args":{"cni":{"ips":["nope"]}},)"),
                    CniCode::kInvalidConfig, "args.cni.ips[0] is not an IP address"},
        BadConfCase{"PrevResultNotObject", Conf("", R"("prevResult":"x",)"),
                    CniCode::kInvalidConfig, "prevResult must be an object"},
        BadConfCase{"PrevResultAddressNotString",
                    Conf("", R"("prevResult":{"ips":[{"address":4}]},)"), CniCode::kInvalidConfig,
                    "prevResult.ips[0].address must be a string"},
        BadConfCase{"AttachmentsNotArray", Conf("", R"("cni.dev/valid-attachments":{},)"),
                    CniCode::kInvalidConfig, "cni.dev/valid-attachments must be an array"},
        BadConfCase{"AttachmentIdNotString",
                    Conf("", R"("cni.dev/valid-attachments":[{"containerID":1}],)"),
                    CniCode::kInvalidConfig,
                    "cni.dev/valid-attachments[0].containerID must be a string"}),
    [](const ::testing::TestParamInfo<BadConfCase>& p) { return p.param.name; });

TEST(ParseNetConfTest, ReportsTheVersionOnceKnownSoLaterErrorsUseIt) {
  std::string version = "unset";
  auto got = ParseNetConf(R"({"cniVersion":"0.4.0","ipam":{}})", &version);
  ASSERT_FALSE(got);
  EXPECT_EQ(version, "0.4.0");
  std::string untouched = "unset";
  EXPECT_FALSE(ParseNetConf(R"({"cniVersion":"9.9.9"})", &untouched));
  EXPECT_EQ(untouched, "unset");
}

TEST(ValidateStaticAddressTest, AcceptsAddressesWithOrWithoutPrefix) {
  for (const char* ok :
       {"10.0.0.1", "10.0.0.1/24", "10.0.0.1/32", "fd00::1", "fd00::1/128", "::/0"}) {
    EXPECT_TRUE(ValidateStaticAddress(ok)) << ok;
  }
  for (const char* bad : {"", "10.0.0", "10.0.0.1/", "10.0.0.1/33", "fd00::1/129", "10.0.0.1/x",
                          "10.0.0.1/-1", "host"}) {
    EXPECT_FALSE(ValidateStaticAddress(bad)) << bad;
  }
}

}  // namespace
}  // namespace sublease::cni
