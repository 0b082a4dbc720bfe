#include "sync/ip_reservation.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

std::string IpJson(const std::string& labels, const std::string& spec) {
  return R"({"apiVersion":"kubeovn.io/v1","kind":"IP","metadata":{"name":"web.default.macvlan.default",)"
         R"("resourceVersion":"7")" +
         (labels.empty() ? std::string() : ",\"labels\":" + labels) + "},\"spec\":" + spec + "}";
}

TEST(IpReservationTest, DecodesSubnetPodAndAddresses) {
  auto r = DecodeIpReservation(IpJson(
      R"({"ovn.kubernetes.io/ip_reserved":"true"})",
      R"({"subnet":"macvlan","podName":"web","namespace":"default","v4IpAddress":"10.0.0.7","v6IpAddress":"FD00::7"})"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->name, "web.default.macvlan.default");
  EXPECT_EQ(r->resource_version, "7");
  EXPECT_EQ(r->subnet, "macvlan");
  EXPECT_EQ(r->pod_name, "web");
  EXPECT_EQ(r->namespace_name, "default");
  EXPECT_EQ(r->v4, "10.0.0.7");
  EXPECT_EQ(r->v6, "fd00::7");  // one spelling
  EXPECT_TRUE(r->labelled);
  EXPECT_EQ(r->addresses(), (std::vector<std::string>{"10.0.0.7", "fd00::7"}));
}

TEST(IpReservationTest, WithoutAddressesAsksForOne) {
  auto r = DecodeIpReservation(
      IpJson("", R"({"subnet":"macvlan","podName":"web","namespace":"default"})"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->addresses().empty());
  EXPECT_FALSE(r->labelled);
}

TEST(IpReservationTest, ReadsTheOlderIpAddressField) {
  auto r = DecodeIpReservation(IpJson(
      "",
      R"({"subnet":"s","podName":"web","namespace":"default","ipAddress":"10.0.0.9,fd00::9"})"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->v4, "10.0.0.9");
  EXPECT_EQ(r->v6, "fd00::9");
}

TEST(IpReservationTest, RefusesWhatCannotBeHonoured) {
  struct Case {
    const char* spec;
    const char* says;
  };
  for (const Case& c : {
           Case{R"({"podName":"web","namespace":"default"})", "spec.subnet"},
           Case{R"({"subnet":"s","namespace":"default"})", "spec.podName"},
           Case{R"({"subnet":"s","podName":"web"})", "spec.namespace"},
           Case{R"({"subnet":"s","podName":"web","namespace":"default","v4IpAddress":"fd00::1"})",
                "is not an IPv4 address"},
           Case{R"({"subnet":"s","podName":"web","namespace":"default","v6IpAddress":"10.0.0.1"})",
                "is not an IPv6 address"},
           Case{R"({"subnet":"s","podName":"web","namespace":"default","v4IpAddress":"10.0.0"})",
                "is not an IPv4 address"},
           Case{R"({"subnet":"s","podName":"web","namespace":"default","ipAddress":"x"})",
                "spec.ipAddress"},
           Case{R"({"subnet":5,"podName":"web","namespace":"default"})", "must be a string"},
       }) {
    auto r = DecodeIpReservation(IpJson("", c.spec));
    ASSERT_FALSE(r) << c.spec;
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().code, Code::kInvalidArgument);
  }
}

TEST(IpReservationTest, ReservationIsLabelledTrueOrUnlabelled) {
  KubeObject o;
  EXPECT_TRUE(IsReservation(o));  // a user's new object: the leader labels it
  o.labels["ovn.kubernetes.io/ip_reserved"] = "true";
  EXPECT_TRUE(IsReservation(o));
  o.labels["ovn.kubernetes.io/ip_reserved"] = "false";  // a record of an allocation
  EXPECT_FALSE(IsReservation(o));
}

TEST(IpReservationTest, FillPatchCarriesAddressesLabelsAndPrecondition) {
  IpReservation r;
  r.name = "web.default.macvlan.default";
  r.resource_version = "12";
  r.subnet = "macvlan";
  std::string patch = EncodeReservationFill(r, "10.0.0.5", "");
  EXPECT_NE(patch.find(R"("resourceVersion":"12")"), std::string::npos) << patch;
  EXPECT_NE(patch.find(R"("ovn.kubernetes.io/ip_reserved":"true")"), std::string::npos) << patch;
  EXPECT_NE(patch.find(R"("macvlan":"")"), std::string::npos) << patch;
  EXPECT_NE(patch.find(R"("ipAddress":"10.0.0.5")"), std::string::npos) << patch;
  EXPECT_NE(patch.find(R"("v4IpAddress":"10.0.0.5")"), std::string::npos) << patch;
  EXPECT_NE(patch.find(R"("v6IpAddress":"")"), std::string::npos) << patch;
}

}  // namespace
}  // namespace sublease
