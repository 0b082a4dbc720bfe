// In-process runs of the whole plugin against FakeDaemon: the exact request the
// daemon sees, the exact stdout the runtime sees, and the CNI error codes.
#include "cni/plugin.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>

#include "cni/fake_daemon.h"
#include "common/json_reader.h"
#include "common/wire.h"

namespace sublease::cni {
namespace {

using Env = std::map<std::string, std::string>;

struct Outcome {
  int exit_code = -1;
  std::string out;
  bool read_stdin = false;
};

Outcome RunPluginWith(const Env& env, const std::string& stdin_text) {
  Outcome o;
  PluginIo io;
  io.getenv = [&env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  io.read_stdin = [&]() -> Result<std::string> {
    o.read_stdin = true;
    return stdin_text;
  };
  io.out = &o.out;
  o.exit_code = RunPlugin(io);
  return o;
}

// The "code" of a CNI error printed on stdout, or -1 when there is none.
int64_t ErrorCode(const std::string& out) {
  auto doc = ParseJson(out);
  const JsonValue* field = doc ? doc->Find("code") : nullptr;
  double code = -1;
  if (field == nullptr || !field->Get(&code)) return -1;
  return static_cast<int64_t>(code);
}

std::string ErrorDetails(const std::string& out) {
  auto doc = ParseJson(out);
  const JsonValue* field = doc ? doc->Find("details") : nullptr;
  std::string_view details;
  if (field == nullptr || !field->Get(&details)) return "";
  return std::string(details);
}

Env AttachmentEnv(std::string_view command) {
  return {{"CNI_COMMAND", std::string(command)},
          {"CNI_CONTAINERID", "3f6940ab5ab4"},
          {"CNI_NETNS", "/var/run/netns/cni-1"},
          {"CNI_IFNAME", "net1"},
          {"CNI_PATH", "/opt/cni/bin"},
          {"CNI_ARGS",
           "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
           "K8S_POD_INFRA_CONTAINER_ID=3f6940ab5ab4;K8S_POD_UID=uid-1"}};
}

// A NAD-style config; `extra` is spliced in at the top level, `ipam_extra` into ipam.
std::string Config(const std::string& socket, const std::string& version = "1.0.0",
                   const std::string& extra = "", const std::string& ipam_extra = "") {
  return R"({"cniVersion":")" + version + R"(","name":"macvlan","type":"macvlan",)" + extra +
         R"("ipam":{"type":"kube-ovn","server_socket":")" + socket +
         R"(","provider":"macvlan.default")" + ipam_extra + "}}";
}

const char* const kV4Reply = R"({"ips":[{"address":"172.17.0.11/16","gateway":"172.17.0.1"}],)"
                             R"("routes":[{"dst":"10.0.0.0/8","gw":"172.17.0.1"}],"mac":""})";

CniRequest ExpectedRequest() {
  CniRequest r;
  r.container_id = "3f6940ab5ab4";
  r.ifname = "net1";
  r.netns = "/var/run/netns/cni-1";
  r.provider = "macvlan.default";
  r.pod_namespace = "default";
  r.pod_name = "web-0";
  r.pod_uid = "uid-1";
  r.network = "macvlan";  // the config's name
  return r;
}

TEST(PluginTest, AddCarriesTheNetworkNameAndAllowPersistentIps) {
  FakeDaemon daemon({{200, kV4Reply}});
  auto o = RunPluginWith(AttachmentEnv("ADD"),
                         Config(daemon.socket_path(), "1.0.0", R"("allowPersistentIPs":true,)"));
  auto got = daemon.Finish();
  ASSERT_EQ(o.exit_code, 0) << o.out;
  ASSERT_EQ(got.size(), 1u);
  CniRequest want = ExpectedRequest();
  want.allow_persistent_ips = true;
  EXPECT_EQ(got[0].body, EncodeCniRequest(want));
}

