// LeaseTable: the allocator's live leases, found by AttachmentKey without storing one.
//
// An AttachmentKey is derived from fields every Lease already has (subnet, owner,
// ifname), so the table is a hash set of Leases looked up through the key: this saves
// a copy of three strings per lease (~150 bytes) against a map<AttachmentKey, Lease>.
// Invariant: a stored lease's key fields (subnet, owner.pod_namespace/pod_name,
// owner.ifname, and owner.container_id when there is no pod name) never change, so
// Mutable() may hand out the other fields. Pointers stay valid until Erase (node-based
// container). Single-threaded, like the Allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_set>

#include "daemon/allocator/lease.h"

namespace sublease {

class LeaseTable {
 public:
  const Lease* Find(const AttachmentKey& key) const;
  // REQUIRES: the caller changes no key field (see the invariant above).
  Lease* Mutable(const AttachmentKey& key);
  // Inserts a lease whose key is not present; returns the stored copy, or nullptr when
  // the key is already present.
  const Lease* Insert(Lease lease);
  // Removes and returns true when present.
  bool Erase(const AttachmentKey& key);
  size_t size() const { return set_.size(); }

  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const Lease& l : set_) fn(l);
  }

 private:
  // Hash and equality agree between a Lease and the AttachmentKey it would produce.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(const Lease& l) const;
    size_t operator()(const AttachmentKey& k) const;
  };
  struct KeyEq {
    using is_transparent = void;
    bool operator()(const Lease& a, const Lease& b) const;
    bool operator()(const Lease& l, const AttachmentKey& k) const;
    bool operator()(const AttachmentKey& k, const Lease& l) const { return (*this)(l, k); }
  };

  std::unordered_set<Lease, KeyHash, KeyEq> set_;
};

}  // namespace sublease
