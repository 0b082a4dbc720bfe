#include "daemon/store/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <limits>
#include <utility>

#include "common/json_writer.h"
#include "schema/migrations.h"

namespace sublease {

namespace {

// Databases up to this size get the full integrity_check at open (it also checks that
// indexes match their tables, and the unique indexes are the row locks); larger ones
// get quick_check, which is O(size) too but much cheaper.
constexpr int64_t kFullIntegrityCheckMaxBytes = int64_t{64} << 20;
constexpr std::string_view kCorruptMarker = " is corrupt";

std::string Describe(const std::string& path) {
  return path == ":memory:" || path.empty() ? std::string("the in-memory database")
                                            : "database " + path;
}

Error CorruptError(const std::string& path, std::string_view detail) {
  return Error::Internal(Describe(path) + std::string(kCorruptMarker) + " (" + std::string(detail) +
                         "); move it aside and restart subleased: the node's leases are "
                         "rebuilt from the API server");
}

// The directory of a database file, for messages about its disk.
std::string DirectoryOf(const std::string& path) {
  if (path == ":memory:" || path.empty()) return "memory";
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? std::string(".") : dir;
}

// The one translation from SQLite's failures to ours. `what` names the operation.
Error FromSqlite(const SQLite::Exception& e, std::string_view what, const std::string& path) {
  const std::string prefix = std::string(what) + ": ";
  const std::string detail = e.what();
  switch (e.getErrorCode()) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Error::Unavailable(prefix + Describe(path) +
                                " is locked by another writer (" + detail +
                                "); is a second subleased or a sqlite3 shell holding a write "
                                "transaction on this file?");
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return CorruptError(path, detail).Wrap(what);
    // Write failures of the environment are kInternal ("a broken environment", not
    // "try again later"): they need a person. Every write runs in a transaction (or a
    // savepoint of the caller's) that is rolled back when it fails, so the message can
    // promise that nothing was written.
    case SQLITE_FULL:
      return Error::Internal(prefix + "the disk holding " + Describe(path) + " is full (" +
                             DirectoryOf(path) + "): nothing was written; free space there, " +
                             "then retry");
    case SQLITE_READONLY:
      return Error::Internal(prefix + Describe(path) + " is read-only (" + detail +
                             "): nothing was written; subleased needs write access to the file " +
                             "and its directory " + DirectoryOf(path) +
                             " (file mode, owner, or a read-only mount)");
    case SQLITE_CANTOPEN:
      return Error::Internal(prefix + "cannot open " + Describe(path) + " (" + detail + ")");
    case SQLITE_IOERR:
      return Error::Internal(prefix + "I/O error on " + Describe(path) + " (" + detail +
                             "): nothing was written; check the disk holding " +
                             DirectoryOf(path) + ", its free space, and the kernel log");
    default:
      return Error::Internal(prefix + "SQLite error on " + Describe(path) + ": " + detail);
  }
}

// Resets a member statement when the call that used it ends, however it ends: an
// unreset SELECT keeps a read transaction open, which blocks WAL checkpoints.
class Use {
 public:
  explicit Use(SQLite::Statement& s) : s_(s) {}
  ~Use() { s_.tryReset(); }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  SQLite::Statement* operator->() { return &s_; }
  SQLite::Statement& operator*() { return s_; }

 private:
  SQLite::Statement& s_;
};

void BindAddress(SQLite::Statement& s, int index, const IpAddr& a) {
  const auto bytes = a.Bytes();
  s.bind(index, bytes.data(), static_cast<int>(a.ByteSize()));
}

Result<IpAddr> ColumnAddress(const SQLite::Column& c) {
  return IpAddr::FromBytes(static_cast<const uint8_t*>(c.getBlob()),
                           static_cast<size_t>(c.getBytes()));
}

int FamilyNumber(Family f) { return f == Family::kV4 ? 4 : 6; }

Result<LeaseState> ParseState(const std::string& s) {
  if (s == "pending") return LeaseState::kPending;
  if (s == "committed") return LeaseState::kCommitted;
  if (s == "released") return LeaseState::kReleased;
  return Fail(Error::Internal("unknown lease state '" + s + "' in the leases table"));
}

// Catches at the boundary: body's exceptions become Errors.
// `path` is a copy, not the connection: body may consume the connection (Open).
template <typename Body>
auto Guarded(const std::string& path, std::string_view what, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const SQLite::Exception& e) {
    return Fail(FromSqlite(e, what, path));
  } catch (const std::exception& e) {
    return Fail(Error::Internal(std::string(what) + ": " + e.what()));
  }
}

// Transaction control, prepared once (Database::exec parses its text on every call,
// and these run several times per request).
struct Control {
  explicit Control(SQLite::Database& d)
      : db(d),
        begin(d, "BEGIN IMMEDIATE"),
        commit(d, "COMMIT"),
        rollback(d, "ROLLBACK"),
        savepoint(d, "SAVEPOINT sublease_op"),
        release(d, "RELEASE sublease_op"),
        rollback_to(d, "ROLLBACK TO sublease_op") {}
  // Runs a statement that returns no rows, leaving it reset; Try never throws.
  static void Run(SQLite::Statement& s) { Use(s)->exec(); }
  static void Try(SQLite::Statement& s) { Use(s)->tryExecuteStep(); }
  // A Transaction is open (Store::Begin until its commit or rollback). When SQLite ends
  // it by itself (an I/O error, disk full, out of memory roll the whole transaction
  // back), later writes must fail instead of running in transactions of their own: the
  // caller will undo the whole batch in memory when its commit fails.
  bool transaction_expected = false;

