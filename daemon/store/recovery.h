// Recovery of the node's database at start-up: the "database lost or corrupt" case of
// DESIGN §3.2 ("if it is lost, it is rebuilt from the API server").
//
// OpenOrRecover opens the store like Store::Open; when the file is not a sound SQLite
// database (Store::IsCorruption) it moves the file and its -wal/-shm companions aside
// to `<path>.corrupt-<UTC time>` — kept for a person, never deleted — and creates a
// fresh database in its place. Every other failure (a newer schema, a read-only or
// unwritable location, a lock held by another process, an I/O error) is returned as
// is and nothing is moved: those files are sound, and moving them would lose data.
//
// A database that was created here (absent before, or just recovered) carries the
// "rebuild pending" mark in sync_state until RebuildFromBlocks (rebuild.h) has filled
// it from the API server, so a daemon that dies before the rebuild finished rebuilds at
// its next start too. Standalone mode has nothing to rebuild from: a recovered
// standalone database starts empty.
//
// Called once, on the daemon's main thread, before the loop runs. No clock of its own:
// the caller passes the time used for the aside file's name and the mark.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/store/store.h"

namespace sublease {

struct OpenedStore {
  std::unique_ptr<Store> store;
  bool created = false;            // the file did not exist (first start, or the file was lost)
  bool recovered = false;          // the file was corrupt and has been moved aside
  std::string corrupt_error;       // why it was judged corrupt (recovered only)
  std::vector<std::string> moved;  // "<from> -> <to>" for each file moved aside
  std::string moved_to;            // the database's new name (recovered only)
};

// Opens `path` (creating its directory's file, not the directory), moving a corrupt
// database aside as described above. Errors: Store::Open's, unchanged, when the file
// is not corrupt; kInternal when moving it aside or creating the fresh one fails (the
// message names the files). ":memory:" is opened as is.
Result<OpenedStore> OpenOrRecover(const std::string& path, int64_t now_ms,
                                  const StoreOptions& options = {});

// The name a corrupt database is moved to: "<path>.corrupt-20240131T235959Z", with a
// ".N" suffix when that name is taken (two recoveries in one second).
std::string CorruptAsideName(const std::string& path, int64_t now_ms);

// The sync_state key of the "rebuild pending" mark, and whether it is set.
inline constexpr std::string_view kRebuildPendingKey = "store.rebuild_pending";
Result<bool> RebuildPending(Store* store);
Result<void> MarkRebuildPending(Store* store, int64_t now_ms);
// Joins an open Transaction like every store write (RebuildFromBlocks clears the mark in
// the transaction that inserts the leases).
Result<void> ClearRebuildPending(Store* store, int64_t now_ms);

}  // namespace sublease
