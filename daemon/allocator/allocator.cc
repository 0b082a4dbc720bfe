#include "daemon/allocator/allocator.h"

#include <charconv>
#include <utility>

#include "daemon/allocator/pool.h"
#include "daemon/allocator/text.h"

namespace sublease {
namespace {

int Index(Family f) { return f == Family::kV4 ? 0 : 1; }
constexpr Family kFamilies[] = {Family::kV4, Family::kV6};

struct U128Hash {
  size_t operator()(U128 v) const noexcept {
    uint64_t lo = static_cast<uint64_t>(v), hi = static_cast<uint64_t>(v >> 64);
    return static_cast<size_t>((lo ^ (hi * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL);
  }
};


// "10.0.0.5" or "10.0.0.5/24"; a prefix must equal the subnet's for that family.
Result<IpAddr> ParseStatic(std::string_view text, const Subnet& subnet) {
  size_t slash = text.find('/');
  auto addr = IpAddr::Parse(TrimSpace(text.substr(0, slash)));
  if (!addr) return Fail(addr.error().Wrap("static address"));
  if (slash == std::string_view::npos) return *addr;
  std::string_view len_text = text.substr(slash + 1);
  int len = -1;
  auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  const SubnetFamily* fam = subnet.family(addr->family());
  if (ec != std::errc() || ptr != len_text.data() + len_text.size() || fam == nullptr ||
      len != fam->cidr.prefix_len()) {
    return Fail(Error::InvalidArgument("static address " + std::string(text) +
                                       ": the prefix must match subnet " + subnet.name + " (" +
                                       CidrText(subnet) + ")"));
  }
  return *addr;
}

}  // namespace

// Per subnet and family: held = the leases' addresses, free = usable - held - foreign,
// local_free = free ∩ local (cluster mode). Every change to one set updates the others
// in the same step, so the invariants hold between any two public calls.
struct Allocator::SubnetState {
  struct FamilyState {
    explicit FamilyState(Family f)
        : free(f), held(f), local(f), local_free(f), foreign(f), pooled(f), pool_free(f) {}
    IpRangeList free;  // for dynamic picks: without the named pools' addresses
    IpRangeList held;
    IpRangeList local;       // union of this node's blocks
    IpRangeList local_free;  // free ∩ local
    IpRangeList foreign;     // other nodes' allocations this node sees
    std::unordered_map<U128, std::string, U128Hash> foreign_holders;    // address -> who
    IpRangeList pooled;     // the Ready named pools' usable addresses
    IpRangeList pool_free;  // pooled - held - foreign

    void Unfree(const IpAddr& a) {
      free.Remove(a);
      local_free.Remove(a);
      pool_free.Remove(a);
    }
    // Returns `a` to the free sets when nothing else keeps it out.
    void MaybeFree(const IpAddr& a, const SubnetFamily* sf) {
      if (sf == nullptr || !sf->usable.Contains(a) || held.Contains(a) || foreign.Contains(a)) return;
      if (pooled.Contains(a)) {
        pool_free.Add(a);
        return;
      }
      free.Add(a);
      if (local.Contains(a)) local_free.Add(a);
    }
  };
  Subnet subnet;
  FamilyState fam[2] = {FamilyState(Family::kV4), FamilyState(Family::kV6)};
  size_t lease_count = 0;
  bool cluster = false;
  std::map<std::string, PoolAddresses> pools;  // the Ready named pools, by name

