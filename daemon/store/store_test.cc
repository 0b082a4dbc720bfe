#include "daemon/store/store.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "schema/migrations.h"

namespace sublease {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kT0 = 1700000000123;  // 2023-11-14 22:13:20.123 UTC

Subnet MakeSubnet(const std::string& name, const std::string& cidr,
                  std::vector<std::string> exclude = {}) {
  auto s = NormalizeSubnet(SubnetSpec{name, "macvlan.default", cidr, "", std::move(exclude), "", ""});
  EXPECT_TRUE(s) << s.error().message;
  return s ? *s : Subnet{};
}

// Appends rather than `"p" + std::to_string(n)`, which trips GCC 12's false -Wrestrict
// (GCC bug 105329) at -O3.
std::string Name(const char* prefix, int n) {
  std::string name(prefix);
  name += std::to_string(n);
  return name;
}

Lease PodLease(const std::string& subnet, const std::string& pod, const char* v4,
               const char* v6 = nullptr, const std::string& ifname = "net1") {
  Lease l;
  l.subnet = subnet;
  l.owner = Owner{"default", pod, "uid-" + pod, "ctr-" + pod, ifname};
  if (v4 != nullptr) l.v4 = *IpAddr::Parse(v4);
  if (v6 != nullptr) l.v6 = *IpAddr::Parse(v6);
  l.provider = "macvlan.default";
  return l;
}

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "store_test.XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::unique_ptr<Store> MustOpen(const std::string& path) {
  auto s = Store::Open(path);
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

// A store on :memory: with one IPv4 subnet "a" (10.0.0.0/24) and one dual-stack "d".
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = MustOpen(":memory:");
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
    ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("d", "10.1.0.0/24,fd00::/64"), kT0));
  }
  std::unique_ptr<Store> store_;
};

// The same on a file, with a raw SQLite connection for checks at the SQL level.
class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("sublease.db");
    store_ = MustOpen(path_);
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
    ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("d", "10.1.0.0/24,fd00::/64"), kT0));
    raw_ = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE);
    raw_->exec("PRAGMA foreign_keys = ON");
  }
  std::vector<std::string> Column(const std::string& sql) {
    std::vector<std::string> out;
    SQLite::Statement q(*raw_, sql);
    while (q.executeStep()) out.push_back(q.getColumn(0).getString());
    return out;
  }

  TempDir dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SQLite::Database> raw_;
};

void SetUserVersion(const std::string& path, int version) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const std::string sql = "PRAGMA user_version = " + std::to_string(version);
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
}

// ---- Migrations and opening ----

TEST(MigrationTest, VersionsStartAtOneWithoutGaps) {
  const auto& ms = Migrations();
  ASSERT_FALSE(ms.empty());
  for (size_t i = 0; i < ms.size(); ++i) {
    EXPECT_EQ(ms[i].version, static_cast<int>(i + 1)) << ms[i].name;
    EXPECT_FALSE(ms[i].sql.empty()) << ms[i].name;
  }
  EXPECT_EQ(Store::LatestSchemaVersion(), ms.back().version);
}

TEST(MigrationTest, AppliesOnceAndReopenKeepsData) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(*store->SchemaVersion(), Store::LatestSchemaVersion());
    ASSERT_TRUE(store->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
    ASSERT_TRUE(store->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));
  }
  int objects_before = 0;
  {
    SQLite::Database raw(path);
    objects_before = raw.execAndGet("SELECT count(*) FROM sqlite_master").getInt();
    EXPECT_EQ(raw.execAndGet("PRAGMA user_version").getInt(), Store::LatestSchemaVersion());
  }
  auto again = MustOpen(path);  // a second migration run would fail: CREATE TABLE exists
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(*again->SchemaVersion(), Store::LatestSchemaVersion());
  EXPECT_EQ(again->LoadLiveLeases()->size(), 1u);
  SQLite::Database raw(path);
  EXPECT_EQ(raw.execAndGet("SELECT count(*) FROM sqlite_master").getInt(), objects_before);
}

// 0002 rebuilds leases and lease_history: a database written at version 1 keeps every
// row (ids too), and the rewritten CHECKs refuse what the old ones refused.
TEST(MigrationTest, Version1DatabaseKeepsItsLeasesAndHistory) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("PRAGMA foreign_keys = ON");
    raw.exec(std::string(Migrations()[0].sql));
    raw.exec("PRAGMA user_version = 1");
    raw.exec(R"(
      INSERT INTO subnets (name, provider, protocol, cidr_v4, spec_cidr_block, created_ms, updated_ms)
      VALUES ('a', 'macvlan.default', 'IPv4', '10.0.0.0/24', '10.0.0.0/24', 1, 1);
      INSERT INTO leases (id, subnet_id, family, address, address_text, state, owner, ifname,
                          pod_namespace, pod_name, created_ms, committed_ms, updated_ms)
      VALUES (7, 1, 4, x'0a000005', '10.0.0.5', 'committed', 'pod:default/p', 'net1',
              'default', 'p', 1, 1, 1),
             (9, 1, 4, x'0a000006', '10.0.0.6', 'committed', 'pod:default/q', 'net1',
              'default', 'q', 2, 2, 2);
      UPDATE leases SET state = 'released', released_ms = 3, updated_ms = 3 WHERE id = 9;)");
  }
  auto store = MustOpen(path);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->SchemaVersion(), Store::LatestSchemaVersion());
  auto live = store->LoadLiveLeases();
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ(live->front().owner.pod_name, "p");
  EXPECT_EQ(store->History("10.0.0.6", 10)->size(), 3u);  // allocated, committed, released
  // Still the same invariants: the address of the live lease is taken, the state moves
  // forward only, and the history keeps counting.
  EXPECT_EQ(store->InsertLease(PodLease("a", "r", "10.0.0.5"), kT0).error().code, Code::kConflict);
  ASSERT_TRUE(store->ReleaseLease(PodLease("a", "p", "10.0.0.5").key(), kT0));
  EXPECT_EQ(store->History("10.0.0.5", 10)->size(), 3u);
  store.reset();
  SQLite::Database raw(path, SQLite::OPEN_READWRITE);
  EXPECT_EQ(raw.execAndGet("SELECT group_concat(id) FROM (SELECT id FROM leases ORDER BY id)").getString(), "7,9");
  EXPECT_THROW(raw.exec("UPDATE leases SET state = 'gone' WHERE id = 7"), SQLite::Exception);
  EXPECT_THROW(raw.exec(R"(INSERT INTO lease_history (at_ms, event, lease_id, subnet, family, address,
                             address_text, owner, pod_namespace, pod_name, pod_uid, container_id, ifname)
                           VALUES (1, 'borrowed', 7, 'a', 4, x'0a000005', '10.0.0.5', 'o', '', '', '', '', ''))"),
               SQLite::Exception);
  EXPECT_EQ(raw.execAndGet("SELECT count(*) FROM leases_view").getInt(), 2);
  EXPECT_EQ(raw.execAndGet("SELECT used FROM subnet_usage").getInt(), 0);
  EXPECT_EQ(raw.execAndGet("SELECT count(*) FROM history_view").getInt(), 6);
}

