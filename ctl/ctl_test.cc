// subleasectl against a real SQLite file written by the daemon's own Store, and the
// pure parts (records, bars, verify's comparison).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "ctl/ctl.h"
#include "ctl/records.h"
#include "ctl/verify.h"
#include "daemon/allocator/subnet.h"
#include "daemon/store/store.h"

namespace sublease::ctl {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kT0 = 1700000000123;  // 2023-11-14 22:13:20.123 UTC

struct CtlRun {
  int rc;
  std::string out, err;
};

CtlRun Ctl(std::vector<std::string> args) {
  std::vector<const char*> argv{"subleasectl"};
  for (const auto& a : args) argv.push_back(a.c_str());
  CtlRun r{0, "", ""};
  r.rc = RunCtl(static_cast<int>(argv.size()), argv.data(), &r.out, &r.err);
  return r;
}

Lease PodLease(const std::string& subnet, const std::string& pod, const char* v4) {
  Lease l;
  l.subnet = subnet;
  l.owner = Owner{"default", pod, "uid-" + pod, "ctr-" + pod, "net1"};
  l.v4 = *IpAddr::Parse(v4);
  l.provider = "macvlan.default";
  l.state = LeaseState::kCommitted;
  return l;
}

// A database as the daemon leaves it: subnet "macvlan" (a /24, 253 usable) with web-0
// (10.0.0.9, committed), web-1 (10.0.0.10, committed) and old-pod (10.0.0.9 before,
// released), so history and numeric order have something to show.
class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ctl_test.XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    db_ = (dir_ / "sublease.db").string();
    auto store = Store::Open(db_);
    ASSERT_TRUE(store) << store.error().message;
    auto subnet = NormalizeSubnet(SubnetSpec{"macvlan", "macvlan.default", "10.0.0.0/24", "", {}, "", ""});
    ASSERT_TRUE(subnet);
    ASSERT_TRUE((*store)->UpsertSubnet(*subnet, kT0));
    ASSERT_TRUE((*store)->InsertLease(PodLease("macvlan", "old-pod", "10.0.0.9"), kT0));
    ASSERT_TRUE((*store)->ReleaseLease(PodLease("macvlan", "old-pod", "10.0.0.9").key(), kT0 + 1000));
    ASSERT_TRUE((*store)->InsertLease(PodLease("macvlan", "web-1", "10.0.0.10"), kT0 + 2000));
    ASSERT_TRUE((*store)->InsertLease(PodLease("macvlan", "web-0", "10.0.0.9"), kT0 + 3000));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
  std::string db_;
};