TEST(PluginTest, AddSendsOneRequestAndPrintsTheAbbreviatedResult) {
  FakeDaemon daemon({{200, kV4Reply}});
  auto o = RunPluginWith(AttachmentEnv("ADD"),
                         Config(daemon.socket_path(), "1.0.0", "",
                                R"(,"routes":[{"dst":"10.0.0.0/8"},{"gw":"172.17.0.1"}])"));
  auto got = daemon.Finish();
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out,
            R"({"cniVersion":"1.0.0","ips":[{"address":"172.17.0.11/16","gateway":"172.17.0.1"}],)"
            R"("routes":[{"dst":"10.0.0.0/8","gw":"172.17.0.1"}],"dns":{}})");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /v1/cni/add HTTP/1.1");
  EXPECT_NE(got[0].headers.find("Connection: close"), std::string::npos);
  CniRequest want = ExpectedRequest();
  // A route without dst travels as dst "": the daemon makes it the default route.
  want.routes = {{"10.0.0.0/8", ""}, {"", "172.17.0.1"}};
  EXPECT_EQ(got[0].body, EncodeCniRequest(want));
}

struct VersionCase {
  std::string version;
  std::string want;
};

class AddResultVersionTest : public ::testing::TestWithParam<VersionCase> {};

TEST_P(AddResultVersionTest, PrintsResultInTheConfigVersion) {
  FakeDaemon daemon({{200, R"({"ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"},)"
                           R"({"address":"fd00::5/64","gateway":""}],"routes":[]})"}});
  auto o = RunPluginWith(AttachmentEnv("ADD"), Config(daemon.socket_path(), GetParam().version));
  daemon.Finish();
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out, GetParam().want);
}

std::string OldResult(const std::string& v) {
  return R"({"cniVersion":")" + v +
         R"(","ips":[{"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1"},)"
         R"({"version":"6","address":"fd00::5/64"}],"routes":[],"dns":{}})";
}

std::string NewResult(const std::string& v) {
  return R"({"cniVersion":")" + v +
         R"(","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"},)"
         R"({"address":"fd00::5/64"}],"routes":[],"dns":{}})";
}

INSTANTIATE_TEST_SUITE_P(Versions, AddResultVersionTest,
                         ::testing::Values(VersionCase{"0.3.0", OldResult("0.3.0")},
                                           VersionCase{"0.3.1", OldResult("0.3.1")},
                                           VersionCase{"0.4.0", OldResult("0.4.0")},
                                           VersionCase{"1.0.0", NewResult("1.0.0")},
                                           VersionCase{"1.1.0", NewResult("1.1.0")}));

struct StaticIpCase {
  std::string name;
  std::string config_extra;  // top-level keys
  std::string cni_args_ip;   // CNI_ARGS IP= value, "" for none
  std::vector<std::string> want_ips;
  std::string want_mac;
};

class StaticIpPrecedenceTest : public ::testing::TestWithParam<StaticIpCase> {};

TEST_P(StaticIpPrecedenceTest, FirstNonEmptySourceWins) {
  const auto& c = GetParam();
  FakeDaemon daemon({{200, kV4Reply}});
  Env env = AttachmentEnv("ADD");
  if (!c.cni_args_ip.empty()) env["CNI_ARGS"] += ";IP=" + c.cni_args_ip + ";MAC=02:00:00:00:00:03";
  auto o = RunPluginWith(env, Config(daemon.socket_path(), "1.0.0", c.config_extra));
  auto got = daemon.Finish();
  ASSERT_EQ(o.exit_code, 0) << o.out;
  ASSERT_EQ(got.size(), 1u);
  auto req = DecodeCniRequest(got[0].body);
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->ips, c.want_ips);
  EXPECT_EQ(req->mac, c.want_mac);
}

INSTANTIATE_TEST_SUITE_P(
    Sources, StaticIpPrecedenceTest,
    ::testing::Values(
        StaticIpCase{"NoneGiven", "", "", {}, ""},
        StaticIpCase{
            "CniArgsOnly", "", "10.1.0.7,fd00::7", {"10.1.0.7", "fd00::7"}, "02:00:00:00:00:03"},
        StaticIpCase{"ArgsCniBeatsCniArgs",
                     R"("args":{"cni":{"ips":["10.1.0.8/24"]}},)",
                     "10.1.0.7",
                     {"10.1.0.8/24"},
                     "02:00:00:00:00:03"},
        StaticIpCase{"RuntimeConfigBeatsAll",
                     R"("runtimeConfig":{"ips":["10.1.0.9"],"mac":"02:00:00:00:00:09"},)"
                     R"("args":{"cni":{"ips":["10.1.0.8"]}},)",
                     "10.1.0.7",
                     {"10.1.0.9"},
                     "02:00:00:00:00:09"},
        StaticIpCase{"EmptyRuntimeListFallsThrough",
                     R"("runtimeConfig":{"ips":[]},)",
                     "10.1.0.7",
                     {"10.1.0.7"},
                     "02:00:00:00:00:03"}),
    [](const ::testing::TestParamInfo<StaticIpCase>& p) { return p.param.name; });

