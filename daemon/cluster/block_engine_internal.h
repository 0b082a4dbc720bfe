// Private to the block engine's .cc files: what it keeps per queued change, per block,
// and per allocation in progress. See block_engine.h for the contract.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/cluster/block_engine.h"

namespace sublease {

// Lead times (NoteAdd): allocations made ahead of time whose CNI ADD has not come are
// remembered at most this many and this long (a pod deleted before its ADD never sends one).
inline constexpr size_t kMaxLeadTimesKept = 100'000;
inline constexpr int64_t kLeadTimeForgetMs = 600'000;

// The attachment an allocation in a block belongs to.
AttachmentKey KeyOfAllocation(const std::string& subnet, const BlockAllocation& a);
// (KeptFor, sync/ipblock.h: pods with the same keeper take the allocation over; a
// node's release leaves a kept one in its block.)
// "pod ns/name (container c, net1) on node n", for conflict messages.
std::string DescribeAllocation(const BlockAllocation& a);

// One change queued for a block; it leaves in the block's next write (group commit).
struct BlockEngine::Op {
  // kAdd: the allocation goes in (present already as this node's: done). kRemove: this
  // node's allocation of `key` goes out (another node's, adopted, stays). kUpdate: this
  // node's allocation of `key` gets the pod UID and container ID of `allocation`.
  // kSpares: no address of its own; makes the block be written (an own block's spares
  // tended, another node's asked back: returnSpares).
  enum class Kind { kAdd, kRemove, kUpdate, kSpares };
  Kind kind = Kind::kAdd;
  uint64_t offset = 0;
  AttachmentKey key;           // whose allocation it adds, removes or updates
  BlockAllocation allocation;  // kAdd, kUpdate: what is written
  bool claim = false;          // kAdd that may only land through this node's own create
  // kAdd adopting a StatefulSet pod's allocation: an allocation of the same key, sticky,
  // with the same owner UID, made by any node, is replaced by `allocation`.
  // Also a kAdd of an IPAMClaim's address (allocation.ipam_claim set): an allocation of
  // the same claim, made for any pod by any node, is replaced by `allocation`.
  bool adopt = false;
  // With adopt: an allocation of the same keeper already there stays as it is (done).
  bool keep_existing = false;
  // kRemove taking back an attempt's own write (Unwind): removes this node's allocation
  // even when it carries an IPAMClaim (a release leaves those in the block).
  bool unwind = false;
  // kUpdate confirming a holder (ConfirmHolder): fails kNotFound when the block has no
  // allocation of `key` by this node, judged on a fresh read (`reread` once set).
  bool must_exist = false;
  bool reread = false;
  // kRemove (a release) and kUpdate (a holder): nothing waits for it; it may wait for
  // the block's next write (Options.deferred_write_ms). Also a kAdd of an allocation
  // made ahead of time (Options.ahead_write_window_ms), with `ahead`.
  bool deferrable = false;
  bool ahead = false;
  // kAdd recording the pod of a spare handed out already (TakeSpare): the lease is
  // committed; this only writes who holds it.
  bool record = false;
  int rounds = 0;              // 409 → re-read rounds so far (bounded)
  std::function<void(Result<void>)> done;
};

struct BlockEngine::BlockState {
  std::string name, subnet;
  IpNet cidr;
  std::optional<IpBlock> object;  // last seen; nullopt = no such object (when known)
  bool known = false;             // `object` reflects a read, a write, a list or the watch
  bool busy = false;              // a read, write or delete is in flight (at most one)
  int64_t write_sent_ms = -1;     // when the write in flight was sent (AheadWindow::NoteWrite)
  bool local = false;             // what the allocator was last told (SetBlockLocal)
  // This node's spares in the write in flight: they stay spares whatever its answer, so
  // they may be handed out meanwhile (others in the copy may be given back by it).
  std::set<uint64_t> sent_spares;
  // The spares the write in flight gives back; and those given back by a write answered
  // with an error that does not say it failed (it may land yet): not handed out until a
  // write of the block succeeds (after which that one cannot land any more: CAS).
  std::set<uint64_t> dropping_spares, maybe_returned;
  // Our last write's resourceVersion, until the watch shows it: watch events before it
  // are older than `object` and are ignored (resourceVersions compare for equality only).
  std::string awaiting_version;
  std::deque<std::string> watched_versions;  // the last few versions the watch delivered
  std::deque<Op> queued;
  std::deque<Op> deferred;        // deferrable changes waiting to ride with the next write
  int64_t deferred_due_ms = -1;    // when they go anyway (Tick): the earliest deadline
  std::set<uint64_t> foreign;  // offsets marked in the allocator as foreign holds
  // The watch said this own block was deleted while a read or write of it was in flight:
  // the object as it was then, written back once that request is answered (its answer
  // may carry a newer state of the block; see WriteBackDeleted).
  std::optional<IpBlock> deleted_while_busy;
  // When this own block was first seen empty (SetObject, MaybeRetire); -1 = not empty,
  // or not known to be. Reset whenever it holds an allocation again.
  int64_t empty_since_ms = -1;
  // Allocations of this node whose write was answered with an error that does not say it
  // failed (a 5xx, a timeout) and that a re-read did not find, by offset: etcd may still
  // commit them after the answer. The attempt failed, so one that shows up later with no
  // lease of this node behind it is taken back out (SweepUnsure).
  struct Unsure {
    AttachmentKey key;
    int64_t next_check_ms = 0;  // when the block is read again to look for it
    int checks = 0;             // reads made so far
  };
  std::map<uint64_t, Unsure> unsure;
  // Borrowing: after a write to another node's block was answered 409, the re-read and
  // the next write wait until then (random, BlockEngine::Options::borrow_backoff_ms);
  // -1 = not waiting. Changes queued meanwhile leave together. `conflicts` counts the
  // 409s in a row (it widens the wait); a successful write resets it.
  int64_t backoff_until_ms = -1;
  int conflicts = 0;
};

// One Allocate call in progress.
struct BlockEngine::Job {
  AllocateRequest request;  // `within` grows when a block is chosen to claim or borrow from
  AttachmentKey key;
  LeaseDone done;
  std::optional<Lease> lease;  // the pending reservation of the current attempt
  int outstanding = 0;         // adds of this attempt not answered yet
  std::vector<std::pair<IpAddr, Result<void>>> results;
  std::set<std::string> claims;  // blocks this attempt may only land in by creating them
  int repicks = 0;
  bool refreshed = false;  // a static conflict on a foreign hold re-read its block once
  bool rechecked = false;  // this attempt's writes answered kUnavailable (they may have landed) were re-read
  // Adoption: the addresses of the previous pod's allocations this attempt takes over,
  // and the request as it was before they were named in it (the fallback when one is
  // lost meanwhile).
  std::set<IpAddr> adopt;
  std::optional<AllocateRequest> before_adoption;
};

struct BlockEngine::ClaimWaiter {
  std::shared_ptr<Job> job;
  Family family;
};

}  // namespace sublease