  // free = usable - pooled - held - foreign, pool_free = pooled - held - foreign; held
  // addresses outside `usable` simply stay out.
  void RecomputeFree() {
    for (Family f : kFamilies) {
      const SubnetFamily* sf = subnet.family(f);
      FamilyState& st = fam[Index(f)];
      st.pooled = IpRangeList(f);
      for (const auto& [name, p] : pools) {
        p.of(f).ForEach([&st](const IpRange& r) { st.pooled.Add(r.first, r.last); });
      }
      st.pooled = sf ? st.pooled.Intersect(sf->usable) : IpRangeList(f);
      IpRangeList taken = st.held;
      st.foreign.ForEach([&taken](const IpRange& r) { taken.Add(r.first, r.last); });
      st.free = sf ? sf->usable.Subtract(st.pooled).Subtract(taken) : IpRangeList(f);
      st.pool_free = st.pooled.Subtract(taken);
      st.local_free = st.free.Intersect(st.local);
    }
  }
  // A lease's or a foreign hold's description, or nullopt when nobody holds `a`.
  std::optional<std::string> HolderDescription(const LeaseTable& leases, const IpAddr& a) const {
    if (auto id = leases.FindByAddress(subnet.name, a); id != LeaseTable::kNone) {
      return leases.HolderDescription(id);
    }
    const auto& f = fam[Index(a.family())].foreign_holders;
    auto it = f.find(a.value());
    if (it == f.end()) return std::nullopt;
    return it->second;
  }
  bool InCidr(const IpAddr& a) const {
    const SubnetFamily* sf = subnet.family(a.family());
    return sf != nullptr && sf->cidr.Contains(a);
  }
};

// What an allocation will take: for each family (index 0 = IPv4, 1 = IPv6) whether the
// request needs it and, once chosen, the address.
struct Allocator::Plan {
  bool want[2] = {false, false};
  std::optional<IpAddr> addr[2];
};

Allocator::Allocator() = default;
Allocator::~Allocator() = default;

Allocator::SubnetState* Allocator::State(const std::string& name) const {
  auto it = subnets_.find(name);
  return it == subnets_.end() ? nullptr : it->second.get();
}

Result<void> Allocator::UpsertSubnet(const Subnet& subnet) {
  auto& slot = subnets_[subnet.name];
  if (!slot) slot = std::make_unique<SubnetState>();
  slot->subnet = subnet;
  // Existing leases stay held (not revoked) even when the new definition no longer
  // allows their addresses; such addresses are simply never free.
  slot->RecomputeFree();
  return Ok();
}

Result<void> Allocator::RemoveSubnet(const std::string& name) {
  SubnetState* st = State(name);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + name + " is not known"));
  if (st->lease_count > 0) {
    return Fail(Error::Conflict("subnet " + name + " still has " + std::to_string(st->lease_count) +
                                " live leases; release them first"));
  }
  subnets_.erase(name);
  return Ok();
}

const Subnet* Allocator::FindSubnet(const std::string& name) const {
  const SubnetState* st = State(name);
  return st ? &st->subnet : nullptr;
}

const Subnet* Allocator::FindSubnetByProvider(const std::string& provider) const {
  for (const auto& [name, st] : subnets_) {
    if (st->subnet.provider == provider) return &st->subnet;
  }
  return nullptr;
}

std::vector<std::string> Allocator::SubnetNames() const {
  std::vector<std::string> out;
  for (const auto& [name, st] : subnets_) out.push_back(name);
  return out;
}

void Allocator::Take(SubnetState& st, const Lease& lease) {
  (void)leases_.Insert(lease);  // the key is not present: both callers looked it up
  for (const IpAddr& a : lease.addresses()) {
    auto& fs = st.fam[Index(a.family())];
    fs.Unfree(a);
    fs.held.Add(a);
  }
  ++st.lease_count;
}

Result<void> Allocator::Restore(Lease lease) {
  SubnetState* st = State(lease.subnet);
  if (st == nullptr) {
    return Fail(Error::NotFound("lease " + lease.key().ToString() + ": subnet " + lease.subnet +
                                " is not known"));
  }
  if (lease.state == LeaseState::kReleased) {
    return Fail(Error::InvalidArgument("lease " + lease.key().ToString() + " is released"));
  }
  if (auto same = leases_.FindId(lease.key()); same != LeaseTable::kNone) {
    return Fail(Error::Conflict("lease " + lease.key().ToString() + " is already held by " +
                                leases_.HolderDescription(same)));
  }
  for (const IpAddr& a : lease.addresses()) {
    if (auto h = leases_.FindByAddress(lease.subnet, a); h != LeaseTable::kNone) {
      return Fail(Error::Conflict("address " + a.ToString() + " of lease " + lease.key().ToString() +
                                  " is already held by " + leases_.HolderDescription(h)));
    }
  }
  Take(*st, lease);
  return Ok();
}

Result<Allocator::Plan> Allocator::PlanStatic(const SubnetState& st,
                                              const AllocateRequest& request) const {
  Plan plan;
  const Subnet& subnet = st.subnet;
  for (const std::string& text : request.static_ips) {
    auto addr = ParseStatic(text, subnet);
    if (!addr) return Fail(addr.error());
    if (auto ok = CheckAssignable(subnet, *addr); !ok) return Fail(ok.error().Wrap("static address"));
    int i = Index(addr->family());
    if (plan.addr[i]) {
      return Fail(Error::InvalidArgument("static addresses name two " +
                                         std::string(FamilyName(addr->family())) +
                                         " addresses; give at most one per family"));
    }
    if (request.family && *request.family != addr->family()) {
      return Fail(Error::InvalidArgument("static address " + addr->ToString() + " is " +
                                         std::string(FamilyName(addr->family())) +
                                         " but ip_family asks for " +
                                         std::string(FamilyName(*request.family))));
    }
    if (auto h = st.HolderDescription(leases_, *addr)) {
      return Fail(Error::Conflict("address " + addr->ToString() + " in subnet " + subnet.name +
                                  " is held by " + *h));
    }
    plan.addr[i] = *addr;
  }
  return plan;
}

Result<Allocator::Plan> Allocator::PlanPool(const SubnetState& st,
                                            const AllocateRequest& request) const {
  if (IsPoolName(request.pool)) {
    // Only cluster mode reads IPPool objects (the shard turns the name into named_pool).
    return Fail(
        Error::InvalidArgument("ip_pool \"" + std::string(TrimSpace(request.pool)) +
                               "\" names an IPPool, and IPPools are served in cluster mode only; "
                               "list the addresses instead (\"a,b,c\")"));
  }
  auto entries = ParsePool(request.pool, st.subnet);
  if (!entries) return Fail(entries.error());
  PoolFamilies families{!request.family || *request.family == Family::kV4,
                        !request.family || *request.family == Family::kV6};
  families.v4 = families.v4 && st.subnet.v4;
  families.v6 = families.v6 && st.subnet.v6;
  // The requester holds nothing yet (Allocate returned early otherwise), so every
  // holder is another attachment.
  auto index = SelectPoolEntry(*entries, request.ordinal, families,
                               [&](const IpAddr& a) { return st.HolderDescription(leases_, a); });
  if (!index) return Fail(index.error());
  const PoolEntry& e = (*entries)[*index];
  Plan plan;
  if (families.v4) plan.addr[0] = e.v4;
  if (families.v6) plan.addr[1] = e.v6;
  return plan;
}

Result<Allocator::Plan> Allocator::PlanNamedPool(const SubnetState& st,
                                                 const AllocateRequest& request) const {
  const std::string& name = request.named_pool;
  auto pool = st.pools.find(name);
  if (pool == st.pools.end()) {
    return Fail(
        Error::NotFound("IPPool " + name + " is not a Ready pool of Subnet " + st.subnet.name));
  }
  Plan plan;
  bool any = false;
  for (Family f : kFamilies) {
    if (!st.subnet.family(f) || (request.family && *request.family != f)) continue;
    const IpRangeList& mine = pool->second.of(f);
    if (mine.empty()) {
      if (request.family) {
        return Fail(Error::InvalidArgument(
            "IPPool " + name + " has no " + std::string(FamilyName(f)) + " address in Subnet " +
            st.subnet.name + ", and ip_family asks for " + std::string(FamilyName(f))));
      }
      continue;  // a family the pool lacks is allocated dynamically
    }
    any = true;
    // Lowest free of the pool: O(pool ranges × log ranges).
    const IpRangeList& free = st.fam[Index(f)].pool_free;
    mine.ForEach([&](const IpRange& r) {
      if (plan.addr[Index(f)]) return;
      if (auto a = free.LowestAtOrAbove(r.first); a && *a <= r.last) plan.addr[Index(f)] = a;
    });
    if (!plan.addr[Index(f)]) {
      return Fail(Error::Exhausted("IPPool " + name + " has no free " + std::string(FamilyName(f)) +
                                   " address (" + U128ToString(mine.Count()) +
                                   " usable, all held); add addresses to its "
                                   "spec.ips or free some"));
    }
  }
  if (!any) {
    return Fail(Error::Exhausted("IPPool " + name + " has no usable address in Subnet " +
                                 st.subnet.name + " (" + CidrText(st.subnet) +
                                 "; its spec.ips lie outside the CIDR, or are excluded)"));
  }
  return plan;
}

Result<void> Allocator::PlanDynamic(const SubnetState& st, const AllocateRequest& request,
                                    Plan& plan) const {
  for (Family f : kFamilies) {
    int i = Index(f);
    if (!plan.want[i] || plan.addr[i]) continue;
    const auto& fs = st.fam[i];
    const IpNet* within = nullptr;
    for (const IpNet& n : request.within) {
      if (n.family() == f) within = &n;
    }
    // Every pick is O(log ranges): no scan over addresses or leases.
    if (within != nullptr) {
      auto a = fs.free.LowestAtOrAbove(within->first());
      if (a && *a <= within->last()) plan.addr[i] = a;
    } else {
      plan.addr[i] = st.cluster ? fs.local_free.Lowest() : fs.free.Lowest();
    }
    if (plan.addr[i]) continue;
    std::string where = within ? within->ToString()
                               : st.subnet.family(f)->cidr.ToString() +
                                     (st.cluster ? ", in this node's blocks" : "");
    return Fail(Error::Exhausted("subnet " + st.subnet.name + " has no free " +
                                 std::string(FamilyName(f)) + " address in " + where + " (" +
                                 U128ToString(fs.held.Count()) + " held here)"));
  }
  return Ok();
}

Result<void> Allocator::CheckWithin(const SubnetState& st, const AllocateRequest& request) const {
  bool seen[2] = {false, false};
  for (const IpNet& n : request.within) {
    const SubnetFamily* sf = st.subnet.family(n.family());
    if (sf == nullptr || !sf->cidr.Contains(n.first()) || !sf->cidr.Contains(n.last()) ||
        seen[Index(n.family())]) {
      return Fail(Error::InvalidArgument("allocation range " + n.ToString() +
                                         " is not one range per family inside subnet " +
                                         st.subnet.name + " (" + CidrText(st.subnet) + ")"));
    }
    seen[Index(n.family())] = true;
  }
  return Ok();
}

Result<Lease> Allocator::Allocate(const AllocateRequest& request) {
  SubnetState* st = State(request.subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + request.subnet + " is not known"));
  AttachmentKey key = AttachmentKey::For(request.subnet, request.owner);
  if (auto id = leases_.FindId(key); id != LeaseTable::kNone) {
    // Idempotence: a re-created sandbox of the same pod keeps its lease. container_id
    // is not a key field when the key is the pod, so changing it is safe.
    Lease existing = leases_.Get(id);
    const std::string& cid = request.owner.container_id;
    if (!cid.empty() && cid != existing.owner.container_id) {
      existing.owner.container_id = cid;
      leases_.Update(id, existing);
    }
    return existing;
  }
  Plan want;
  for (Family f : kFamilies) {
    want.want[Index(f)] = st->subnet.family(f) && (!request.family || *request.family == f);
  }
  if (request.family && !st->subnet.family(*request.family)) {
    return Fail(Error::InvalidArgument("subnet " + st->subnet.name + " (" + CidrText(st->subnet) +
                                       ") has no " + std::string(FamilyName(*request.family)) +
                                       " block; ip_family cannot ask for it"));
  }
  Result<Plan> plan = Plan{};
  if (!request.static_ips.empty()) {
    plan = PlanStatic(*st, request);
  } else if (!request.named_pool.empty()) {
    plan = PlanNamedPool(*st, request);
  } else if (!TrimSpace(request.pool).empty()) {
    plan = PlanPool(*st, request);
  }
  if (!plan) return Fail(plan.error());
  plan->want[0] = want.want[0];
  plan->want[1] = want.want[1];
  if (auto r = CheckWithin(*st, request); !r) return Fail(r.error());
  // Every address is chosen and checked before any is taken: all-or-nothing.
  if (auto r = PlanDynamic(*st, request, *plan); !r) return Fail(r.error());