  SQLite::Database& db;
  SQLite::Statement begin;
  SQLite::Statement commit;
  SQLite::Statement rollback;
  SQLite::Statement savepoint;
  SQLite::Statement release;
  SQLite::Statement rollback_to;
};

// How many writing statements a body of Atomically runs: one (after any reads), or
// several. Inside an open transaction one statement needs no savepoint: SQLite undoes a
// failing statement by itself (its statement journal), so the call leaves nothing
// behind either way. Several need one, or a failure halfway would keep the first ones'
// writes. A savepoint is two more statements per call, which group commit would pay
// for every request of a batch.
enum class Writes { kOne, kSeveral };

// Runs body atomically: inside the caller's open Transaction (through a savepoint when
// it writes several statements, so a failed call leaves the caller's earlier work intact
// and none of its own), or in a transaction of its own (BEGIN IMMEDIATE) when none is
// open. A body that returns an error is undone like one that throws.
template <typename Body>
auto Atomically(Control& c, Writes writes, std::string_view what, Body&& body) -> decltype(body()) {
  const bool own = sqlite3_get_autocommit(c.db.getHandle()) != 0;
  if (own && c.transaction_expected) {
    return Fail(Error::Unavailable(std::string(what) + ": the database rolled back the open "
                                   "transaction after an earlier error in it; try again"));
  }
  const bool savepoint = !own && writes == Writes::kSeveral;
  bool open = false;
  auto undo = [&] {
    if (!open) return;
    if (own) {
      Control::Try(c.rollback);
    } else if (savepoint) {
      Control::Try(c.rollback_to);
      Control::Try(c.release);
    }
  };
  try {
    if (own) Control::Run(c.begin);
    if (savepoint) Control::Run(c.savepoint);
    open = true;
    auto result = body();
    if (result) {
      if (own) Control::Run(c.commit);
      if (savepoint) Control::Run(c.release);
    } else {
      undo();
    }
    return result;
  } catch (const SQLite::Exception& e) {
    undo();
    return Fail(FromSqlite(e, what, c.db.getFilename()));
  } catch (const std::exception& e) {
    undo();
    return Fail(Error::Internal(std::string(what) + ": " + e.what()));
  }
}

// Process-wide SQLite settings, applied before the first connection opens (later calls
// are refused by SQLite, harmlessly). No bulk page-cache allocation: by default every
// page cache, including the ephemeral b-tree that a CHECK (x IN (...)) builds for each
// lease row written, first mallocs room for 20 pages (~86 KiB) and frees it at the end
// of the statement. At the top of the heap that free gave the memory back to the kernel
// (brk) and the next statement faulted it in again: up to 90,000 brk calls and 400,000
// page faults per 20,000 allocations (BENCHMARKS.md section 3), depending on heap layout.
void ConfigureSqliteOnce() {
  static const bool configured = [] {
    sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
    return true;
  }();
  (void)configured;
}

int UserVersion(SQLite::Database& db) { return db.execAndGet("PRAGMA user_version").getInt(); }

Result<void> CheckIntegrity(SQLite::Database& db) {
  const int64_t pages = db.execAndGet("PRAGMA page_count").getInt64();
  const int64_t page_size = db.execAndGet("PRAGMA page_size").getInt64();
  const bool full = pages * page_size <= kFullIntegrityCheckMaxBytes;
  SQLite::Statement check(db, full ? "PRAGMA integrity_check(5)" : "PRAGMA quick_check(5)");
  std::string problems;
  while (check.executeStep()) {
    const std::string row = check.getColumn(0).getString();
    if (row == "ok") continue;
    if (!problems.empty()) problems += "; ";
    problems += row;
  }
  if (problems.empty()) return Ok();
  return Fail(CorruptError(db.getFilename(), std::string(full ? "integrity_check" : "quick_check") +
                                                 ": " + problems));
}

Result<void> Migrate(SQLite::Database& db) {
  for (const Migration& m : Migrations()) {
    if (UserVersion(db) >= m.version) continue;
    try {
      db.exec("BEGIN IMMEDIATE");
      // Re-read under the write lock: another process may have migrated meanwhile.
      if (UserVersion(db) < m.version) {
        db.exec(std::string(m.sql));
        db.exec("PRAGMA user_version = " + std::to_string(m.version));
      }
      db.exec("COMMIT");
    } catch (const SQLite::Exception& e) {
      db.tryExec("ROLLBACK");
      return Fail(FromSqlite(e, "applying schema migration " + std::string(m.name),
                             db.getFilename()));
    }
  }
  return Ok();
}

