// The block engine's requests: Allocate, Release, Recover. Blocks and their queues are
// in block_engine_blocks.cc, claiming and borrowing in block_engine_claim.cc.
#include "daemon/cluster/block_engine.h"

#include <utility>

#include "common/log.h"
#include "daemon/cluster/block_engine_internal.h"

namespace sublease {
namespace {

constexpr Family kFamilies[] = {Family::kV4, Family::kV6};

bool Wants(const Subnet& subnet, const AllocateRequest& r, Family f) {
  return subnet.family(f) != nullptr && (!r.family || *r.family == f);
}

bool HasWithin(const AllocateRequest& r, Family f) {
  for (const IpNet& n : r.within) {
    if (n.family() == f) return true;
  }
  return false;
}

void DropWithin(AllocateRequest& r, Family f) {
  std::erase_if(r.within, [f](const IpNet& n) { return n.family() == f; });
}

// A StatefulSet member: its allocation outlives the pod and may be adopted by the pod
// re-created under the same name, on any node.
bool MayAdopt(const AllocateRequest& r) {
  return r.sticky && r.ordinal.has_value() && !r.owner_uid.empty() && !r.owner.pod_name.empty();
}

// A KubeVirt VM's pod without a claim: its VM's allocation of this interface, if any, is
// looked up in the subnet's blocks and taken over (Kube-OVN's keep-vm-ip).
bool MayTakeVmAddress(const AllocateRequest& r) {
  return r.ipam_claim.empty() && r.reserved_ip.empty() && !r.virtual_machine.empty() &&
         r.static_ips.empty();
}

// Whom the allocation the request makes is kept for (KeptFor of it).
std::string KeptForRequest(const AllocateRequest& r) {
  BlockAllocation a;
  a.ipam_claim = r.ipam_claim;
  if (a.ipam_claim.empty()) a.virtual_machine = r.virtual_machine;
  if (a.ipam_claim.empty() && a.virtual_machine.empty()) a.reserved_ip = r.reserved_ip;
  a.ifname = r.owner.ifname;
  return KeptFor(a);
}

// The addresses a static request names ("10.0.0.5" or "10.0.0.5/24").
std::vector<IpAddr> NamedAddresses(const AllocateRequest& r) {
  std::vector<IpAddr> out;
  for (const std::string& text : r.static_ips) {
    auto a = IpAddr::Parse(text.substr(0, text.find('/')));
    if (a) out.push_back(*a);
  }
  return out;
}

// The addresses a request names that another node may hold as spares: its static ones,
// or its ip_pool entries' ("a,b,c", dual stack "a4,a6;b4,b6"; a StatefulSet member's
// entry [ordinal] only).
std::vector<IpAddr> NamedOrPoolAddresses(const AllocateRequest& r) {
  std::vector<IpAddr> out = NamedAddresses(r);
  if (!r.static_ips.empty() || r.pool.empty()) return out;
  auto split = [](const std::string& text, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t end; (end = text.find(sep, start)) != std::string::npos; start = end + 1) {
      parts.push_back(text.substr(start, end - start));
    }
    parts.push_back(text.substr(start));
    return parts;
  };
  std::vector<std::string> entries = split(r.pool, r.pool.find(';') != std::string::npos ? ';' : ',');
  if (r.ordinal) {
    if (*r.ordinal >= entries.size()) return out;
    entries = {entries[*r.ordinal]};
  }
  for (const std::string& entry : entries) {
    for (std::string text : split(entry, ',')) {
      text.erase(0, text.find_first_not_of(" \t"));
      text = text.substr(0, text.find_first_of(" \t/"));
      if (auto a = IpAddr::Parse(text)) out.push_back(*a);
    }
  }
  return out;
}

}  // namespace

BlockEngine::BlockEngine(Allocator* allocator, Store* store, BlockApi* api, const Clock* clock,
                         Options options)
    : allocator_(allocator),
      store_(store),
      api_(api),
      clock_(clock),
      options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()),
      ahead_window_([this] {
        AheadWindow::Options o;
        o.max_ms = options_.ahead_write_window_ms;
        o.learn = options_.learn_ahead_window;
        return o;
      }()) {}

BlockEngine::~BlockEngine() = default;

// --- One request per attachment at a time ---

void BlockEngine::RunForKey(const AttachmentKey& key, std::function<void()> run) {
  auto it = keys_.find(key);
  if (it != keys_.end()) {
    it->second.push_back(std::move(run));
    // A deferred change of this attachment (a release, a holder update, an allocation
    // made ahead of time) goes now: this request waits for it.
    Expedite(key);
    return;
  }
  keys_[key];
  run();
}

void BlockEngine::FinishKey(const AttachmentKey& key) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return;
  if (it->second.empty()) {
    keys_.erase(it);
    hurried_.erase(key);
    return;
  }
  std::function<void()> next = std::move(it->second.front());
  it->second.pop_front();
  next();
}