  Lease lease;
  lease.subnet = request.subnet;
  lease.owner = request.owner;
  lease.v4 = plan->addr[0];
  lease.v6 = plan->addr[1];
  lease.state = LeaseState::kPending;
  lease.sticky = request.sticky;
  lease.mac = request.mac;
  lease.provider = request.provider;
  Take(*st, lease);
  return lease;
}

Result<void> Allocator::Commit(const AttachmentKey& key) {
  LeaseTable::Id id = leases_.FindId(key);
  if (id == LeaseTable::kNone) return Fail(Error::NotFound("no lease for " + key.ToString()));
  leases_.SetState(id, LeaseState::kCommitted);
  return Ok();
}

Result<Lease> Allocator::Release(const AttachmentKey& key) {
  LeaseTable::Id id = leases_.FindId(key);
  if (id == LeaseTable::kNone) return Fail(Error::NotFound("no lease for " + key.ToString()));
  Lease out = leases_.Get(id);
  leases_.Erase(id);
  SubnetState* st = State(out.subnet);
  if (st != nullptr) {  // invariant: a subnet with leases is never removed
    for (const IpAddr& a : out.addresses()) {
      auto& fs = st->fam[Index(a.family())];
      fs.held.Remove(a);
      // Only addresses usable under the current definition and not held by another
      // node become free again.
      fs.MaybeFree(a, st->subnet.family(a.family()));
    }
    --st->lease_count;
  }
  return out;
}