// Says why a file could not be opened for writing, when the directory tells us.
std::string DirectoryHint(const std::string& path) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!std::filesystem::is_directory(dir, ec)) {
    return "; the directory " + dir.string() + " does not exist";
  }
  if (access(dir.c_str(), W_OK) != 0) {
    return "; the directory " + dir.string() + " is not writable by uid " +
           std::to_string(geteuid()) + " (SQLite also creates -wal and -shm files there)";
  }
  return "; check that the directory " + dir.string() + " is writable by uid " +
         std::to_string(geteuid()) + " and on a local filesystem";
}

const char* StateName(LeaseState s) {
  switch (s) {
    case LeaseState::kPending: return "pending";
    case LeaseState::kCommitted: return "committed";
    case LeaseState::kReleased: return "released";
  }
  return "released";
}

}  // namespace

// The prepared statements (SQLiteCpp has no statement cache) and the small queries
// built on them. Lives exactly as long as the Store's connection.
struct Store::Statements {
  explicit Statements(SQLite::Database& d)
      : db(d),
        control(d),
        subnet_id(d, "SELECT id FROM subnets WHERE name = ?"),
        upsert_subnet(d, R"(
          INSERT INTO subnets (name, provider, protocol, cidr_v4, cidr_v6, gateway_v4, gateway_v6,
                               usable_v4, usable_v6, usable_v4_text, usable_v6_text,
                               spec_cidr_block, spec_gateway, spec_exclude_ips, spec_protocol,
                               spec_block_size, created_ms, updated_ms)
          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17)
          ON CONFLICT (name) DO UPDATE SET
            provider = excluded.provider, protocol = excluded.protocol,
            cidr_v4 = excluded.cidr_v4, cidr_v6 = excluded.cidr_v6,
            gateway_v4 = excluded.gateway_v4, gateway_v6 = excluded.gateway_v6,
            usable_v4 = excluded.usable_v4, usable_v6 = excluded.usable_v6,
            usable_v4_text = excluded.usable_v4_text, usable_v6_text = excluded.usable_v6_text,
            spec_cidr_block = excluded.spec_cidr_block, spec_gateway = excluded.spec_gateway,
            spec_exclude_ips = excluded.spec_exclude_ips, spec_protocol = excluded.spec_protocol,
            spec_block_size = excluded.spec_block_size, updated_ms = excluded.updated_ms
          RETURNING id)"),
        delete_exclusions(d, "DELETE FROM subnet_exclusions WHERE subnet_id = ?"),
        insert_exclusion(d, R"(
          INSERT INTO subnet_exclusions (subnet_id, family, first, last, first_text, last_text)
          VALUES (?, ?, ?, ?, ?, ?))"),
        count_live(d, "SELECT count(*) FROM leases WHERE subnet_id = ? AND state <> 'released'"),
        delete_subnet(d, "DELETE FROM subnets WHERE id = ?"),
        load_subnets(d, R"(
          SELECT s.name, s.provider, s.spec_cidr_block, s.spec_gateway, s.spec_protocol,
                 s.spec_block_size, j.value
          FROM subnets s LEFT JOIN json_each(s.spec_exclude_ips) j
          ORDER BY s.name, j.key)"),
        insert_lease(d, R"(
          INSERT INTO leases (subnet_id, family, address, address_text, state, owner, ifname,
                              pod_namespace, pod_name, pod_uid, container_id, provider, sticky,
                              mac, created_ms, committed_ms, released_ms, updated_ms)
          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                  CASE ?5 WHEN 'committed' THEN ?15 END, NULL, ?15))"),
        live_holder(d, R"(
          SELECT state, pod_namespace, pod_name, container_id, ifname FROM leases
          WHERE subnet_id = ? AND address = ? AND state <> 'released')"),
        live_by_attachment(d, R"(
          SELECT address_text, state FROM leases
          WHERE owner = ? AND ifname = ? AND subnet_id = ? AND family = ? AND state <> 'released')"),
        set_state(d, R"(
          UPDATE leases SET
            state = ?1,
            committed_ms = CASE WHEN ?1 = 'committed' THEN coalesce(committed_ms, ?2)
                                ELSE committed_ms END,
            released_ms = CASE WHEN ?1 = 'released' THEN ?2 END,
            updated_ms = ?2
          WHERE owner = ?3 AND ifname = ?4 AND subnet_id = ?5 AND state <> 'released')"),
        update_container(d, R"(
          UPDATE leases SET container_id = ?1, updated_ms = ?2
          WHERE owner = ?3 AND ifname = ?4 AND subnet_id = ?5 AND state <> 'released')"),
        update_pod_uid(d, R"(
          UPDATE leases SET pod_uid = ?1, updated_ms = ?2
          WHERE owner = ?3 AND ifname = ?4 AND subnet_id = ?5 AND state <> 'released')"),
        load_live(d, R"(
          SELECT s.name, l.family, l.address, l.state, l.owner, l.ifname, l.pod_namespace,
                 l.pod_name, l.pod_uid, l.container_id, l.provider, l.sticky, l.mac
          FROM leases l JOIN subnets s ON s.id = l.subnet_id
          WHERE l.state <> 'released'
          ORDER BY l.owner, l.ifname, l.subnet_id, l.family)"),
        history(d, R"(
          SELECT at_ms, event, subnet, address_text, pod_namespace, pod_name, pod_uid,
                 container_id, ifname
          FROM lease_history WHERE address = ? ORDER BY at_ms DESC, id DESC LIMIT ?)"),
        get_sync(d, "SELECT value FROM sync_state WHERE key = ?"),
        put_sync(d, R"(
          INSERT INTO sync_state (key, value, updated_ms) VALUES (?1, ?2, ?3)
          ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms)") {}

  // kNotFound naming the subnet when it is not in the store.
  Result<int64_t> SubnetId(const std::string& name) {
    Use q(subnet_id);
    q->bind(1, name);
    if (!q->executeStep()) {
      return Fail(Error::NotFound("subnet " + name +
                                  " is not in the store (not synced yet, or deleted)"));
    }
    return q->getColumn(0).getInt64();
  }

  // Why inserting `a` for `lease` hit a unique index: who holds the address, or which
  // address this attachment already holds.
  Error DescribeConflict(int64_t sid, const Lease& lease, const IpAddr& a) {
    {
      Use q(live_holder);
      q->bind(1, sid);
      BindAddress(*q, 2, a);
      if (q->executeStep()) {
        Lease holder;
        holder.owner.pod_namespace = q->getColumn(1).getString();
        holder.owner.pod_name = q->getColumn(2).getString();
        holder.owner.container_id = q->getColumn(3).getString();
        holder.owner.ifname = q->getColumn(4).getString();
        return Error::Conflict("address " + a.ToString() + " in subnet " + lease.subnet +
                               " is held by " + holder.HolderDescription() + " (" +
                               q->getColumn(0).getString() + ")");
      }
    }
    const AttachmentKey key = lease.key();
    Use q(live_by_attachment);
    q->bind(1, key.owner);
    q->bind(2, key.ifname);
    q->bind(3, sid);
    q->bind(4, FamilyNumber(a.family()));
    if (q->executeStep()) {
      return Error::Conflict(key.ToString() + " already holds " + q->getColumn(0).getString() +
                             " (" + q->getColumn(1).getString() + "); release it before leasing " +
                             "another " + std::string(FamilyName(a.family())) + " address");
    }
    return Error::Conflict("address " + a.ToString() + " in subnet " + lease.subnet +
                           " is already leased");
  }

  // Binds the attachment key to ?3 ?4 ?5 of set_state / update_container.
  Result<void> BindKey(SQLite::Statement& s, const AttachmentKey& key) {
    auto sid = SubnetId(key.subnet);
    if (!sid) return Fail(sid.error());
    s.bind(3, key.owner);
    s.bind(4, key.ifname);
    s.bind(5, *sid);
    return Ok();
  }

  SQLite::Database& db;
  Control control;
  SQLite::Statement subnet_id;
  SQLite::Statement upsert_subnet;
  SQLite::Statement delete_exclusions;
  SQLite::Statement insert_exclusion;
  SQLite::Statement count_live;
  SQLite::Statement delete_subnet;
  SQLite::Statement load_subnets;
  SQLite::Statement insert_lease;
  SQLite::Statement live_holder;
  SQLite::Statement live_by_attachment;
  SQLite::Statement set_state;
  SQLite::Statement update_container;
  SQLite::Statement update_pod_uid;
  SQLite::Statement load_live;
  SQLite::Statement history;
  SQLite::Statement get_sync;
  SQLite::Statement put_sync;
};

