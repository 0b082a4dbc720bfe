// The block engine's blocks: the cache of IPBlock objects, one queue per block, group
// commit (one read or write in flight per block), 409 → re-read → merge, deletion of
// empty blocks, and what the allocator is told about locality and foreign holds.
#include <algorithm>
#include <utility>

#include "common/log.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/block_engine_internal.h"

namespace sublease {
namespace {
// The longest a borrower waits after a 409 before re-reading (Options::borrow_backoff_ms).
constexpr int64_t kMaxBorrowBackoffMs = 200;
}  // namespace

AttachmentKey KeyOfAllocation(const std::string& subnet, const BlockAllocation& a) {
  return AttachmentKey::For(
      subnet, Owner{a.pod_namespace, a.pod_name, a.pod_uid, a.container_id, a.ifname});
}

std::string DescribeAllocation(const BlockAllocation& a) {
  if (a.spare) return "a spare of node " + (a.node.empty() ? std::string("?") : a.node);
  Lease l;
  l.owner = Owner{a.pod_namespace, a.pod_name, a.pod_uid, a.container_id, a.ifname};
  return l.HolderDescription() + " on node " + (a.node.empty() ? std::string("?") : a.node);
}

std::optional<int> BlockEngine::BlockPrefixOf(const Subnet& subnet, Family family) {
  const SubnetFamily* sf = subnet.family(family);
  if (sf == nullptr) return std::nullopt;
  auto prefix = BlockPrefixFor(sf->cidr, subnet.spec.block_size);
  // A malformed override is reported on the Subnet's status; the default keeps working.
  return prefix ? *prefix : DefaultBlockPrefix(sf->cidr);
}

std::optional<int> BlockEngine::BlockPrefix(const std::string& subnet, Family family) const {
  const Subnet* s = allocator_->FindSubnet(subnet);
  return s ? BlockPrefixOf(*s, family) : std::nullopt;
}

std::optional<IpNet> BlockEngine::BlockOfAddress(const std::string& subnet, const IpAddr& a) const {
  auto prefix = BlockPrefix(subnet, a.family());
  if (!prefix) return std::nullopt;
  return BlockOf(a, *prefix);
}

BlockAllocation BlockEngine::AllocationFor(const Lease& lease) const {
  BlockAllocation a;
  a.pod_namespace = lease.owner.pod_namespace;
  a.pod_name = lease.owner.pod_name;
  a.pod_uid = lease.owner.pod_uid;
  a.ifname = lease.owner.ifname;
  a.container_id = lease.owner.container_id;
  a.node = options_.node;
  a.provider = lease.provider;
  a.sticky = lease.sticky;
  return a;
}

bool BlockEngine::HoldsOwnAllocation(const IpBlock& block, uint64_t offset,
                                     const AttachmentKey& key) const {
  auto it = block.allocations.find(offset);
  return it != block.allocations.end() && it->second.node == options_.node &&
         KeyOfAllocation(key.subnet, it->second) == key;
}

void BlockEngine::NoteFailure(const Error& e) {
  if (e.code == Code::kUnavailable) ++stats_.unavailable;
  if (e.code == Code::kConflict) ++stats_.conflicts;
}

BlockEngine::BlockState& BlockEngine::Block(const std::string& subnet, const IpNet& cidr) {
  std::string name = BlockName(subnet, cidr);
  auto& slot = blocks_[name];
  if (!slot) {
    // Invariant: BlockStates are never erased, so references stay valid across callbacks.
    slot = std::make_unique<BlockState>();
    slot->name = name;
    slot->subnet = subnet;
    slot->cidr = cidr;
  }
  return *slot;
}

BlockEngine::BlockState* BlockEngine::FindBlock(const std::string& name) {
  auto it = blocks_.find(name);
  return it == blocks_.end() ? nullptr : it->second.get();
}

void BlockEngine::Enqueue(const std::string& subnet, const IpNet& cidr, Op op) {
  BlockState& b = Block(subnet, cidr);
  const int64_t window = op.ahead ? ahead_window_.WindowMs() : options_.deferred_write_ms;
  if (op.deferrable && window > 0) {
    const int64_t due = clock_->NowMs() + window;
    if (b.deferred.empty() || due < b.deferred_due_ms) {
      b.deferred_due_ms = due;
      // An allocation's deadline is shorter than the daemon's tick: ask for one.
      if (op.ahead && wake_) wake_(window);
    }
    b.deferred.push_back(std::move(op));
    return;  // Pump sends it with the block's next write; Tick when none comes
  }
  b.queued.push_back(std::move(op));
  if (deferred_pumps_ != nullptr) {
    deferred_pumps_->insert(b.name);
    return;
  }
  Pump(b);
}

void BlockEngine::FailOps(std::vector<Op>& ops, const Error& e) {
  for (Op& op : ops) op.done(Fail(e));
}

void BlockEngine::Pump(BlockState& b) {
  if (!b.busy && b.deleted_while_busy) {
    // The request in flight at the deletion is answered: what it brought back (our write
    // that landed before the delete, or a read served before it) is newer than the copy.
    IpBlock last = std::move(*b.deleted_while_busy);
    b.deleted_while_busy.reset();
    if (b.object && b.object->node == options_.node) {
      last = *b.object;
      SetObject(b, std::nullopt);
    }
    // (No object: the read or write found it gone. Another node's: it claimed the block
    // meanwhile, and the write-back goes in as borrows.)
    WriteBack(b, last);
  }
  if (b.busy || b.queued.empty()) return;
  if (b.backoff_until_ms >= 0) {
    if (clock_->NowMs() < b.backoff_until_ms) return;  // Tick pumps it (wake_ was asked)
    b.backoff_until_ms = -1;
  }
  UndeferAll(b);  // they ride along: no write of their own
  if (!b.known) return Read(b);
  Write(b);
}

void BlockEngine::UndeferAll(BlockState& b) {
  // After the queue: a write-back of a deleted block (queued first) must come before a
  // release of one of its allocations. Two changes of one address cannot meet here: an
  // address is held until its release is answered, and one attachment's requests run
  // one after another.
  for (Op& op : b.deferred) b.queued.push_back(std::move(op));
  b.deferred.clear();
  b.deferred_due_ms = -1;
}

bool BlockEngine::SendDeferred(const AttachmentKey* key, const std::string& subnet, Family family,
                               std::function<void()> then) {
  auto left = std::make_shared<size_t>(0);
  auto shared_then = std::make_shared<std::function<void()>>(std::move(then));
  std::vector<BlockState*> to_pump;
  for (auto& [name, b] : blocks_) {
    bool any = false;
    for (Op& op : b->deferred) {
      bool match = key != nullptr ? op.key == *key
                                  : op.kind == Op::Kind::kRemove && b->subnet == subnet &&
                                        b->cidr.family() == family;
      if (!match) continue;
      any = true;
      ++*left;
      op.done = [left, shared_then, inner = std::move(op.done)](Result<void> r) {
        inner(r);
        if (--*left == 0) (*shared_then)();
      };
    }
    if (any) {
      UndeferAll(*b);
      to_pump.push_back(b.get());
    }
  }
  for (BlockState* b : to_pump) Pump(*b);
  return !to_pump.empty();
}

void BlockEngine::Read(BlockState& b) {
  b.busy = true;
  ++stats_.gets;
  std::weak_ptr<int> token = life_;
  api_->Get(b.name, [this, token, name = b.name](Result<std::optional<IpBlock>> r) {
    if (token.expired()) return;
    BlockState& block = *FindBlock(name);
    block.busy = false;
    if (!r) {
      NoteFailure(r.error());
      std::vector<Op> ops(std::make_move_iterator(block.queued.begin()),
                          std::make_move_iterator(block.queued.end()));
      block.queued.clear();
      FailOps(ops, r.error().Wrap("reading IPBlock " + name));
      return Pump(block);
    }
    if (OlderThanCopy(block, *r)) {
      block.known = true;  // the watch showed a newer version meanwhile: the copy is it
    } else {
      block.awaiting_version.clear();
      SetObject(block, std::move(*r));
    }
    Pump(block);
  });
}

// Merges every queued change into one new version of the block and sends it: a create
// when there is no object (claiming it for this node), else a CAS update.
void BlockEngine::Write(BlockState& b) {
  IpBlock next;
  if (b.object) {
    next = *b.object;
  } else {
    next.name = b.name;
    next.subnet = b.subnet;
    next.cidr = b.cidr;
    next.node = options_.node;
  }
  const bool create = !b.object;
  // Records of spares handed out first: a release of the same attachment queued before
  // the record would otherwise remove nothing and leave its pod's allocation behind.
  std::stable_partition(b.queued.begin(), b.queued.end(), [](const Op& op) { return op.record; });
  std::vector<Op> sent;
  std::vector<std::pair<Op, Error>> refused;
  std::vector<Op> reread;  // confirmations that found nothing in the copy: read, then judge
  while (!b.queued.empty()) {
    Op op = std::move(b.queued.front());
    b.queued.pop_front();
    if (op.kind == Op::Kind::kSpares) {
      // Another node's block with spares: ask it to give back those it has not handed
      // out (an own block's spares are tended below, whatever the ops).
      if (next.node != options_.node) {
        for (const auto& [offset, a] : next.allocations) {
          if (a.spare && a.node == next.node) next.return_spares = true;
        }
      }
      sent.push_back(std::move(op));
      continue;
    }
    auto it = next.allocations.find(op.offset);
    // A spare of this node in its own block is free for this node's allocations.
    bool own_spare = it != next.allocations.end() && it->second.spare &&
                     it->second.node == options_.node && next.node == options_.node &&
                     !Quarantined(b, op.offset);
    bool same_key = it != next.allocations.end() && KeyOfAllocation(b.subnet, it->second) == op.key;
    // The same pod name on another node is not ours: that node made it, or adopted it.
    bool ours = same_key && it->second.node == options_.node;
    bool adoptable = same_key && op.adopt && it->second.sticky &&
                     it->second.owner_uid == op.allocation.owner_uid;
    // An IPAMClaim's allocation goes to whichever pod references the claim now.
    bool claim_adoptable = it != next.allocations.end() && op.adopt &&
                           !KeptFor(op.allocation).empty() &&
                           KeptFor(it->second) == KeptFor(op.allocation);
    // Our allocation kept for a claim, VM or reservation that this request does not name
    // (a new pod of the same name): not an earlier write of this request; never taken.
    bool kept_for_another = ours && op.kind == Op::Kind::kAdd && !op.adopt &&
                            !KeptFor(it->second).empty() &&
                            KeptFor(it->second) != KeptFor(op.allocation);
    if (op.kind == Op::Kind::kRemove) {
      // An IPAMClaim's address outlives its pods: only the garbage collection removes
      // it, once the claim is gone. The lease here just ends.
      if (ours && (KeptFor(it->second).empty() || op.unwind)) next.allocations.erase(it);
      sent.push_back(std::move(op));  // removing what is not there (or not ours) succeeds
    } else if (op.kind == Op::Kind::kUpdate) {
      std::optional<Lease> holder;
      if (own_spare) holder = allocator_->Holder(b.subnet, b.cidr.first().Plus(op.offset));
      if (own_spare && holder && holder->key() == op.key && holder->state == LeaseState::kCommitted) {
        // A spare handed out to this attachment whose record has not left: recorded now.
        next.allocations[op.offset] = op.allocation;
        next.allocations[op.offset].node = options_.node;
        sent.push_back(std::move(op));
      } else if (ours) {
        if (!op.allocation.pod_uid.empty()) it->second.pod_uid = op.allocation.pod_uid;
        if (!op.allocation.container_id.empty()) it->second.container_id = op.allocation.container_id;
        sent.push_back(std::move(op));
      } else if (op.must_exist && !op.reread) {
        // The copy may predate our allocation (the watch lags): judge on a fresh read.
        op.reread = true;
        reread.push_back(std::move(op));
      } else if (op.must_exist) {
        IpAddr a = b.cidr.first().Plus(op.offset);
        refused.emplace_back(std::move(op),
                             Error::NotFound("address " + a.ToString() + " is no longer this node's in IPBlock " +
                                             b.name + " (the cluster's garbage collection freed it)"));
      } else {
        sent.push_back(std::move(op));  // nothing of ours there: nothing to update
      }
    } else if (op.claim && b.object && b.object->node != options_.node) {
      LogDebug("claim of IPBlock " + b.name + " lost to node " + b.object->node);
      refused.emplace_back(std::move(op),
                           Error::Conflict("block " + b.cidr.ToString() + " of subnet " + b.subnet +
                                           " was claimed by node " + b.object->node + " first"));
    } else if (it == next.allocations.end() || own_spare) {
      next.allocations[op.offset] = op.allocation;
      sent.push_back(std::move(op));
    } else if ((ours || adoptable || claim_adoptable) && !kept_for_another) {
      // Adopting: the previous pod's allocation becomes this node's. Else an earlier
      // write whose answer was lost landed it.
      if (op.adopt && !(claim_adoptable && op.keep_existing)) it->second = op.allocation;
      sent.push_back(std::move(op));
    } else if (it->second.spare && next.node != options_.node && !op.reread) {
      // Another node's spare in this node's copy of its block, which may be old (this node
      // does not watch it): the holder may have handed it out since, or given it back. A
      // copy that shows it free is corrected by the CAS; one that shows it held is not.
      // Judge on a fresh read.
      op.reread = true;
      reread.push_back(std::move(op));
    } else {
      IpAddr a = b.cidr.first().Plus(op.offset);
      std::string held = "address " + a.ToString() + " in subnet " + b.subnet + " is held by " +
                         DescribeAllocation(it->second);
      if (it->second.spare && next.node != options_.node) {
        // Asked back with this write; the next try finds it free.
        next.return_spares = true;
        held += ", asked to give it back: try again";
      }
      refused.emplace_back(std::move(op), Error::Conflict(held));
    }
  }
  MaintainSpares(b, next);
  bool changed = create ? !next.allocations.empty()
                        : next.allocations != b.object->allocations ||
                              next.return_spares != b.object->return_spares;
  // They wait for the answer of this write (fresh), or for a read when nothing is written.
  for (auto it = reread.rbegin(); it != reread.rend(); ++it) b.queued.push_front(std::move(*it));
  // Callbacks last: they may queue more changes for this block (state is consistent).
  if (!changed) {
    for (auto& [op, e] : refused) op.done(Fail(e));
    for (Op& op : sent) op.done(Ok());
    if (!reread.empty()) {
      b.known = false;
      return Pump(b);
    }
    if (!b.busy) MaybeRetire(b);
    return;
  }
  if (LogEnabled(LogLevel::kDebug)) {
    LogDebug(std::string(create ? "creating" : "updating") + " IPBlock " + b.name + " (node " +
             next.node + "): " + std::to_string(sent.size()) + " change(s), " +
             std::to_string(next.allocations.size()) + " allocation(s) after");
  }
  b.sent_spares.clear();
  b.dropping_spares.clear();
  if (next.node == options_.node) {
    for (const auto& [offset, a] : next.allocations) {
      if (a.spare && a.node == options_.node) b.sent_spares.insert(offset);
    }
    if (b.object) {
      for (const auto& [offset, a] : b.object->allocations) {
        if (IsOwnSpare(b, offset) && !next.allocations.count(offset)) b.dropping_spares.insert(offset);
      }
    }
  }
  b.busy = true;
  b.write_sent_ms = clock_->NowMs();
  std::weak_ptr<int> token = life_;
  auto on_done = [this, token, name = b.name, sent = std::move(sent),
                  create](Result<IpBlock> r) mutable {
    if (!token.expired()) OnWritten(name, std::move(sent), create, std::move(r));
  };
  if (create) {
    ++stats_.creates;
    api_->Create(next, std::move(on_done));
  } else {
    ++stats_.updates;
    api_->Update(next, std::move(on_done));
  }
  for (auto& [op, e] : refused) op.done(Fail(e));
}

void BlockEngine::OnWritten(const std::string& name, std::vector<Op> sent, bool created,
                            Result<IpBlock> r) {
  BlockState& b = *FindBlock(name);
  b.busy = false;
  if (b.write_sent_ms >= 0) ahead_window_.NoteWrite(clock_->NowMs() - b.write_sent_ms);
  b.write_sent_ms = -1;
  b.sent_spares.clear();
  std::set<uint64_t> dropped = std::move(b.dropping_spares);
  b.dropping_spares.clear();
  const bool borrowed = !created && b.object && b.object->node != options_.node;
  if (r) {
    b.conflicts = 0;
    b.maybe_returned.clear();  // an earlier write answered with an error cannot land now
    if (created) ++stats_.claims;
    if (r->node != options_.node) {
      for (const Op& op : sent) stats_.borrows += op.kind == Op::Kind::kAdd ? 1 : 0;
    }
    bool watched = false;
    for (const std::string& v : b.watched_versions) watched = watched || v == r->resource_version;
    b.awaiting_version = watched ? "" : r->resource_version;
    SetObject(b, std::move(*r));
    for (Op& op : sent) op.done(Ok());
    Pump(b);
    if (!b.busy && b.queued.empty()) MaybeRetire(b);
    return;
  }
  NoteFailure(r.error());
  LogDebug(std::string(created ? "creating" : "updating") + " IPBlock " + name + " failed: " +
           r.error().message);
  b.known = false;  // stale, gone, or (unavailable) unknown whether the write landed
  if (r.error().code != Code::kConflict && r.error().code != Code::kNotFound) {
    b.maybe_returned.insert(dropped.begin(), dropped.end());
  }
  if (r.error().code == Code::kConflict || r.error().code == Code::kNotFound) {
    // Step 4: re-read, merge, re-send. Changes keep their order, ahead of newer ones.
    // A borrower waits a little first (Options::borrow_backoff_ms).
    if (borrowed && r.error().code == Code::kConflict && options_.borrow_backoff_ms > 0) {
      b.conflicts = std::min(b.conflicts + 1, 5);
      int64_t window = std::min<int64_t>(
          kMaxBorrowBackoffMs,
          std::max(options_.borrow_backoff_ms, ahead_window_.write_ms()) << (b.conflicts - 1));
      int64_t wait = 1 + std::uniform_int_distribution<int64_t>(0, window - 1)(rng_);
      b.backoff_until_ms = clock_->NowMs() + wait;
      ++stats_.backoffs;
      if (wake_) wake_(wait);
    }
    std::vector<Op> exhausted;
    for (auto it = sent.rbegin(); it != sent.rend(); ++it) {
      if (++it->rounds > options_.max_conflict_rounds) {
        exhausted.push_back(std::move(*it));
      } else {
        b.queued.push_front(std::move(*it));
      }
    }
    Pump(b);
    FailOps(exhausted, Error::Unavailable("IPBlock " + name + " kept changing under " +
                                          std::to_string(options_.max_conflict_rounds) +
                                          " attempts to write it; try again"));
    return;
  }
  Pump(b);
  FailOps(sent, r.error().Wrap("writing IPBlock " + name));
}

// Deletes an own block left empty, unless it is within the reserve of empty blocks
// this node keeps per subnet and family (so churn does not claim and free in a loop).
void BlockEngine::MaybeRetire(BlockState& b) {
  if (b.busy || !b.queued.empty() || !b.deferred.empty() || !b.object ||
      b.object->node != options_.node || !b.object->allocations.empty()) {
    return;
  }
  const int64_t now = clock_->NowMs();
  if (b.empty_since_ms < 0) b.empty_since_ms = now;
  if (now - b.empty_since_ms < options_.empty_block_linger_ms) return;  // Tick comes back
  int other_empty = 0;
  for (const auto& [name, o] : blocks_) {
    if (o.get() != &b && o->object && o->subnet == b.subnet &&
        o->cidr.family() == b.cidr.family() && o->object->node == options_.node &&
        o->object->allocations.empty() && o->local) {  // (not local: its delete is in flight)
      ++other_empty;
    }
  }
  if (other_empty < options_.empty_block_reserve) return;
  b.busy = true;
  // No new picks in a block on its way out; a failed delete restores locality.
  (void)allocator_->SetBlockLocal(b.subnet, b.cidr, false);
  b.local = false;
  ++stats_.deletes;
  std::weak_ptr<int> token = life_;
  api_->Delete(b.name, b.object->resource_version, [this, token, name = b.name](Result<void> r) {
    if (token.expired()) return;
    BlockState& block = *FindBlock(name);
    block.busy = false;
    if (r) {
      ++stats_.blocks_deleted;
      SetObject(block, std::nullopt);
    } else {
      NoteFailure(r.error());  // a conflict: another node borrowed meanwhile
      SyncAllocator(block);
      block.known = false;
    }
    Pump(block);
  });
}

void BlockEngine::Tick() {
  const int64_t now = clock_->NowMs();
  int64_t next_ahead_due = -1;  // the earliest deadline of an allocation still held
  for (auto& [name, b] : blocks_) {
    if (b->deferred.empty()) continue;
    if (now >= b->deferred_due_ms) {
      UndeferAll(*b);
      Pump(*b);
      continue;
    }
    for (const Op& op : b->deferred) {
      if (op.ahead && (next_ahead_due < 0 || b->deferred_due_ms < next_ahead_due)) {
        next_ahead_due = b->deferred_due_ms;
      }
    }
  }
  // Borrows waiting after a 409 (Options::borrow_backoff_ms) whose wait is over.
  for (auto& [name, b] : blocks_) {
    if (b->backoff_until_ms < 0) continue;
    if (now >= b->backoff_until_ms) {
      b->backoff_until_ms = -1;
      Pump(*b);
    } else if (next_ahead_due < 0 || b->backoff_until_ms < next_ahead_due) {
      next_ahead_due = b->backoff_until_ms;
    }
  }
  // The daemon's wake timer keeps one deadline: the earliest asked for. Another block's
  // held allocations or waiting borrows, due later, ask again (else they would wait for
  // the 1 s tick).
  if (next_ahead_due >= 0 && wake_) wake_(next_ahead_due - now);
  SweepUnsure();
  CommitUncommitted();
  ReadLeaseBlocks();
  TendSpares();
  for (auto it = ahead_queued_ms_.begin(); it != ahead_queued_ms_.end();) {
    it = now - it->second > kLeadTimeForgetMs ? ahead_queued_ms_.erase(it) : std::next(it);
  }
  for (auto& [name, b] : blocks_) {
    if (b->empty_since_ms >= 0 && now - b->empty_since_ms >= options_.empty_block_linger_ms) {
      MaybeRetire(*b);
    }
  }
}

void BlockEngine::CommitUncommitted() {
  for (auto it = uncommitted_.begin(); it != uncommitted_.end();) {
    const AttachmentKey& key = *it;
    std::optional<Lease> lease = allocator_->Find(key);
    if (!lease || lease->state != LeaseState::kPending) {
      it = uncommitted_.erase(it);  // released, or settled otherwise meanwhile
      continue;
    }
    if (keys_.count(key)) {
      ++it;  // a request of the attachment runs (a release): it decides
      continue;
    }
    if (auto r = store_->SetLeaseState(key, LeaseState::kCommitted, clock_->NowMs()); !r) {
      ++it;  // still failing: next Tick
      continue;
    }
    (void)allocator_->Commit(key);
    LogInfo("recorded the committed lease of " + key.ToString() + " (its allocation was in its IPBlock; "
            "the database had failed to record it)");
    it = uncommitted_.erase(it);
  }
}

namespace {
// After an attempt's write was answered with an error, its block is read again this long
// after the answer to look for the allocation landing late (etcd commits within its
// request timeout; the last look is well past it). Own blocks are also watched.
constexpr int64_t kUnsureChecksMs[] = {1'000, 5'000, 60'000};
constexpr int kUnsureChecks = sizeof(kUnsureChecksMs) / sizeof(kUnsureChecksMs[0]);
}  // namespace

void BlockEngine::NoteUnsure(const AttachmentKey& key, const IpAddr& address) {
  auto cidr = BlockOfAddress(key.subnet, address);
  if (!cidr) return;
  BlockState& b = Block(key.subnet, *cidr);
  BlockState::Unsure u;
  u.key = key;
  u.next_check_ms = clock_->NowMs() + kUnsureChecksMs[0];
  b.unsure[static_cast<uint64_t>(address.value() - cidr->first().value())] = std::move(u);
}

// The allocations noted by NoteUnsure: one that this node's copy of its block now shows
// — made by this node, for that attachment — while no lease of this node holds the
// address and no request of the attachment runs is a stray (the attempt failed; the pod
// got another address or none) and is removed, so that the address is free again and not
// held for a pod that does not use it until that pod is deleted. One held by a lease of
// the attachment again is its own (a retry got the same address). The block is re-read a
// few times (kUnsureChecksMs) before the note is forgotten.
void BlockEngine::SweepUnsure() {
  const int64_t now = clock_->NowMs();
  std::weak_ptr<int> token = life_;
  for (auto& [name, bp] : blocks_) {
    BlockState& b = *bp;
    if (b.unsure.empty() || b.busy) continue;
    bool read = false;
    for (auto it = b.unsure.begin(); it != b.unsure.end();) {
      const uint64_t offset = it->first;
      const AttachmentKey key = it->second.key;
      IpAddr a = b.cidr.first().Plus(offset);
      std::optional<Lease> holder = allocator_->Holder(b.subnet, a);
      if (holder && holder->key() == key) {
        it = b.unsure.erase(it);
        continue;
      }
      if (keys_.count(key) > 0 || holder) {
        ++it;  // decided once that request (or the other lease's write) is answered
        continue;
      }
      if (b.object && HoldsOwnAllocation(*b.object, offset, key)) {
        LogWarn("the allocation of " + a.ToString() + " to " + key.ToString() + " in IPBlock " +
                b.name + " landed after its write was answered with an error (that attempt " +
                "failed); removing it");
        ++stats_.strays_removed;
        it = b.unsure.erase(it);
        Op op;
        op.kind = Op::Kind::kRemove;
        op.offset = offset;
        op.key = key;
        op.unwind = true;  // also one kept for a claim, a VM or a reservation: never given out
        op.done = [this, token, name = b.name, key, a](Result<void> r) {
          if (token.expired() || r) return;
          LogWarn("removing the stray allocation of " + a.ToString() + " in IPBlock " + name +
                  ": " + r.error().message + " (tried again)");
          NoteUnsure(key, a);
        };
        Enqueue(b.subnet, b.cidr, std::move(op));
        if (b.busy) break;  // the removal is on its way; the rest wait for the next Tick
        continue;
      }
      if (now < it->second.next_check_ms) {
        ++it;
        continue;
      }
      if (it->second.checks >= kUnsureChecks) {
        it = b.unsure.erase(it);  // not landed by now: it will not
        continue;
      }
      ++it->second.checks;
      it->second.next_check_ms = now + (it->second.checks < kUnsureChecks
                                            ? kUnsureChecksMs[it->second.checks]
                                            : kUnsureChecksMs[kUnsureChecks - 1]);
      read = true;
      ++it;
    }
    if (read && !b.busy) Refresh(b.subnet, b.cidr, [] {});
  }
}

void BlockEngine::SetObject(BlockState& b, std::optional<IpBlock> object) {
  b.object = std::move(object);
  if (!b.object || !b.object->allocations.empty()) {
    b.empty_since_ms = -1;
  } else if (b.object->node == options_.node && b.empty_since_ms < 0) {
    // Seen empty, however it got there (this node's release, the cluster's garbage
    // collection, found so at start): the linger starts now; Tick retires it after.
    b.empty_since_ms = clock_->NowMs();
  }
  b.known = true;
  SyncAllocator(b);
}

// A read and the watch use two connections, and nothing orders their answers: a read's
// answer can arrive after the watch delivered a newer version. Versions are ordered by
// the watch's delivery, never compared as numbers (resourceVersion is opaque): an answer
// the watch delivered before the copy's version, or while the copy holds a version the
// watch has not delivered yet (this node's write, or a newer read), is older.
bool BlockEngine::OlderThanCopy(const BlockState& b, const std::optional<IpBlock>& answer) const {
  if (!answer || !b.object || answer->resource_version == b.object->resource_version) return false;
  auto position = [&b](const std::string& version) {
    for (size_t i = 0; i < b.watched_versions.size(); ++i) {
      if (b.watched_versions[i] == version) return static_cast<int>(i);
    }
    return -1;
  };
  const int answered = position(answer->resource_version);
  if (answered < 0) return false;  // not delivered by the watch yet: newer than all it did
  const int copy = position(b.object->resource_version);
  return copy < 0 || answered < copy;
}

void BlockEngine::ApplyRead(BlockState& b, const std::optional<IpBlock>& answer) {
  if (b.busy || OlderThanCopy(b, answer)) return;
  SetObject(b, answer);
}

// Tells the allocator what this block means for this node: local when it is ours; every
// allocation in it that is not a live lease of ours (same attachment, made by this node)
// is a foreign hold. A committed lease whose allocation now names another node was
// adopted there (its StatefulSet pod moved) and is dropped here first.
void BlockEngine::SyncAllocator(BlockState& b) {
  bool local = b.object && b.object->node == options_.node;
  if (local != b.local && allocator_->SetBlockLocal(b.subnet, b.cidr, local)) b.local = local;
  if (b.object) DropAdoptedLeases(b);
  std::map<uint64_t, std::string> foreign;
  if (b.object) {
    for (const auto& [offset, alloc] : b.object->allocations) {
      if (IsOwnSpare(b, offset)) continue;  // this node's to hand out (or handed out)
      IpAddr a = b.cidr.first().Plus(offset);
      std::optional<Lease> mine = allocator_->Holder(b.subnet, a);
      if (!mine || mine->key() != KeyOfAllocation(b.subnet, alloc) ||
          alloc.node != options_.node) {
        foreign.emplace(offset, DescribeAllocation(alloc));
      }
    }
  }
  for (uint64_t offset : b.foreign) {
    if (!foreign.count(offset))
      (void)allocator_->UnmarkForeign(b.subnet, b.cidr.first().Plus(offset));
  }
  b.foreign.clear();
  for (auto& [offset, who] : foreign) {
    if (allocator_->MarkForeign(b.subnet, b.cidr.first().Plus(offset), std::move(who))) {
      b.foreign.insert(offset);
    }
  }
}

// Drops, without an API call, each committed lease of this node whose allocation in `b`
// another node has taken over (adoption): the address is that node's now. A lease with a
// request in progress is left to it (a release leaves an adopted allocation alone).
void BlockEngine::DropAdoptedLeases(BlockState& b) {
  std::vector<std::pair<AttachmentKey, std::string>> adopted;  // key, adopting node
  for (const auto& [offset, alloc] : b.object->allocations) {
    std::optional<Lease> mine = allocator_->Holder(b.subnet, b.cidr.first().Plus(offset));
    if (!mine || mine->state != LeaseState::kCommitted || keys_.count(mine->key()) > 0) continue;
    bool same_key = mine->key() == KeyOfAllocation(b.subnet, alloc);
    // A StatefulSet pod's allocation taken over by its namesake on another node; an
    // IPAMClaim's taken over by another pod of the claim (a VM restarted or migrated).
    bool moved = KeptFor(alloc).empty() ? alloc.node != options_.node && same_key
                                        : alloc.node != options_.node || !same_key;
    if (!moved) continue;
    adopted.emplace_back(mine->key(), alloc.node);
  }
  for (const auto& [key, node] : adopted) {
    if (DropLeaseLocally(key, "was adopted by node " + node + " (its pod was re-created there)", &b)) {
      ++stats_.adopted_away;
    }
  }
}

bool BlockEngine::DropLeaseLocally(const AttachmentKey& key, const std::string& why,
                                   const BlockState* synced) {
  std::optional<Lease> held = allocator_->Find(key);
  if (!held) return true;
  Lease lease = *held;
  if (auto r = store_->ReleaseLease(key, clock_->NowMs()); !r && r.error().code != Code::kNotFound) {
    LogWarn("dropping the lease of " + key.ToString() + " (it " + why + "): " + r.error().message);
    return false;  // the store and the allocator stay in step; tried again on the next sync
  }
  (void)allocator_->Release(key);
  LogInfo("the lease of " + key.ToString() + " " + why + "; dropped here");
  // What is left of the lease in its blocks (another family's allocation) is now a
  // foreign hold (taken until the cluster's reconciler frees it), not free.
  for (const IpAddr& a : lease.addresses()) {
    auto cidr = BlockOfAddress(lease.subnet, a);
    BlockState* other = cidr ? FindBlock(BlockName(lease.subnet, *cidr)) : nullptr;
    if (other != nullptr && other != synced) SyncAllocator(*other);
  }
  return true;
}

void BlockEngine::Refresh(const std::string& subnet, const IpNet& cidr,
                          std::function<void()> then) {
  ++stats_.gets;
  std::weak_ptr<int> token = life_;
  api_->Get(BlockName(subnet, cidr),
            [this, token, subnet, cidr, then = std::move(then)](Result<std::optional<IpBlock>> r) {
              if (token.expired()) return;
              BlockState& b = Block(subnet, cidr);
              if (!r) {
                NoteFailure(r.error());
              } else {
                ApplyRead(b, *r);
              }
              then();
            });
}

// --- The informer feed ---

Result<void> BlockEngine::OnSubnetUpsert(const std::string& subnet) {
  if (auto r = allocator_->SetClusterMode(subnet, true); !r) return r;
  for (auto& [name, b] : blocks_) {
    if (b->subnet != subnet) continue;
    // Told again: SetBlockLocal and MarkForeign failed while the subnet was unknown, and a
    // subnet deleted and re-created starts with no blocks. Both calls are idempotent.
    b->local = false;
    SyncAllocator(*b);
  }
  return Ok();
}

void BlockEngine::OnBlockUpsert(const IpBlock& block) {
  BlockState& b = Block(block.subnet, block.cidr);
  b.watched_versions.push_back(block.resource_version);
  if (b.watched_versions.size() > 4) b.watched_versions.pop_front();
  if (!b.awaiting_version.empty()) {
    // The watch is behind our own last write: this event is older than what we hold.
    if (block.resource_version == b.awaiting_version) b.awaiting_version.clear();
    return;
  }
  SetObject(b, block);
  // Another node asked for this node's spares (it found no other free address and its
  // pod's ADD was answered "try again"): give back those not handed out now, not at the
  // next tick a second away; that pod's retry waits for them.
  if (b.object && b.object->node == options_.node && b.object->return_spares) QueueSparesWrite(b);
  Pump(b);
}

void BlockEngine::ForgetOwnBlocksNotIn(const std::set<std::string>& present) {
  std::vector<std::string> gone;
  for (const auto& [name, b] : blocks_) {
    if (b->object && b->object->node == options_.node && !b->awaiting_version.empty() && !b->busy) {
      // The watch that was to show our last write is gone (a relist replaced it), and it
      // is the only thing that lets later events of this block in: read the block before
      // the next write to it instead of writing from a copy that may be stale.
      b->known = false;
    }
    if (b->object && b->object->node == options_.node && !present.count(name) && !b->busy &&
        b->queued.empty() && b->deferred.empty() && b->awaiting_version.empty()) {
      gone.push_back(name);
    }
  }
  for (const std::string& name : gone) {
    LogInfo("IPBlock " + name + " of this node is gone from the API server (deleted while this "
            "node was not watching)");
    OnBlockDeleted(name);
  }
}

void BlockEngine::OnBlockDeleted(const std::string& name, const std::string& uid) {
  BlockState* b = FindBlock(name);
  if (b == nullptr) return;
  if (!uid.empty() && b->object && !b->object->uid.empty() && b->object->uid != uid) {
    return;  // an older incarnation's deletion, delivered after this node claimed it again
  }
  b->awaiting_version.clear();
  // Nothing in sublease deletes a block that holds allocations (this node retires only
  // empty ones, the leader's collection too): someone deleted it by hand. Its allocations
  // are written back — also other nodes' borrows — in a create claiming the block again,
  // so that no address in use becomes free anywhere (the collection frees those whose
  // pods are gone). If another node claimed the block first, they go in as borrows, and
  // only those whose offsets it took meanwhile are lost (and logged).
  const bool had = b->object && b->object->node == options_.node && !b->object->allocations.empty();
  if (b->busy) {
    // A write of ours may have landed just before the delete, or a read been served
    // before it: decide when that answer is in (Pump).
    if (had) b->deleted_while_busy = *b->object;
    return;
  }
  std::optional<IpBlock> was = std::move(b->object);
  SetObject(*b, std::nullopt);
  if (had) WriteBack(*b, *was);
  Pump(*b);
}

// Queues `last`'s allocations ahead of everything else for the block: they are the oldest
// state, and a release queued or requeued meanwhile must come after them (else it would
// remove nothing, and the write-back would put the released address back).
void BlockEngine::WriteBack(BlockState& b, const IpBlock& last) {
  if (last.allocations.empty()) return;
  LogWarn("IPBlock " + b.name + " of this node was deleted while it held " +
          std::to_string(last.allocations.size()) + " allocation(s); writing them back");
  std::weak_ptr<int> token = life_;
  for (auto it = last.allocations.rbegin(); it != last.allocations.rend(); ++it) {
    const auto& [offset, recorded] = *it;
    BlockAllocation alloc = recorded;
    if (alloc.spare) {
      // A spare handed out goes back as its pod's allocation; one not handed out is
      // not written back (this node's next write tops the spares up again).
      std::optional<Lease> holder = allocator_->Holder(b.subnet, b.cidr.first().Plus(offset));
      if (alloc.node != options_.node || !holder || holder->state != LeaseState::kCommitted) continue;
      alloc = AllocationFor(*holder);
    }
    Op op;
    op.kind = Op::Kind::kAdd;
    op.offset = offset;
    op.key = KeyOfAllocation(b.subnet, alloc);
    op.allocation = alloc;
    op.done = [token, name = b.name, who = DescribeAllocation(alloc)](Result<void> r) {
      if (token.expired() || r) return;
      LogError("could not write back the allocation of " + who + " in IPBlock " + name + ": " +
               r.error().message);
    };
    b.queued.push_front(std::move(op));
  }
}

}  // namespace sublease