void BlockEngine::Expedite(const AttachmentKey& key) {
  if (keys_.count(key) == 0) return;  // nothing in progress: nothing held
  hurried_.insert(key);
  (void)SendDeferred(&key, "", Family::kV4, [] {});
}

void BlockEngine::NoteAdd(const AttachmentKey& key) {
  auto it = ahead_queued_ms_.find(key);
  if (it == ahead_queued_ms_.end()) return;
  ahead_window_.NoteLeadTime(clock_->NowMs() - it->second);
  ahead_queued_ms_.erase(it);
}

void BlockEngine::Answer(const AttachmentKey& key, const LeaseDone& done, Result<Lease> result) {
  done(std::move(result));
  FinishKey(key);
}

// --- Allocate ---

void BlockEngine::Allocate(const AllocateRequest& request, LeaseDone done) {
  AttachmentKey key = AttachmentKey::For(request.subnet, request.owner);
  RunForKey(key, [this, request, key, done = std::move(done)]() mutable {
    if (std::optional<Lease> held = allocator_->Find(key)) {
      // Step 1: already held. A pending lease with nobody serving it is left from
      // before a restart (only Recover may decide it), or its block write landed and the
      // store failed to record it (Tick records it again: CommitUncommitted).
      if (held->state == LeaseState::kCommitted) return Answer(key, done, *held);
      if (uncommitted_.count(key)) {
        return Answer(key, done,
                      Fail(Error::Unavailable("the lease of " + key.ToString() +
                                              " is in its IPBlock but the local database could not "
                                              "record it yet (see the earlier error); retrying")));
      }
      return Answer(key, done,
                    Fail(Error::Unavailable("the lease of " + key.ToString() +
                                            " is pending from before a restart; it is settled "
                                            "once the daemon has reconciled with the API server")));
    }
    if (request.written_back && !quarantine_.empty()) {
      // The pod's own written-back addresses: a quarantined spare among them is its.
      for (const IpAddr& a : NamedAddresses(request)) {
        if (!quarantine_.erase({request.subnet, a})) continue;
        LogInfo("quarantined spare " + a.ToString() + " of subnet " + request.subnet + " is " +
                key.ToString() + "'s (the pod's own annotations, written after its answer, name it)");
        auto cidr = BlockOfAddress(request.subnet, a);
        if (BlockState* b = cidr ? FindBlock(BlockName(request.subnet, *cidr)) : nullptr) SyncAllocator(*b);
      }
    }
    auto job = std::make_shared<Job>();
    job->request = request;
    job->request.within.clear();
    job->key = key;
    job->done = std::move(done);
    if (MayAdopt(job->request) || MayTakeVmAddress(job->request)) return FindAdoptable(job);
    if (!KeptForRequest(job->request).empty() && !job->request.static_ips.empty()) {
      return TakeClaimAddresses(job);
    }
    StartAllocate(job);
  });
}

// --- A reserved IP, written by the leader ---

void BlockEngine::Reserve(const std::string& reserved_ip, const std::string& subnet,
                          const std::string& pod_namespace, const std::string& pod_name,
                          const std::vector<std::string>& addresses, AddressesDone done) {
  const Subnet* s = allocator_->FindSubnet(subnet);
  if (s == nullptr) {
    return done(Fail(Error::NotFound("Subnet " + subnet + " does not exist (spec.subnet)")));
  }
  // Kube-OVN honours only an object named for the pod's attachment; a pod's node looks
  // for no other name, so an address reserved under another would never be used.
  const std::string flat = pod_name + "." + pod_namespace + "." + s->provider;
  if (reserved_ip != flat && reserved_ip.rfind(flat + ".", 0) != 0) {
    return done(Fail(Error::InvalidArgument(
        "a reservation for pod " + pod_namespace + "/" + pod_name + " in Subnet " + subnet +
        " must be named " + flat + " (<pod>.<namespace>.<provider>, with .<interface> when the "
        "pod attaches the provider more than once), not " + reserved_ip)));
  }
  AllocateRequest request;
  request.subnet = subnet;
  // No interface: this holder is a placeholder; the pod's node rewrites it.
  request.owner = Owner{pod_namespace, pod_name, "", "", ""};
  request.provider = s->provider;
  request.static_ips = addresses;
  request.reserved_ip = reserved_ip;
  request.keep_existing = true;
  AttachmentKey key = AttachmentKey::For(subnet, request.owner);
  Allocate(request, [this, key, done = std::move(done)](Result<Lease> lease) {
    if (!lease) return done(Fail(lease.error()));
    std::vector<IpAddr> reserved = lease->addresses();
    if (lease->key() != key) return done(reserved);  // in use here by the pod already
    // The allocation stays in its block (a release leaves a kept one); the lease ends.
    Release(key, [done, reserved](Result<void> released) {
      if (!released) {
        LogWarn("reserved " + reserved.front().ToString() +
                "; ending the placeholder lease here failed: " + released.error().message);
      }
      done(reserved);
    });
  });
}

// --- Adoption (a StatefulSet pod re-created, perhaps on another node) ---