// ---- Transaction ----

Transaction::~Transaction() {
  if (store_ != nullptr && !done_) {
    Control::Try(store_->stmts_->control.rollback);
    store_->stmts_->control.transaction_expected = false;
  }
}

Transaction::Transaction(Transaction&& other) noexcept : store_(other.store_), done_(other.done_) {
  other.store_ = nullptr;
  other.done_ = true;
}

Result<void> Transaction::Commit() {
  if (store_ == nullptr || done_) {
    return Fail(Error::Internal("Transaction::Commit called on a finished transaction"));
  }
  return Guarded(store_->db_->getFilename(), "commit", [&]() -> Result<void> {
    if (sqlite3_get_autocommit(store_->db_->getHandle()) != 0) {
      return Fail(Error::Unavailable("commit: the database rolled the transaction back after an "
                                     "error in it; nothing of it was kept"));
    }
    Control::Run(store_->stmts_->control.commit);
    done_ = true;
    store_->stmts_->control.transaction_expected = false;
    return Ok();
  });
}

// ---- Opening ----

Store::Store(std::unique_ptr<SQLite::Database> db, int wal_checkpoint_pages)
    : db_(std::move(db)),
      stmts_(std::make_unique<Statements>(*db_)),
      wal_checkpoint_pages_(wal_checkpoint_pages) {
  // Replaces SQLite's automatic checkpoint (itself a WAL hook) with the same thing at our
  // bound, counting pages on the way.
  sqlite3_wal_hook(db_->getHandle(), &Store::OnWalCommit, this);
}

int Store::OnWalCommit(void* store, sqlite3* db, const char* name, int pages) {
  auto* self = static_cast<Store*>(store);
  self->wal_pages_ = pages;
  self->commits_++;
  if (self->wal_checkpoint_pages_ > 0 && pages >= self->wal_checkpoint_pages_) {
    // As SQLite's own hook: the commit has succeeded whatever the checkpoint does (busy
    // when a Checkpointer is running: the next commit tries again).
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  }
  return SQLITE_OK;
}

