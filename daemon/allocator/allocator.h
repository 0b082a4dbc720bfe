// Allocator: the pure core of sublease. Decides which address an attachment gets.
//
// Holds, in memory, the normalised subnets and every live lease, with a sorted set of
// free address ranges per subnet and family so that "lowest free address" costs
// O(log ranges), independent of subnet size and fill (no scan over the range or the
// leases). No SQLite, no sockets, no clock: the service layer persists each decision in
// the store inside one transaction and calls Release() to undo it if the store fails.
// Single-threaded (the daemon's loop thread).
// Memory (scale_bench, realistic owner strings): see lease_table.h for the compact
// record the leases are kept in; free/held sets cost one map node per range, not per
// address.
//
// Precedence of a request (DESIGN §1.3): static addresses → pool (a list, or a named
// IPPool) → dynamic. A named IPPool's addresses are never picked dynamically.
// Invariants (tested by property tests):
//   - no address is held by two live leases;
//   - dynamic allocation hands out only addresses of a subnet's `usable` set, lowest
//     first; static and pool addresses must pass CheckAssignable (so never the gateway,
//     network or broadcast/last address) but may be excluded ones, as in Kube-OVN;
//   - per subnet and family, free = usable - held, and held = the leases' addresses;
//   - a dual-stack allocation is all-or-nothing: every address is chosen and checked
//     before any is taken, so a failing family leaves nothing behind;
//   - the same AttachmentKey asking again gets the same lease (idempotence).
// A static or pool request names some families; the others the request needs are
// allocated dynamically (Kube-OVN does the same for "10.0.0.5" in a dual-stack subnet).
//
// Cluster mode (per subnet, docs/cluster-protocol.md): the subnet is cut into blocks and
// this node may hand out dynamically only addresses inside blocks it holds (local
// blocks, SetBlockLocal). Other nodes' allocations that this node can see are *foreign
// holds* (MarkForeign): not leases, but never free, and a static or pool request for one
// is a kConflict naming the holder. Per subnet and family, in both modes:
//   - free = usable - held - foreign - pooled (the Ready named pools' addresses);
//   - pool_free = pooled - held - foreign (a named pool's pick: its lowest);
//   - local_free = free ∩ local blocks (kept up to date with free, O(log ranges));
//   - a plain dynamic pick takes the lowest of local_free in cluster mode, of free
//     otherwise; a pick restricted by AllocateRequest::within takes the lowest of
//     free ∩ within, ignoring locality (borrowing, or claiming a new block).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "daemon/allocator/ip_range_list.h"
#include "daemon/allocator/ippool.h"
#include "daemon/allocator/lease.h"
#include "daemon/allocator/lease_table.h"
#include "daemon/allocator/subnet.h"