void BlockEngine::FindAdoptable(std::shared_ptr<Job> job) {
  ++stats_.lists;
  std::weak_ptr<int> token = life_;
  api_->ListSubnet(job->request.subnet,
                   [this, token, job](Result<std::vector<IpBlock>> r) {
                     if (!token.expired()) OnAdoptionList(job, std::move(r));
                   });
}

void BlockEngine::OnAdoptionList(std::shared_ptr<Job> job, Result<std::vector<IpBlock>> listed) {
  if (!listed) {
    // Allocating anew without knowing would give the pod a second address (or a
    // conflict with its own old one): new allocations need the API server anyway.
    NoteFailure(listed.error());
    return FinishJob(job, Fail(listed.error().Wrap("listing the IPBlocks of subnet " +
                                                   job->request.subnet)));
  }
  const std::string& subnet = job->request.subnet;
  const bool vm = MayTakeVmAddress(job->request);
  std::map<Family, IpAddr> found;
  for (const IpBlock& blk : *listed) {
    for (const auto& [offset, a] : blk.allocations) {
      IpAddr address = blk.AddressAt(offset);
      if (vm) {
        if (KeptFor(a) != KeptForRequest(job->request)) continue;  // not this VM's interface
      } else if (KeyOfAllocation(subnet, a) != job->key || !a.sticky ||
                 a.owner_uid != job->request.owner_uid) {
        continue;  // another pod, or the same name under a re-created StatefulSet
      }
      if (job->request.family && *job->request.family != address.family()) continue;
      found.emplace(address.family(), address);
    }
  }
  AbsorbList(subnet, std::move(*listed));
  if (found.empty()) return StartAllocate(job);
  job->before_adoption = job->request;
  job->request.static_ips.clear();
  if (vm) {
    // The VM's address, held for an earlier launcher pod (perhaps still by a lease here).
    for (const auto& [family, address] : found)
      job->request.static_ips.push_back(address.ToString());
    return TakeClaimAddresses(job);
  }
  for (const auto& [family, address] : found) {
    // The cache marked it as a foreign hold (no lease of ours holds it); it is ours to
    // take over now, with a CAS update that fails if it changed meanwhile.
    (void)allocator_->UnmarkForeign(subnet, address);
    if (auto cidr = BlockOfAddress(subnet, address)) {
      if (BlockState* b = FindBlock(BlockName(subnet, *cidr)))
        b->foreign.erase(static_cast<uint64_t>(address.value() - cidr->first().value()));
    }
    job->request.static_ips.push_back(address.ToString());
    job->adopt.insert(address);
  }
  StartAllocate(job);
}

// --- An IPAMClaim's addresses (a VM's pod restarted, re-created or migrated) ---

// The claim's status.ips are in the request as static addresses. Each is taken over
// with a CAS update that replaces the allocation of the same claim, whoever made it; an
// allocation of anything else there is a conflict. A lease of this node that still
// holds the address for an earlier pod of the claim ends here first (no API call: the
// allocation stays the claim's).
void BlockEngine::TakeClaimAddresses(std::shared_ptr<Job> job) {
  const std::string& subnet = job->request.subnet;
  for (const IpAddr& address : NamedAddresses(job->request)) {
    auto cidr = BlockOfAddress(subnet, address);
    if (!cidr) continue;  // not in the subnet: the allocator says so
    BlockState* b = FindBlock(BlockName(subnet, *cidr));
    uint64_t offset = static_cast<uint64_t>(address.value() - cidr->first().value());
    const BlockAllocation* cached = nullptr;
    if (b != nullptr && b->object) {
      auto it = b->object->allocations.find(offset);
      if (it != b->object->allocations.end()) cached = &it->second;
    }
    if (std::optional<Lease> earlier = allocator_->Holder(subnet, address)) {
      if (earlier->key() != job->key && cached != nullptr &&
          KeptFor(*cached) == KeptForRequest(job->request) && job->request.keep_existing) {
        return FinishJob(job, *earlier);  // already in place, and in use on this node
      }
      if (earlier->key() != job->key && cached != nullptr &&
          KeptFor(*cached) == KeptForRequest(job->request) && keys_.count(earlier->key()) == 0) {
        (void)DropLeaseLocally(
            earlier->key(),
            "is kept for " + KeptForRequest(job->request) + ", now used by " + job->key.owner,
            nullptr);
      }
    }
    (void)allocator_->UnmarkForeign(subnet, address);
    if (b != nullptr) b->foreign.erase(offset);
    job->adopt.insert(address);
  }
  StartAllocate(job);
}