Store::~Store() = default;

int Store::LatestSchemaVersion() { return Migrations().back().version; }

bool Store::IsCorruption(const Error& e) {
  return e.code == Code::kInternal && e.message.find(kCorruptMarker) != std::string::npos;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path, const StoreOptions& options) {
  ConfigureSqliteOnce();
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE,
                                            options.busy_timeout_ms);
  } catch (const SQLite::Exception& e) {
    Error err = FromSqlite(e, "opening the store", path);
    err.message += DirectoryHint(path);
    return Fail(err);
  }
  auto opened = Guarded(path, "opening the store", [&]() -> Result<std::unique_ptr<Store>> {
    // SQLite falls back to read-only when the file is write-protected; say so now rather
    // than at the first allocation.
    if (sqlite3_db_readonly(db->getHandle(), "main") == 1) {
      return Fail(Error::Internal(Describe(path) + " is read-only (file mode or a read-only " +
                                  "mount); subleased needs to write it" + DirectoryHint(path)));
    }
    // The first read parses the header: a file that is not a database fails here.
    const int version = UserVersion(*db);
    if (version > LatestSchemaVersion()) {
      return Fail(Error::Internal(
          Describe(path) + " was written by a newer sublease (schema " + std::to_string(version) +
          ", this binary knows up to " + std::to_string(LatestSchemaVersion()) +
          "); upgrade sublease or move the file away"));
    }
    if (auto ok = CheckIntegrity(*db); !ok) return Fail(ok.error());

    // WAL: readers (subleasectl) never block the writer, and a commit is one append.
    const std::string mode = db->execAndGet("PRAGMA journal_mode = WAL").getString();
    if (mode != "wal" && mode != "memory") {
      return Fail(Error::Internal("could not turn on WAL for " + Describe(path) +
                                  " (journal_mode stays '" + mode +
                                  "'); keep the database on a local filesystem"));
    }
    // NORMAL in WAL mode: a commit survives a crash of this process (the WAL is in the
    // OS page cache), but a power loss can lose the last commits before the next
    // checkpoint; the database stays consistent either way, and lost leases are
    // recovered from the API server. FULL adds an fsync per commit.
    db->exec(options.sync_every_commit ? "PRAGMA synchronous = FULL"
                                       : "PRAGMA synchronous = NORMAL");
    db->exec("PRAGMA foreign_keys = ON");
    if (auto ok = Migrate(*db); !ok) return Fail(ok.error());
    return std::unique_ptr<Store>(new Store(std::move(db), options.wal_checkpoint_pages));
  });
  // Closing the connection to a corrupt database must not checkpoint its WAL into it
  // nor delete the WAL: it is moved aside for a person exactly as found (recovery.h).
  if (!opened && db && IsCorruption(opened.error())) {
    sqlite3_db_config(db->getHandle(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  }
  return opened;
}

Result<std::unique_ptr<Store>> Store::OpenReadOnly(const std::string& path) {
  ConfigureSqliteOnce();
  std::error_code ec;
  if (path != ":memory:" && !std::filesystem::exists(path, ec)) {
    return Fail(Error::NotFound("database " + path + " does not exist (subleased creates it " +
                                "when it first starts)"));
  }
  std::unique_ptr<SQLite::Database> db;
  try {
    db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY, 5000);
  } catch (const SQLite::Exception& e) {
    return Fail(FromSqlite(e, "opening the store read-only", path));
  }
  return Guarded(path, "opening the store read-only", [&]() -> Result<std::unique_ptr<Store>> {
    const int version = UserVersion(*db);
    if (version > LatestSchemaVersion()) {
      return Fail(Error::Internal(
          Describe(path) + " was written by a newer sublease (schema " + std::to_string(version) +
          ", this binary knows up to " + std::to_string(LatestSchemaVersion()) +
          "); use the subleasectl that matches the running subleased"));
    }
    if (version < LatestSchemaVersion()) {
      return Fail(Error::Internal(Describe(path) + " has schema " + std::to_string(version) +
                                  ", this binary reads schema " +
                                  std::to_string(LatestSchemaVersion()) +
                                  "; start subleased once to migrate it"));
    }
    return std::unique_ptr<Store>(new Store(std::move(db), 0));
  });
}

Result<int> Store::SchemaVersion() {
  return Guarded(db_->getFilename(), "reading the schema version", [&]() -> Result<int> { return UserVersion(*db_); });
}

Result<Transaction> Store::Begin() {
  return Guarded(db_->getFilename(), "beginning a transaction", [&]() -> Result<Transaction> {
    if (sqlite3_get_autocommit(db_->getHandle()) == 0) {
      return Fail(Error::Internal("Store::Begin called while a transaction is open; "
                                  "transactions do not nest"));
    }
    Control::Run(stmts_->control.begin);
    stmts_->control.transaction_expected = true;
    return Transaction(this);
  });
}

// ---- Subnets ----