TEST(OpenTest, RefusesSchemaFromNewerSublease) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  ASSERT_NE(MustOpen(path), nullptr);
  const int newer = Store::LatestSchemaVersion() + 6;
  SetUserVersion(path, newer);
  auto s = Store::Open(path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Code::kInternal);
  EXPECT_NE(s.error().message.find(path), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("newer sublease (schema " + std::to_string(newer) +
                                   ", this binary knows up to " +
                                   std::to_string(Store::LatestSchemaVersion()) + ")"),
            std::string::npos)
      << s.error().message;
  EXPECT_FALSE(Store::IsCorruption(s.error()));  // never move a newer database aside
  EXPECT_FALSE(Store::OpenReadOnly(path));
  // Refusal changed nothing.
  SQLite::Database raw(path);
  EXPECT_EQ(raw.execAndGet("PRAGMA user_version").getInt(), newer);
}

TEST(OpenTest, GarbageFileIsReportedCorrupt) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 4096; ++i) f.put(static_cast<char>((i * 131 + 7) & 0xff));
  }
  auto s = Store::Open(path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Code::kInternal);
  EXPECT_TRUE(Store::IsCorruption(s.error())) << s.error().message;
  EXPECT_NE(s.error().message.find(path), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("move it aside"), std::string::npos) << s.error().message;
}

TEST(OpenTest, DamagedPagesAreReportedCorrupt) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->UpsertSubnet(MakeSubnet("a", "10.0.0.0/16"), kT0));
    auto tx = store->Begin();
    ASSERT_TRUE(tx);
    for (int i = 0; i < 2000; ++i) {
      const std::string ip = "10.0." + std::to_string(2 + i / 250) + "." + std::to_string(1 + i % 250);
      ASSERT_TRUE(store->InsertLease(PodLease("a", Name("p", i), ip.c_str()), kT0));
    }
    ASSERT_TRUE(tx->Commit());
  }  // closing the last connection checkpoints the WAL into the file
  ASSERT_FALSE(fs::exists(path + "-wal"));
  const auto size = fs::file_size(path);
  ASSERT_GT(size, 40u * 4096u);
  {
    // Scribble over the middle pages, leaving the header page intact.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    for (uint64_t off = 8 * 4096; off + 4096 < size; off += 3 * 4096) {
      f.seekp(static_cast<std::streamoff>(off + 100));
      for (int i = 0; i < 512; ++i) f.put(static_cast<char>(0xA5 ^ i));
    }
  }
  auto s = Store::Open(path);
  ASSERT_FALSE(s);
  EXPECT_TRUE(Store::IsCorruption(s.error())) << s.error().message;
}

TEST(OpenTest, UnwritableLocationIsAClearError) {
  // Not even root can create files in /proc.
  const std::string path = "/proc/sublease-store-test/sublease.db";
  auto s = Store::Open(path);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Code::kInternal);
  EXPECT_FALSE(Store::IsCorruption(s.error()));
  EXPECT_NE(s.error().message.find("cannot open database " + path), std::string::npos)
      << s.error().message;
  EXPECT_NE(s.error().message.find("/proc/sublease-store-test does not exist"), std::string::npos)
      << s.error().message;
}

// Runs the open in a child process as an unprivileged user (uid/gid 65534 when the
// test runs as root, which writes through directory permissions), so the test runs
// under CI's root as well as for a developer.
TEST(OpenTest, ReadOnlyDirectoryIsAClearError) {
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  const std::string sub = dir.File("ro");
  fs::create_directory(sub);
  fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                           fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(3);
    auto s = Store::Open(sub + "/sublease.db");
    if (s) _exit(1);
    _exit(s.error().message.find("not writable") != std::string::npos ? 0 : 2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  fs::permissions(sub, fs::perms::owner_all);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: opened a read-only location; 2: error without 'not writable'; 3: setuid failed";
}

TEST(OpenTest, FileDatabaseUsesWal) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto store = MustOpen(path);
  ASSERT_NE(store, nullptr);
  SQLite::Database raw(path);
  EXPECT_EQ(raw.execAndGet("PRAGMA journal_mode").getString(), "wal");
}

TEST(OpenTest, BusyWriterGivesUnavailable) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto a = MustOpen(path);
  ASSERT_NE(a, nullptr);
  auto b = Store::Open(path, StoreOptions{.busy_timeout_ms = 50, .sync_every_commit = false});
  ASSERT_TRUE(b) << b.error().message;
  auto tx = a->Begin();
  ASSERT_TRUE(tx);
  auto put = (*b)->PutSyncState("k", "v", kT0);
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, Code::kUnavailable) << put.error().message;
  EXPECT_NE(put.error().message.find("locked"), std::string::npos) << put.error().message;
}

