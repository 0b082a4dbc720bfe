// BlockEngine: a node's side of the cluster protocol (docs/cluster-protocol.md). It
// turns an allocation decided locally into a cluster-wide fact by writing it into the
// IPBlock that holds the address, and undoes or retries what the API server refuses.
//
//   Allocate: allocator pick + a `pending` lease row (one SQLite transaction) → the
//   address's block gets the allocation through a create (claim) or a CAS update (own
//   block, or borrowing from another node's) → `committed` in store and allocator →
//   done(lease). Invariant: done(success) runs only after the API write containing the
//   allocation succeeded; that is what makes duplicates impossible across nodes.
//
// Group commit: at most one read or write is in flight per block; allocations and
// releases queued for a block meanwhile leave together in its next write. A 409 (stale
// version, AlreadyExists) is followed by a GET and a merge; only the allocations whose
// offset someone else now holds fail — dynamic ones are re-picked (Options.max_repicks),
// static and StatefulSet-pool ones report kConflict naming the holder.
// Releases and holder updates, which nothing waits for, may wait for the block's next
// write instead of writing alone (Options.deferred_write_ms); so may, briefly, an
// allocation made ahead of time into an own block (Options.ahead_write_window_ms) until
// its CNI ADD comes (Expedite).
//
// What the engine keeps per block: the last object seen (for the CAS), the queue, and
// which of its addresses it marked as foreign holds in the allocator. Locality (which
// blocks are this node's) is pushed into the allocator from the informer feed
// (OnBlockUpsert/OnBlockDeleted) and from the engine's own writes.
//
// Ownership: borrows the Allocator, Store, BlockApi and Clock; all must outlive the
// engine. Subnets must be in the allocator (UpsertSubnet, then the engine's
// OnSubnetUpsert) and in the store before requests for them arrive. Thread: the
// daemon's one loop thread.
// Callbacks are asynchronous — they run from BlockApi callbacks — except that answers
// needing no API call (a lease already committed, a request the allocator rejects) are
// given before Allocate returns. Callbacks that arrive after the engine was destroyed
// are ignored.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "daemon/allocator/allocator.h"
#include "daemon/cluster/ahead_window.h"
#include "daemon/cluster/block_api.h"
#include "daemon/store/store.h"
#include "sync/ipblock.h"

