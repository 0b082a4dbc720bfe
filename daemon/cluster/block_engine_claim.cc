// The block engine's claiming and borrowing (protocol step 6): when this node has no
// free address of a family in its own blocks, it lists the subnet's blocks, creates an
// unclaimed one (random among the lowest few, so racing nodes rarely pick the same),
// or, when every block is claimed, borrows a free address from another node's block.
// One List per subnet serves every allocation waiting for a block meanwhile.
#include <utility>

#include "common/log.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/block_engine_internal.h"

namespace sublease {
namespace {

// A borrow chooses among at most this many free addresses of the block it picked.
constexpr int kMaxBorrowCandidates = 64;
// After a List found every block of a subnet claimed, later borrows for this long choose
// from the copies it left instead of listing again (a block becomes unclaimed only when
// its node deletes it empty, after --empty-block-linger-ms): in a full subnet's end game
// every allocation of a node borrows, and a List each was ~0.1 per pod (issue 14).
constexpr int64_t kBorrowWithoutListMs = 2'000;

bool FreeIn(const Allocator& allocator, const std::string& subnet, const IpNet& cidr) {
  auto a = allocator.LowestFreeAtOrAbove(subnet, cidr.first());
  return a && *a <= cidr.last();
}

}  // namespace

// A block this node is creating right now (a claim queued or in flight) that still has
// a free address: later allocations join that create instead of claiming another.
std::optional<IpNet> BlockEngine::ClaimingBlockWithFree(const std::string& subnet,
                                                        Family family) const {
  for (const auto& [name, b] : blocks_) {
    if (b->subnet != subnet || b->cidr.family() != family || !b->known || b->object) continue;
    if ((b->busy || !b->queued.empty()) && FreeIn(*allocator_, subnet, b->cidr)) return b->cidr;
  }
  return std::nullopt;
}

void BlockEngine::FindBlockFor(std::shared_ptr<Job> job, Family family) {
  const std::string& subnet = job->request.subnet;
  // Releases waiting to ride along free addresses in this node's blocks: send them and
  // pick again, rather than claim or borrow while the addresses are about to be free.
  std::weak_ptr<int> token = life_;
  if (SendDeferred(nullptr, subnet, family, [this, token, job] {
        if (!token.expired()) StartAllocate(job);
      })) {
    return;
  }
  if (auto claiming = ClaimingBlockWithFree(subnet, family)) {
    LogDebug("joining the claim of block " + claiming->ToString() + " for " + job->key.ToString());
    job->request.within.push_back(*claiming);
    job->claims.insert(BlockName(subnet, *claiming));
    return StartAllocate(job);
  }
  auto until = borrow_from_copies_until_ms_.find({subnet, family});
  // (Only a first pick: one that lost its address re-picks from a fresh List, or stale
  // copies would send it after addresses taken meanwhile until its re-picks run out.)
  if (until != borrow_from_copies_until_ms_.end() && clock_->NowMs() < until->second &&
      claim_waiters_.count(subnet) == 0 && job->repicks == 0) {
    if (auto chosen = ChooseBorrow(subnet, family)) {
      LogDebug("borrowing from block " + chosen->ToString() + " of subnet " + subnet + " for " +
               job->key.ToString() + " (as last listed)");
      job->request.within.push_back(*chosen);
      return StartAllocate(job);
    }
  }
  auto& waiters = claim_waiters_[subnet];
  waiters.push_back(ClaimWaiter{job, family});
  if (waiters.size() > 1) return;  // the List in flight serves this one too
  ++stats_.lists;
  api_->ListSubnet(subnet, [this, token, subnet](Result<std::vector<IpBlock>> r) {
    if (!token.expired()) OnSubnetListed(subnet, std::move(r));
  });
}

void BlockEngine::OnSubnetListed(const std::string& subnet, Result<std::vector<IpBlock>> listed) {
  std::vector<ClaimWaiter> waiters = std::move(claim_waiters_[subnet]);
  claim_waiters_.erase(subnet);
  if (!listed) {
    NoteFailure(listed.error());
    Error e = listed.error().Wrap("listing the IPBlocks of subnet " + subnet);
    for (ClaimWaiter& w : waiters) FinishJob(w.job, Fail(e));
    return;
  }
  std::set<std::string> names = AbsorbList(subnet, std::move(*listed));
  // Every waiter is placed before any write leaves, so that those choosing the same
  // block (a claim and the allocations joining it) go out in one create.
  std::set<std::string> to_pump;
  deferred_pumps_ = &to_pump;
  for (ClaimWaiter& w : waiters) {
    if (allocator_->HasDynamicFree(subnet, w.family)) {
      // The list showed own blocks with room that this node had not seen yet (after a
      // restart that resumed the block watch instead of listing): pick there.
      StartAllocate(w.job);
      continue;
    }
    std::optional<IpNet> chosen = ClaimingBlockWithFree(subnet, w.family);
    bool claim = true;
    if (!chosen) chosen = ChooseClaim(subnet, w.family);
    if (!chosen) {
      chosen = ChooseBorrow(subnet, w.family);
      claim = false;
      borrow_from_copies_until_ms_[{subnet, w.family}] = clock_->NowMs() + kBorrowWithoutListMs;
    }
    std::string holders;
    if (!chosen && AskForSpares(subnet, w.family, &holders) > 0) {
      FinishJob(w.job, Fail(Error::Unavailable(
                           "subnet " + subnet + " has no free " + std::string(FamilyName(w.family)) +
                           " address but spares held by node(s) " + holders +
                           " for their next pods; they were asked to give them back: try again")));
      continue;
    }
    if (!chosen) {
      FinishJob(w.job,
                Fail(Error::Exhausted(
                    "subnet " + subnet + " has no free " + std::string(FamilyName(w.family)) +
                    " address on any node: every block is claimed and full (" +
                    std::to_string(names.size()) + " blocks); free addresses or grow the subnet")));
      continue;
    }
    LogDebug(std::string(claim ? "claiming" : "borrowing from") + " block " + chosen->ToString() +
             " of subnet " + subnet + " for " + w.job->key.ToString());
    w.job->request.within.push_back(*chosen);
    if (claim) {
      w.job->claims.insert(BlockName(subnet, *chosen));  // (a borrow names one address)
      // The list just showed that the block does not exist: the create needs no read
      // first (if it was created meanwhile, the create's 409 is followed by one).
      BlockState& b = Block(subnet, *chosen);
      if (!b.known && !b.busy) SetObject(b, std::nullopt);
    }
    StartAllocate(w.job);
  }
  deferred_pumps_ = nullptr;
  for (const std::string& name : to_pump) {
    if (BlockState* b = FindBlock(name)) Pump(*b);
  }
}

// The list is the whole subnet: refresh other nodes' blocks (their allocations become
// foreign holds) and forget the ones that are gone. Own blocks come from the watch and
// our writes, which may be newer than this list.
std::set<std::string> BlockEngine::AbsorbList(const std::string& subnet,
                                              std::vector<IpBlock> listed) {
  std::set<std::string> names;
  for (IpBlock& blk : listed) {
    names.insert(blk.name);
    BlockState& b = Block(subnet, blk.cidr);
    if (blk.node != options_.node || !b.known || !b.object) ApplyRead(b, blk);
  }
  for (auto& [name, b] : blocks_) {
    if (b->subnet == subnet && !b->busy && b->object && b->object->node != options_.node &&
        !names.count(name)) {
      SetObject(*b, std::nullopt);
    }
  }
  return names;
}

// Unclaimed blocks with a free address, lowest first; one of the first claim_spread at
// random. Bounded: each step skips one existing block or finds one candidate.
std::optional<IpNet> BlockEngine::ChooseClaim(const std::string& subnet, Family family) {
  const Subnet* s = allocator_->FindSubnet(subnet);
  auto prefix = BlockPrefix(subnet, family);
  if (s == nullptr || !prefix || s->family(family) == nullptr) return std::nullopt;
  const IpNet& cidr = s->family(family)->cidr;
  std::vector<IpNet> candidates;
  IpAddr cursor = cidr.first();
  const size_t max_steps = blocks_.size() + static_cast<size_t>(options_.claim_spread) + 1;
  for (size_t step = 0;
       step < max_steps && candidates.size() < static_cast<size_t>(options_.claim_spread); ++step) {
    auto a = allocator_->LowestFreeAtOrAbove(subnet, cursor);
    if (!a || !cidr.Contains(*a)) break;
    IpNet blk = BlockOf(*a, *prefix);
    const BlockState* b = FindBlock(BlockName(subnet, blk));
    bool taken = b != nullptr && (b->object || b->busy || !b->queued.empty());
    if (!taken) candidates.push_back(blk);
    if (blk.last() == cidr.last()) break;
    cursor = blk.last().Plus(1);
  }
  if (candidates.empty()) return std::nullopt;
  return candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)];
}