TEST_F(CtlTest, LeasesListsLiveLeasesInNumericAddressOrder) {
  CtlRun r = Ctl({"--db", db_, "leases"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto nine = r.out.find("10.0.0.9 "), ten = r.out.find("10.0.0.10 ");
  ASSERT_NE(nine, std::string::npos) << r.out;
  ASSERT_NE(ten, std::string::npos) << r.out;
  EXPECT_LT(nine, ten) << "10.0.0.9 sorts before 10.0.0.10";
  EXPECT_EQ(r.out.find("old-pod"), std::string::npos) << "released leases are hidden";
  EXPECT_EQ(r.out.rfind("SUBNET", 0), 0u) << "table header first: " << r.out;
}

TEST_F(CtlTest, LeasesFiltersByPodAddressAndSubnet) {
  CtlRun by_pod = Ctl({"--db", db_, "-o", "json", "leases", "--pod", "default/web-1"});
  ASSERT_EQ(by_pod.rc, 0) << by_pod.err;
  EXPECT_NE(by_pod.out.find("\"address\":\"10.0.0.10\""), std::string::npos) << by_pod.out;
  EXPECT_EQ(by_pod.out.find("web-0"), std::string::npos) << by_pod.out;
  CtlRun by_addr = Ctl({"--db", db_, "-o", "json", "leases", "--address", "10.0.0.9", "--all"});
  EXPECT_NE(by_addr.out.find("old-pod"), std::string::npos) << "--all includes released";
  EXPECT_NE(by_addr.out.find("web-0"), std::string::npos);
  CtlRun none = Ctl({"--db", db_, "leases", "--subnet", "nope"});
  EXPECT_EQ(none.rc, 0);
  EXPECT_NE(none.out.find("no live leases match"), std::string::npos) << none.out;
}

TEST_F(CtlTest, LeasesByNodeNeedsTheApiServer) {
  CtlRun r = Ctl({"--db", db_, "leases", "--node", "node-a"});
  EXPECT_EQ(r.rc, kExitError);
  EXPECT_NE(r.err.find("--kubeconfig"), std::string::npos) << r.err;
}

TEST_F(CtlTest, UsageShowsCountsAndABar) {
  CtlRun r = Ctl({"--db", db_, "usage"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("macvlan"), std::string::npos);
  EXPECT_NE(r.out.find("[#...................] 0.8%"), std::string::npos) << r.out;  // 2 of 253
  CtlRun y = Ctl({"--db", db_, "-o", "yaml", "usage"});
  ASSERT_EQ(y.rc, 0) << y.err;
  EXPECT_NE(y.out.find("kind: SubnetUsageList"), std::string::npos) << y.out;
  EXPECT_NE(y.out.find("used: 2"), std::string::npos) << y.out;
  EXPECT_NE(y.out.find("free: \"251\""), std::string::npos) << y.out;
}

TEST_F(CtlTest, HistoryShowsWhoHeldAnAddressNewestFirst) {
  CtlRun r = Ctl({"--db", db_, "-o", "json", "history", "10.0.0.9"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto web0 = r.out.find("default/web-0"), old = r.out.find("default/old-pod");
  ASSERT_NE(web0, std::string::npos) << r.out;
  ASSERT_NE(old, std::string::npos) << r.out;
  EXPECT_LT(web0, old) << "newest first";
  EXPECT_NE(r.out.find("\"event\":\"released\""), std::string::npos);
  CtlRun bad = Ctl({"--db", db_, "history", "not-an-ip"});
  EXPECT_EQ(bad.rc, kExitError);
}

TEST_F(CtlTest, SubnetsShowsTheSpec) {
  CtlRun r = Ctl({"--db", db_, "subnets"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("macvlan.default"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("10.0.0.0/24"), std::string::npos) << r.out;
}

TEST_F(CtlTest, AMissingDatabaseIsAnErrorThatSaysSo) {
  CtlRun r = Ctl({"--db", (dir_ / "absent.db").string(), "leases"});
  EXPECT_EQ(r.rc, kExitError);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "absent.db")) << "a reader never creates the file";
}

TEST_F(CtlTest, ReleaseRefusesWithoutAFilterAndFailsWithoutADaemon) {
  CtlRun all = Ctl({"--db", db_, "release"});
  EXPECT_EQ(all.rc, kExitError);
  EXPECT_NE(all.err.find("never releases everything"), std::string::npos) << all.err;
  CtlRun down = Ctl({"--db", db_, "release", "--address", "10.0.0.9", "--socket", (dir_ / "none.sock").string()});
  EXPECT_EQ(down.rc, kExitError);
  CtlRun after = Ctl({"--db", db_, "leases", "--address", "10.0.0.9"});
  EXPECT_NE(after.out.find("web-0"), std::string::npos) << "nothing written behind the daemon's back";
}

TEST_F(CtlTest, UnknownOutputFormatIsRefused) {
  CtlRun r = Ctl({"--db", db_, "-o", "xml", "leases"});
  EXPECT_EQ(r.rc, kExitError);
  EXPECT_NE(r.err.find("table, json or yaml"), std::string::npos) << r.err;
}

TEST(UsageBarTest, ShowsAnyUseAndOnlyFullIsFull) {
  EXPECT_EQ(UsageBar(0, 10), "[..........]");
  EXPECT_EQ(UsageBar(0.01, 10), "[#.........]");
  EXPECT_EQ(UsageBar(50, 10), "[#####.....]");
  EXPECT_EQ(UsageBar(99.99, 10), "[#########.]");
  EXPECT_EQ(UsageBar(100, 10), "[##########]");
}

TEST(RenderTest, JsonKeepsNumbersAndHiddenColumns) {
  RecordList list{"Thing", {{{"name", std::string("a")}, {"count", int64_t{3}}, {"secret", true, false}}}};
  EXPECT_EQ(Render(list, OutputFormat::kJson, ""),
            "{\"kind\":\"ThingList\",\"items\":[{\"name\":\"a\",\"count\":3,\"secret\":true}]}\n");
  std::string table = Render(list, OutputFormat::kTable, "");
  EXPECT_EQ(table, "NAME   COUNT\na      3\n");
  EXPECT_EQ(Render(RecordList{"Thing", {}}, OutputFormat::kTable, "none"), "none\n");
}

LeaseRow Local(const std::string& address, const std::string& pod, const std::string& state = "committed") {
  LeaseRow l;
  l.subnet = "s";
  l.address = address;
  l.pod_namespace = "default";
  l.pod_name = pod;
  l.ifname = "net1";
  l.state = state;
  return l;
}

ApiAllocation Api(const std::string& address, const std::string& pod, const std::string& node) {
  ApiAllocation a;
  a.subnet = "s";
  a.address = address;
  a.pod_namespace = "default";
  a.pod_name = pod;
  a.ifname = "net1";
  a.node = node;
  return a;
}

TEST(CompareTest, FindsMissingExtraAndMismatched) {
  std::vector<LeaseRow> local{Local("10.0.0.2", "a"), Local("10.0.0.3", "b"), Local("10.0.0.4", "c"),
                              Local("10.0.0.6", "p", "pending")};
  std::vector<ApiAllocation> api{Api("10.0.0.2", "a", "n1"), Api("10.0.0.3", "other", "n1"),
                                 Api("10.0.0.5", "d", "n1"), Api("10.0.0.7", "e", "n2"),
                                 Api("10.0.0.6", "p", "n1")};
  auto diffs = Compare(local, api, "n1");
  ASSERT_EQ(diffs.size(), 3u);
  EXPECT_EQ(diffs[0].kind, "mismatched");
  EXPECT_EQ(diffs[0].address, "10.0.0.3");
  EXPECT_EQ(diffs[1].kind, "extra");
  EXPECT_EQ(diffs[1].address, "10.0.0.4");
  EXPECT_EQ(diffs[2].kind, "missing");
  EXPECT_EQ(diffs[2].address, "10.0.0.5");
}

TEST(CompareTest, AnotherNodesAllocationAtMyAddressIsAMismatch) {
  auto diffs = Compare({Local("10.0.0.2", "a")}, {Api("10.0.0.2", "a", "n2")}, "n1");
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_EQ(diffs[0].kind, "mismatched");
  EXPECT_NE(diffs[0].api.find("n2"), std::string::npos);
}

// A claim's, a VM's or a reservation's allocation outlives its pods: no lease expected.
TEST(CompareTest, AnAllocationKeptBeyondItsPodsIsNotMissing) {
  ApiAllocation kept = Api("10.0.0.5", "web", "n1");
  kept.kept_for = "reserved IP web.default.net.default";
  EXPECT_TRUE(Compare({}, {kept}, "n1").empty());
  kept.kept_for.clear();
  ASSERT_EQ(Compare({}, {kept}, "n1").size(), 1u);
}

TEST(CompareTest, AgreementIsClean) {
  EXPECT_TRUE(Compare({Local("10.0.0.2", "a")}, {Api("10.0.0.2", "a", "n1")}, "n1").empty());
}

}  // namespace
}  // namespace sublease::ctl
