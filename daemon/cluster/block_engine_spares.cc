// The block engine's spares (docs/cluster-protocol.md "Spares"): addresses this node
// holds in its own blocks for pods it has not seen yet. An allocation that picks one is
// answered with no API write — the address is this node's in the API server already, and
// no other node allocates a spare — and its pod is recorded in the block by a later
// write, which tops the spares up again. A node that finds no other free address asks
// the holders to give their untaken spares back (spec.returnSpares).
#include <algorithm>
#include <utility>

#include "common/log.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/block_engine_internal.h"

namespace sublease {

bool BlockEngine::IsOwnSpare(const BlockState& b, uint64_t offset) const {
  if (!b.object || b.object->node != options_.node) return false;
  auto it = b.object->allocations.find(offset);
  return it != b.object->allocations.end() && it->second.spare &&
         it->second.node == options_.node && !Quarantined(b, offset);
}

bool BlockEngine::SpareCanGoNow(const BlockState& b, uint64_t offset) const {
  // A write in flight gives back the spares it does not carry (asked for them back); one
  // answered with an error may still land and give back what it did not carry. Asked
  // back (returnSpares), none goes: a node that does not answer in time has its spares
  // taken back by the leader (docs/cluster-protocol.md "Spares").
  return IsOwnSpare(b, offset) && !b.object->return_spares && !b.maybe_returned.count(offset) &&
         (!b.busy || b.sent_spares.count(offset));
}

bool BlockEngine::KeepingSpares(const std::string& subnet) const {
  auto paused = spares_paused_until_ms_.find(subnet);
  return options_.spare_addresses > 0 &&
         (paused == spares_paused_until_ms_.end() || clock_->NowMs() >= paused->second);
}

void BlockEngine::NoteNetFreed(const std::string& subnet, int delta) {
  auto paused = spares_paused_until_ms_.find(subnet);
  if (paused == spares_paused_until_ms_.end()) return;
  if (clock_->NowMs() >= paused->second) {
    spares_paused_until_ms_.erase(paused);
    net_freed_while_paused_.erase(subnet);
    return;
  }
  int& net = net_freed_while_paused_[subnet];
  net += delta;
  if (net < options_.spare_addresses) return;
  // This node has freed, on balance, as many addresses as it would hold as spares since
  // it gave them back: the subnet is no fuller than when it was asked (pods were deleted),
  // and a pause of the whole spare_pause_ms would leave its next pods waiting for writes.
  spares_paused_until_ms_.erase(paused);
  net_freed_while_paused_.erase(subnet);
  LogInfo("subnet " + subnet + ": this node released " + std::to_string(options_.spare_addresses) +
          " more addresses than it allocated since it gave its spares back; keeping spares there again");
}

bool BlockEngine::SparesWriteQueued(const BlockState& b) {
  return std::any_of(b.queued.begin(), b.queued.end(),
                     [](const Op& op) { return op.kind == Op::Kind::kSpares; });
}

void BlockEngine::QueueSparesWrite(BlockState& b) {
  if (SparesWriteQueued(b)) return;
  Op op;
  op.kind = Op::Kind::kSpares;
  op.done = [](Result<void>) {};
  Enqueue(b.subnet, b.cidr, std::move(op));
}

void BlockEngine::QueueRecord(BlockState& b, uint64_t offset, const AttachmentKey& key,
                              const BlockAllocation& allocation, bool deferrable) {
  Op record;
  record.kind = Op::Kind::kAdd;
  record.offset = offset;
  record.key = key;
  record.allocation = allocation;
  record.record = true;
  record.deferrable = deferrable;
  recording_.insert({b.name, offset});
  std::weak_ptr<int> token = life_;
  record.done = [this, token, name = b.name, offset, key,
                 address = b.cidr.first().Plus(offset)](Result<void> r) {
    if (token.expired()) return;
    recording_.erase({name, offset});
    if (r) return;
    // Tick records it again (TendSpares). A conflict means someone else wrote the
    // address over this node's spare: only a hand edit of the block does that.
    std::string text = "recording " + key.ToString() + " as the holder of " + address.ToString() +
                       " (a spare of this node) in IPBlock " + name + ": " + r.error().message;
    if (r.error().code == Code::kConflict) {
      LogError(text + "; the spare was taken out of the block by someone else");
    } else {
      LogWarn(text + " (tried again)");
    }
  };
  Enqueue(b.subnet, b.cidr, std::move(record));
}

const BlockAllocation* BlockEngine::OtherNodesSpare(const std::string& subnet, const IpAddr& a) const {
  auto cidr = BlockOfAddress(subnet, a);
  auto it = cidr ? blocks_.find(BlockName(subnet, *cidr)) : blocks_.end();
  if (it == blocks_.end() || !it->second->object || it->second->object->node == options_.node) {
    return nullptr;
  }
  auto held = it->second->object->allocations.find(static_cast<uint64_t>(a.value() - cidr->first().value()));
  return held != it->second->object->allocations.end() && held->second.spare ? &held->second : nullptr;
}

bool BlockEngine::Quarantined(const BlockState& b, uint64_t offset) const {
  return !quarantine_.empty() && quarantine_.count({b.subnet, b.cidr.first().Plus(offset)}) > 0;
}

void BlockEngine::QuarantineSpare(const std::string& subnet, const IpAddr& address) {
  quarantine_.insert({subnet, address});
  auto cidr = BlockOfAddress(subnet, address);
  if (BlockState* b = cidr ? FindBlock(BlockName(subnet, *cidr)) : nullptr) SyncAllocator(*b);
}

void BlockEngine::LiftQuarantine() {
  std::set<std::string> subnets;
  for (const auto& [subnet, address] : quarantine_) subnets.insert(subnet);
  quarantine_.clear();
  for (auto& [name, b] : blocks_) {
    if (subnets.count(b->subnet) && b->object) SyncAllocator(*b);
  }
}

int BlockEngine::UntakenSpares(const std::string& subnet, Family family,
                               const BlockState* except) const {
  int n = 0;
  for (const auto& [name, b] : blocks_) {
    if (b.get() == except || b->subnet != subnet || b->cidr.family() != family || !b->object ||
        b->object->node != options_.node) {
      continue;
    }
    for (const auto& [offset, a] : b->object->allocations) {
      if (IsOwnSpare(*b, offset) && !allocator_->Holder(subnet, b->cidr.first().Plus(offset))) ++n;
    }
  }
  return n;
}

bool BlockEngine::TakeSpare(BlockState& b, Op& op) {
  // Only plain allocations: a claim, an adoption or an allocation kept beyond its pods
  // (IPAMClaim, VM, reserved IP) is decided by its write; a StatefulSet pod's carries
  // its owner UID, which only the allocation request knows.
  if (options_.spare_addresses <= 0 || op.kind != Op::Kind::kAdd || op.claim || op.adopt ||
      !KeptFor(op.allocation).empty() || op.allocation.sticky) {
    return false;
  }
  if (!b.known || !SpareCanGoNow(b, op.offset)) return false;
  ++stats_.spares_taken;
  // A quarter of them or fewer left (at least one): a write tops them up now — this
  // block's (its record goes at once) when it has room for more, else one of another own
  // block with room (a spares-only write; the record keeps waiting). With none, the next
  // allocation that finds no spare claims a block, and that create holds new spares.
  // (Until 2026-12-04 at half: a write per 4 pods of 8 spares instead of per 6, 0.24
  // IPBlock writes per pod instead of 0.17 in BENCHMARKS §5b; the quarter left covers
  // the pods that come while the write is in flight.)
  bool top_up_here = false;
  if (UntakenSpares(b.subnet, b.cidr.family(), nullptr) <= std::max(1, options_.spare_addresses / 4)) {
    if (RoomForSpares(b)) {
      top_up_here = true;
    } else {
      for (auto& [name, other] : blocks_) {
        BlockState& o = *other;
        if (&o == &b || o.subnet != b.subnet || o.cidr.family() != b.cidr.family() || !o.known ||
            !o.object || o.object->node != options_.node || !o.local || !RoomForSpares(o)) {
          continue;
        }
        if (!o.busy) QueueSparesWrite(o);
        break;
      }
    }
  }
  // Nothing waits for the record: it rides with the block's next write (unless that is now).
  QueueRecord(b, op.offset, op.key, op.allocation, /*deferrable=*/!top_up_here);
  return true;
}

bool BlockEngine::PreferSpares(AllocateRequest& r) const {
  if (options_.spare_addresses <= 0 || !r.static_ips.empty() || !r.pool.empty() ||
      !r.named_pool.empty() || r.sticky || !r.ipam_claim.empty() || !r.virtual_machine.empty() ||
      !r.reserved_ip.empty()) {
    return false;
  }
  std::map<Family, IpAddr> lowest;
  for (const auto& [name, bp] : blocks_) {
    const BlockState& b = *bp;
    if (b.subnet != r.subnet || !b.known || !b.object || b.object->node != options_.node ||
        (r.family && *r.family != b.cidr.family())) {
      continue;
    }
    for (const auto& [offset, a] : b.object->allocations) {
      if (!SpareCanGoNow(b, offset)) continue;
      IpAddr address = b.cidr.first().Plus(offset);
      if (allocator_->Holder(r.subnet, address)) continue;
      auto it = lowest.find(address.family());
      if (it == lowest.end() || address < it->second) lowest.insert_or_assign(address.family(), address);
    }
  }
  for (const auto& [family, address] : lowest) r.within.emplace_back(address, FamilyBits(family));
  return !lowest.empty();
}

bool BlockEngine::RoomForSpares(const BlockState& b) const {
  IpAddr cursor = b.cidr.first();
  for (int step = 0; step < 4096; ++step) {
    auto a = allocator_->LowestFreeAtOrAbove(b.subnet, cursor);
    if (!a || *a > b.cidr.last()) return false;
    const auto offset = static_cast<uint64_t>(a->value() - b.cidr.first().value());
    // (Free in the allocator: this node's untaken spares are, and are no room.)
    if (!b.object || !b.object->allocations.count(offset)) return true;
    if (*a == b.cidr.last()) return false;
    cursor = a->Plus(1);
  }
  return false;
}

void BlockEngine::MaintainSpares(BlockState& b, IpBlock& next) {
  if (next.node != options_.node) return;
  if (next.return_spares) {
    next.return_spares = false;
    spares_paused_until_ms_[b.subnet] = clock_->NowMs() + options_.spare_pause_ms;
    net_freed_while_paused_[b.subnet] = 0;
    LogInfo("another node found no free address in subnet " + b.subnet +
            " but this node's spares: giving back those not handed out, and keeping none there for " +
            std::to_string(options_.spare_pause_ms / 1000) + " s");
  }
  const bool keep = KeepingSpares(b.subnet);
  int in_next = 0;
  for (auto it = next.allocations.begin(); it != next.allocations.end();) {
    const bool untaken = it->second.spare && it->second.node == options_.node &&
                         !Quarantined(b, it->first) &&
                         !allocator_->Holder(b.subnet, b.cidr.first().Plus(it->first));
    if (untaken && !keep) {
      ++stats_.spares_returned;
      it = next.allocations.erase(it);
      continue;
    }
    in_next += untaken ? 1 : 0;
    ++it;
  }
  if (!keep) return;
  int want = options_.spare_addresses - UntakenSpares(b.subnet, b.cidr.family(), &b) - in_next;
  // The lowest free addresses, which the allocator's lowest-first picks find first.
  IpAddr cursor = b.cidr.first();
  for (int step = 0; want > 0 && step < 4096; ++step) {
    auto a = allocator_->LowestFreeAtOrAbove(b.subnet, cursor);
    if (!a || *a > b.cidr.last()) break;
    const auto offset = static_cast<uint64_t>(a->value() - b.cidr.first().value());
    if (!next.allocations.count(offset) && !b.unsure.count(offset)) {
      BlockAllocation spare;
      spare.node = options_.node;
      spare.spare = true;
      next.allocations[offset] = spare;
      ++stats_.spares_added;
      --want;
    }
    if (*a == b.cidr.last()) break;
    cursor = a->Plus(1);
  }
}

void BlockEngine::ReadLeaseBlocks() {
  if (lease_blocks_read_) return;
  std::map<std::string, std::pair<std::string, IpNet>> blocks;  // name -> subnet, cidr
  allocator_->ForEachLease([&](const Lease& l) {
    if (l.state != LeaseState::kCommitted) return;
    for (const IpAddr& a : l.addresses()) {
      if (auto cidr = BlockOfAddress(l.subnet, a)) {
        blocks.emplace(BlockName(l.subnet, *cidr), std::pair{l.subnet, *cidr});
      }
    }
  });
  bool all = true;
  for (const auto& [name, where] : blocks) {
    const auto& [subnet, cidr] = where;
    BlockState& b = Block(subnet, cidr);
    if (b.known) continue;
    all = false;
    // (Busy or with changes queued: that read or write brings the copy.)
    if (!b.busy && b.queued.empty()) Read(b);
  }
  lease_blocks_read_ = all;
}

void BlockEngine::TendSpares() {
  for (auto& [name, bp] : blocks_) {
    BlockState& b = *bp;
    // (A block being written too: what is queued leaves with its next write. A block
    // whose copy is not current — a write failed — still gets its records queued: the
    // write path reads it first and decides on what it reads. Without that, a record
    // that failed while the API server was away waited for some other change of the
    // block, which a full block may never see.)
    if (!b.object || b.object->node != options_.node) continue;
    const bool keep = KeepingSpares(b.subnet);
    bool give_back = b.known && b.object->return_spares;
    for (const auto& [offset, a] : b.object->allocations) {
      if (!IsOwnSpare(b, offset)) continue;
      std::optional<Lease> holder = allocator_->Holder(b.subnet, b.cidr.first().Plus(offset));
      if (!holder) {
        give_back = give_back || (b.known && !keep);
        continue;
      }
      // Handed out before a restart (or its record failed): record its pod now.
      if (holder->state != LeaseState::kCommitted || recording_.count({b.name, offset}) ||
          keys_.count(holder->key())) {
        continue;
      }
      QueueRecord(b, offset, holder->key(), AllocationFor(*holder), /*deferrable=*/false);
    }
    if (give_back) QueueSparesWrite(b);
  }
}

size_t BlockEngine::AskForSpares(const std::string& subnet, Family family, std::string* holders) {
  size_t seen = 0;
  std::set<std::string> nodes;
  for (auto& [name, bp] : blocks_) {
    BlockState& b = *bp;
    if (b.subnet != subnet || b.cidr.family() != family || !b.object ||
        b.object->node == options_.node) {
      continue;
    }
    size_t here = 0;
    for (const auto& [offset, a] : b.object->allocations) {
      here += a.spare && a.node == b.object->node ? 1 : 0;
    }
    if (here == 0) continue;
    seen += here;
    nodes.insert(b.object->node);
    if (b.object->return_spares || SparesWriteQueued(b)) continue;  // asked already
    LogInfo("subnet " + subnet + " has no free address but " + std::to_string(here) +
            " spare(s) of node " + b.object->node + " in IPBlock " + b.name + ": asking for them back");
    QueueSparesWrite(b);
  }
  for (const std::string& n : nodes) *holders += (holders->empty() ? "" : ", ") + n;
  return seen;
}

}  // namespace sublease
