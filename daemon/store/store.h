// Store: the only code that touches SQLite. The node's durable journal and cache.
//
// One Store per database file, owned by the daemon's loop thread (one writer). Every
// write runs inside a Transaction opened with BEGIN IMMEDIATE. Opening applies the
// numbered migrations in schema/ (PRAGMA user_version), turns on WAL and foreign keys,
// and refuses a database written by a newer sublease with a message saying so.
// SQLiteCpp throws; every public method catches at this boundary and returns Result.
// Timestamps are passed in (unix milliseconds) so the store needs no clock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/allocator/lease.h"
#include "daemon/allocator/subnet.h"

namespace SQLite { class Database; }
struct sqlite3;

namespace sublease {

class Store;

// RAII write transaction (BEGIN IMMEDIATE). Rolls back unless Commit() succeeded.
class Transaction {
 public:
  ~Transaction();
  Transaction(Transaction&&) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Result<void> Commit();

 private:
  friend class Store;
  explicit Transaction(Store* store) : store_(store) {}
  Store* store_;
  bool done_ = false;
};

struct HistoryEntry {
  int64_t at_ms = 0;
  std::string event;  // "allocated", "committed", "released"
  std::string subnet;
  std::string address;
  std::string pod_namespace, pod_name, pod_uid, container_id, ifname;
};

struct StoreOptions {
  // How long a write waits for another connection's lock before kUnavailable.
  int busy_timeout_ms = 5000;
  // false: PRAGMA synchronous=NORMAL. In WAL mode a commit survives a process crash
  // (kill -9) but the last commits before a power loss or kernel panic may be lost
  // (the database stays consistent). true: synchronous=FULL, an fsync per commit,
  // which survives power loss too at the price of one disk flush per allocation.
  bool sync_every_commit = false;
  // The bound on the WAL, in pages (4 KiB): a commit that leaves at least this many in
  // the WAL checkpoints them into the database file there and then, on the committing
  // thread (SQLite's automatic checkpoint, whose default is 1000). 0: never. The daemon
  // raises it and copies the WAL from another thread (Checkpointer) as it grows, so
  // that commits rarely pay for a checkpoint and its fsyncs.
  int wal_checkpoint_pages = 1000;
};

class Store {
 public:
  // Opens (creating if absent) and migrates. path ":memory:" is allowed for tests.
  // kInternal with a clear message on a corrupt file, a newer schema, or a read-only
  // location; IsCorruption() tells the corrupt case (the one to move aside) apart.
  static Result<std::unique_ptr<Store>> Open(const std::string& path,
                                             const StoreOptions& options = {});
  // Opens read-only without migrating (subleasectl; works while the daemon writes).
  // kNotFound when the file does not exist; kInternal when its schema is not this
  // binary's.
  static Result<std::unique_ptr<Store>> OpenReadOnly(const std::string& path);
  ~Store();

  // True when an Error from Open says the file is not a sound SQLite database (not a
  // database at all, or failing the integrity check), the one case where moving the
  // file aside and rebuilding from the API server is right.
  static bool IsCorruption(const Error& e);

  // The schema version this binary writes, and the one in the file.
  static int LatestSchemaVersion();
  Result<int> SchemaVersion();

  // BEGIN IMMEDIATE. kInternal when a transaction is already open (no nesting).
  // REQUIRES: the Transaction does not outlive this Store. Each write method below
  // joins an open Transaction (atomically, through a savepoint) or runs in its own.
  Result<Transaction> Begin();

  // Subnets: the spec as given plus the normalised exclusions, usable counts.
  Result<void> UpsertSubnet(const Subnet& subnet, int64_t now_ms);
  // kNotFound when absent; kConflict while live leases remain (release them first, so
  // history records their end). Released leases go with the subnet; history stays.
  Result<void> DeleteSubnet(const std::string& name);
  Result<std::vector<SubnetSpec>> LoadSubnets();