namespace sublease {

// Monotonic counters; the daemon exports them as metrics.
struct BlockEngineStats {
  uint64_t gets = 0, lists = 0, creates = 0, updates = 0, deletes = 0;  // API calls made
  uint64_t conflicts = 0;    // 409s: stale version, AlreadyExists, failed precondition
  uint64_t unavailable = 0;  // API calls that failed kUnavailable
  uint64_t allocations = 0;  // Allocate calls answered with a newly committed lease
  uint64_t releases = 0;     // leases released (their allocation removed from the block)
  uint64_t claims = 0;       // blocks this node created
  uint64_t borrows = 0;      // allocations committed into another node's block
  uint64_t repicks = 0;      // dynamic picks retried after losing their address
  uint64_t backoffs = 0;     // borrows that waited before retrying after a 409
  uint64_t blocks_deleted = 0;
  uint64_t adoptions = 0;     // StatefulSet pods' allocations taken over from a previous pod
  uint64_t adopted_away = 0;  // leases dropped here because another node adopted them
  // Allocations of failed attempts that landed after the error answer, taken back out.
  uint64_t strays_removed = 0;
  // Spares (Options.spare_addresses): allocations answered from one with no API write;
  // spares added to and given back from this node's blocks.
  uint64_t spares_taken = 0, spares_added = 0, spares_returned = 0;
  uint64_t writes() const { return creates + updates + deletes; }
};

class BlockEngine {
 public:
  struct Options {
    std::string node;              // this node's name (spec.node of its blocks)
    int empty_block_reserve = 1;   // own empty blocks per subnet and family kept, not deleted
    // An own block beyond the reserve is deleted only once it has stayed empty this long
    // (Tick), so churn (pods deleted, then re-created) refills it instead of
    // deleting it and claiming another: a delete, a List and a create saved. 0 = at once.
    int64_t empty_block_linger_ms = 0;
    // Releases and holder updates (container IDs), which no CNI answer waits for, wait up
    // to this long (until a Tick after it) for the block's next write and ride along with
    // it; an allocation that finds no free address, or a later request of the same
    // attachment, sends them at once. 0 = written at once. (Group commit across time:
    // issue 14.)
    int64_t deferred_write_ms = 0;
    // An allocation made ahead of time (AllocateRequest.unhurried) into an own block
    // waits up to this long for others to share its write (group commit across pods
    // arriving one by one: issue 14); Expedite, a hurried change of the same block, or
    // the deadline (SetWake) sends it. 0 = written at once. With learn_ahead_window,
    // the longest such wait: the window is learned from the allocations' lead times
    // (NoteAdd) and the recent write time, below this (ahead_window.h).
    int64_t ahead_write_window_ms = 0;
    bool learn_ahead_window = false;
    // Spares (docs/cluster-protocol.md "Spares"): each write of an own block tops up to
    // this many addresses per subnet and family held in this node's blocks for pods it has
    // not seen yet. A plain dynamic allocation that picks one is committed at once, with
    // no API write (the address is this node's already); its pod is recorded in the block
    // with a later write (deferred_write_ms), which tops the spares up again. 0 = none.
    int spare_addresses = 0;
    // After another node asked for the spares of a subnet back (it found no other free
    // address), this node keeps none there for this long, or until it has released
    // spare_addresses more leases there than it committed (pods deleted: room again).
    int64_t spare_pause_ms = 60'000;
    int max_repicks = 8;           // dynamic re-picks per allocation before kUnavailable
    int claim_spread = 4;          // a claim picks at random among this many lowest free blocks
    int max_conflict_rounds = 16;  // 409 → re-read → retry rounds per queued change
    // A borrower whose write to another node's block was answered 409 re-reads and
    // writes again after a random wait of 1 ms to W, W = max(this, the recent write
    // time) doubled with each 409 in a row (up to 16×, at most 200 ms), not at once.
    // Nodes borrowing from the same few blocks at the end of a full subnet otherwise
    // retry in lockstep: with k of them, ~k²/2 409s; waiting spreads them out, and the
    // borrows queued meanwhile share one write. 0 = retry at once.
    int64_t borrow_backoff_ms = 0;
    uint64_t seed = 0;             // random choices; 0 = from std::random_device
  };
  using LeaseDone = std::function<void(Result<Lease>)>;
  using VoidDone = std::function<void(Result<void>)>;

  BlockEngine(Allocator* allocator, Store* store, BlockApi* api, const Clock* clock,
              Options options);
  ~BlockEngine();
  BlockEngine(const BlockEngine&) = delete;
  BlockEngine& operator=(const BlockEngine&) = delete;

  // Protocol steps 1–7, preceded for a StatefulSet member (sticky, ordinal, owner_uid)
  // by adoption: the subnet's blocks are listed and an allocation of the same pod name
  // and interface, sticky, with the same owner UID, is taken over with a CAS update
  // (node, pod UID, container ID rewritten) instead of allocating anew. Errors: the allocator's (kNotFound subnet, kInvalidArgument,
  // kConflict naming the holder, kExhausted when no block anywhere has a free address),
  // kUnavailable when the API server cannot be reached or contention outlasts the
  // re-picks (nothing is left reserved: no pending row, no allocator hold), kInternal
  // for the store. Requests for one attachment are served one after another.
  void Allocate(const AllocateRequest& request, LeaseDone done);

  // Removes the attachment's allocation from its block(s), then marks the lease
  // released; success when there is no lease. An own block left empty is deleted unless
  // it is within the reserve. kUnavailable leaves the lease committed (retry later).
  void Release(const AttachmentKey& key, VoidDone done);