Result<void> Allocator::UpdateOwner(const AttachmentKey& key, const std::string& pod_uid,
                                    const std::string& container_id) {
  LeaseTable::Id id = leases_.FindId(key);
  if (id == LeaseTable::kNone) return Fail(Error::NotFound("no lease for " + key.ToString()));
  Lease lease = leases_.Get(id);
  // Neither field is part of a pod-keyed AttachmentKey, so the table's index stays valid;
  // a container-keyed lease *is* its container.
  if (lease.owner.pod_name.empty() && !container_id.empty() &&
      container_id != lease.owner.container_id) {
    return Fail(Error::InvalidArgument("the lease of " + key.ToString() +
                                       " is keyed by its container ID and cannot change it"));
  }
  if (!pod_uid.empty()) lease.owner.pod_uid = pod_uid;
  if (!container_id.empty()) lease.owner.container_id = container_id;
  leases_.Update(id, lease);
  return Ok();
}

std::optional<Lease> Allocator::Find(const AttachmentKey& key) const { return leases_.Find(key); }

std::optional<Lease> Allocator::Holder(const std::string& subnet, const IpAddr& address) const {
  LeaseTable::Id id = leases_.FindByAddress(subnet, address);
  if (id == LeaseTable::kNone) return std::nullopt;
  return leases_.Get(id);
}