// ---- Subnets ----

TEST_F(FileStoreTest, SubnetSpecRoundTripsAndExclusionsAreNormalised) {
  Subnet s = MakeSubnet("x", "172.17.0.0/16", {"172.17.0.0..172.17.0.10", "172.17.9.9"});
  s.spec.gateway = "";
  ASSERT_TRUE(store_->UpsertSubnet(s, kT0));
  EXPECT_EQ(Column("SELECT first_text || '-' || last_text FROM subnet_exclusions e "
                   "JOIN subnets s ON s.id = e.subnet_id WHERE s.name = 'x' ORDER BY first"),
            (std::vector<std::string>{"172.17.0.1-172.17.0.10", "172.17.9.9-172.17.9.9"}));

  // An update replaces the exclusions and keeps the row (leases point at its id).
  const auto id_before = Column("SELECT id FROM subnets WHERE name = 'x'");
  s = MakeSubnet("x", "172.17.0.0/16", {"172.17.1.1"});
  ASSERT_TRUE(store_->UpsertSubnet(s, kT0 + 1));
  EXPECT_EQ(Column("SELECT id FROM subnets WHERE name = 'x'"), id_before);
  EXPECT_EQ(Column("SELECT first_text FROM subnet_exclusions e JOIN subnets s "
                   "ON s.id = e.subnet_id WHERE s.name = 'x' ORDER BY first"),
            (std::vector<std::string>{"172.17.0.1", "172.17.1.1"}));  // gateway + item

  auto specs = store_->LoadSubnets();
  ASSERT_TRUE(specs) << specs.error().message;
  ASSERT_EQ(specs->size(), 3u);
  const SubnetSpec& x = (*specs)[2];
  EXPECT_EQ(x.name, "x");
  EXPECT_EQ(x.provider, "macvlan.default");
  EXPECT_EQ(x.cidr_block, "172.17.0.0/16");
  EXPECT_EQ(x.exclude_ips, std::vector<std::string>{"172.17.1.1"});
  EXPECT_TRUE((*specs)[0].exclude_ips.empty());
}

TEST_F(FileStoreTest, DeleteSubnetRefusesLiveLeasesThenCascadesButKeepsHistory) {
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));
  auto del = store_->DeleteSubnet("a");
  ASSERT_FALSE(del);
  EXPECT_EQ(del.error().code, Code::kConflict);
  EXPECT_NE(del.error().message.find("1 live lease"), std::string::npos) << del.error().message;

  ASSERT_TRUE(store_->ReleaseLease(PodLease("a", "p", "10.0.0.5").key(), kT0 + 1));
  ASSERT_TRUE(store_->DeleteSubnet("a"));
  EXPECT_EQ(Column("SELECT count(*) FROM leases"), std::vector<std::string>{"0"});
  EXPECT_EQ(Column("SELECT count(*) FROM subnet_exclusions e WHERE NOT EXISTS "
                   "(SELECT 1 FROM subnets s WHERE s.id = e.subnet_id)"),
            std::vector<std::string>{"0"});
  EXPECT_EQ(store_->History("10.0.0.5", 10)->size(), 2u);
  EXPECT_EQ(store_->DeleteSubnet("a").error().code, Code::kNotFound);
}

// ---- Leases ----

TEST_F(StoreTest, SecondLiveLeaseOnAnAddressIsAConflictNamingTheHolder) {
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "first", "10.0.0.5"), kT0));
  auto again = store_->InsertLease(PodLease("a", "second", "10.0.0.5"), kT0 + 1);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Code::kConflict);
  EXPECT_NE(again.error().message.find("10.0.0.5"), std::string::npos) << again.error().message;
  EXPECT_NE(again.error().message.find("pod default/first (container ctr-first, net1)"),
            std::string::npos)
      << again.error().message;
  // The same address in another subnet is a different address.
  ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("b", "10.0.0.0/24"), kT0));
  EXPECT_TRUE(store_->InsertLease(PodLease("b", "second", "10.0.0.5"), kT0 + 1));
}

TEST_F(FileStoreTest, UniqueIndexRefusesSecondLiveLeaseEvenViaRawSql) {
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "first", "10.0.0.5"), kT0));
  const char* insert =
      "INSERT INTO leases (subnet_id, family, address, address_text, state, owner, ifname, "
      "created_ms, updated_ms) SELECT id, 4, x'0a000005', '10.0.0.5', 'pending', 'pod:x/y', "
      "'net1', 0, 0 FROM subnets WHERE name = 'a'";
  try {
    raw_->exec(insert);
    FAIL() << "raw insert of a second live lease succeeded";
  } catch (const SQLite::Exception& e) {
    EXPECT_EQ(e.getExtendedErrorCode(), SQLITE_CONSTRAINT_UNIQUE) << e.what();
  }
  EXPECT_EQ(Column("SELECT count(*) FROM leases"), std::vector<std::string>{"1"});
}

TEST_F(StoreTest, ReleasedAddressCanBeLeasedAgain) {
  const Lease first = PodLease("a", "first", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(first, kT0));
  ASSERT_TRUE(store_->SetLeaseState(first.key(), LeaseState::kCommitted, kT0 + 1));
  ASSERT_TRUE(store_->ReleaseLease(first.key(), kT0 + 2));
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "second", "10.0.0.5"), kT0 + 3));
  // And the first attachment may lease again too.
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "first", "10.0.0.6"), kT0 + 4));
  EXPECT_EQ(store_->LoadLiveLeases()->size(), 2u);
}

TEST_F(StoreTest, AttachmentHoldsOneLiveLeasePerFamily) {
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));
  auto again = store_->InsertLease(PodLease("a", "p", "10.0.0.6"), kT0);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Code::kConflict);
  EXPECT_NE(again.error().message.find("a/pod:default/p/net1 already holds 10.0.0.5"),
            std::string::npos)
      << again.error().message;
  // Another interface of the same pod is another attachment.
  EXPECT_TRUE(store_->InsertLease(PodLease("a", "p", "10.0.0.6", nullptr, "net2"), kT0));
}