Result<void> Store::UpsertSubnet(const Subnet& subnet, int64_t now_ms) {
  if (subnet.name.empty()) return Fail(Error::InvalidArgument("UpsertSubnet: the subnet has no name"));
  if (!subnet.v4 && !subnet.v6) {
    return Fail(Error::InvalidArgument("UpsertSubnet: subnet " + subnet.name + " has no CIDR"));
  }
  return Atomically(stmts_->control, Writes::kSeveral, "saving subnet " + subnet.name, [&]() -> Result<void> {
    Statements& s = *stmts_;
    JsonWriter exclude_ips;
    exclude_ips.BeginArray();
    for (const std::string& item : subnet.spec.exclude_ips) exclude_ips.String(item);
    exclude_ips.EndArray();

    const SubnetFamily* fams[2] = {subnet.family(Family::kV4), subnet.family(Family::kV6)};
    int64_t sid = 0;
    {
      Use q(s.upsert_subnet);
      q->bind(1, subnet.name);
      q->bind(2, subnet.provider);
      q->bind(3, std::string(ProtocolName(subnet.protocol)));
      // ?4..?11: cidr, gateway, usable (REAL and exact text) per family; NULL when absent.
      for (int i = 0; i < 2; ++i) {
        const SubnetFamily* f = fams[i];
        if (f == nullptr) {
          q->bind(4 + i);
          q->bind(6 + i);
          q->bind(8 + i);
          q->bind(10 + i);
          continue;
        }
        q->bind(4 + i, f->cidr.ToString());
        if (f->gateway) {
          q->bind(6 + i, f->gateway->ToString());
        } else {
          q->bind(6 + i);
        }
        q->bind(8 + i, static_cast<double>(f->usable.Count()));
        q->bind(10 + i, U128ToString(f->usable.Count()));
      }
      q->bind(12, subnet.spec.cidr_block);
      q->bind(13, subnet.spec.gateway);
      q->bind(14, exclude_ips.str());
      q->bind(15, subnet.spec.protocol);
      q->bind(16, subnet.spec.block_size);
      q->bind(17, now_ms);
      q->executeStep();
      sid = q->getColumn(0).getInt64();
    }
    {
      Use q(s.delete_exclusions);
      q->bind(1, sid);
      q->exec();
    }
    for (const SubnetFamily* f : fams) {
      if (f == nullptr) continue;
      f->excluded.ForEach([&](const IpRange& r) {
        Use q(s.insert_exclusion);
        q->bind(1, sid);
        q->bind(2, FamilyNumber(f->family));
        BindAddress(*q, 3, r.first);
        BindAddress(*q, 4, r.last);
        q->bind(5, r.first.ToString());
        q->bind(6, r.last.ToString());
        q->exec();
      });
    }
    return Ok();
  });
}

Result<void> Store::DeleteSubnet(const std::string& name) {
  return Atomically(stmts_->control, Writes::kOne, "deleting subnet " + name, [&]() -> Result<void> {
    auto sid = stmts_->SubnetId(name);
    if (!sid) return Fail(sid.error());
    int64_t live = 0;
    {
      Use q(stmts_->count_live);
      q->bind(1, *sid);
      q->executeStep();
      live = q->getColumn(0).getInt64();
    }
    if (live > 0) {
      return Fail(Error::Conflict("subnet " + name + " still has " + std::to_string(live) +
                                  " live lease(s); release them before deleting the subnet"));
    }
    Use q(stmts_->delete_subnet);
    q->bind(1, *sid);
    q->exec();
    return Ok();
  });
}

Result<std::vector<SubnetSpec>> Store::LoadSubnets() {
  return Guarded(db_->getFilename(), "loading subnets", [&]() -> Result<std::vector<SubnetSpec>> {
    std::vector<SubnetSpec> out;
    Use q(stmts_->load_subnets);
    while (q->executeStep()) {
      const std::string name = q->getColumn(0).getString();
      if (out.empty() || out.back().name != name) {
        SubnetSpec spec;
        spec.name = name;
        spec.provider = q->getColumn(1).getString();
        spec.cidr_block = q->getColumn(2).getString();
        spec.gateway = q->getColumn(3).getString();
        spec.protocol = q->getColumn(4).getString();
        spec.block_size = q->getColumn(5).getString();
        out.push_back(std::move(spec));
      }
      if (!q->getColumn(6).isNull()) out.back().exclude_ips.push_back(q->getColumn(6).getString());
    }
    return out;
  });
}

// ---- Leases ----