  // A Kube-OVN reserved IP (the leader, docs/cluster-protocol.md "Reserved IPs"): writes
  // an allocation carrying `reserved_ip` for pod `pod_namespace/pod_name` in `subnet`, of
  // `addresses` (one per family), or a dynamic one when empty, and keeps no lease of it
  // here: the reserved pod's node takes it over. An allocation of the same reservation
  // already in place is left as it is and its addresses answered. Errors as Allocate's
  // (kNotFound for an unknown subnet, kConflict naming the holder, kInvalidArgument for an
  // address outside the subnet, or for a name that is not `<pod>.<ns>.<provider>` or
  // that followed by `.<interface>`); nothing is left allocated on an error.
  using AddressesDone = std::function<void(Result<std::vector<IpAddr>>)>;
  void Reserve(const std::string& reserved_ip, const std::string& subnet,
               const std::string& pod_namespace, const std::string& pod_name,
               const std::vector<std::string>& addresses, AddressesDone done);

  // Writes the lease's current pod UID and container ID into its block allocation(s)
  // (a new sandbox, or a pod re-created under the same name), group-committed with the
  // block's next write. Success when there is no committed lease or nothing changed;
  // kUnavailable when the write failed (the allocation keeps its old values: harmless,
  // call again later).
  void UpdateHolder(const AttachmentKey& key, VoidDone done);

  // Before a committed lease is handed to a new pod of the same name (a StatefulSet pod
  // re-created, DESIGN §3.4): writes `pod_uid`/`container_id` ("" = keep) into the
  // lease's block allocation(s), which must still be this node's — judged on a fresh
  // read, not the watch's copy. kNotFound when one is gone (the cluster's garbage
  // collection freed it, and another node may hold the address now): the lease is then
  // dropped here, without an API call, and must not be served. kUnavailable: the API
  // server could not be asked (serve nothing; try again). The store and allocator keep
  // the old holder; the caller records the new one after success.
  void ConfirmHolder(const AttachmentKey& key, const std::string& pod_uid,
                     const std::string& container_id, VoidDone done);

  // After each Allocator::UpsertSubnet of a subnet this node allocates from: puts the
  // subnet in cluster mode (dynamic picks only from this node's blocks) and tells the
  // allocator about the blocks already seen for it (their locality and foreign holds
  // were lost on it while the subnet was unknown). kNotFound when the allocator does
  // not know the subnet.
  Result<void> OnSubnetUpsert(const std::string& subnet);

  // The informer feed for this node's blocks (label sublease.io/node=<me>).
  void OnBlockUpsert(const IpBlock& block);
  // `uid`: the deleted object's metadata.uid when known; a deletion of an older incarnation
  // of the block (retired, then claimed again) than the one the engine holds is ignored.
  void OnBlockDeleted(const std::string& name, const std::string& uid = "");
  // After a relist of this node's blocks: own blocks the engine holds that `present`
  // lacks were deleted meanwhile (a relist reports no deletions). Blocks with a request
  // in flight, or whose own last write the watch has not shown yet (it may be newer than
  // the list), are left to those; the latter are read again before their next write
  // (the relisted watch will not show that write).
  void ForgetOwnBlocksNotIn(const std::set<std::string>& present);

  // Someone now waits for the attachment's allocation (its CNI ADD came): a write of it
  // that is being held (ahead_write_window_ms) goes at once, and so does any later one.
  void Expedite(const AttachmentKey& key);

  // The attachment's CNI ADD came. When its allocation was made ahead of time, the time
  // since it was queued for its write is a lead time: what the ahead-of-time window is
  // learned from (Options.learn_ahead_window). Call it for every ADD, before Expedite.
  void NoteAdd(const AttachmentKey& key);
  // How long an allocation made ahead of time waits for company now (0: not at all).
  int64_t ahead_window_ms() const { return ahead_window_.WindowMs(); }
  const AheadWindow& ahead_window() const { return ahead_window_; }

  // A spare of this node that a rebuilt database does not know (docs/cluster-protocol.md
  // "Spares"): a pod may use it whose record was lost. Kept out of use (a foreign hold:
  // not handed out, not given back, not counted) until LiftQuarantine.
  void QuarantineSpare(const std::string& subnet, const IpAddr& address);
  void LiftQuarantine();
  size_t quarantined_spares() const { return quarantine_.size(); }