void BlockEngine::StartAllocate(std::shared_ptr<Job> job) {
  // A plain dynamic pick takes one of this node's spares when it has one (no write
  // before the answer), ahead of any lower free address.
  Result<Lease> lease = Fail(Error::Internal("not picked"));
  AllocateRequest preferring = job->request;
  if (job->request.within.empty() && job->adopt.empty() && PreferSpares(preferring)) {
    lease = allocator_->Allocate(preferring);
  }
  if (!lease) lease = allocator_->Allocate(job->request);
  if (!lease) return AfterAllocatorRefused(job, lease.error());
  // Step 2: the pending row reserves the address on this node while its block write is
  // in flight (the unique index on (subnet, address) is the row lock).
  if (auto stored = store_->InsertLease(*lease, clock_->NowMs()); !stored) {
    (void)allocator_->Release(job->key);
    return FinishJob(job, Fail(stored.error()));
  }
  job->lease = *lease;
  QueueAdds(job, *lease);
}

void BlockEngine::AfterAllocatorRefused(std::shared_ptr<Job> job, const Error& error) {
  const Subnet* subnet = allocator_->FindSubnet(job->request.subnet);
  if (error.code == Code::kExhausted && !job->request.named_pool.empty() && !job->refreshed) {
    // A named pool's addresses in other nodes' blocks are held as of this node's last
    // read of those blocks: re-read the ones holding pool addresses once before the
    // pool is called full (a holder may have released one meanwhile).
    std::vector<IpNet> stale;
    for (const auto& [name, b] : blocks_) {
      if (b->subnet != job->request.subnet || b->local || b->busy || b->foreign.empty()) continue;
      for (uint64_t offset : b->foreign) {
        if (allocator_->NamedPoolContains(b->subnet, job->request.named_pool,
                                          b->cidr.first().Plus(offset))) {
          stale.push_back(b->cidr);
          break;
        }
      }
    }
    if (!stale.empty()) {
      job->refreshed = true;
      auto left = std::make_shared<size_t>(stale.size());
      for (const IpNet& cidr : stale) {
        Refresh(job->request.subnet, cidr, [this, job, left] {
          if (--*left == 0) StartAllocate(job);
        });
      }
      return;
    }
  }
  if (error.code == Code::kExhausted && subnet != nullptr) {
    // Step 6: a family with no free address in this node's blocks needs a block.
    for (Family f : kFamilies) {
      // (A family a named IPPool covers comes from the pool alone: no block helps.)
      if (Wants(*subnet, job->request, f) && !HasWithin(job->request, f) &&
          !allocator_->HasDynamicFree(job->request.subnet, f) &&
          !(!job->request.named_pool.empty() &&
            allocator_->NamedPoolHasFamily(job->request.subnet, job->request.named_pool, f))) {
        return FindBlockFor(job, f);
      }
    }
    // A block chosen to claim or borrow from filled up meanwhile: choose again.
    if (!job->request.within.empty() && job->repicks < options_.max_repicks) {
      ++job->repicks;
      ++stats_.repicks;
      job->request.within.clear();
      job->claims.clear();
      return StartAllocate(job);
    }
  }
  if (error.code == Code::kConflict && !job->refreshed) {
    // A foreign hold is only as fresh as this node's copy of its block: its last read of
    // a block it does not watch, or the watch (late by up to its delay) of its own — the
    // garbage collection may have freed the address a moment ago. Re-read the block once
    // before telling the user it is taken.
    for (const IpAddr& a : NamedAddresses(job->request)) {
      auto cidr = BlockOfAddress(job->request.subnet, a);
      auto* b = cidr ? FindBlock(BlockName(job->request.subnet, *cidr)) : nullptr;
      if (allocator_->ForeignHolder(job->request.subnet, a) && (b == nullptr || !b->busy)) {
        job->refreshed = true;
        return Refresh(job->request.subnet, *cidr, [this, job] { StartAllocate(job); });
      }
    }
  }
  if (error.code == Code::kConflict || error.code == Code::kExhausted) {
    // A named address (static, or the ip_pool entries all taken or a StatefulSet
    // member's taken) that is another node's spare: that node gives it back when asked
    // (its next write), and the pod's next try gets it.
    for (const IpAddr& a : NamedOrPoolAddresses(job->request)) {
      const BlockAllocation* spare = OtherNodesSpare(job->request.subnet, a);
      if (spare == nullptr) continue;
      std::string describe = DescribeAllocation(*spare);  // (AskForSpares may change the copy)
      std::string holders;
      (void)AskForSpares(job->request.subnet, a.family(), &holders);
      return FinishJob(job, Fail(Error::Unavailable(
                                "address " + a.ToString() + " is " + describe +
                                " (held for its next pods); it was asked to give it back: try again")));
    }
  }
  FinishJob(job, Fail(error));
}

