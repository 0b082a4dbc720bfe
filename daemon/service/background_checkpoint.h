// BackgroundCheckpoint: keeps the Store's WAL short from libuv's thread pool, so that
// commits on the loop thread rarely pay for a checkpoint (copying the WAL's pages into
// the database file and two fsyncs; about 9% of the daemon's time when SQLite did it
// inside every 1000th page's commit, and the longest pauses of the loop).
//
// A timer looks every `period_ms` whether the Store has committed since the last
// checkpoint and its WAL holds at least `min_pages`; if so, a Checkpointer (a second
// connection) runs a PASSIVE checkpoint on the thread pool (uv_queue_work) while the
// loop goes on committing. The Store keeps its own bound (StoreOptions::
// wal_checkpoint_pages) for when this falls behind, and that bound is what starts the
// WAL over under steady load (SQLite restarts the WAL only when a transaction begins
// with every page copied, which a concurrent checkpoint never sees while commits go on):
// the WAL stays under about the bound plus one commit. Nothing here changes what is durable when: every commit is
// in the WAL before it is answered, as before. Loop thread only (the checkpoint itself
// runs on a pool thread and touches nothing but its own connection).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "daemon/store/store.h"

namespace sublease {

struct BackgroundCheckpointOptions {
  int min_pages = 1000;  // SQLite's own automatic checkpoint size
  // The Store's bound (StoreOptions::wal_checkpoint_pages; 0: none). Past it the Store
  // checkpoints in its next commit, which is what starts the WAL over when commits never
  // pause; a checkpoint running here then would only make that one give up (busy) and
  // let the WAL grow on, so none is started.
  int max_pages = 0;
  uint64_t period_ms = 50;
};

struct BackgroundCheckpointStats {
  uint64_t runs = 0;          // checkpoints finished (or failed)
  uint64_t copied_pages = 0;  // summed over runs
  uint64_t failures = 0;      // busy or failed; the next one tries again
};

class BackgroundCheckpoint {
 public:
  // Borrows the loop and the store (they must outlive this object).
  BackgroundCheckpoint(uv_loop_t* loop, const Store* store, std::unique_ptr<Checkpointer> checkpointer,
                       BackgroundCheckpointOptions options = {});
  // REQUIRES: Close() has completed (the timer handle is initialised at construction).
  ~BackgroundCheckpoint();

  // Starts the timer.
  void Start();
  // Queues a checkpoint now if one is due and none is running (what the timer does).
  void Poll();
  // Stops the timer, waits for a running checkpoint, closes the timer, then calls done.
  void Close(std::function<void()> done);

  bool Running() const { return running_; }
  const BackgroundCheckpointStats& stats() const { return stats_; }

 private:
  static void OnWork(uv_work_t* req);
  static void OnAfterWork(uv_work_t* req, int status);
  void MaybeFinishClose();

  uv_loop_t* loop_;
  const Store* store_;
  std::unique_ptr<Checkpointer> checkpointer_;
  BackgroundCheckpointOptions options_;
  uv_timer_t timer_;
  uv_work_t work_;
  bool running_ = false;
  bool timer_closed_ = false;
  bool closing_ = false;
  uint64_t commits_at_last_run_ = 0;
  Result<Checkpointer::Progress> outcome_ = Checkpointer::Progress{};  // written by the pool thread
  std::function<void()> on_closed_;
  BackgroundCheckpointStats stats_;
};

}  // namespace sublease
