#include "daemon/store/recovery.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace sublease {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kT0 = 1700000000123;  // 2023-11-14 22:13:20.123 UTC

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "recovery_test.XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string File(const std::string& name) const { return (fs::path(path_) / name).string(); }
  std::vector<std::string> Names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

Subnet MakeSubnet() {
  auto s = NormalizeSubnet(SubnetSpec{"net", "macvlan.default", "10.0.0.0/24", "", {}, "", ""});
  EXPECT_TRUE(s) << s.error().message;
  return s ? *s : Subnet{};
}

Lease CommittedLease(const std::string& pod, const char* v4) {
  Lease l;
  l.subnet = "net";
  l.owner = Owner{"default", pod, "uid-" + pod, "ctr-" + pod, "net1"};
  l.v4 = *IpAddr::Parse(v4);
  l.provider = "macvlan.default";
  l.state = LeaseState::kCommitted;
  return l;
}

// A database holding one committed lease, closed again.
void MakeDatabaseWithLease(const std::string& path) {
  auto store = Store::Open(path);
  ASSERT_TRUE(store) << store.error().message;
  ASSERT_TRUE((*store)->UpsertSubnet(MakeSubnet(), kT0));
  ASSERT_TRUE((*store)->InsertLease(CommittedLease("a", "10.0.0.5"), kT0));
}

TEST(OpenOrRecoverTest, OpensASoundDatabaseWithoutMovingIt) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  MakeDatabaseWithLease(db);
  auto opened = OpenOrRecover(db, kT0);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_FALSE(opened->recovered);
  EXPECT_FALSE(opened->created);
  EXPECT_TRUE(opened->moved.empty());
  auto leases = opened->store->LoadLiveLeases();
  ASSERT_TRUE(leases);
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ(leases->front().v4->ToString(), "10.0.0.5");
  EXPECT_FALSE(*RebuildPending(opened->store.get())) << "a sound database needs no rebuild";
}

TEST(OpenOrRecoverTest, ANewDatabaseIsMarkedForRebuild) {
  TempDir dir;
  auto opened = OpenOrRecover(dir.File("sublease.db"), kT0);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_TRUE(opened->created);
  EXPECT_FALSE(opened->recovered);
  EXPECT_TRUE(*RebuildPending(opened->store.get()));
}

TEST(OpenOrRecoverTest, AFileThatIsNotADatabaseIsMovedAsideAndReplaced) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  const std::string garbage(8192, 'x');
  WriteAll(db, garbage);
  auto opened = OpenOrRecover(db, kT0);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_TRUE(opened->recovered);
  EXPECT_EQ(opened->moved_to, db + ".corrupt-20231114T221320Z");
  EXPECT_NE(opened->corrupt_error.find("is corrupt"), std::string::npos) << opened->corrupt_error;
  EXPECT_EQ(ReadAll(opened->moved_to), garbage) << "the corrupt file is kept byte for byte";
  auto leases = opened->store->LoadLiveLeases();
  ASSERT_TRUE(leases) << leases.error().message;
  EXPECT_TRUE(leases->empty());
  EXPECT_EQ(*opened->store->SchemaVersion(), Store::LatestSchemaVersion());
  EXPECT_TRUE(*RebuildPending(opened->store.get()));
}

TEST(OpenOrRecoverTest, ADatabaseFailingTheIntegrityCheckIsMovedAsideWithItsWal) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  {
    // Enough rows for several pages, so that page 2 onwards holds table b-tree pages.
    auto store = Store::Open(db);
    ASSERT_TRUE(store);
    ASSERT_TRUE((*store)->UpsertSubnet(MakeSubnet(), kT0));
    for (int i = 0; i < 200; ++i) {
      std::string ip = "10.0.0." + std::to_string(i + 2);
      std::string pod = "pod-";
      pod += std::to_string(i);
      ASSERT_TRUE((*store)->InsertLease(CommittedLease(pod, ip.c_str()), kT0));
    }
  }
  {
    // Checkpoint everything into the main file, then scribble over pages 3..5.
    SQLite::Database raw(db, SQLite::OPEN_READWRITE);
    raw.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  const std::string before = ReadAll(db);
  ASSERT_GT(before.size(), 6u * 4096);
  {
    std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3 * 4096);
    const std::string junk(3 * 4096, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  WriteAll(db + "-wal", "");  // a leftover WAL goes with its database
  auto opened = OpenOrRecover(db, kT0);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_TRUE(opened->recovered);
  EXPECT_TRUE(fs::exists(opened->moved_to));
  EXPECT_TRUE(fs::exists(opened->moved_to + "-wal"));
  ASSERT_GE(opened->moved.size(), 2u);  // the database, its WAL, and its -shm if made
  EXPECT_EQ(opened->moved[0], db + " -> " + opened->moved_to);
  EXPECT_EQ(opened->moved[1], db + "-wal -> " + opened->moved_to + "-wal");
  auto leases = opened->store->LoadLiveLeases();
  ASSERT_TRUE(leases);
  EXPECT_TRUE(leases->empty()) << "the fresh database starts empty";
}

TEST(OpenOrRecoverTest, ADatabaseOfANewerSchemaIsRefusedAndLeftInPlace) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  MakeDatabaseWithLease(db);
  {
    SQLite::Database raw(db, SQLite::OPEN_READWRITE);
    raw.exec("PRAGMA user_version = " + std::to_string(Store::LatestSchemaVersion() + 1));
  }
  const auto names = dir.Names();
  auto opened = OpenOrRecover(db, kT0);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message.find("newer sublease"), std::string::npos)
      << opened.error().message;
  EXPECT_EQ(dir.Names(), names) << "nothing moved, nothing created";
}

TEST(OpenOrRecoverTest, ADatabaseLockedByAnotherWriterIsNotTreatedAsCorrupt) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  MakeDatabaseWithLease(db);
  SQLite::Database other(db, SQLite::OPEN_READWRITE);
  other.exec("PRAGMA locking_mode = EXCLUSIVE");
  other.exec("BEGIN EXCLUSIVE");
  StoreOptions quick;
  quick.busy_timeout_ms = 50;
  auto opened = OpenOrRecover(db, kT0, quick);
  ASSERT_FALSE(opened);
  EXPECT_FALSE(Store::IsCorruption(opened.error())) << opened.error().message;
  other.exec("ROLLBACK");
  for (const auto& name : dir.Names()) {
    EXPECT_EQ(name.find(".corrupt-"), std::string::npos) << name;
  }
}

TEST(OpenOrRecoverTest, ASecondRecoveryInTheSameSecondKeepsTheFirstAsideFile) {
  TempDir dir;
  const std::string db = dir.File("sublease.db");
  WriteAll(db, std::string(4096, 'a'));
  auto first = OpenOrRecover(db, kT0);
  ASSERT_TRUE(first) << first.error().message;
  first->store.reset();
  fs::remove(db + "-wal");
  fs::remove(db + "-shm");
  WriteAll(db, std::string(4096, 'b'));
  auto second = OpenOrRecover(db, kT0 + 500);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->moved_to, first->moved_to + ".1");
  EXPECT_EQ(ReadAll(first->moved_to), std::string(4096, 'a'));
  EXPECT_EQ(ReadAll(second->moved_to), std::string(4096, 'b'));
}

TEST(OpenOrRecoverTest, InMemoryDatabasesOpenAsIs) {
  auto opened = OpenOrRecover(":memory:", kT0);
  ASSERT_TRUE(opened) << opened.error().message;
  EXPECT_FALSE(opened->created);
  EXPECT_FALSE(opened->recovered);
}

}  // namespace
}  // namespace sublease