void BlockEngine::QueueAdds(std::shared_ptr<Job> job, const Lease& lease) {
  std::vector<IpAddr> addresses = lease.addresses();
  job->outstanding = static_cast<int>(addresses.size());
  job->results.clear();
  job->rechecked = false;  // each attempt's ambiguous answers are re-read (a repick's too)
  std::weak_ptr<int> token = life_;
  for (const IpAddr& a : addresses) {
    IpNet cidr = *BlockOfAddress(lease.subnet, a);  // the allocator only hands out CIDR addresses
    Op op;
    op.kind = Op::Kind::kAdd;
    op.offset = static_cast<uint64_t>(a.value() - cidr.first().value());
    op.key = job->key;
    op.allocation = AllocationFor(lease);
    op.allocation.owner_uid = job->request.owner_uid;
    op.allocation.ipam_claim = job->request.ipam_claim;
    if (op.allocation.ipam_claim.empty())
      op.allocation.virtual_machine = job->request.virtual_machine;
    if (op.allocation.ipam_claim.empty() && op.allocation.virtual_machine.empty())
      op.allocation.reserved_ip = job->request.reserved_ip;
    op.claim = job->claims.count(BlockName(lease.subnet, cidr)) > 0;
    op.adopt = job->adopt.count(a) > 0;
    op.keep_existing = job->request.keep_existing;
    op.done = [this, job, a, token](Result<void> r) {
      if (token.expired()) return;
      job->results.emplace_back(a, std::move(r));
      if (--job->outstanding == 0) OnAddsDone(job);
    };
    if (BlockState* b = FindBlock(BlockName(lease.subnet, cidr)); b != nullptr && TakeSpare(*b, op)) {
      op.done(Ok());  // this node's already: committed now, its pod recorded later
      continue;
    }
    // Held for company only in a block this node owns and knows (not a claim, not a
    // borrow: those may race other nodes, and their answers decide re-picks).
    if (job->request.unhurried && options_.ahead_write_window_ms > 0 && !op.claim &&
        hurried_.count(job->key) == 0) {
      const BlockState* b = FindBlock(BlockName(lease.subnet, cidr));
      const bool own = b != nullptr && b->known && b->object && b->object->node == options_.node;
      // Its lead time is measured even when the window is 0 now: that is how it grows.
      if (own && ahead_queued_ms_.size() < kMaxLeadTimesKept)
        ahead_queued_ms_.insert_or_assign(job->key, clock_->NowMs());
      op.ahead = op.deferrable = own && ahead_window_.WindowMs() > 0;
    }
    Enqueue(lease.subnet, cidr, std::move(op));
  }
}

void BlockEngine::OnAddsDone(std::shared_ptr<Job> job) {
  if (!job->rechecked && RecheckAmbiguous(job)) return;  // OnAddsDone again after the reads
  bool all_ok = true;
  for (const auto& [a, r] : job->results) all_ok = all_ok && r.has_value();
  if (!all_ok) return Unwind(job, [this, job] { AfterUnwind(job); });
  // Step 5: every address is in its block; only now is the lease a fact.
  Lease lease = *job->lease;
  if (auto r = store_->SetLeaseState(job->key, LeaseState::kCommitted, clock_->NowMs()); !r) {
    // The API holds the allocation; the row stays pending. Tick marks it committed again
    // (a full disk may have room by then); until then the attachment's requests are
    // answered "pending" (and a restart's Recover would settle it from the block).
    uncommitted_.insert(job->key);
    return FinishJob(job, Fail(r.error().Wrap("recording the committed lease")));
  }
  (void)allocator_->Commit(job->key);
  lease.state = LeaseState::kCommitted;
  ++stats_.allocations;
  NoteNetFreed(lease.subnet, -1);
  stats_.adoptions += job->adopt.empty() ? 0 : 1;
  FinishJob(job, lease);
}

// A write answered with an error that does not say it failed (a 5xx, a lost connection,
// a timeout) may have landed: etcd can commit after the API server gave up. Each such
// block is read once; an allocation of this attachment by this node found there counts as
// written. Without this, the landed allocation would stay behind as a foreign hold for a
// pod that is alive (it gets another address), and only the pod's deletion frees it —
// in a full subnet another pod would starve. One not found (or not readable) may still
// land after the read: it is noted, and taken back out if it does (SweepUnsure). True
// when reads were started.
bool BlockEngine::RecheckAmbiguous(std::shared_ptr<Job> job) {
  job->rechecked = true;
  std::vector<size_t> ambiguous;
  for (size_t i = 0; i < job->results.size(); ++i) {
    const Result<void>& r = job->results[i].second;
    if (!r && r.error().code == Code::kUnavailable) ambiguous.push_back(i);
  }
  if (ambiguous.empty()) return false;
  auto left = std::make_shared<size_t>(ambiguous.size());
  std::weak_ptr<int> token = life_;
  for (size_t i : ambiguous) {
    IpAddr a = job->results[i].first;
    IpNet cidr = *BlockOfAddress(job->key.subnet, a);
    ++stats_.gets;
    api_->Get(BlockName(job->key.subnet, cidr),
              [this, token, job, i, a, cidr, left](Result<std::optional<IpBlock>> r) {
                if (token.expired()) return;
                if (!r) {
                  NoteFailure(r.error());
                } else {
                  ApplyRead(Block(job->key.subnet, cidr), *r);
                  auto offset = static_cast<uint64_t>(a.value() - cidr.first().value());
                  if (*r && HoldsOwnAllocation(**r, offset, job->key)) {
                    job->results[i].second = Ok();  // it landed
                  }
                }
                // Not found, or not readable: it may land yet (etcd commits late).
                if (!job->results[i].second) NoteUnsure(job->key, a);
                if (--*left == 0) OnAddsDone(job);
              });
  }
  return true;
}

