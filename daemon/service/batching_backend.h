// BatchingBackend: standalone mode's CniBackend with group commit. The requests that
// arrive in one turn of the libuv loop are queued, then run in arrival order inside one
// SQLite transaction (CniService::BeginBatch/EndBatch), and answered only after its
// COMMIT: a burst of N requests costs one commit instead of N, and no answer leaves
// before the lease it reports is on disk. A request alone in its turn is a batch of one.
//
// The queue is drained in a uv_check callback (right after the loop's I/O phase, where
// the HTTP server delivers requests); an idle handle keeps the loop from blocking while
// anything is queued. GC runs alone, outside any batch (it may release many leases and
// must be all-or-nothing). If a COMMIT fails, every write of that batch (ADD, DEL) is
// answered with the error and nothing of it stays in memory; reads keep their answer.
// Loop thread only. Close() answers what is queued, then closes the handles.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>

#include "daemon/service/cni_backend.h"

namespace sublease {

struct BatchingStats {
  uint64_t batches = 0;     // transactions committed (or failed)
  uint64_t requests = 0;    // requests run inside batches
  uint64_t largest = 0;     // most requests in one batch
};

class BatchingBackend final : public CniBackend {
 public:
  // Borrows both; they must outlive this object. Starts no handle until used.
  BatchingBackend(uv_loop_t* loop, CniService* service);
  // REQUIRES: Close() has completed (or nothing was ever queued and Close was called).
  ~BatchingBackend() override;

  void Add(const CniRequest& request, ReplyCallback done) override;
  void Del(const CniRequest& request, DoneCallback done) override;
  void Check(const CniRequest& request, ReplyCallback done) override;
  void Gc(const GcRequest& request, GcCallback done) override;
  bool Ready() const override { return service_->Ready(); }

  // Answers everything queued, closes the handles, then calls `done` (from a close
  // callback). Requests after Close are answered at once without batching.
  void Close(std::function<void()> done);

  // Runs everything queued now (also what the check handle does each loop turn).
  void Flush();
  const BatchingStats& stats() const { return stats_; }

 private:
  struct Pending {
    enum class Op { kAdd, kDel, kCheck } op;
    CniRequest request;
    ReplyCallback reply;  // kAdd, kCheck
    DoneCallback done;    // kDel
  };
  void Enqueue(Pending p);

  uv_loop_t* loop_;
  CniService* service_;
  uv_check_t check_;
  uv_idle_t idle_;
  bool started_ = false;
  bool closed_ = false;
  int closing_ = 0;
  std::function<void()> on_closed_;
  std::deque<Pending> queue_;
  BatchingStats stats_;
};

}  // namespace sublease