TEST_F(StoreTest, DualStackLeaseRoundTripsAsOneLease) {
  Lease dual = PodLease("d", "web-0", "10.1.0.7", "fd00::7");
  dual.sticky = true;
  dual.mac = "02:00:00:00:00:07";
  ASSERT_TRUE(store_->InsertLease(dual, kT0));
  ASSERT_TRUE(store_->SetLeaseState(dual.key(), LeaseState::kCommitted, kT0 + 1));
  Lease by_container;
  by_container.subnet = "a";
  by_container.owner = Owner{"", "", "", "c9", "eth1"};
  by_container.v4 = *IpAddr::Parse("10.0.0.9");
  ASSERT_TRUE(store_->InsertLease(by_container, kT0));

  auto leases = store_->LoadLiveLeases();
  ASSERT_TRUE(leases) << leases.error().message;
  ASSERT_EQ(leases->size(), 2u);
  const Lease& c = (*leases)[0];  // "container:c9" sorts before "pod:..."
  EXPECT_EQ(c.key(), by_container.key());
  EXPECT_EQ(c.v4, by_container.v4);
  EXPECT_FALSE(c.v6);
  EXPECT_EQ(c.state, LeaseState::kPending);
  const Lease& d = (*leases)[1];
  EXPECT_EQ(d.key(), dual.key());
  EXPECT_EQ(d.v4, dual.v4);
  EXPECT_EQ(d.v6, dual.v6);
  EXPECT_EQ(d.state, LeaseState::kCommitted);
  EXPECT_EQ(d.owner.pod_uid, "uid-web-0");
  EXPECT_EQ(d.owner.container_id, "ctr-web-0");
  EXPECT_TRUE(d.sticky);
  EXPECT_EQ(d.mac, dual.mac);
  EXPECT_EQ(d.provider, "macvlan.default");
}

TEST_F(StoreTest, ForEachLiveLeaseHandsOverWholeLeasesAndStopsAtTheFirstError) {
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "a", "10.1.0.1", "fd00::1"), kT0));
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "b", "10.1.0.2", "fd00::2"), kT0));
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "c", "10.1.0.3"), kT0));
  std::vector<Lease> seen;
  auto all = store_->ForEachLiveLease([&](Lease l) -> Result<void> {
    seen.push_back(std::move(l));
    return Ok();
  });
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(seen.size(), 3u);  // dual-stack rows merged into one lease each
  EXPECT_EQ(seen[0].owner.pod_name, "a");
  EXPECT_TRUE(seen[0].v4 && seen[0].v6);
  EXPECT_TRUE(seen[1].v4 && seen[1].v6);
  EXPECT_TRUE(seen[2].v4 && !seen[2].v6);
  EXPECT_EQ(*store_->LoadLiveLeases(), seen);

  size_t calls = 0;
  auto stopped = store_->ForEachLiveLease([&](Lease l) -> Result<void> {
    ++calls;
    if (l.owner.pod_name == "b") return Fail(Error::Conflict("refused " + l.owner.pod_name));
    return Ok();
  });
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().code, Code::kConflict);
  EXPECT_EQ(stopped.error().message, "refused b");
  EXPECT_EQ(calls, 2u);
}

TEST_F(StoreTest, DualStackInsertIsAllOrNothing) {
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "holder", nullptr, "fd00::7"), kT0));
  // Alone: the IPv4 row of a lease whose IPv6 address is taken is not left behind.
  auto dual = store_->InsertLease(PodLease("d", "p", "10.1.0.7", "fd00::7"), kT0);
  ASSERT_FALSE(dual);
  EXPECT_EQ(dual.error().code, Code::kConflict);
  EXPECT_EQ(store_->LoadLiveLeases()->size(), 1u);
  // Inside a transaction: the failed call is undone, the caller's earlier work is kept.
  {
    auto tx = store_->Begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(store_->InsertLease(PodLease("a", "early", "10.0.0.2"), kT0));
    ASSERT_FALSE(store_->InsertLease(PodLease("d", "p", "10.1.0.7", "fd00::7"), kT0));
    ASSERT_TRUE(tx->Commit());
  }
  auto leases = store_->LoadLiveLeases();
  ASSERT_EQ(leases->size(), 2u);
  EXPECT_EQ(store_->History("10.1.0.7", 10)->size(), 0u);
}

// One-row writes join a transaction without a savepoint: a failing statement must still
// leave nothing of its own (no lease row, no history row) and keep the earlier work.
TEST_F(StoreTest, FailedOneRowWritesInsideATransactionLeaveNothingOfTheirOwn) {
  {
    auto tx = store_->Begin();
    ASSERT_TRUE(tx);
    ASSERT_TRUE(store_->InsertLease(PodLease("a", "early", "10.0.0.2"), kT0));
    // The address is held: conflict (unique index leases_live_address).
    auto taken = store_->InsertLease(PodLease("a", "other", "10.0.0.2"), kT0 + 1);
    ASSERT_FALSE(taken);
    EXPECT_EQ(taken.error().code, Code::kConflict);
    // The attachment holds a lease: conflict (unique index leases_live_attachment).
    auto twice = store_->InsertLease(PodLease("a", "early", "10.0.0.3"), kT0 + 1);
    ASSERT_FALSE(twice);
    EXPECT_EQ(twice.error().code, Code::kConflict);
    // Nothing to release.
    EXPECT_EQ(store_->ReleaseLease(PodLease("a", "nobody", "10.0.0.9").key(), kT0).error().code,
              Code::kNotFound);
    ASSERT_TRUE(store_->InsertLease(PodLease("a", "late", "10.0.0.4"), kT0 + 2));
    ASSERT_TRUE(tx->Commit());
  }
  auto leases = store_->LoadLiveLeases();
  ASSERT_EQ(leases->size(), 2u);
  EXPECT_EQ(store_->History("10.0.0.2", 10)->size(), 1u);  // "early" only
  EXPECT_EQ(store_->History("10.0.0.3", 10)->size(), 0u);
  EXPECT_EQ(store_->History("10.0.0.4", 10)->size(), 1u);
}