void Allocator::ForEachLease(const std::function<void(const Lease&)>& fn) const {
  leases_.ForEach(fn);
}

size_t Allocator::LeaseCount() const { return leases_.size(); }

Result<SubnetUsage> Allocator::Usage(const std::string& subnet) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  const auto& v4 = st->fam[0];
  const auto& v6 = st->fam[1];
  SubnetUsage u;
  // Available: free for anyone plus free in a named pool.
  auto available = [](const SubnetState::FamilyState& fs) {
    IpRangeList all = fs.free;
    fs.pool_free.ForEach([&all](const IpRange& r) { all.Add(r.first, r.last); });
    return all;
  };
  IpRangeList a4 = available(v4), a6 = available(v6);
  u.v4_available = a4.Count();
  u.v4_using = v4.held.Count();
  u.v6_available = a6.Count();
  u.v6_using = v6.held.Count();
  u.v4_available_range = a4.ToString();
  u.v4_using_range = v4.held.ToString();
  u.v6_available_range = a6.ToString();
  u.v6_using_range = v6.held.ToString();
  return u;
}

Result<void> Allocator::SetClusterMode(const std::string& subnet, bool on) {
  SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  st->cluster = on;
  return Ok();
}

Result<void> Allocator::SetBlockLocal(const std::string& subnet, const IpNet& block, bool local) {
  SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  if (!st->InCidr(block.first()) || !st->InCidr(block.last())) {
    return Fail(Error::InvalidArgument("block " + block.ToString() + " is not inside subnet " +
                                       subnet + " (" + CidrText(st->subnet) + ")"));
  }
  auto& fs = st->fam[Index(block.family())];
  if (local) {
    fs.local.Add(block.first(), block.last());
    // local_free gains exactly the free addresses of the block: O(log R + k).
    fs.free.Slice(block.first(), block.last()).ForEach([&fs](const IpRange& r) {
      fs.local_free.Add(r.first, r.last);
    });
  } else {
    fs.local.Remove(block.first(), block.last());
    fs.local_free.Remove(block.first(), block.last());
  }
  return Ok();
}

