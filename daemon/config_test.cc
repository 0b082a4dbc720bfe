#include "daemon/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

namespace sublease {
namespace {

Result<Config> Parse(std::vector<const char*> args, bool* exit_now = nullptr, std::string* out = nullptr) {
  bool e = false;
  std::string o;
  args.insert(args.begin(), "subleased");
  return ParseConfig(static_cast<int>(args.size()), args.data(), exit_now ? exit_now : &e, out ? out : &o);
}

TEST(ConfigTest, StandaloneFlagsAndRepeatedSockets) {
  auto c = Parse({"--standalone", "--subnets", "/etc/s.yaml", "--socket", "/a.sock", "--socket", "/b.sock", "--db", "/x.db"});
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE(c->standalone);
  EXPECT_EQ(c->subnets, "/etc/s.yaml");
  EXPECT_EQ(c->sockets, (std::vector<std::string>{"/a.sock", "/b.sock"}));
  EXPECT_EQ(c->db, "/x.db");
}

TEST(ConfigTest, ReservedIpsAreOnUnlessTurnedOffByFlagOrFile) {
  auto on = Parse({"--kubeconfig", "/k", "--node-name", "n"});
  ASSERT_TRUE(on) << on.error().message;
  EXPECT_TRUE(on->reserved_ips);
  auto off = Parse({"--kubeconfig", "/k", "--node-name", "n", "--reserved-ips", "false"});
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_FALSE(off->reserved_ips);
  auto path = std::filesystem::temp_directory_path() / ("subleased-resv-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "kubeconfig: /k\nnode-name: n\nreserved-ips: false\n";
  auto file = Parse({"--config", path.c_str()});
  std::filesystem::remove(path);
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_FALSE(file->reserved_ips);
}

TEST(ConfigTest, TheAheadWindowIsLearnedUpTo500MsUnlessTurnedOff) {
  auto on = Parse({"--kubeconfig", "/k", "--node-name", "n"});
  ASSERT_TRUE(on) << on.error().message;
  EXPECT_TRUE(on->learn_ahead_window);
  EXPECT_EQ(on->ahead_write_window_ms, 500);
  auto off = Parse({"--kubeconfig", "/k", "--node-name", "n", "--learn-ahead-window", "false",
                    "--ahead-write-window-ms", "150"});
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_FALSE(off->learn_ahead_window);
  EXPECT_EQ(off->ahead_write_window_ms, 150);
  auto path = std::filesystem::temp_directory_path() / ("subleased-ahead-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "kubeconfig: /k\nnode-name: n\nlearn-ahead-window: false\n";
  auto file = Parse({"--config", path.c_str()});
  std::filesystem::remove(path);
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_FALSE(file->learn_ahead_window);
}

TEST(ConfigTest, SparesAreEightByDefaultCanBeTurnedOffAndAreBounded) {
  auto fallback = Parse({"--kubeconfig", "/k", "--node-name", "n"});
  ASSERT_TRUE(fallback) << fallback.error().message;
  EXPECT_EQ(fallback->spare_addresses, 8);
  auto off = Parse({"--kubeconfig", "/k", "--node-name", "n", "--spare-addresses", "0"});
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_EQ(off->spare_addresses, 0);
  for (const char* bad : {"-1", "65"}) {
    auto refused = Parse({"--kubeconfig", "/k", "--node-name", "n", "--spare-addresses", bad});
    ASSERT_FALSE(refused) << bad;
    EXPECT_NE(refused.error().message.find("--spare-addresses must be 0 to 64"), std::string::npos)
        << refused.error().message;
  }
  auto path = std::filesystem::temp_directory_path() / ("subleased-spares-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "kubeconfig: /k\nnode-name: n\nspare-addresses: 4\n";
  auto file = Parse({"--config", path.c_str()});
  std::filesystem::remove(path);
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->spare_addresses, 4);
}

TEST(ConfigTest, BorrowBackoffIsTenMsByDefaultAndReadFromTheFile) {
  auto fallback = Parse({"--kubeconfig", "/k", "--node-name", "n"});
  ASSERT_TRUE(fallback) << fallback.error().message;
  EXPECT_EQ(fallback->borrow_backoff_ms, 10);
  auto path = std::filesystem::temp_directory_path() / ("subleased-backoff-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "kubeconfig: /k\nnode-name: n\nborrow-backoff-ms: 0\n";
  auto file = Parse({"--config", path.c_str()});
  std::filesystem::remove(path);
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->borrow_backoff_ms, 0);
}

TEST(ConfigTest, YamlFileIsReadAndFlagsOverrideIt) {
  auto path = std::filesystem::temp_directory_path() / ("subleased-config-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "standalone: true\nsubnets: /from/file.yaml\ndb: /file.db\nsocket: [/f1.sock, /f2.sock]\nmax-connections: 9\n";
  auto c = Parse({"--config", path.c_str(), "--db", "/flag.db"});
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->subnets, "/from/file.yaml");
  EXPECT_EQ(c->db, "/flag.db");
  EXPECT_EQ(c->sockets.size(), 2u);
  EXPECT_EQ(c->max_connections, 9u);
  std::ofstream(path) << "standalone: true\nsubnetz: /typo\n";
  auto bad = Parse({"--config", path.c_str()});
  std::filesystem::remove(path);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("unknown option 'subnetz'"), std::string::npos);
}

TEST(ConfigTest, BadInputGivesAnActionableError) {
  struct Case { std::vector<const char*> args; const char* expect; };
  for (const auto& c : std::vector<Case>{
           {{"--standalone"}, "--subnets"},
           {{"--subnets", "x", "--node-name", "n1"}, "--standalone"},
           {{"--standalone", "--subnets", "x", "--log-level", "loud"}, "--log-level loud"},
           {{"--standalone", "--subnets", "x", "--max-connections", "abc"}, "--help"},
           {{"--no-such-flag"}, "--help"},
           {{"--node-name", "n1", "--leader-candidates", "some"}, "--leader-candidates must be all or labelled"},
           {{"--node-name", "n1", "--ahead-write-window-ms", "60000"}, "--ahead-write-window-ms is at most 10000"},
           {{"--node-name", "n1", "--status-ms-per-node", "-1"}, "--status-ms-per-node and --borrow-backoff-ms must not be negative"},
           {{"--node-name", "n1", "--borrow-backoff-ms", "-5"}, "--borrow-backoff-ms must not be negative"},
           {{"--node-name", "n1", "--borrow-backoff-ms", "500"}, "--borrow-backoff-ms is at most 200 (now 500)"},
           {{"--node-name", "n1", "--retry-interval-ms", "0"}, "--retry-interval-ms must be at least 100"},
           {{"--node-name", "n1", "--retry-interval-ms", "9000", "--max-retry-interval-ms", "2000"},
            "--max-retry-interval-ms at least --retry-interval-ms (now 9000 and 2000)"},
       }) {
    auto r = Parse(c.args);
    ASSERT_FALSE(r) << c.expect;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << r.error().message;
  }
}

TEST(ConfigTest, HelpDocumentsEveryOption) {
  bool exit_now = false;
  std::string out;
  auto c = Parse({"--help"}, &exit_now, &out);
  ASSERT_TRUE(c);
  EXPECT_TRUE(exit_now);
  for (const char* opt : {"--config", "--standalone", "--subnets", "--socket", "--socket-group", "--db",
                          "--metrics-address", "--kubeconfig", "--node-name", "--log-level",
                          "--max-request-bytes", "--idle-timeout-ms", "--max-connections",
                          "--ahead-write-window-ms", "--status-ms-per-node", "--leader-candidates",
                          "--retry-interval-ms", "--max-retry-interval-ms", "--learn-ahead-window"}) {
    EXPECT_NE(out.find(opt), std::string::npos) << opt;
  }
}

}  // namespace
}  // namespace sublease