struct DaemonErrorCase {
  std::string name;
  FakeDaemon::Reply reply;
  int64_t want_code;
  std::string details_mention;
};

class DaemonErrorTest : public ::testing::TestWithParam<DaemonErrorCase> {};

TEST_P(DaemonErrorTest, AddMapsTheDaemonAnswerToACniCode) {
  const auto& c = GetParam();
  FakeDaemon daemon({c.reply});
  auto o = RunPluginWith(AttachmentEnv("ADD"), Config(daemon.socket_path()));
  daemon.Finish();
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(ErrorCode(o.out), c.want_code) << o.out;
  EXPECT_NE(ErrorDetails(o.out).find(c.details_mention), std::string::npos) << o.out;
}

INSTANTIATE_TEST_SUITE_P(
    Answers, DaemonErrorTest,
    ::testing::Values(
        DaemonErrorCase{
            "InvalidArgument",
            {400, R"({"code":"invalid_argument","message":"10.9.0.1 is outside 10.1.0.0/24"})"},
            7,
            "outside"},
        DaemonErrorCase{
            "NoSubnetForProvider",
            {404, R"({"code":"not_found","message":"no Subnet has provider macvlan.default"})"},
            7,
            "no Subnet"},
        DaemonErrorCase{
            "Conflict",
            {409, R"j({"code":"conflict","message":"10.1.0.7 is held by default/web-1 (net1)"})j"},
            101,
            "default/web-1"},
        DaemonErrorCase{"Exhausted",
                        {507, R"({"code":"exhausted","message":"subnet attach is full"})"},
                        100,
                        "full"},
        DaemonErrorCase{"Unavailable",
                        {503, R"({"code":"unavailable","message":"API server unreachable"})"},
                        11,
                        "API server"},
        DaemonErrorCase{
            "Internal", {500, R"({"code":"internal","message":"disk I/O error"})"}, 102, "disk"},
        DaemonErrorCase{"TextBodyBadGateway", {502, "upstream gone"}, 11, "HTTP 502"},
        DaemonErrorCase{"UnreadableReply", {200, R"({"ips":"nope"})"}, 102, "ips"},
        DaemonErrorCase{"ReplyWithoutIps", {200, R"({"ips":[]})"}, 102, "no ips"},
        DaemonErrorCase{"HangUpWithoutAnswer", {200, "", false, true}, 11, "without an answer"}),
    [](const ::testing::TestParamInfo<DaemonErrorCase>& p) { return p.param.name; });

TEST(PluginTest, AddWithNoDaemonIsTryAgainLaterNamingTheSocket) {
  AbsentSocket absent;
  auto o = RunPluginWith(AttachmentEnv("ADD"), Config(absent.path()));
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(ErrorCode(o.out), 11) << o.out;
  std::string details = ErrorDetails(o.out);
  EXPECT_NE(details.find("cannot reach sublease daemon at " + absent.path()), std::string::npos)
      << details;
  EXPECT_NE(details.find("is subleased running"), std::string::npos) << details;
}