TEST_F(StoreTest, LeaseStateOnlyMovesForward) {
  const Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  EXPECT_EQ(store_->SetLeaseState(l.key(), LeaseState::kPending, kT0).error().code,
            Code::kInvalidArgument);
  ASSERT_TRUE(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 1));
  ASSERT_TRUE(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 2));  // no-op
  ASSERT_TRUE(store_->ReleaseLease(l.key(), kT0 + 3));
  EXPECT_EQ(store_->ReleaseLease(l.key(), kT0 + 4).error().code, Code::kNotFound);
  EXPECT_EQ(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 4).error().code,
            Code::kNotFound);
  auto h = store_->History("10.0.0.5", 10);
  ASSERT_EQ(h->size(), 3u);  // the repeated commit added nothing
  EXPECT_EQ((*h)[1].at_ms, kT0 + 1);
}

TEST_F(FileStoreTest, TriggersRefuseBackwardStateAndDeletingLiveLeasesViaRawSql) {
  const Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 1));
  EXPECT_THROW(raw_->exec("UPDATE leases SET state = 'pending'"), SQLite::Exception);
  EXPECT_THROW(raw_->exec("DELETE FROM leases"), SQLite::Exception);
  EXPECT_THROW(raw_->exec("UPDATE leases SET address_text = '10.0.0.6', address = x'0a000006'"),
               SQLite::Exception);
  ASSERT_TRUE(store_->ReleaseLease(l.key(), kT0 + 2));
  EXPECT_THROW(raw_->exec("UPDATE leases SET state = 'committed'"), SQLite::Exception);
  EXPECT_THROW(raw_->exec("UPDATE lease_history SET pod_name = 'someone-else'"), SQLite::Exception);
  EXPECT_EQ(Column("SELECT state FROM leases"), std::vector<std::string>{"released"});
}

TEST_F(StoreTest, InsertIntoUnknownSubnetIsNotFound) {
  auto r = store_->InsertLease(PodLease("nope", "p", "10.9.0.5"), kT0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kNotFound);
  EXPECT_NE(r.error().message.find("subnet nope"), std::string::npos) << r.error().message;
}

TEST_F(StoreTest, InsertRejectsReleasedStateAndWrongFamily) {
  Lease released = PodLease("a", "p", "10.0.0.5");
  released.state = LeaseState::kReleased;
  EXPECT_EQ(store_->InsertLease(released, kT0).error().code, Code::kInvalidArgument);
  Lease swapped = PodLease("d", "p", "fd00::5");
  EXPECT_EQ(store_->InsertLease(swapped, kT0).error().code, Code::kInvalidArgument);
  EXPECT_EQ(store_->InsertLease(PodLease("a", "p", nullptr), kT0).error().code,
            Code::kInvalidArgument);
}

TEST_F(StoreTest, NewSandboxOfAPodKeepsItsAddress) {
  Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->UpdateLeaseContainer(l.key(), "ctr-new", kT0 + 1));
  auto leases = store_->LoadLiveLeases();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].owner.container_id, "ctr-new");
  EXPECT_EQ((*leases)[0].v4, l.v4);
  EXPECT_EQ(store_->UpdateLeaseContainer(PodLease("a", "other", "10.0.0.6").key(), "c", kT0)
                .error()
                .code,
            Code::kNotFound);
}

TEST_F(StoreTest, RecreatedPodOfTheSameNameKeepsTheLeaseUnderItsNewUid) {
  Lease l = PodLease("a", "web-0", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->UpdateLeasePodUid(l.key(), "uid-new", kT0 + 1));
  auto leases = store_->LoadLiveLeases();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].owner.pod_uid, "uid-new");
  EXPECT_EQ((*leases)[0].v4, l.v4);
  EXPECT_EQ(store_->UpdateLeasePodUid(PodLease("a", "other", "10.0.0.6").key(), "u", kT0)
                .error()
                .code,
            Code::kNotFound);
}

TEST_F(StoreTest, ContainerKeyedLeaseCannotChangeContainer) {
  Lease l;
  l.subnet = "a";
  l.owner = Owner{"", "", "", "c1", "eth1"};
  l.v4 = *IpAddr::Parse("10.0.0.9");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  EXPECT_EQ(store_->UpdateLeaseContainer(l.key(), "c2", kT0).error().code, Code::kInvalidArgument);
}

// ---- History ----

TEST_F(StoreTest, HistoryRecordsAllocateCommitReleaseNewestFirst) {
  const Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 10));
  ASSERT_TRUE(store_->ReleaseLease(l.key(), kT0 + 20));
  auto h = store_->History("10.0.0.5", 10);
  ASSERT_TRUE(h) << h.error().message;
  ASSERT_EQ(h->size(), 3u);
  EXPECT_EQ((*h)[0].event, "released");
  EXPECT_EQ((*h)[0].at_ms, kT0 + 20);
  EXPECT_EQ((*h)[1].event, "committed");
  EXPECT_EQ((*h)[1].at_ms, kT0 + 10);
  EXPECT_EQ((*h)[2].event, "allocated");
  EXPECT_EQ((*h)[2].at_ms, kT0);
  EXPECT_EQ((*h)[2].subnet, "a");
  EXPECT_EQ((*h)[2].address, "10.0.0.5");
  EXPECT_EQ((*h)[2].pod_namespace, "default");
  EXPECT_EQ((*h)[2].pod_name, "p");
  EXPECT_EQ((*h)[2].pod_uid, "uid-p");
  EXPECT_EQ((*h)[2].container_id, "ctr-p");
  EXPECT_EQ((*h)[2].ifname, "net1");
}