namespace sublease {

struct AllocateRequest {
  std::string subnet;
  Owner owner;
  // Static addresses ("10.0.0.5", "fd00::5", or "10.0.0.5/24" — the prefix, if any,
  // must match the subnet's). One per family at most. Non-empty → static allocation.
  std::vector<std::string> static_ips;
  // The raw ip_pool annotation ("a,b,c", or "a4,a6;b4,b6" for dual stack). Used only
  // when static_ips is empty.
  std::string pool;
  // A named pool (an ip_pool annotation that names a kubeovn.io IPPool, ippool.h): the
  // lowest free address of the pool in each family it has (a family it lacks is
  // allocated dynamically). Used only when static_ips is empty; `pool` is then empty.
  std::string named_pool;
  // StatefulSet ordinal (digits after the pod name's last '-') when the pod belongs to
  // a StatefulSet; selects pool entry [ordinal] instead of the first free entry.
  std::optional<uint32_t> ordinal;
  // ip_family narrowing of a dual-stack subnet; nullopt = every family the subnet has.
  std::optional<Family> family;
  bool sticky = false;
  // Cluster mode: the UID of a StatefulSet member's StatefulSet. Not kept in the lease;
  // the block engine writes it into the block allocation and adopts an allocation of a
  // re-created pod of the same name only when it matches.
  std::string owner_uid;
  // Cluster mode: "<namespace>/<name>" of the IPAMClaim that owns the address ("" =
  // none). Not kept in the lease; the block engine writes it into the block allocation,
  // and with static_ips (the claim's status.ips) takes over the claim's allocation made
  // for any earlier pod, on any node (docs/cluster-protocol.md, IPAMClaims).
  std::string ipam_claim;
  // Cluster mode: "<namespace>/<vm>" of a KubeVirt VM whose address is kept per (VM,
  // subnet, interface) without a claim (Kube-OVN's keep-vm-ip). Written into the block
  // allocation; a request without static addresses first looks for the VM's allocation
  // of this interface in the subnet's blocks and takes it over.
  std::string virtual_machine;
  // Cluster mode: the name of the Kube-OVN `IP` object that reserves the address (a
  // reserved IP). Written into the block allocation (reservedIp); like ipam_claim, with
  // static_ips (the object's addresses) it takes over the reservation's allocation
  // wherever it is, and a release leaves it in its block.
  std::string reserved_ip = {};
  // Cluster mode, with reserved_ip and static_ips: an allocation of the same reservation
  // already in place is left to whoever holds it and counts as done (the leader making a
  // reservation never takes it from the pod that already uses it).
  bool keep_existing = false;
  // Cluster mode: nobody waits for the answer yet (an allocation ahead of time, from the
  // pod watch): the block engine may hold its write up to Options.ahead_write_window_ms
  // so that allocations arriving close together share one write (BlockEngine::Expedite
  // ends the wait when the CNI ADD comes).
  bool unhurried = false;
  // Cluster mode: static_ips are what a node wrote back on this very pod after answering
  // it (`<provider>.kubernetes.io/allocated: "true"` beside them): the pod holds them. A
  // spare of this node quarantined after a lost database (docs/cluster-protocol.md
  // "Spares") is then this pod's, and leaves the quarantine.
  bool written_back = false;
  std::string mac;
  std::string provider;
  // Cluster mode: the dynamic pick of a family is restricted to this range (one prefix
  // per family at most; usually one block) and ignores locality — for borrowing from
  // another node's block and for the first allocation in a block being claimed. A
  // family without an entry follows the plain rule. Static and pool addresses ignore it.
  std::vector<IpNet> within;
};

struct SubnetUsage {
  U128 v4_available = 0, v4_using = 0, v6_available = 0, v6_using = 0;
  std::string v4_available_range, v4_using_range, v6_available_range, v6_using_range;
};

class Allocator {
 public:
  Allocator();
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Adds or replaces a subnet definition. Existing leases are kept; a lease whose
  // address is no longer usable under the new definition stays held (it is not
  // revoked) but its address is not returned to the free set when released.
  Result<void> UpsertSubnet(const Subnet& subnet);
  // Fails with kConflict while the subnet still has live leases.
  Result<void> RemoveSubnet(const std::string& name);
  const Subnet* FindSubnet(const std::string& name) const;
  // The subnet serving a provider ("macvlan.default"), or nullptr.
  const Subnet* FindSubnetByProvider(const std::string& provider) const;
  std::vector<std::string> SubnetNames() const;

  // Re-inserts a lease read back from the store at start-up (any state but released).
  // kConflict if its address is already held; kNotFound if its subnet is unknown.
  // Takes the lease by value: a caller that moves it in (start-up) copies no string.
  Result<void> Restore(Lease lease);

  // Allocates per the precedence above, or returns the existing lease for the same
  // AttachmentKey (updating its container ID if a new sandbox asks). The new lease is
  // in state kPending. Errors: kNotFound (subnet), kInvalidArgument (address not in
  // the subnet, malformed pool, excluded/gateway address), kConflict (static or pool
  // address held by another attachment — the message names the holder), kExhausted.
  Result<Lease> Allocate(const AllocateRequest& request);

  // Marks a lease committed (its address is now a fact). kNotFound if absent.
  Result<void> Commit(const AttachmentKey& key);

  // Removes the lease and returns its addresses to the free set. Returns the removed
  // lease; kNotFound when there is none (callers doing CNI DEL treat that as success).
  Result<Lease> Release(const AttachmentKey& key);