  // Leases. Insert fails with kConflict when a live lease holds the address
  // (the unique index), naming the holder, or when the attachment already holds a live
  // lease; kNotFound when the subnet is not in the store. The lease is inserted in its
  // state (pending, or committed when rebuilt from the API server; never released).
  Result<void> InsertLease(const Lease& lease, int64_t now_ms);
  // Moves a live lease forward (pending -> committed -> released); committing twice is
  // a no-op. kNotFound when no live lease has this key, kInvalidArgument going back.
  Result<void> SetLeaseState(const AttachmentKey& key, LeaseState state, int64_t now_ms);
  Result<void> UpdateLeaseContainer(const AttachmentKey& key, const std::string& container_id,
                                    int64_t now_ms);
  // A pod re-created with the same name (a StatefulSet member) keeps the lease under its
  // new UID. kNotFound when no live lease has this key.
  Result<void> UpdateLeasePodUid(const AttachmentKey& key, const std::string& pod_uid,
                                 int64_t now_ms);
  // Marks released (kept for history); kNotFound when no live lease has this key.
  Result<void> ReleaseLease(const AttachmentKey& key, int64_t now_ms);
  // Every live (pending or committed) lease, for rebuilding the allocator at start-up.
  Result<std::vector<Lease>> LoadLiveLeases();
  // The same leases, handed to `fn` one at a time as they are read, in attachment-key
  // order, without holding them all: start-up at 100k leases would otherwise hold every
  // lease twice and leave the freed copies scattered through the heap. Stops at, and
  // returns, the first error of `fn`.
  Result<void> ForEachLiveLease(const std::function<Result<void>(Lease)>& fn);
  // Who held an address, newest first (lease_history).
  Result<std::vector<HistoryEntry>> History(const std::string& address, size_t limit);

  // WAL pages after this connection's last commit (0 before the first), and how many
  // commits it has made: a Checkpointer's caller decides from these when to run it.
  int WalPages() const { return wal_pages_; }
  uint64_t Commits() const { return commits_; }

  // Informer progress and other small facts: key -> value.
  Result<std::optional<std::string>> GetSyncState(const std::string& key);
  Result<void> PutSyncState(const std::string& key, const std::string& value, int64_t now_ms);

 private:
  friend class Transaction;
  struct Statements;
  Store(std::unique_ptr<SQLite::Database> db, int wal_checkpoint_pages);
  static int OnWalCommit(void* store, struct sqlite3* db, const char* name, int pages);
  std::unique_ptr<SQLite::Database> db_;
  std::unique_ptr<Statements> stmts_;
  int wal_checkpoint_pages_;
  int wal_pages_ = 0;
  uint64_t commits_ = 0;
};

// A second connection to a Store's database file whose one job is checkpointing: copying
// committed WAL pages into the database file (and syncing it), so that another thread can
// do it while the Store's thread goes on committing. A PASSIVE checkpoint neither waits
// for nor blocks the writer; it copies what was committed when it started. The writer
// starts the WAL over at its next commit once every page is copied (under steady load
// that happens through the writer's own bound, StoreOptions::wal_checkpoint_pages).
// Durability is unchanged: a commit is in the WAL before the Store answers it.
// Run() from one thread at a time; any thread.
class Checkpointer {
 public:
  // kNotFound when the file does not exist (the Store creates it).
  static Result<std::unique_ptr<Checkpointer>> Open(const std::string& path);
  ~Checkpointer();

  struct Progress {
    int wal_pages = 0;     // in the WAL when it ran
    int copied_pages = 0;  // of those, now in the database file
  };
  // A PASSIVE checkpoint. kUnavailable when another checkpoint was running.
  Result<Progress> Run();

 private:
  explicit Checkpointer(std::unique_ptr<SQLite::Database> db);
  std::unique_ptr<SQLite::Database> db_;
};

}  // namespace sublease