TEST_F(StoreTest, HistoryAnswersWhoHadAnAddressNewestFirst) {
  const Lease first = PodLease("d", "first", nullptr, "fd00::5");
  ASSERT_TRUE(store_->InsertLease(first, kT0));
  ASSERT_TRUE(store_->ReleaseLease(first.key(), kT0 + 100));
  // Same millisecond as the release: insertion order breaks the tie.
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "second", nullptr, "fd00::5"), kT0 + 100));
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "other", nullptr, "fd00::6"), kT0 + 200));

  auto h = store_->History("fd00:0:0::0005", 2);  // any spelling of the address
  ASSERT_TRUE(h) << h.error().message;
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].pod_name, "second");
  EXPECT_EQ((*h)[0].event, "allocated");
  EXPECT_EQ((*h)[1].pod_name, "first");
  EXPECT_EQ((*h)[1].event, "released");
  EXPECT_EQ((*h)[1].address, "fd00::5");
  EXPECT_EQ(store_->History("fd00::5", 10)->size(), 3u);
  EXPECT_EQ(store_->History("fd00::5x", 10).error().code, Code::kInvalidArgument);
}

// ---- Views ----

TEST_F(FileStoreTest, LeasesViewShowsReadableText) {
  const Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->SetLeaseState(l.key(), LeaseState::kCommitted, kT0 + 1000));
  SQLite::Statement q(*raw_,
                      "SELECT subnet, address, family, state, pod, container, ifname, created, "
                      "committed, released, sticky FROM leases_view");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getString(), "a");
  EXPECT_EQ(q.getColumn(1).getString(), "10.0.0.5");
  EXPECT_EQ(q.getColumn(2).getString(), "IPv4");
  EXPECT_EQ(q.getColumn(3).getString(), "committed");
  EXPECT_EQ(q.getColumn(4).getString(), "default/p");
  EXPECT_EQ(q.getColumn(5).getString(), "ctr-p");
  EXPECT_EQ(q.getColumn(6).getString(), "net1");
  EXPECT_EQ(q.getColumn(7).getString(), "2023-11-14 22:13:20.123");
  EXPECT_EQ(q.getColumn(8).getString(), "2023-11-14 22:13:21.123");
  EXPECT_TRUE(q.getColumn(9).isNull());
  EXPECT_EQ(q.getColumn(10).getString(), "no");
  EXPECT_FALSE(q.executeStep());
}

TEST_F(FileStoreTest, SubnetUsageCountsLiveLeasesPerFamily) {
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "p", "10.1.0.7", "fd00::7"), kT0));
  ASSERT_TRUE(store_->InsertLease(PodLease("d", "q", "10.1.0.8"), kT0));
  const Lease gone = PodLease("d", "r", "10.1.0.9");
  ASSERT_TRUE(store_->InsertLease(gone, kT0));
  ASSERT_TRUE(store_->ReleaseLease(gone.key(), kT0 + 1));
  SQLite::Statement q(*raw_,
                      "SELECT family, usable, used, free, percent, usable_exact FROM subnet_usage "
                      "WHERE subnet = 'd' ORDER BY family");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getString(), "IPv4");
  EXPECT_EQ(q.getColumn(1).getInt64(), 253);  // /24 minus network, broadcast, gateway
  EXPECT_EQ(q.getColumn(2).getInt64(), 2);
  EXPECT_EQ(q.getColumn(3).getInt64(), 251);
  EXPECT_DOUBLE_EQ(q.getColumn(4).getDouble(), 0.79);
  EXPECT_EQ(q.getColumn(5).getString(), "253");
  ASSERT_TRUE(q.executeStep());
  EXPECT_EQ(q.getColumn(0).getString(), "IPv6");
  EXPECT_EQ(q.getColumn(2).getInt64(), 1);
  EXPECT_EQ(q.getColumn(5).getString(), "18446744073709551613");  // 2^64 - 3, exact
  EXPECT_NEAR(q.getColumn(1).getDouble(), 1.8446744073709552e19, 1e5);
  EXPECT_FALSE(q.executeStep());
  EXPECT_EQ(Column("SELECT used FROM subnet_usage WHERE subnet = 'a'"),
            std::vector<std::string>{"0"});
}

TEST_F(FileStoreTest, HistoryViewShowsReadableText) {
  const Lease l = PodLease("a", "p", "10.0.0.5");
  ASSERT_TRUE(store_->InsertLease(l, kT0));
  ASSERT_TRUE(store_->ReleaseLease(l.key(), kT0 + 60000));
  EXPECT_EQ(Column("SELECT at || ' ' || event || ' ' || address || ' ' || pod || ' ' || "
                   "container FROM history_view ORDER BY at_ms DESC, id DESC"),
            (std::vector<std::string>{"2023-11-14 22:14:20.123 released 10.0.0.5 default/p ctr-p",
                                      "2023-11-14 22:13:20.123 allocated 10.0.0.5 default/p ctr-p"}));
}

TEST_F(FileStoreTest, AddressColumnOrdersNumericallyWithinAFamily) {
  const char* v4[] = {"10.1.0.100", "10.1.0.9", "10.1.0.10"};
  const char* v6[] = {"fd00::100", "fd00::a", "fd00::9", "fd00::10", "fd00::1:0"};
  int n = 0;
  for (const char* a : v4) {
    ASSERT_TRUE(store_->InsertLease(PodLease("d", Name("p", n++), a), kT0));
  }
  for (const char* a : v6) {
    ASSERT_TRUE(store_->InsertLease(PodLease("d", Name("p", n++), nullptr, a), kT0));
  }
  EXPECT_EQ(Column("SELECT address_text FROM leases WHERE family = 4 ORDER BY address"),
            (std::vector<std::string>{"10.1.0.9", "10.1.0.10", "10.1.0.100"}));
  EXPECT_EQ(Column("SELECT address_text FROM leases WHERE family = 6 ORDER BY address"),
            (std::vector<std::string>{"fd00::9", "fd00::a", "fd00::10", "fd00::100", "fd00::1:0"}));
}

