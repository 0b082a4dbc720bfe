// LeaseTable: the allocator's live leases in a compact form, found by AttachmentKey or by
// (subnet, address).
//
// A Lease is the exchange type at the allocator's API; inside, each lease is a fixed
// 104-byte record (Record, lease_table.cc) instead of a Lease (seven strings and two
// optionals, ~550 bytes with its heap strings):
//   - subnet, pod namespace, provider and interface name are interned (StringPool ids);
//   - a canonical pod UID (36-char lowercase UUID) is 16 bytes, a 64-char lowercase hex
//     container ID 32 bytes, a canonical MAC ("0a:1b:...", lowercase) 6 bytes;
//   - the pod name, and any UID, container ID or MAC not in those forms, are kept as text
//     in one small heap block per lease, so every field round-trips exactly;
//   - addresses are stored without std::optional or 128-bit alignment.
// Records live in fixed-size chunks (no reallocation, ids stable until Erase) and two
// IdIndex hash indexes map the key and each address to a record id.
// Invariant: a stored lease's key fields (subnet, pod namespace/name, ifname, and
// container ID when there is no pod name) and its addresses never change; Update()
// REQUIRES this. Single-threaded, like the Allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/allocator/id_index.h"
#include "daemon/allocator/lease.h"
#include "daemon/allocator/string_pool.h"

namespace sublease {

class LeaseTable {
 public:
  using Id = uint32_t;
  static constexpr Id kNone = IdIndex::kNone;

  LeaseTable();
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // The id of the lease with this key, or kNone.
  Id FindId(const AttachmentKey& key) const;
  // The id of the lease of `subnet` holding `address`, or kNone.
  Id FindByAddress(std::string_view subnet, const IpAddr& address) const;
  // The stored lease, rebuilt as a value. REQUIRES: `id` is live.
  Lease Get(Id id) const;
  std::optional<Lease> Find(const AttachmentKey& key) const;
  LeaseState state(Id id) const;
  // "pod ns/name (container c, net1)"; see Lease::HolderDescription. REQUIRES: live id.
  std::string HolderDescription(Id id) const;

  // Stores a lease and returns its id. REQUIRES: its key is not present (FindId); the
  // caller keeps addresses unique per subnet (the allocator does).
  Id Insert(const Lease& lease);
  // Replaces the stored lease's other fields. REQUIRES: live id; `lease` has the same key
  // fields and addresses as the stored one (the indexes are not touched).
  void Update(Id id, const Lease& lease);
  void SetState(Id id, LeaseState state);
  // Removes a live lease.
  void Erase(Id id);

  size_t size() const { return size_; }
  // Distinct interned strings (subnets, namespaces, providers, interface names) in use.
  size_t interned_strings() const { return pool_.size(); }

  // Calls fn(const Lease&) for every lease, in no particular order. Each lease is rebuilt
  // as a value for the call (fn must not change the table).
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (Id id = 0; id < next_; ++id) {
      if (Live(id)) fn(static_cast<const Lease&>(Get(id)));
    }
  }

 private:
  struct Record;
  static constexpr uint32_t kChunkBits = 10;  // 1024 records per chunk
  Record& At(Id id);
  const Record& At(Id id) const;
  bool Live(Id id) const;
  void Encode(const Lease& lease, Record& r);
  void ReleaseInterned(const Record& r);
  uint64_t KeyHash(const Record& r) const;
  bool KeyEquals(const Record& r, const AttachmentKey& key) const;

  StringPool pool_;
  std::vector<std::unique_ptr<Record[]>> chunks_;
  std::vector<Id> free_;  // erased ids, reused first
  Id next_ = 0;           // ids below this have been handed out
  size_t size_ = 0;
  IdIndex by_key_;
  IdIndex by_address_;
};

}  // namespace sublease
