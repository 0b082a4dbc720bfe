#include "daemon/service/cni_service.h"

#include <malloc.h>

#include <set>
#include <utility>

#include "common/log.h"

namespace sublease {

CniService::CniService(Allocator* allocator, Store* store, const Clock* clock)
    : allocator_(allocator), store_(store), clock_(clock) {}

Result<void> CniService::Load() {
  auto specs = store_->LoadSubnets();
  if (!specs) return Fail(specs.error().Wrap("loading subnets from the database"));
  for (const auto& spec : *specs) {
    auto subnet = NormalizeSubnet(spec);
    if (!subnet) return Fail(subnet.error().Wrap("stored subnet " + spec.name));
    if (auto r = allocator_->UpsertSubnet(*subnet); !r) return Fail(r.error());
  }
  // One lease at a time, straight from the query into the allocator's compact table: a
  // vector of every loaded Lease doubled the start-up peak and left its freed strings
  // scattered through the heap between the table's allocations (heaptrack, BENCHMARKS.md).
  bool restore_failed = false;
  auto loaded = store_->ForEachLiveLease([&](Lease lease) -> Result<void> {
    // Restore's errors name the lease (its key and the holder it collides with).
    auto r = allocator_->Restore(std::move(lease));
    restore_failed = !r;
    return r ? Ok() : Fail(r.error().Wrap("restoring leases"));
  });
  if (!loaded) {
    return Fail(restore_failed ? loaded.error()
                               : loaded.error().Wrap("loading leases from the database"));
  }
  // Give the loading's freed heap back to the kernel: it is most of the resident memory
  // right after start-up otherwise (glibc keeps freed arenas).
  malloc_trim(0);
  loaded_ = true;
  return Ok();
}

Result<std::vector<std::string>> CniService::ApplySubnets(const std::vector<SubnetSpec>& specs) {
  // Validate everything first: a bad manifest changes nothing.
  std::vector<Subnet> subnets;
  std::set<std::string> names, providers;
  for (const auto& spec : specs) {
    auto subnet = NormalizeSubnet(spec);
    if (!subnet) return Fail(subnet.error().Wrap("Subnet " + spec.name));
    if (!names.insert(spec.name).second) {
      return Fail(Error::InvalidArgument("Subnet " + spec.name + " is defined twice"));
    }
    if (!providers.insert(spec.provider).second) {
      return Fail(Error::InvalidArgument("Subnet " + spec.name + ": provider " + spec.provider +
                                         " is already served by another Subnet; each provider "
                                         "(NAD name.namespace) needs exactly one Subnet"));
    }
    subnets.push_back(std::move(*subnet));
  }
  std::vector<std::string> warnings;
  auto tx = store_->Begin();
  if (!tx) return Fail(tx.error());
  for (const auto& subnet : subnets) {
    if (auto r = store_->UpsertSubnet(subnet, clock_->NowMs()); !r) return Fail(r.error());
  }
  std::vector<std::string> to_remove;
  for (const auto& name : allocator_->SubnetNames()) {
    if (names.count(name)) continue;
    bool has_leases = false;
    allocator_->ForEachLease([&](const Lease& l) { has_leases |= l.subnet == name; });
    if (has_leases) {
      warnings.push_back("Subnet " + name +
                         " is no longer configured but still has leases; it stays until they "
                         "are released");
      continue;
    }
    if (auto r = store_->DeleteSubnet(name); !r) return Fail(r.error());
    to_remove.push_back(name);
  }
  if (auto r = tx->Commit(); !r) return Fail(r.error());
  // The store has committed; now the allocator follows. Upserts of already-validated
  // subnets and removals of lease-free subnets cannot fail.
  for (const auto& subnet : subnets) (void)allocator_->UpsertSubnet(subnet);
  for (const auto& name : to_remove) (void)allocator_->RemoveSubnet(name);
  loaded_ = true;
  return warnings;
}

Result<void> CniService::BeginBatch() {
  if (batch_) return Fail(Error::Internal("a batch is already open"));
  auto tx = store_->Begin();
  if (!tx) return Fail(tx.error());
  batch_.emplace(std::move(*tx));
  return Ok();
}

Result<void> CniService::EndBatch() {
  if (!batch_) return Fail(Error::Internal("no batch is open"));
  auto committed = batch_->Commit();
  batch_.reset();  // rolls back when the commit failed
  if (!committed) {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
  }
  undo_.clear();
  return committed;
}

Result<std::optional<Transaction>> CniService::BeginUnlessBatched() {
  if (batch_) return std::optional<Transaction>();
  auto tx = store_->Begin();
  if (!tx) return Fail(tx.error());
  return std::optional<Transaction>(std::move(*tx));
}

Result<void> CniService::CommitUnlessBatched(std::optional<Transaction>& tx) {
  return tx ? tx->Commit() : Ok();
}

void CniService::OnUndo(std::function<void()> undo) {
  if (batch_) undo_.push_back(std::move(undo));
}

Result<const Subnet*> CniService::SubnetFor(const std::string& provider) const {
  if (provider.empty()) {
    return Fail(Error::InvalidArgument("the request names no provider; set ipam.provider to "
                                       "<nad name>.<nad namespace>"));
  }
  const Subnet* subnet = allocator_->FindSubnetByProvider(provider);
  if (!subnet) {
    return Fail(Error::NotFound("no Subnet has spec.provider " + provider +
                                "; create a kubeovn.io/v1 Subnet with provider: " + provider));
  }
  return subnet;
}

namespace {

Owner OwnerOf(const CniRequest& r) {
  return Owner{r.pod_namespace, r.pod_name, r.pod_uid, r.container_id, r.ifname};
}

Result<void> ValidateRoutes(const std::vector<WireRoute>& routes) {
  for (const auto& route : routes) {
    if (!route.dst.empty()) {
      if (auto n = IpNet::Parse(route.dst); !n) return Fail(n.error().Wrap("ipam.routes dst"));
    }
    if (!route.gw.empty()) {
      if (auto a = IpAddr::Parse(route.gw); !a) return Fail(a.error().Wrap("ipam.routes gw"));
    }
  }
  return Ok();
}

}  // namespace

CniReply MakeCniReply(const Subnet& subnet, const Lease& lease, const std::vector<WireRoute>& nad_routes) {
  CniReply reply;
  reply.mac = lease.mac;
  for (const auto& address : lease.addresses()) {
    const SubnetFamily* fam = subnet.family(address.family());
    WireIp ip;
    ip.address = address.ToString() + "/" + std::to_string(fam ? fam->cidr.prefix_len() : FamilyBits(address.family()));
    if (fam && fam->gateway) ip.gateway = fam->gateway->ToString();
    reply.ips.push_back(std::move(ip));
  }
  for (const auto& route : nad_routes) {
    if (!route.dst.empty()) {
      reply.routes.push_back(route);
      continue;
    }
    for (const auto& address : lease.addresses()) {
      const SubnetFamily* fam = subnet.family(address.family());
      std::string gw = route.gw;
      if (!gw.empty()) {
        auto g = IpAddr::Parse(gw);
        if (!g || g->family() != address.family()) continue;
      } else if (fam && fam->gateway) {
        gw = fam->gateway->ToString();
      }
      reply.routes.push_back({address.is_v4() ? "0.0.0.0/0" : "::/0", gw});
    }
  }
  return reply;
}

Result<CniReply> CniService::Add(const CniRequest& request) {
  auto subnet = SubnetFor(request.provider);
  if (!subnet) return Fail(subnet.error());
  if (auto r = ValidateRoutes(request.routes); !r) return Fail(r.error());
  Owner owner = OwnerOf(request);
  AttachmentKey key = AttachmentKey::For((*subnet)->name, owner);
  int64_t now = clock_->NowMs();

  if (std::optional<Lease> held = allocator_->Find(key)) {
    // Idempotent: the same attachment asking again gets the same lease. A new sandbox
    // of the same pod takes the lease over (the runtime re-created it).
    if (held->owner.container_id != request.container_id) {
      if (auto r = store_->UpdateLeaseContainer(key, request.container_id, now); !r) return Fail(r.error());
      AllocateRequest again;
      again.subnet = (*subnet)->name;
      again.owner = owner;
      Owner previous = held->owner;
      auto moved = allocator_->Allocate(again);  // updates the container ID in memory
      if (!moved) return Fail(moved.error());
      OnUndo([this, subnet_name = again.subnet, previous] {
        AllocateRequest back;
        back.subnet = subnet_name;
        back.owner = previous;
        (void)allocator_->Allocate(back);
      });
      return MakeCniReply(**subnet, *moved, request.routes);
    }
    return MakeCniReply(**subnet, *held, request.routes);
  }

  AllocateRequest alloc;
  alloc.subnet = (*subnet)->name;
  alloc.owner = owner;
  alloc.static_ips = request.ips;
  alloc.mac = request.mac;
  alloc.provider = request.provider;
  auto tx = BeginUnlessBatched();
  if (!tx) return Fail(tx.error());
  auto lease = allocator_->Allocate(alloc);
  if (!lease) return Fail(lease.error());
  // Standalone mode: the local commit is the fact, so the lease is committed at once.
  lease->state = LeaseState::kCommitted;
  auto stored = store_->InsertLease(*lease, now);
  if (stored) stored = CommitUnlessBatched(*tx);
  if (!stored) {
    (void)allocator_->Release(key);  // undo: memory must not hold what the disk does not
    return Fail(stored.error());
  }
  (void)allocator_->Commit(key);
  OnUndo([this, key] { (void)allocator_->Release(key); });
  return MakeCniReply(**subnet, *lease, request.routes);
}

Result<void> CniService::ReleaseLease(const Lease& lease) {
  AttachmentKey key = lease.key();
  if (auto r = store_->ReleaseLease(key, clock_->NowMs()); !r && r.error().code != Code::kNotFound) {
    return Fail(r.error());
  }
  OnUndo([this, copy = lease] { (void)allocator_->Restore(copy); });
  (void)allocator_->Release(key);
  return Ok();
}

Result<void> CniService::Del(const CniRequest& request) {
  // CNI spec: DEL succeeds when nothing is allocated, also for an unknown provider.
  const Subnet* subnet = allocator_->FindSubnetByProvider(request.provider);
  if (!subnet) return Ok();
  std::optional<Lease> lease = allocator_->Find(AttachmentKey::For(subnet->name, OwnerOf(request)));
  if (!lease) return Ok();
  if (!request.container_id.empty() && lease->owner.container_id != request.container_id) {
    return Ok();  // the lease belongs to a newer sandbox of this pod
  }
  return ReleaseLease(*lease);
}

Result<CniReply> CniService::Check(const CniRequest& request) {
  auto subnet = SubnetFor(request.provider);
  if (!subnet) return Fail(subnet.error());
  std::optional<Lease> lease = allocator_->Find(AttachmentKey::For((*subnet)->name, OwnerOf(request)));
  if (!lease || lease->owner.container_id != request.container_id) {
    return Fail(Error::NotFound("container " + request.container_id + " interface " +
                                request.ifname + " holds no lease in Subnet " + (*subnet)->name));
  }
  if (lease->state != LeaseState::kCommitted) {
    return Fail(Error::Unavailable("the lease of container " + request.container_id +
                                   " is not committed yet"));
  }
  return MakeCniReply(**subnet, *lease, request.routes);
}

Result<GcOutcome> CniService::Gc(const GcRequest& request) {
  auto subnet = SubnetFor(request.provider);
  if (!subnet) return Fail(subnet.error());
  std::set<std::pair<std::string, std::string>> valid;
  for (const auto& a : request.valid_attachments) valid.emplace(a.container_id, a.ifname);
  std::vector<Lease> stale;
  GcOutcome outcome;
  allocator_->ForEachLease([&](const Lease& l) {
    if (l.subnet != (*subnet)->name) return;
    if (valid.count({l.owner.container_id, l.owner.ifname})) {
      ++outcome.kept;
    } else {
      stale.push_back(l);
    }
  });
  if (stale.empty()) return outcome;
  auto tx = BeginUnlessBatched();
  if (!tx) return Fail(tx.error());
  for (const auto& l : stale) {
    if (auto r = store_->ReleaseLease(l.key(), clock_->NowMs()); !r && r.error().code != Code::kNotFound) {
      return Fail(r.error());
    }
  }
  if (auto r = CommitUnlessBatched(*tx); !r) return Fail(r.error());
  for (const auto& l : stale) {
    OnUndo([this, copy = l] { (void)allocator_->Restore(copy); });
    (void)allocator_->Release(l.key());
    LogInfo("gc released " + l.HolderDescription() + " in Subnet " + l.subnet);
  }
  outcome.released = stale.size();
  return outcome;
}

}  // namespace sublease