  // `wake(delay_ms)`: call Tick in about delay_ms (the deadline of a held allocation,
  // shorter than the daemon's 1 s tick). Null: only the regular Tick.
  void SetWake(std::function<void(int64_t delay_ms)> wake) { wake_ = std::move(wake); }

  // Sends the deferred changes older than Options.deferred_write_ms, deletes the own
  // blocks that have stayed empty for Options.empty_block_linger_ms (beyond the
  // reserve), and takes back out the allocations of failed attempts that landed late
  // (a write answered 5xx that etcd committed anyway; see SweepUnsure). The daemon calls
  // it every second.
  void Tick();

  // Start-up, after the allocator was loaded from the store: each `pending` lease is
  // looked up in its block(s) — present with this attachment → committed; absent →
  // the reservation is dropped. kUnavailable (rows left pending) when a block cannot
  // be read; run it again later.
  void Recover(VoidDone done);

  // The prefix length of `subnet`'s blocks of `family` (its sublease.io/block-size
  // override, else the default for its CIDR); nullopt when it has no such family.
  static std::optional<int> BlockPrefixOf(const Subnet& subnet, Family family);

  const BlockEngineStats& stats() const { return stats_; }
  // Requests being served (allocations and releases in flight or queued).
  size_t busy_attachments() const { return keys_.size(); }

 private:
  struct Op;
  struct BlockState;
  struct Job;
  struct ClaimWaiter;

  // Per-attachment serialisation.
  void RunForKey(const AttachmentKey& key, std::function<void()> run);
  void FinishKey(const AttachmentKey& key);