Result<void> Store::InsertLease(const Lease& lease, int64_t now_ms) {
  const AttachmentKey key = lease.key();
  if (lease.state == LeaseState::kReleased) {
    return Fail(Error::InvalidArgument("InsertLease " + key.ToString() +
                                       ": a lease is inserted pending or committed, not released"));
  }
  if (lease.addresses().empty()) {
    return Fail(Error::InvalidArgument("InsertLease " + key.ToString() + ": no address"));
  }
  if ((lease.v4 && !lease.v4->is_v4()) || (lease.v6 && lease.v6->is_v4())) {
    return Fail(Error::InvalidArgument("InsertLease " + key.ToString() +
                                       ": v4 must hold an IPv4 address and v6 an IPv6 one"));
  }
  // A dual-stack lease is two rows: both or neither.
  const Writes writes = lease.addresses().size() > 1 ? Writes::kSeveral : Writes::kOne;
  return Atomically(stmts_->control, writes, "leasing for " + key.ToString(), [&]() -> Result<void> {
    auto sid = stmts_->SubnetId(lease.subnet);
    if (!sid) return Fail(sid.error());
    // A dual-stack lease is one row per family sharing the attachment key.
    for (const IpAddr& a : lease.addresses()) {
      Use q(stmts_->insert_lease);
      q->bind(1, *sid);
      q->bind(2, FamilyNumber(a.family()));
      BindAddress(*q, 3, a);
      q->bind(4, a.ToString());
      q->bind(5, StateName(lease.state));
      q->bind(6, key.owner);
      q->bind(7, key.ifname);
      q->bind(8, lease.owner.pod_namespace);
      q->bind(9, lease.owner.pod_name);
      q->bind(10, lease.owner.pod_uid);
      q->bind(11, lease.owner.container_id);
      q->bind(12, lease.provider);
      q->bind(13, lease.sticky ? 1 : 0);
      q->bind(14, lease.mac);
      q->bind(15, now_ms);
      try {
        q->exec();
      } catch (const SQLite::Exception& e) {
        if (e.getExtendedErrorCode() != SQLITE_CONSTRAINT_UNIQUE) throw;
        q->tryReset();
        return Fail(stmts_->DescribeConflict(*sid, lease, a));
      }
    }
    return Ok();
  });
}

Result<void> Store::SetLeaseState(const AttachmentKey& key, LeaseState state, int64_t now_ms) {
  if (state == LeaseState::kPending) {
    return Fail(Error::InvalidArgument(
        "SetLeaseState " + key.ToString() +
        ": a lease only moves forward (pending -> committed -> released); insert a new lease "
        "to reserve an address again"));
  }
  return Atomically(stmts_->control, Writes::kOne, "marking " + key.ToString() + " " + StateName(state),
                    [&]() -> Result<void> {
    Use q(stmts_->set_state);
    q->bind(1, StateName(state));
    q->bind(2, now_ms);
    if (auto ok = stmts_->BindKey(*q, key); !ok) return ok;
    if (q->exec() == 0) return Fail(Error::NotFound("no live lease for " + key.ToString()));
    return Ok();
  });
}

Result<void> Store::UpdateLeaseContainer(const AttachmentKey& key, const std::string& container_id,
                                         int64_t now_ms) {
  // A container-keyed lease *is* its container: a new container is a new attachment.
  if (key.owner.rfind("container:", 0) == 0) {
    return Fail(Error::InvalidArgument("UpdateLeaseContainer " + key.ToString() +
                                       ": a lease keyed by container ID cannot change container; "
                                       "release it and lease again"));
  }
  return Atomically(stmts_->control, Writes::kOne, "moving " + key.ToString() + " to container " + container_id,
                    [&]() -> Result<void> {
    Use q(stmts_->update_container);
    q->bind(1, container_id);
    q->bind(2, now_ms);
    if (auto ok = stmts_->BindKey(*q, key); !ok) return ok;
    if (q->exec() == 0) return Fail(Error::NotFound("no live lease for " + key.ToString()));
    return Ok();
  });
}

Result<void> Store::UpdateLeasePodUid(const AttachmentKey& key, const std::string& pod_uid,
                                      int64_t now_ms) {
  return Atomically(stmts_->control, Writes::kOne, "recording pod UID " + pod_uid + " for " + key.ToString(),
                    [&]() -> Result<void> {
    Use q(stmts_->update_pod_uid);
    q->bind(1, pod_uid);
    q->bind(2, now_ms);
    if (auto ok = stmts_->BindKey(*q, key); !ok) return ok;
    if (q->exec() == 0) return Fail(Error::NotFound("no live lease for " + key.ToString()));
    return Ok();
  });
}

Result<void> Store::ReleaseLease(const AttachmentKey& key, int64_t now_ms) {
  return SetLeaseState(key, LeaseState::kReleased, now_ms);
}

Result<std::vector<Lease>> Store::LoadLiveLeases() {
  std::vector<Lease> out;
  auto r = ForEachLiveLease([&out](Lease l) -> Result<void> {
    out.push_back(std::move(l));
    return Ok();
  });
  if (!r) return Fail(r.error());
  return out;
}

Result<void> Store::ForEachLiveLease(const std::function<Result<void>(Lease)>& fn) {
  return Guarded(db_->getFilename(), "loading live leases", [&]() -> Result<void> {
    std::optional<Lease> current;  // read, not yet handed over: its other family may follow
    std::string last_owner;
    Use q(stmts_->load_live);
    while (q->executeStep()) {
      auto addr = ColumnAddress(q->getColumn(2));
      if (!addr) return Fail(addr.error().Wrap("leases table"));
      auto state = ParseState(q->getColumn(3).getString());
      if (!state) return Fail(state.error());
      std::string subnet = q->getColumn(0).getString();
      std::string owner = q->getColumn(4).getString();
      std::string ifname = q->getColumn(5).getString();
      // Rows come ordered by attachment key: the rows of a dual-stack lease are adjacent.
      const bool same = current && current->subnet == subnet && last_owner == owner &&
                        current->owner.ifname == ifname;
      if (!same) {
        if (current) {
          if (auto r = fn(std::move(*current)); !r) return r;
        }
        Lease l;
        l.subnet = std::move(subnet);
        l.owner.ifname = std::move(ifname);
        l.owner.pod_namespace = q->getColumn(6).getString();
        l.owner.pod_name = q->getColumn(7).getString();
        l.owner.pod_uid = q->getColumn(8).getString();
        l.owner.container_id = q->getColumn(9).getString();
        l.provider = q->getColumn(10).getString();
        l.sticky = q->getColumn(11).getInt() != 0;
        l.mac = q->getColumn(12).getString();
        l.state = *state;
        current = std::move(l);
        last_owner = std::move(owner);
      } else if (*state == LeaseState::kPending) {
        // Families disagree only if a crash split them; the less advanced state is the
        // honest one (the commit is not known to have reached the API server).
        current->state = LeaseState::kPending;
      }
      (addr->is_v4() ? current->v4 : current->v6) = *addr;
    }
    if (current) return fn(std::move(*current));
    return Ok();
  });
}