// Takes the attempt's addresses that did land back out of their blocks, so that a
// failed dual-stack attempt leaves nothing behind in the API either.
void BlockEngine::Unwind(std::shared_ptr<Job> job, std::function<void()> then) {
  std::vector<IpAddr> landed;
  for (const auto& [a, r] : job->results) {
    if (r) landed.push_back(a);
  }
  if (landed.empty()) return then();
  auto left = std::make_shared<size_t>(landed.size());
  auto next = std::make_shared<std::function<void()>>(std::move(then));
  std::weak_ptr<int> token = life_;
  for (const IpAddr& a : landed) {
    IpNet cidr = *BlockOfAddress(job->key.subnet, a);
    Op op;
    op.kind = Op::Kind::kRemove;
    op.offset = static_cast<uint64_t>(a.value() - cidr.first().value());
    op.key = job->key;
    op.unwind = true;
    // A removal that fails leaves an allocation without a lease: it stays taken (never
    // a duplicate) and shows as a foreign hold; noted like an ambiguous write's, it is
    // taken out later (SweepUnsure), not held until the pod is deleted.
    op.done = [this, left, next, token, key = job->key, a](const Result<void>& r) {
      if (token.expired()) return;
      if (!r) NoteUnsure(key, a);
      if (--*left == 0) (*next)();
    };
    Enqueue(job->key.subnet, cidr, std::move(op));
  }
}

void BlockEngine::AfterUnwind(std::shared_ptr<Job> job) {
  DropReservation(*job->lease);
  job->lease.reset();
  const Error* unavailable = nullptr;
  const Error* conflict = nullptr;
  bool repickable = true;
  for (const auto& [a, r] : job->results) {
    if (r) continue;
    if (r.error().code == Code::kConflict) {
      conflict = conflict ? conflict : &r.error();
      repickable = repickable && Repickable(*job, a);
      DropWithin(job->request, a.family());
    } else {
      unavailable = unavailable ? unavailable : &r.error();
    }
  }
  job->claims.clear();
  if (unavailable != nullptr) return FinishJob(job, Fail(*unavailable));
  if (conflict != nullptr && !job->adopt.empty() && job->before_adoption &&
      job->repicks < options_.max_repicks) {
    // The previous pod's allocation changed hands meanwhile (released, then taken):
    // the pod gets an address the ordinary way.
    job->request = *job->before_adoption;
    job->adopt.clear();
    ++job->repicks;
    return StartAllocate(job);
  }
  if (!repickable) {
    // A named address that is another node's spare: the refused write asked for it back.
    for (const auto& [a, r] : job->results) {
      if (!r && OtherNodesSpare(job->key.subnet, a) != nullptr) {
        return FinishJob(job, Fail(Error::Unavailable(r.error().message)));
      }
    }
    return FinishJob(job, Fail(*conflict));
  }
  if (job->repicks >= options_.max_repicks) {
    return FinishJob(job,
                     Fail(Error::Unavailable(
                         "could not commit an address in subnet " + job->key.subnet + " after " +
                         std::to_string(job->repicks + 1) +
                         " attempts: other nodes kept taking the addresses picked; try again")));
  }
  // Step 4: the re-read marked the lost address as a foreign hold, so the allocator
  // will not pick it again.
  ++job->repicks;
  ++stats_.repicks;
  StartAllocate(job);
}

// A named (static, or StatefulSet pool entry) address is the user's choice: losing it
// is a conflict to report. Anything the allocator chose may be chosen again.
bool BlockEngine::Repickable(const Job& job, const IpAddr& address) const {
  for (const IpAddr& named : NamedAddresses(job.request)) {
    if (named == address) return false;
  }
  return job.request.static_ips.empty() && !(job.request.ordinal && !job.request.pool.empty());
}

void BlockEngine::DropReservation(const Lease& lease) {
  AttachmentKey key = lease.key();
  if (auto r = store_->ReleaseLease(key, clock_->NowMs());
      !r && r.error().code != Code::kNotFound) {
    LogWarn("dropping the pending lease of " + key.ToString() + ": " + r.error().message);
  }
  (void)allocator_->Release(key);
  // A write whose answer was lost may have landed: what the cache shows at the address
  // is now someone else's (a foreign hold), not free.
  for (const IpAddr& a : lease.addresses()) {
    auto cidr = BlockOfAddress(lease.subnet, a);
    if (BlockState* b = cidr ? FindBlock(BlockName(lease.subnet, *cidr)) : nullptr)
      SyncAllocator(*b);
  }
}

void BlockEngine::FinishJob(std::shared_ptr<Job> job, Result<Lease> result) {
  LeaseDone done = std::move(job->done);
  Answer(job->key, done, std::move(result));
}

// --- Release ---