  // Allocation (block_engine.cc).
  void Answer(const AttachmentKey& key, const LeaseDone& done, Result<Lease> result);
  void StartAllocate(std::shared_ptr<Job> job);
  void AfterAllocatorRefused(std::shared_ptr<Job> job, const Error& error);
  void QueueAdds(std::shared_ptr<Job> job, const Lease& lease);
  void OnAddsDone(std::shared_ptr<Job> job);
  bool RecheckAmbiguous(std::shared_ptr<Job> job);
  // Notes that the allocation of `key` at `address` may still land (BlockState::unsure).
  void NoteUnsure(const AttachmentKey& key, const IpAddr& address);
  void SweepUnsure();
  // Spares (block_engine_spares.cc).
  // True when `offset` of `b` is a spare of this node in its own block.
  // (Not quarantined.)
  bool IsOwnSpare(const BlockState& b, uint64_t offset) const;
  bool Quarantined(const BlockState& b, uint64_t offset) const;
  // This node's spares of `subnet` and `family` that no lease of it holds, in the copies
  // of its blocks (`except` skipped).
  int UntakenSpares(const std::string& subnet, Family family, const BlockState* except) const;
  // Whether the allocation `op` (a kAdd of QueueAdds) may be answered from a spare now;
  // if so, queues the record of its pod in the block instead and returns true.
  bool TakeSpare(BlockState& b, Op& op);
  // A free address in `b` that is no entry of its copy: room for a spare.
  bool RoomForSpares(const BlockState& b) const;
  // An own spare that may be handed out now: not given back by a write in flight, nor by
  // one answered with an error that may land yet.
  bool SpareCanGoNow(const BlockState& b, uint64_t offset) const;
  // This node keeps spares in `subnet` now (on, and not paused after an ask to return them).
  bool KeepingSpares(const std::string& subnet) const;
  // A kSpares op (the block written for its spares' sake) is queued / queued unless one is.
  static bool SparesWriteQueued(const BlockState& b);
  void QueueSparesWrite(BlockState& b);
  // A lease of `subnet` was released (+1) or committed (-1): while this node keeps no
  // spares there after an ask, enough net releases end that pause early.
  void NoteNetFreed(const std::string& subnet, int delta);
  // Queues the record of the pod a spare at `offset` of `b` was handed to (Op::record).
  void QueueRecord(BlockState& b, uint64_t offset, const AttachmentKey& key,
                   const BlockAllocation& allocation, bool deferrable);
  // The entry at `a` in this node's copy of another node's block when it is a spare of
  // that node; nullptr otherwise.
  const BlockAllocation* OtherNodesSpare(const std::string& subnet, const IpAddr& a) const;
  // For a plain dynamic request: narrows its pick (AllocateRequest::within) to the lowest
  // spare of this node that can be handed out now, in each family that has one. False
  // when the request is not plain or no family has one.
  bool PreferSpares(AllocateRequest& request) const;
  // Write: gives back the untaken spares when asked (or paused), else tops them up.
  void MaintainSpares(BlockState& b, IpBlock& next);
  // Tick: records the pods of spares taken before a restart, gives back spares asked for.
  void TendSpares();
  // Tick, until done once: reads each block holding a committed lease of this node that
  // this engine has no copy of (a restart that resumed the block watch delivers a block
  // only when it changes), so that TendSpares sees the spares handed out before it.
  void ReadLeaseBlocks();
  // OnSubnetListed found no free address: asks the nodes holding spares to give them back.
  // The number of spares seen.
  size_t AskForSpares(const std::string& subnet, Family family, std::string* holders);
  // Marks committed the leases whose allocation landed but whose row the store failed to
  // update (OnAddsDone); Tick.
  void CommitUncommitted();
  void AfterUnwind(std::shared_ptr<Job> job);
  void Unwind(std::shared_ptr<Job> job, std::function<void()> then);
  void DropReservation(const Lease& lease);
  void FinishJob(std::shared_ptr<Job> job, Result<Lease> result);
  bool Repickable(const Job& job, const IpAddr& address) const;
  void DoRelease(const AttachmentKey& key, VoidDone done);
  // Queues `allocation` as the holder of each of the lease's addresses (kUpdate ops);
  // done, then FinishKey. Runs inside RunForKey.
  void WriteHolder(const Lease& lease, const BlockAllocation& allocation, bool must_exist,
                   VoidDone done);
  void FindAdoptable(std::shared_ptr<Job> job);
  void TakeClaimAddresses(std::shared_ptr<Job> job);
  void OnAdoptionList(std::shared_ptr<Job> job, Result<std::vector<IpBlock>> listed);
  void RecoverLease(const Lease& lease, std::function<void(bool ok)> done);

  // Claiming and borrowing (block_engine_claim.cc).
  void FindBlockFor(std::shared_ptr<Job> job, Family family);
  void OnSubnetListed(const std::string& subnet, Result<std::vector<IpBlock>> blocks);
  // Takes a List of a subnet's blocks into the cache; returns the names listed.
  std::set<std::string> AbsorbList(const std::string& subnet, std::vector<IpBlock> listed);
  std::optional<IpNet> ChooseClaim(const std::string& subnet, Family family);
  std::optional<IpNet> ChooseBorrow(const std::string& subnet, Family family);