// A free address in another node's block, at random (a random block, then a random
// free address in it), so that borrowing nodes spread over blocks and offsets instead
// of all writing the lowest free address of the same block and losing to each other.
// Returns the address as a one-address prefix for AllocateRequest::within.
std::optional<IpNet> BlockEngine::ChooseBorrow(const std::string& subnet, Family family) {
  std::vector<IpNet> blocks;
  for (const auto& [name, b] : blocks_) {
    if (b->subnet != subnet || b->cidr.family() != family || !b->object) continue;
    if (b->object->node != options_.node && FreeIn(*allocator_, subnet, b->cidr)) {
      blocks.push_back(b->cidr);
    }
  }
  if (blocks.empty()) return std::nullopt;
  const IpNet& block = blocks[std::uniform_int_distribution<size_t>(0, blocks.size() - 1)(rng_)];
  std::vector<IpAddr> free;
  IpAddr cursor = block.first();
  for (int i = 0; i < kMaxBorrowCandidates; ++i) {
    auto a = allocator_->LowestFreeAtOrAbove(subnet, cursor);
    if (!a || *a > block.last()) break;
    free.push_back(*a);
    if (*a == block.last()) break;
    cursor = a->Plus(1);
  }
  const IpAddr& pick = free[std::uniform_int_distribution<size_t>(0, free.size() - 1)(rng_)];
  return IpNet(pick, FamilyBits(family));
}

}  // namespace sublease