TEST(PluginTest, AddTimesOutWhenTheDaemonNeverAnswers) {
  FakeDaemon daemon({{200, "", true}});
  auto start = std::chrono::steady_clock::now();
  auto o = RunPluginWith(AttachmentEnv("ADD"),
                         Config(daemon.socket_path(), "1.0.0", "", R"(,"timeout_seconds":0.3)"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  daemon.Finish();
  EXPECT_EQ(ErrorCode(o.out), 11) << o.out;
  EXPECT_NE(ErrorDetails(o.out).find("did not answer within 300 ms"), std::string::npos) << o.out;
  EXPECT_GE(elapsed, std::chrono::milliseconds(250));
  EXPECT_LT(elapsed, std::chrono::seconds(3));
}

TEST(PluginTest, DelSucceedsWhenTheDaemonHoldsNothing) {
  FakeDaemon daemon({{200, "{}"}, {404, R"({"code":"not_found","message":"no lease"})"}});
  Env env = AttachmentEnv("DEL");
  env.erase("CNI_NETNS");  // CNI spec: DEL works after the netns is gone
  auto first = RunPluginWith(env, Config(daemon.socket_path()));
  auto second = RunPluginWith(env, Config(daemon.socket_path()));
  auto got = daemon.Finish();
  EXPECT_EQ(first.exit_code, 0) << first.out;
  EXPECT_EQ(first.out, "");
  EXPECT_EQ(second.exit_code, 0) << second.out;
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].request_line, "POST /v1/cni/del HTTP/1.1");
  CniRequest want = ExpectedRequest();
  want.netns = "";
  EXPECT_EQ(got[0].body, EncodeCniRequest(want));
}

TEST(PluginTest, DelWithNoDaemonIsTryAgainLaterSoNoLeaseLeaks) {
  AbsentSocket absent;
  auto o = RunPluginWith(AttachmentEnv("DEL"), Config(absent.path()));
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(ErrorCode(o.out), 11) << o.out;
}

std::string PrevResult(const std::string& addresses) {
  return R"("prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"net1"}],"ips":[)" +
         addresses + "]},";
}

TEST(PluginTest, CheckPassesWhenTheLeaseMatchesPrevResult) {
  FakeDaemon daemon({{200, kV4Reply}});
  auto o = RunPluginWith(
      AttachmentEnv("CHECK"),
      Config(daemon.socket_path(), "1.0.0",
             PrevResult(R"({"address":"172.17.0.11/16","gateway":"172.17.0.1","interface":0})")));
  auto got = daemon.Finish();
  EXPECT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out, "");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /v1/cni/check HTTP/1.1");
}

TEST(PluginTest, CheckFailsNamingBothSidesWhenTheLeaseDiffers) {
  FakeDaemon daemon({{200, kV4Reply}});
  auto o = RunPluginWith(AttachmentEnv("CHECK"),
                         Config(daemon.socket_path(), "0.4.0",
                                PrevResult(R"({"version":"4","address":"172.17.0.12/16"})")));
  daemon.Finish();
  EXPECT_EQ(o.exit_code, 1);
  EXPECT_EQ(ErrorCode(o.out), 103) << o.out;
  std::string details = ErrorDetails(o.out);
  EXPECT_NE(details.find("172.17.0.12/16"), std::string::npos) << details;
  EXPECT_NE(details.find("172.17.0.11/16"), std::string::npos) << details;
}

TEST(PluginTest, CheckWithoutPrevResultIsInvalidConfig) {
  AbsentSocket absent;  // never contacted
  auto o = RunPluginWith(AttachmentEnv("CHECK"), Config(absent.path()));
  EXPECT_EQ(ErrorCode(o.out), 7) << o.out;
  EXPECT_NE(o.out.find("prevResult"), std::string::npos);
}

struct CommandVersionCase {
  std::string command;
  std::string version;
};

class CommandNotInVersionTest : public ::testing::TestWithParam<CommandVersionCase> {};

TEST_P(CommandNotInVersionTest, IsIncompatibleVersion) {
  AbsentSocket absent;
  Env env = AttachmentEnv(GetParam().command);
  auto o = RunPluginWith(env, Config(absent.path(), GetParam().version, PrevResult("")));
  EXPECT_EQ(ErrorCode(o.out), 1) << o.out;
  EXPECT_NE(o.out.find("does not allow " + GetParam().command), std::string::npos) << o.out;
  EXPECT_NE(o.out.find(R"("cniVersion":")" + GetParam().version + "\""), std::string::npos)
      << o.out;
}

INSTANTIATE_TEST_SUITE_P(Spec, CommandNotInVersionTest,
                         ::testing::Values(CommandVersionCase{"CHECK", "0.3.1"},
                                           CommandVersionCase{"GC", "1.0.0"},
                                           CommandVersionCase{"STATUS", "0.4.0"}));

