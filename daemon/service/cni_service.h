// CniService: what the daemon does for each CNI request, in standalone mode.
//
// Joins the pure Allocator with the Store: every allocation and release is one
// SQLite transaction (BEGIN IMMEDIATE) that is committed before the answer leaves, and
// the in-memory allocator is updated in the same step (and undone if the store fails),
// so the two never disagree. Leases live from ADD to DEL (or until GC finds their
// attachment gone). A repeated ADD for an attachment that holds a lease is answered
// from memory. Single-threaded: the daemon's loop thread owns this object.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/wire.h"
#include "daemon/allocator/allocator.h"
#include "daemon/store/store.h"

namespace sublease {

struct GcOutcome {
  size_t released = 0;
  size_t kept = 0;
};

// The CNI answer for a lease: its addresses with the subnet's prefix length and gateway,
// and the NAD's routes, where a route without dst becomes the default route via its gw
// or the subnet's gateway (a default route only when asked: an attachment must not take
// the pod's default route, as in Kube-OVN).
CniReply MakeCniReply(const Subnet& subnet, const Lease& lease, const std::vector<WireRoute>& routes);

class CniService {
 public:
  // Borrows all three; they must outlive the service.
  CniService(Allocator* allocator, Store* store, const Clock* clock);

  // Reads subnets and live leases from the store into the allocator (start-up).
  Result<void> Load();

  // Standalone mode: makes the given Subnets the configured set. New and changed ones
  // are stored and applied; a stored subnet missing from `specs` is removed when it
  // has no live lease, and kept (with a warning in the returned list) when it has.
  // Nothing changes if any spec is invalid (the error names the subnet and the field).
  Result<std::vector<std::string>> ApplySubnets(const std::vector<SubnetSpec>& specs);

  // CNI ADD: the attachment's lease, allocating one if it has none.
  Result<CniReply> Add(const CniRequest& request);
  // CNI DEL: releases the attachment's lease. Success when there is none (CNI spec:
  // DEL must succeed for missing state), and when the lease has moved to a newer
  // sandbox of the same pod (a late DEL of the old sandbox must not free it).
  Result<void> Del(const CniRequest& request);
  // CNI CHECK: the attachment's committed lease, or kNotFound.
  Result<CniReply> Check(const CniRequest& request);
  // CNI GC: releases this provider's leases whose (containerID, ifname) is not listed.
  Result<GcOutcome> Gc(const GcRequest& request);

  bool Ready() const { return loaded_; }

  // Group commit (BatchingBackend): between BeginBatch() and EndBatch(), Add, Del and Gc
  // join one store transaction instead of each committing its own. EndBatch commits it;
  // when the COMMIT fails it undoes, in memory, every change the batch made (newest
  // first), so the allocator never holds what the disk does not, and returns the error.
  // An operation that fails inside a batch changes nothing (its writes are a savepoint).
  // REQUIRES: BeginBatch with no batch open; EndBatch with one open.
  Result<void> BeginBatch();
  Result<void> EndBatch();
  bool InBatch() const { return batch_.has_value(); }

 private:
  // A transaction of its own, or none when the operation joins the open batch.
  Result<std::optional<Transaction>> BeginUnlessBatched();
  // Finishes an operation's own transaction (nothing to do inside a batch).
  static Result<void> CommitUnlessBatched(std::optional<Transaction>& tx);
  void OnUndo(std::function<void()> undo);

  Result<const Subnet*> SubnetFor(const std::string& provider) const;
  Result<void> ReleaseLease(const Lease& lease);

  Allocator* allocator_;
  Store* store_;
  const Clock* clock_;
  bool loaded_ = false;
  std::optional<Transaction> batch_;
  std::vector<std::function<void()>> undo_;  // in-memory changes of the open batch
};

}  // namespace sublease