Result<void> Allocator::MarkForeign(const std::string& subnet, const IpAddr& address,
                                    std::string holder) {
  SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  if (!st->InCidr(address)) {
    return Fail(Error::InvalidArgument("address " + address.ToString() + " is not in subnet " +
                                       subnet + " (" + CidrText(st->subnet) + ")"));
  }
  auto& fs = st->fam[Index(address.family())];
  fs.foreign_holders[address.value()] = std::move(holder);
  fs.foreign.Add(address);
  fs.Unfree(address);
  return Ok();
}

Result<void> Allocator::UnmarkForeign(const std::string& subnet, const IpAddr& address) {
  SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  auto& fs = st->fam[Index(address.family())];
  if (fs.foreign_holders.erase(address.value()) == 0) return Ok();
  fs.foreign.Remove(address);
  fs.MaybeFree(address, st->subnet.family(address.family()));
  return Ok();
}

std::optional<std::string> Allocator::ForeignHolder(const std::string& subnet,
                                                    const IpAddr& address) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return std::nullopt;
  const auto& f = st->fam[Index(address.family())].foreign_holders;
  auto it = f.find(address.value());
  if (it == f.end()) return std::nullopt;
  return it->second;
}

std::optional<IpAddr> Allocator::LowestFreeAtOrAbove(const std::string& subnet,
                                                     const IpAddr& from) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return std::nullopt;
  return st->fam[Index(from.family())].free.LowestAtOrAbove(from);
}

Result<void> Allocator::SetNamedPools(const std::string& subnet,
                                      std::map<std::string, PoolAddresses> pools) {
  SubnetState* st = State(subnet);
  if (st == nullptr) return Fail(Error::NotFound("subnet " + subnet + " is not known"));
  st->pools = std::move(pools);
  st->RecomputeFree();
  return Ok();
}

bool Allocator::HasNamedPool(const std::string& subnet, const std::string& name) const {
  const SubnetState* st = State(subnet);
  return st != nullptr && st->pools.count(name) > 0;
}

bool Allocator::NamedPoolContains(const std::string& subnet, const std::string& name,
                                  const IpAddr& address) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return false;
  auto it = st->pools.find(name);
  return it != st->pools.end() && it->second.of(address.family()).Contains(address);
}

bool Allocator::NamedPoolHasFamily(const std::string& subnet, const std::string& name,
                                   Family family) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return false;
  auto it = st->pools.find(name);
  return it != st->pools.end() && !it->second.of(family).empty();
}

bool Allocator::HasDynamicFree(const std::string& subnet, Family family) const {
  const SubnetState* st = State(subnet);
  if (st == nullptr) return false;
  const auto& fs = st->fam[Index(family)];
  return st->cluster ? !fs.local_free.empty() : !fs.free.empty();
}

}  // namespace sublease