Result<std::vector<HistoryEntry>> Store::History(const std::string& address, size_t limit) {
  auto addr = IpAddr::Parse(address);
  if (!addr) return Fail(addr.error().Wrap("History"));
  return Guarded(db_->getFilename(), "reading the history of " + address,
                 [&]() -> Result<std::vector<HistoryEntry>> {
    std::vector<HistoryEntry> out;
    Use q(stmts_->history);
    BindAddress(*q, 1, *addr);
    q->bind(2, static_cast<int64_t>(
                   std::min<size_t>(limit, static_cast<size_t>(std::numeric_limits<int64_t>::max()))));
    while (q->executeStep()) {
      HistoryEntry h;
      h.at_ms = q->getColumn(0).getInt64();
      h.event = q->getColumn(1).getString();
      h.subnet = q->getColumn(2).getString();
      h.address = q->getColumn(3).getString();
      h.pod_namespace = q->getColumn(4).getString();
      h.pod_name = q->getColumn(5).getString();
      h.pod_uid = q->getColumn(6).getString();
      h.container_id = q->getColumn(7).getString();
      h.ifname = q->getColumn(8).getString();
      out.push_back(std::move(h));
    }
    return out;
  });
}

// ---- Sync state ----

Result<std::optional<std::string>> Store::GetSyncState(const std::string& key) {
  return Guarded(db_->getFilename(), "reading sync state " + key, [&]() -> Result<std::optional<std::string>> {
    Use q(stmts_->get_sync);
    q->bind(1, key);
    if (!q->executeStep()) return std::optional<std::string>();
    return std::optional<std::string>(q->getColumn(0).getString());
  });
}

Result<void> Store::PutSyncState(const std::string& key, const std::string& value,
                                 int64_t now_ms) {
  return Atomically(stmts_->control, Writes::kOne, "saving sync state " + key, [&]() -> Result<void> {
    Use q(stmts_->put_sync);
    q->bind(1, key);
    q->bind(2, value);
    q->bind(3, now_ms);
    q->exec();
    return Ok();
  });
}

// ---- Checkpointer ----

Checkpointer::Checkpointer(std::unique_ptr<SQLite::Database> db) : db_(std::move(db)) {}

Checkpointer::~Checkpointer() = default;

Result<std::unique_ptr<Checkpointer>> Checkpointer::Open(const std::string& path) {
  std::error_code ec;
  if (path == ":memory:" || !std::filesystem::exists(path, ec)) {
    return Fail(Error::NotFound("database " + path + " does not exist"));
  }
  try {
    // No busy timeout: a checkpoint that finds another one running gives up at once.
    auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE);
    // This connection never writes; it must not checkpoint on close either, racing the
    // Store's (harmless, but it would sync on the caller's thread at shutdown).
    sqlite3_db_config(db->getHandle(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    // A connection finds the WAL when it first reads; until then a checkpoint does nothing.
    const std::string mode = db->execAndGet("PRAGMA journal_mode").getString();
    (void)db->execAndGet("SELECT count(*) FROM sqlite_schema");
    if (mode != "wal") {
      return Fail(Error::Internal(Describe(path) + " is not in WAL mode (" + mode +
                                  "); open it with Store::Open first"));
    }
    return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(db)));
  } catch (const SQLite::Exception& e) {
    return Fail(FromSqlite(e, "opening a checkpoint connection", path));
  }
}

Result<Checkpointer::Progress> Checkpointer::Run() {
  Progress p;
  const int rc = sqlite3_wal_checkpoint_v2(db_->getHandle(), "main", SQLITE_CHECKPOINT_PASSIVE,
                                           &p.wal_pages, &p.copied_pages);
  if (rc == SQLITE_BUSY) return Fail(Error::Unavailable("a checkpoint is already running"));
  if (rc == SQLITE_OK && p.wal_pages < 0) {
    return Fail(Error::Internal("checkpointing " + Describe(db_->getFilename()) + ": not in WAL mode"));
  }
  if (rc != SQLITE_OK) {
    return Fail(Error::Internal("checkpointing " + Describe(db_->getFilename()) + ": " +
                                sqlite3_errmsg(db_->getHandle())));
  }
  return p;
}

}  // namespace sublease