void BlockEngine::Release(const AttachmentKey& key, VoidDone done) {
  RunForKey(key, [this, key, done = std::move(done)]() mutable {
    DoRelease(key, [this, key, done = std::move(done)](Result<void> r) {
      done(std::move(r));
      FinishKey(key);
    });
  });
}

void BlockEngine::DoRelease(const AttachmentKey& key, VoidDone done) {
  std::optional<Lease> held = allocator_->Find(key);
  if (!held) return done(Ok());  // CNI spec: DEL succeeds when nothing is held
  Lease lease = *held;
  std::vector<IpAddr> addresses = lease.addresses();
  struct Pending {
    size_t left;
    std::optional<Error> error;
    std::vector<std::string> kept_blocks;  // blocks keeping an allocation of the lease
  };
  auto state = std::make_shared<Pending>(Pending{addresses.size(), std::nullopt, {}});
  auto finish = [this, key, state, done = std::move(done)] {
    if (state->error) return done(Fail(*state->error));
    if (auto r = store_->ReleaseLease(key, clock_->NowMs());
        !r && r.error().code != Code::kNotFound) {
      return done(Fail(r.error()));
    }
    (void)allocator_->Release(key);
    ++stats_.releases;
    NoteNetFreed(key.subnet, +1);
    // An allocation kept beyond its pods (IPAMClaim, VM, reserved IP) stays in the block
    // without a lease here now: the allocator must see it held, not free (no write
    // happened, so no watch event will say so). A removal that was written was synced
    // with the block's new version already.
    for (const std::string& name : state->kept_blocks) {
      if (BlockState* b = FindBlock(name); b != nullptr && b->object) SyncAllocator(*b);
    }
    done(Ok());
  };
  if (addresses.empty()) return finish();
  auto shared_finish = std::make_shared<decltype(finish)>(std::move(finish));
  std::weak_ptr<int> token = life_;
  for (const IpAddr& a : addresses) {
    IpNet cidr = *BlockOfAddress(lease.subnet, a);
    Op op;
    op.kind = Op::Kind::kRemove;
    op.offset = static_cast<uint64_t>(a.value() - cidr.first().value());
    op.key = key;
    // Nothing waits for a release: it rides with the block's next write. Except one of an
    // allocation kept beyond its pods (claim, VM, reserved IP): it writes nothing, and the
    // next pod of the keeper — or the leader's reservation — waits for this lease to end.
    BlockState* b = FindBlock(BlockName(lease.subnet, cidr));
    const BlockAllocation* cached = nullptr;
    if (b != nullptr && b->object) {
      auto it = b->object->allocations.find(op.offset);
      if (it != b->object->allocations.end()) cached = &it->second;
    }
    op.deferrable = cached == nullptr || KeptFor(*cached).empty();
    if (!op.deferrable) state->kept_blocks.push_back(b->name);
    op.done = [state, shared_finish, token](Result<void> r) {
      if (token.expired()) return;
      if (!r && !state->error) state->error = r.error();
      if (--state->left == 0) (*shared_finish)();
    };
    Enqueue(lease.subnet, cidr, std::move(op));
  }
}

// --- UpdateHolder, ConfirmHolder ---

void BlockEngine::UpdateHolder(const AttachmentKey& key, VoidDone done) {
  RunForKey(key, [this, key, done = std::move(done)]() mutable {
    std::optional<Lease> held = allocator_->Find(key);
    if (!held || held->state != LeaseState::kCommitted || held->addresses().empty()) {
      done(Ok());
      return FinishKey(key);
    }
    WriteHolder(*held, AllocationFor(*held), /*must_exist=*/false, std::move(done));
  });
}

void BlockEngine::ConfirmHolder(const AttachmentKey& key, const std::string& pod_uid,
                                const std::string& container_id, VoidDone done) {
  RunForKey(key, [this, key, pod_uid, container_id, done = std::move(done)]() mutable {
    std::optional<Lease> held = allocator_->Find(key);
    if (!held || held->state != LeaseState::kCommitted) {
      done(Fail(Error::NotFound("no committed lease of " + key.ToString())));
      return FinishKey(key);
    }
    BlockAllocation allocation = AllocationFor(*held);
    if (!pod_uid.empty()) allocation.pod_uid = pod_uid;
    if (!container_id.empty()) allocation.container_id = container_id;
    WriteHolder(*held, allocation, /*must_exist=*/true,
                [this, key, done = std::move(done)](Result<void> r) {
                  // Freed in its block (the pod looked gone to the collection) and maybe
                  // taken by another node since: never to be served from here again.
                  if (!r && r.error().code == Code::kNotFound &&
                      !DropLeaseLocally(key, "was freed in its IPBlock by the garbage collection",
                                        nullptr)) {
                    return done(Fail(Error::Internal("dropping the freed lease of " + key.ToString())));
                  }
                  done(std::move(r));
                });
  });
}