// ---- Transactions ----

TEST_F(StoreTest, UncommittedTransactionLeavesNothingBehind) {
  {
    auto tx = store_->Begin();
    ASSERT_TRUE(tx) << tx.error().message;
    ASSERT_TRUE(store_->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));
    ASSERT_TRUE(store_->PutSyncState("rv", "42", kT0));
    ASSERT_TRUE(store_->UpsertSubnet(MakeSubnet("z", "10.9.0.0/24"), kT0));
    EXPECT_EQ(store_->LoadLiveLeases()->size(), 1u);  // visible inside
  }
  EXPECT_TRUE(store_->LoadLiveLeases()->empty());
  EXPECT_TRUE(store_->History("10.0.0.5", 10)->empty());
  EXPECT_FALSE(store_->GetSyncState("rv")->has_value());
  EXPECT_EQ(store_->LoadSubnets()->size(), 2u);
}

TEST_F(StoreTest, CommittedTransactionKeepsEverything) {
  auto tx = store_->Begin();
  ASSERT_TRUE(tx);
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));
  ASSERT_TRUE(store_->InsertLease(PodLease("a", "q", "10.0.0.6"), kT0));
  ASSERT_TRUE(tx->Commit());
  EXPECT_FALSE(tx->Commit());  // once only
  EXPECT_EQ(store_->LoadLiveLeases()->size(), 2u);
  EXPECT_EQ(store_->History("10.0.0.6", 10)->size(), 1u);
}

TEST_F(StoreTest, TransactionsDoNotNest) {
  auto tx = store_->Begin();
  ASSERT_TRUE(tx);
  auto inner = store_->Begin();
  ASSERT_FALSE(inner);
  EXPECT_EQ(inner.error().code, Code::kInternal);
  Transaction moved = std::move(*tx);  // the moved-from one must not roll back
  ASSERT_TRUE(store_->PutSyncState("k", "v", kT0));
  ASSERT_TRUE(moved.Commit());
  EXPECT_EQ(**store_->GetSyncState("k"), "v");
}

TEST_F(StoreTest, SyncStateOverwritesAndReportsMissing) {
  EXPECT_FALSE(store_->GetSyncState("subnets")->has_value());
  ASSERT_TRUE(store_->PutSyncState("subnets", "100", kT0));
  ASSERT_TRUE(store_->PutSyncState("subnets", "101", kT0 + 1));
  EXPECT_EQ(**store_->GetSyncState("subnets"), "101");
}

// ---- Concurrency and crashes ----

TEST(ReadOnlyTest, ReaderReadsWhileWriterWrites) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  auto writer = MustOpen(path);
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
  ASSERT_TRUE(writer->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0));

  auto reader = Store::OpenReadOnly(path);
  ASSERT_TRUE(reader) << reader.error().message;
  auto tx = writer->Begin();
  ASSERT_TRUE(tx);
  ASSERT_TRUE(writer->InsertLease(PodLease("a", "q", "10.0.0.6"), kT0));
  // The writer holds the write lock; the reader is not blocked and sees the last commit.
  auto seen = (*reader)->LoadLiveLeases();
  ASSERT_TRUE(seen) << seen.error().message;
  EXPECT_EQ(seen->size(), 1u);
  ASSERT_TRUE(tx->Commit());
  EXPECT_EQ((*reader)->LoadLiveLeases()->size(), 2u);
  EXPECT_EQ((*reader)->History("10.0.0.6", 10)->size(), 1u);
  // And it cannot write.
  EXPECT_FALSE((*reader)->PutSyncState("k", "v", kT0));
}

TEST(ReadOnlyTest, RefusesMissingFile) {
  TempDir dir;
  auto r = Store::OpenReadOnly(dir.File("absent.db"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kNotFound);
  EXPECT_NE(r.error().message.find("absent.db"), std::string::npos) << r.error().message;
}

// Runs fn in a forked child, which must not touch the parent's connections.
pid_t Fork(const std::function<void()>& fn) {
  const pid_t pid = fork();
  if (pid == 0) {
    fn();
    _exit(0);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

TEST(KillSafetyTest, ChildExitingWithoutCommitLeavesNoRow) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
  }
  const pid_t pid = Fork([&] {
    auto store = Store::Open(path);
    if (!store) _exit(2);
    auto tx = (*store)->Begin();
    if (!tx || !(*store)->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0)) _exit(3);
    _exit(0);  // no commit, no destructors: as if the process died here
  });
  const int status = WaitExit(pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto store = MustOpen(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->LoadLiveLeases()->empty());
  EXPECT_TRUE(store->History("10.0.0.5", 10)->empty());
  EXPECT_TRUE(store->InsertLease(PodLease("a", "q", "10.0.0.5"), kT0));  // not locked either
}

TEST(KillSafetyTest, CommittedThenSigkilledKeepsRow) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  {
    auto store = MustOpen(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->UpsertSubnet(MakeSubnet("a", "10.0.0.0/24"), kT0));
  }
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = Fork([&] {
    close(fds[0]);
    auto store = Store::Open(path);
    if (!store) _exit(2);
    auto tx = (*store)->Begin();
    if (!tx || !(*store)->InsertLease(PodLease("a", "p", "10.0.0.5"), kT0) || !tx->Commit()) _exit(3);
    const char ok = 'k';
    if (write(fds[1], &ok, 1) != 1) _exit(4);
    for (int i = 0; i < 100; ++i) usleep(100 * 1000);  // wait to be killed, at most 10 s
    _exit(5);
  });
  close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 10000), 1) << "child did not commit within 10 s";
  char got = 0;
  ASSERT_EQ(read(fds[0], &got, 1), 1);
  close(fds[0]);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  const int status = WaitExit(pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto store = MustOpen(path);
  ASSERT_NE(store, nullptr);
  auto leases = store->LoadLiveLeases();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].v4->ToString(), "10.0.0.5");
  EXPECT_EQ(store->History("10.0.0.5", 10)->size(), 1u);
}