TEST(PluginTest, GcSendsTheValidAttachmentsForTheProvider) {
  FakeDaemon daemon({{200, "{}"}});
  auto o =
      RunPluginWith({{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}},
                    Config(daemon.socket_path(), "1.1.0",
                           R"("cni.dev/valid-attachments":[{"containerID":"c1","ifname":"net1"},)"
                           R"({"containerID":"c2","ifname":"net2"}],)"));
  auto got = daemon.Finish();
  EXPECT_EQ(o.exit_code, 0) << o.out;
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "POST /v1/cni/gc HTTP/1.1");
  EXPECT_EQ(got[0].body,
            EncodeGcRequest(GcRequest{"macvlan.default", {{"c1", "net1"}, {"c2", "net2"}}}));
}

TEST(PluginTest, GcWithoutTheListRefusesRatherThanReleasingEverything) {
  AbsentSocket absent;
  auto o = RunPluginWith({{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}},
                         Config(absent.path(), "1.1.0"));
  EXPECT_EQ(ErrorCode(o.out), 7) << o.out;
  EXPECT_NE(o.out.find("cni.dev/valid-attachments"), std::string::npos);
}

TEST(PluginTest, GcWithNoDaemonIsTryAgainLater) {
  AbsentSocket absent;
  auto o = RunPluginWith({{"CNI_COMMAND", "GC"}, {"CNI_PATH", "/opt/cni/bin"}},
                         Config(absent.path(), "1.1.0", R"("cni.dev/valid-attachments":[],)"));
  EXPECT_EQ(ErrorCode(o.out), 11) << o.out;
}

TEST(PluginTest, StatusSucceedsWhenTheDaemonIsReady) {
  FakeDaemon daemon({{200, R"({"ready":true})"}});
  auto o = RunPluginWith({{"CNI_COMMAND", "STATUS"}}, Config(daemon.socket_path(), "1.1.0"));
  auto got = daemon.Finish();
  EXPECT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out, "");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].request_line, "GET /v1/cni/status HTTP/1.1");
}

TEST(PluginTest, StatusIsNotAvailableWhenTheDaemonIsNotReadyOrAbsent) {
  FakeDaemon daemon(
      {{503, R"({"code":"unavailable","message":"waiting for the first Subnet sync"})"},
       {200, R"({"ready":false})"}});
  auto not_ready =
      RunPluginWith({{"CNI_COMMAND", "STATUS"}}, Config(daemon.socket_path(), "1.1.0"));
  auto says_false =
      RunPluginWith({{"CNI_COMMAND", "STATUS"}}, Config(daemon.socket_path(), "1.1.0"));
  daemon.Finish();
  AbsentSocket absent;
  auto gone = RunPluginWith({{"CNI_COMMAND", "STATUS"}}, Config(absent.path(), "1.1.0"));
  EXPECT_EQ(ErrorCode(not_ready.out), 50) << not_ready.out;
  EXPECT_NE(ErrorDetails(not_ready.out).find("first Subnet sync"), std::string::npos);
  EXPECT_EQ(ErrorCode(says_false.out), 50) << says_false.out;
  EXPECT_EQ(ErrorCode(gone.out), 50) << gone.out;
}

TEST(PluginTest, VersionPrintsSupportedVersionsWithoutReadingStdin) {
  auto o = RunPluginWith({{"CNI_COMMAND", "VERSION"}}, "not read");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_FALSE(o.read_stdin);
  EXPECT_EQ(
      o.out,
      R"({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
}

TEST(PluginTest, ErrorsBeforeTheConfigIsReadUseTheLatestVersion) {
  auto o = RunPluginWith({{"CNI_COMMAND", "ADD"}}, "{}");
  EXPECT_EQ(ErrorCode(o.out), 4);
  EXPECT_NE(o.out.find(R"("cniVersion":"1.1.0")"), std::string::npos) << o.out;
  EXPECT_FALSE(o.read_stdin);
}

TEST(PluginTest, UnreadableStdinIsIoFailure) {
  std::string out;
  PluginIo io;
  Env env = AttachmentEnv("ADD");
  io.getenv = [&env](std::string_view name) -> std::optional<std::string> {
    return env[std::string(name)];
  };
  io.read_stdin = []() -> Result<std::string> { return Fail(Error::Internal("read: EIO")); };
  io.out = &out;
  EXPECT_EQ(RunPlugin(io), 1);
  EXPECT_EQ(ErrorCode(out), 5) << out;
}

}  // namespace
}  // namespace sublease::cni