void BlockEngine::WriteHolder(const Lease& lease, const BlockAllocation& allocation, bool must_exist,
                              VoidDone done) {
  AttachmentKey key = lease.key();
  std::vector<IpAddr> addresses = lease.addresses();
  if (addresses.empty()) {
    done(Ok());
    return FinishKey(key);
  }
  struct Pending {
    size_t left;
    std::optional<Error> error;
    VoidDone done;
  };
  auto state = std::make_shared<Pending>(Pending{addresses.size(), std::nullopt, std::move(done)});
  std::weak_ptr<int> token = life_;
  for (const IpAddr& a : addresses) {
    IpNet cidr = *BlockOfAddress(lease.subnet, a);
    Op op;
    op.kind = Op::Kind::kUpdate;
    op.offset = static_cast<uint64_t>(a.value() - cidr.first().value());
    op.key = key;
    op.allocation = allocation;
    op.must_exist = must_exist;
    op.deferrable = !must_exist;  // a new container ID: informational, nothing waits for it
    op.done = [this, key, state, token](Result<void> r) {
      if (token.expired()) return;
      // A lost allocation outranks another family's failure: the lease must go.
      if (!r && (!state->error || r.error().code == Code::kNotFound)) state->error = r.error();
      if (--state->left > 0) return;
      state->done(state->error ? Result<void>(Fail(*state->error)) : Result<void>(Ok()));
      FinishKey(key);
    };
    Enqueue(lease.subnet, cidr, std::move(op));
  }
}

// --- Recover ---

void BlockEngine::Recover(VoidDone done) {
  auto live = store_->LoadLiveLeases();
  if (!live) return done(Fail(live.error()));
  std::vector<Lease> pending;
  for (Lease& l : *live) {
    if (l.state == LeaseState::kPending) pending.push_back(std::move(l));
  }
  if (pending.empty()) return done(Ok());
  struct Tally {
    size_t left;
    size_t failed = 0;
  };
  auto tally = std::make_shared<Tally>(Tally{pending.size(), 0});
  auto shared_done = std::make_shared<VoidDone>(std::move(done));
  for (const Lease& lease : pending) {
    AttachmentKey key = lease.key();
    RunForKey(key, [this, lease, key, tally, shared_done] {
      RecoverLease(lease, [this, key, tally, shared_done](bool ok) {
        tally->failed += ok ? 0 : 1;
        FinishKey(key);
        if (--tally->left > 0) return;
        if (tally->failed == 0) return (*shared_done)(Ok());
        (*shared_done)(Fail(Error::Unavailable(
            std::to_string(tally->failed) +
            " pending leases could not be checked against their IPBlocks (API server "
            "unreachable); they stay pending and are retried")));
      });
    });
  }
}

void BlockEngine::RecoverLease(const Lease& lease, std::function<void(bool ok)> done) {
  if (allocator_->FindSubnet(lease.subnet) == nullptr) {
    LogWarn("pending lease of " + lease.key().ToString() + ": subnet " + lease.subnet +
            " is not known yet; left pending");
    return done(false);
  }
  if (!allocator_->Find(lease.key())) (void)allocator_->Restore(lease);
  std::vector<IpAddr> addresses = lease.addresses();
  struct Reads {
    size_t left;
    bool failed = false;
    std::vector<IpAddr> present;
  };
  auto reads = std::make_shared<Reads>(Reads{addresses.size(), false, {}});
  auto decide = [this, lease, reads, done = std::move(done)] {
    if (reads->failed) return done(false);
    AttachmentKey key = lease.key();
    if (reads->present.size() == lease.addresses().size()) {
      // The block write succeeded before the crash: the lease is a fact.
      bool ok = store_->SetLeaseState(key, LeaseState::kCommitted, clock_->NowMs()).has_value();
      if (ok) (void)allocator_->Commit(key);
      return done(ok);
    }
    // Never handed out: drop it (taking back a dual-stack half that did land).
    auto job = std::make_shared<Job>();
    job->key = key;
    job->lease = lease;
    for (const IpAddr& a : reads->present) job->results.emplace_back(a, Ok());
    Unwind(job, [this, lease, done] {
      DropReservation(lease);
      done(true);
    });
  };
  auto shared_decide = std::make_shared<decltype(decide)>(std::move(decide));
  std::weak_ptr<int> token = life_;
  for (const IpAddr& a : addresses) {
    IpNet cidr = *BlockOfAddress(lease.subnet, a);
    std::string name = BlockName(lease.subnet, cidr);
    ++stats_.gets;
    api_->Get(name, [this, token, reads, shared_decide, lease, a,
                     cidr](Result<std::optional<IpBlock>> r) {
      if (token.expired()) return;
      if (!r) {
        NoteFailure(r.error());
        reads->failed = true;
      } else {
        ApplyRead(Block(lease.subnet, cidr), *r);
        auto offset = static_cast<uint64_t>(a.value() - cidr.first().value());
        if (*r && HoldsOwnAllocation(**r, offset, lease.key())) reads->present.push_back(a);
      }
      if (--reads->left == 0) (*shared_decide)();
    });
  }
}

}  // namespace sublease