  // Blocks: queues, group commit, cache (block_engine_blocks.cc).
  BlockState& Block(const std::string& subnet, const IpNet& cidr);
  BlockState* FindBlock(const std::string& name);
  void Enqueue(const std::string& subnet, const IpNet& cidr, Op op);
  // Moves the block's deferred changes into its queue (they leave with its next write).
  void UndeferAll(BlockState& b);
  // Sends now the deferred changes of `key`, or (key null) the deferred releases in own
  // blocks of `subnet` and `family`; `then` runs once they are answered. False (and
  // `then` not run) when there were none.
  bool SendDeferred(const AttachmentKey* key, const std::string& subnet, Family family,
                    std::function<void()> then);
  void Pump(BlockState& b);
  void WriteBack(BlockState& b, const IpBlock& last);
  void Read(BlockState& b);
  void Write(BlockState& b);
  void OnWritten(const std::string& name, std::vector<Op> sent, bool created, Result<IpBlock> r);
  void MaybeRetire(BlockState& b);
  void SetObject(BlockState& b, std::optional<IpBlock> object);
  // A read's answer that the watch has already shown superseded (the copy is newer).
  bool OlderThanCopy(const BlockState& b, const std::optional<IpBlock>& answer) const;
  // SetObject for a read's answer, unless the block is being written or the answer is
  // older than the copy.
  void ApplyRead(BlockState& b, const std::optional<IpBlock>& answer);
  void SyncAllocator(BlockState& b);
  void DropAdoptedLeases(BlockState& b);
  // Ends a committed lease in the store and the allocator without an API call (its
  // allocation is another node's now, or gone); the other blocks of its addresses but
  // `synced` are re-synced. False when the store failed (nothing changed).
  bool DropLeaseLocally(const AttachmentKey& key, const std::string& why, const BlockState* synced);
  void FailOps(std::vector<Op>& ops, const Error& e);
  std::optional<int> BlockPrefix(const std::string& subnet, Family family) const;
  std::optional<IpNet> BlockOfAddress(const std::string& subnet, const IpAddr& a) const;
  BlockAllocation AllocationFor(const Lease& lease) const;
  // `block` holds at `offset` an allocation of `key` made by this node.
  bool HoldsOwnAllocation(const IpBlock& block, uint64_t offset, const AttachmentKey& key) const;
  std::optional<IpNet> ClaimingBlockWithFree(const std::string& subnet, Family family) const;
  void Refresh(const std::string& subnet, const IpNet& cidr, std::function<void()> then);
  void NoteFailure(const Error& e);

  Allocator* allocator_;
  Store* store_;
  BlockApi* api_;
  const Clock* clock_;
  Options options_;
  std::mt19937_64 rng_;
  BlockEngineStats stats_;
  std::map<std::string, std::unique_ptr<BlockState>> blocks_;  // by block name
  // Attachments with a request being served, each with the requests waiting behind it.
  std::map<AttachmentKey, std::deque<std::function<void()>>> keys_;
  // While set, Enqueue only notes the block here and the caller pumps them all at the
  // end: the allocations placed in one go leave in one write instead of the first alone.
  std::set<std::string>* deferred_pumps_ = nullptr;
  // Per subnet: jobs waiting for a List to choose a block to claim or borrow from.
  std::map<std::string, std::vector<ClaimWaiter>> claim_waiters_;
  // Per (subnet, family): until when a List is not needed to borrow, because the last
  // one found every block claimed (kBorrowWithoutListMs). Borrowing then chooses from
  // the copies that List (and the reads and writes since) left; the CAS catches a stale one.
  std::map<std::pair<std::string, Family>, int64_t> borrow_from_copies_until_ms_;
  // Lives as long as the engine; callbacks hold a weak_ptr and do nothing once it expired.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
  // Attachments whose CNI ADD came while their allocation was in progress: not held.
  std::set<AttachmentKey> hurried_;
  // Leases whose block write landed but whose row could not be marked committed.
  std::set<AttachmentKey> uncommitted_;
  std::function<void(int64_t)> wake_;
  // The ahead-of-time window, and when each allocation made ahead of time was queued
  // for its write (until its CNI ADD comes: NoteAdd; dropped after kLeadTimeForgetMs).
  AheadWindow ahead_window_;
  std::map<AttachmentKey, int64_t> ahead_queued_ms_;
  // Spares handed out whose pod is being recorded in the block (block name, offset), and
  // until when this node keeps no spares in a subnet (asked to give them back).
  std::set<std::pair<std::string, uint64_t>> recording_;
  std::map<std::string, int64_t> spares_paused_until_ms_;
  // Per paused subnet: leases released less leases committed since the pause began; the
  // pause ends early once it reaches spare_addresses (NoteNetFreed).
  std::map<std::string, int> net_freed_while_paused_;
  std::set<std::pair<std::string, IpAddr>> quarantine_;  // (subnet, address)
  bool lease_blocks_read_ = false;  // ReadLeaseBlocks done
};

}  // namespace sublease