  // A re-created pod (new UID) or sandbox (new container ID) of the same pod keeps its
  // lease: updates the owner's fields; an empty argument leaves its field as it is.
  // kNotFound when there is no lease.
  Result<void> UpdateOwner(const AttachmentKey& key, const std::string& pod_uid,
                           const std::string& container_id);

  // The stored lease as a value (leases are kept compactly, see lease_table.h), or
  // nullopt. A copy: later calls do not change it.
  std::optional<Lease> Find(const AttachmentKey& key) const;
  std::optional<Lease> Holder(const std::string& subnet, const IpAddr& address) const;
  // Every lease, in no particular order, each rebuilt as a value for the call.
  void ForEachLease(const std::function<void(const Lease&)>& fn) const;
  size_t LeaseCount() const;

  // Available counts free addresses of the subnet's named pools too.
  Result<SubnetUsage> Usage(const std::string& subnet) const;

  // --- Named pools (ippool.h) ---
  // Replaces the subnet's Ready pools (by name: their usable addresses). Their
  // addresses leave dynamic allocation and are handed out only to requests naming the
  // pool; leases already holding them keep them. Kept across UpsertSubnet (clipped to
  // the new usable set). kNotFound for an unknown subnet.
  Result<void> SetNamedPools(const std::string& subnet, std::map<std::string, PoolAddresses> pools);
  // Whether `name` is a Ready pool of the subnet, and whether `address` is one of its.
  bool HasNamedPool(const std::string& subnet, const std::string& name) const;
  bool NamedPoolContains(const std::string& subnet, const std::string& name,
                         const IpAddr& address) const;
  // Whether the pool has usable addresses of `family` (a request naming it takes that
  // family from the pool, never dynamically).
  bool NamedPoolHasFamily(const std::string& subnet, const std::string& name, Family family) const;

  // --- Cluster mode (see the header comment). kNotFound for an unknown subnet. ---
  // On: plain dynamic picks come only from local blocks (none yet = exhausted). Off
  // (the default, standalone): from the whole subnet. Kept across UpsertSubnet.
  Result<void> SetClusterMode(const std::string& subnet, bool on);
  // Marks a block (a prefix inside one of the subnet's CIDRs) as held by this node or
  // not. kInvalidArgument when it is not inside a CIDR of the subnet.
  Result<void> SetBlockLocal(const std::string& subnet, const IpNet& block, bool local);
  // Another node's allocation occupies `address`: it leaves the free sets and a static
  // request for it fails with kConflict naming `holder`. Marking again replaces the
  // description. An address held by a lease of ours may be marked too (the mark then
  // keeps it out of free when the lease goes). kInvalidArgument outside the CIDRs.
  Result<void> MarkForeign(const std::string& subnet, const IpAddr& address, std::string holder);
  // Ends a foreign hold; the address is free again unless a lease holds it or it is not
  // usable. No-op when it was not marked.
  Result<void> UnmarkForeign(const std::string& subnet, const IpAddr& address);
  // The foreign holder's description, or nullopt.
  std::optional<std::string> ForeignHolder(const std::string& subnet, const IpAddr& address) const;
  // The lowest address of the family of `from` that is free (usable, not held, not
  // foreign) and >= from, ignoring locality. O(log ranges).
  std::optional<IpAddr> LowestFreeAtOrAbove(const std::string& subnet, const IpAddr& from) const;
  // True when a plain dynamic pick of `family` would find an address (cluster mode:
  // in a local block).
  bool HasDynamicFree(const std::string& subnet, Family family) const;

 private:
  struct SubnetState;
  struct Plan;
  SubnetState* State(const std::string& name) const;
  Result<Plan> PlanStatic(const SubnetState& st, const AllocateRequest& request) const;
  Result<Plan> PlanPool(const SubnetState& st, const AllocateRequest& request) const;
  Result<Plan> PlanNamedPool(const SubnetState& st, const AllocateRequest& request) const;
  Result<void> PlanDynamic(const SubnetState& st, const AllocateRequest& request, Plan& plan) const;
  Result<void> CheckWithin(const SubnetState& st, const AllocateRequest& request) const;
  void Take(SubnetState& st, const Lease& lease);

  std::map<std::string, std::unique_ptr<SubnetState>> subnets_;
  LeaseTable leases_;
};

}  // namespace sublease