// ---- Write failures: a file that cannot grow (disk full, file size limit) ----

// A write that fails for lack of room gives a clear kInternal error, and leaves nothing
// half-written: transactions of two leases commit both or neither, the failed address
// is free again, and the store works once there is room. Run in a child process whose
// RLIMIT_FSIZE stops the WAL from growing (a real full disk is tests/faults/, as root).
// Exit codes name the check that failed.
TEST(WriteFailureTest, AWriteThatCannotGrowTheFileRollsBackAndSaysNothingWasWritten) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  const pid_t pid = Fork([&] {
    signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
    auto store = Store::Open(path);
    if (!store || !(*store)->UpsertSubnet(MakeSubnet("net", "10.0.0.0/24"), kT0)) _exit(2);
    std::error_code ec;
    const auto wal = static_cast<rlim_t>(fs::file_size(path + "-wal", ec));
    const auto main_db = static_cast<rlim_t>(fs::file_size(path, ec));
    rlimit tight{std::max(wal, main_db) + 48 * 1024, RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &tight) != 0) _exit(3);
    int committed = 0;
    std::string message;
    for (int i = 0; i < 100 && message.empty(); ++i) {
      auto tx = (*store)->Begin();
      if (!tx) {
        message = tx.error().message;
        break;
      }
      const std::string a = "10.0.0." + std::to_string(2 * i + 2);
      const std::string b = "10.0.0." + std::to_string(2 * i + 3);
      auto r = (*store)->InsertLease(PodLease("net", Name("a", i), a.c_str()), kT0);
      if (r) r = (*store)->InsertLease(PodLease("net", Name("b", i), b.c_str()), kT0);
      if (r) r = tx->Commit();
      if (!r) {
        if (r.error().code != Code::kInternal) _exit(4);
        message = r.error().message;
      } else {
        ++committed;
      }
    }
    if (message.empty()) _exit(5);  // the limit never bit
    if (message.find("nothing was written") == std::string::npos) _exit(6);
    rlimit loose{RLIM_INFINITY, RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &loose) != 0) _exit(7);
    auto live = (*store)->LoadLiveLeases();
    if (!live || live->size() != static_cast<size_t>(2 * committed)) _exit(8);  // no half
    const std::string next = "10.0.0." + std::to_string(2 * committed + 2);
    if (!(*store)->InsertLease(PodLease("net", "after", next.c_str()), kT0)) _exit(9);
    store->reset();
    auto reopened = Store::Open(path);  // integrity_check at open
    if (!reopened) _exit(10);
    live = (*reopened)->LoadLiveLeases();
    if (!live || live->size() != static_cast<size_t>(2 * committed + 1)) _exit(11);
    _exit(0);
  });
  const int status = WaitExit(pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "2 setup, 3 setrlimit, 4 not kInternal, 5 limit never hit, 6 message, 7 unlimit, "
         "8 half a transaction visible, 9 store unusable after, 10 reopen, 11 count after reopen";
}

// One big transaction (as a batch of many requests) whose pages spill out of the cache
// into a WAL that cannot grow: SQLite may then roll the whole transaction back by itself.
// Whatever it does, the transaction stays all or nothing: a write after such a rollback
// fails instead of committing on its own, and so does the commit.
TEST(WriteFailureTest, ATransactionRolledBackBySqliteStaysAllOrNothing) {
  TempDir dir;
  const std::string path = dir.File("s.db");
  const pid_t pid = Fork([&] {
    signal(SIGXFSZ, SIG_IGN);
    auto store = Store::Open(path);
    if (!store || !(*store)->UpsertSubnet(MakeSubnet("net", "10.0.0.0/8"), kT0)) _exit(2);
    std::error_code ec;
    const auto wal = static_cast<rlim_t>(fs::file_size(path + "-wal", ec));
    const auto main_db = static_cast<rlim_t>(fs::file_size(path, ec));
    rlimit tight{std::max(wal, main_db) + 256 * 1024, RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &tight) != 0) _exit(3);
    auto tx = (*store)->Begin();
    if (!tx) _exit(4);
    int failed_at = -1, ok_after_failure = 0;
    bool said_rolled_back = false;
    for (int i = 0; i < 40000; ++i) {
      const std::string a = "10." + std::to_string(i / 64516) + "." + std::to_string(i / 254 % 254) +
                            "." + std::to_string(i % 254 + 1);
      auto r = (*store)->InsertLease(PodLease("net", Name("p", i), a.c_str()), kT0);
      if (!r) {
        said_rolled_back = said_rolled_back || r.error().message.find("rolled back") != std::string::npos;
        if (failed_at < 0) failed_at = i;
        if (i - failed_at > 20) break;
      } else if (failed_at >= 0) {
        ++ok_after_failure;
      }
    }
    if (failed_at < 0) _exit(5);  // the limit never bit
    auto committed = tx->Commit();
    rlimit loose{RLIM_INFINITY, RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &loose) != 0) _exit(6);
    auto live = (*store)->LoadLiveLeases();
    if (!live) _exit(7);
    // All or nothing: a failed commit kept nothing; a good one everything that succeeded.
    if (!committed && !live->empty()) _exit(8);
    if (committed && live->size() != static_cast<size_t>(failed_at + ok_after_failure)) _exit(9);
    std::fprintf(stderr, "first failure at insert %d; %d inserts succeeded after it; rolled back by "
                 "SQLite: %s; commit %s\n", failed_at, ok_after_failure, said_rolled_back ? "yes" : "no",
                 committed ? "succeeded" : "failed");
    _exit(0);
  });
  const int status = WaitExit(pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "2 setup, 3 setrlimit, 4 begin, 5 limit never hit, 6 unlimit, 7 load, 8 a failed "
         "commit kept leases (writes after SQLite's rollback committed on their own), 9 count";
}

}  // namespace
}  // namespace sublease
