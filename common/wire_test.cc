#include "common/wire.h"

#include <gtest/gtest.h>

#include <string>

#include "common/json_reader.h"

namespace sublease {
namespace {

CniRequest FullRequest() {
  CniRequest r;
  r.container_id = "3f6940ab5ab4";
  r.ifname = "net1";
  r.netns = "/var/run/netns/cni-1";
  r.provider = "macvlan.default";
  r.pod_namespace = "default";
  r.pod_name = "web-0";
  r.pod_uid = "0b5e2c6e-1111-2222-3333-444455556666";
  r.ips = {"172.17.0.11", "fd00::b/64"};
  r.mac = "02:42:ac:11:00:0b";
  r.routes = {{"10.0.0.0/8", "172.17.0.1"}, {"", "172.17.0.1"}};
  return r;
}

TEST(WireTest, CniRequestRoundTrips) {
  CniRequest r = FullRequest();
  auto back = DecodeCniRequest(EncodeCniRequest(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, r);
}

TEST(WireTest, CniRequestEncodesProtocolFieldNames) {
  CniRequest r;
  r.container_id = "c";
  r.ifname = "net1";
  r.provider = "p.ns";
  r.routes = {{"", "10.0.0.1"}};
  EXPECT_EQ(EncodeCniRequest(r),
            R"({"containerID":"c","ifname":"net1","netns":"","provider":"p.ns",)"
            R"("podNamespace":"","podName":"","podUID":"","ips":[],"mac":"",)"
            R"("routes":[{"dst":"","gw":"10.0.0.1"}],"network":"","allowPersistentIPs":false})");
}

TEST(WireTest, CniRequestCarriesTheNetworkAndAllowPersistentIps) {
  CniRequest r = FullRequest();
  r.network = "tenantnet";
  r.allow_persistent_ips = true;
  auto back = DecodeCniRequest(EncodeCniRequest(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->network, "tenantnet");
  EXPECT_TRUE(back->allow_persistent_ips);
  // An older plugin sends neither: no claims.
  auto old = DecodeCniRequest(R"({"provider":"p.ns"})");
  ASSERT_TRUE(old) << old.error().message;
  EXPECT_FALSE(old->allow_persistent_ips);
  auto bad = DecodeCniRequest(R"({"provider":"p.ns","allowPersistentIPs":"yes"})");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("allowPersistentIPs"), std::string::npos);
}

TEST(WireTest, CniReplyRoundTrips) {
  CniReply r;
  r.ips = {{"172.17.0.11/16", "172.17.0.1"}, {"fd00::b/64", ""}};
  r.routes = {{"0.0.0.0/0", "172.17.0.1"}};
  r.mac = "02:42:ac:11:00:0b";
  auto back = DecodeCniReply(EncodeCniReply(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, r);
}

TEST(WireTest, GcRequestRoundTrips) {
  GcRequest r{"macvlan.default", {{"c1", "net1"}, {"c2", "net2"}}};
  auto back = DecodeGcRequest(EncodeGcRequest(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, r);
  GcRequest empty{"macvlan.default", {}};
  auto back_empty = DecodeGcRequest(EncodeGcRequest(empty));
  ASSERT_TRUE(back_empty);
  EXPECT_EQ(*back_empty, empty);
}

TEST(WireTest, UnknownFieldsAreIgnoredAndNullMeansAbsent) {
  auto r = DecodeCniRequest(
      R"({"provider":"p","future":{"x":[1,2]},"ips":null,"mac":null,"routes":null})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->provider, "p");
  EXPECT_TRUE(r->ips.empty());
  EXPECT_TRUE(r->routes.empty());
  EXPECT_EQ(r->mac, "");
}

struct BadRequestCase {
  std::string name;
  std::string json;
  std::string must_mention;
};

class CniRequestRejectTest : public testing::TestWithParam<BadRequestCase> {};

TEST_P(CniRequestRejectTest, RejectsWithMessageNamingTheField) {
  auto r = DecodeCniRequest(GetParam().json);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kInvalidArgument);
  EXPECT_NE(r.error().message.find(GetParam().must_mention), std::string::npos)
      << r.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CniRequestRejectTest,
    testing::Values(
        BadRequestCase{"NotJson", "{", "not valid JSON"},
        BadRequestCase{"NotAnObject", "[1]", "must be a JSON object"},
        BadRequestCase{"ProviderMissing", R"({"containerID":"c"})", "\"provider\" is required"},
        BadRequestCase{"ProviderWrongType", R"({"provider":5})",
                "\"provider\" must be a string, not a number"},
        BadRequestCase{"IfnameWrongType", R"({"provider":"p","ifname":true})", "\"ifname\""},
        BadRequestCase{"IpsNotArray", R"({"provider":"p","ips":"10.0.0.1"})", "\"ips\" must be an array"},
        BadRequestCase{"IpsItemWrongType", R"({"provider":"p","ips":["a",1]})", "\"ips[1]\""},
        BadRequestCase{"RoutesNotArray", R"({"provider":"p","routes":{}})", "\"routes\""},
        BadRequestCase{"RouteNotObject", R"({"provider":"p","routes":["x"]})", "\"routes[0]\""},
        BadRequestCase{"RouteGwWrongType", R"({"provider":"p","routes":[{"dst":"a"},{"gw":1}]})",
                "\"routes[1].gw\""}),
    [](const testing::TestParamInfo<BadRequestCase>& p) { return p.param.name; });

TEST(WireTest, CniReplyRejectsWrongTypesNamingTheField) {
  auto r = DecodeCniReply(R"({"ips":[{"address":"10.0.0.2/24","gateway":7}]})");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("\"ips[0].gateway\""), std::string::npos) << r.error().message;
  auto mac = DecodeCniReply(R"({"ips":[],"mac":[]})");
  ASSERT_FALSE(mac);
  EXPECT_NE(mac.error().message.find("\"mac\""), std::string::npos);
}

TEST(WireTest, GcRequestRequiresProviderAndAttachmentList) {
  auto no_list = DecodeGcRequest(R"({"provider":"p"})");
  ASSERT_FALSE(no_list);
  EXPECT_NE(no_list.error().message.find("validAttachments"), std::string::npos);
  auto no_provider = DecodeGcRequest(R"({"validAttachments":[]})");
  ASSERT_FALSE(no_provider);
  EXPECT_NE(no_provider.error().message.find("provider"), std::string::npos);
  auto bad_item = DecodeGcRequest(R"({"provider":"p","validAttachments":[{"containerID":1}]})");
  ASSERT_FALSE(bad_item);
  EXPECT_NE(bad_item.error().message.find("validAttachments[0].containerID"), std::string::npos);
}

struct StatusCase {
  Code code;
  int status;
};

class HttpStatusTest : public testing::TestWithParam<StatusCase> {};

TEST_P(HttpStatusTest, MapsBothWays) {
  EXPECT_EQ(HttpStatusFor(GetParam().code), GetParam().status);
  EXPECT_EQ(CodeForHttpStatus(GetParam().status), GetParam().code);
  EXPECT_EQ(CodeFromName(CodeName(GetParam().code)), GetParam().code);
}

INSTANTIATE_TEST_SUITE_P(
    Codes, HttpStatusTest,
    testing::Values(StatusCase{Code::kInvalidArgument, 400}, StatusCase{Code::kNotFound, 404},
                    StatusCase{Code::kConflict, 409}, StatusCase{Code::kExhausted, 507},
                    StatusCase{Code::kUnavailable, 503}, StatusCase{Code::kInternal, 500}));

TEST(WireTest, OtherHttpStatusesMapToTheNearestCode) {
  EXPECT_EQ(CodeForHttpStatus(502), Code::kUnavailable);
  EXPECT_EQ(CodeForHttpStatus(504), Code::kUnavailable);
  EXPECT_EQ(CodeForHttpStatus(429), Code::kUnavailable);
  EXPECT_EQ(CodeForHttpStatus(405), Code::kInvalidArgument);
  EXPECT_EQ(CodeForHttpStatus(200), Code::kInternal);
  EXPECT_EQ(CodeFromName("bogus"), std::nullopt);
}

TEST(WireTest, ErrorBodyRoundTrips) {
  Error e = Error::Conflict("10.0.0.5 is held by default/web-1 (net1)");
  Error back = DecodeWireError(409, EncodeWireError(e));
  EXPECT_EQ(back.code, Code::kConflict);
  EXPECT_EQ(back.message, e.message);
  EXPECT_EQ(EncodeWireError(Error::Exhausted("a \"b\"")),
            R"({"code":"exhausted","message":"a \"b\""})");
}

TEST(WireTest, UnreadableErrorBodyTakesCodeFromStatus) {
  Error e = DecodeWireError(503, "Service Unavailable");
  EXPECT_EQ(e.code, Code::kUnavailable);
  EXPECT_NE(e.message.find("HTTP 503"), std::string::npos);
  EXPECT_NE(e.message.find("Service Unavailable"), std::string::npos);
  Error unknown = DecodeWireError(500, R"({"code":"weird","message":"boom"})");
  EXPECT_EQ(unknown.code, Code::kInternal);
  EXPECT_EQ(unknown.message, "boom");
  EXPECT_EQ(DecodeWireError(500, "").code, Code::kInternal);
}

// Regression (wire_error_fuzz): the quoted body was copied byte for byte, so a proxy's
// invalid UTF-8, or a cut at 200 bytes inside a sequence, put invalid UTF-8 into the
// message and from there into the plugin's JSON output.
TEST(WireTest, UnreadableErrorBodyIsQuotedAsValidUtf8) {
  Error bad = DecodeWireError(502, "Bad Gat\x9b\x88" "ay");
  EXPECT_EQ(bad.code, Code::kUnavailable);
  EXPECT_NE(bad.message.find("Bad Gat??ay"), std::string::npos) << bad.message;
  EXPECT_TRUE(ParseJson(EncodeWireError(bad))) << bad.message;

  Error cut = DecodeWireError(500, std::string(199, 'a') + "\xc3\xa9");  // é at byte 199
  EXPECT_TRUE(ParseJson(EncodeWireError(cut))) << cut.message;
  EXPECT_NE(cut.message.find(std::string(199, 'a')), std::string::npos);
  EXPECT_EQ(cut.message.find('\xc3'), std::string::npos);

  Error kept = DecodeWireError(500, "caf\xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_NE(kept.message.find("caf\xc3\xa9 \xf0\x9f\x98\x80"), std::string::npos);
}

}  // namespace
}  // namespace sublease
