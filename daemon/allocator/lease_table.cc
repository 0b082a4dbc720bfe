#include "daemon/allocator/lease_table.h"

#include <string_view>

namespace sublease {
namespace {

// FNV-1a, fed piece by piece so a Lease hashes its key without building the strings.
struct Fnv {
  uint64_t h = 0xcbf29ce484222325ULL;
  Fnv& Add(std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
    return *this;
  }
  Fnv& Sep() { return Add(std::string_view("\0", 1)); }
};

// True when key_owner == prefix + a + b + c, without allocating.
bool OwnerEquals(std::string_view key_owner, std::string_view prefix, std::string_view a,
                 std::string_view b = {}, std::string_view c = {}) {
  if (key_owner.size() != prefix.size() + a.size() + b.size() + c.size()) return false;
  for (std::string_view part : {prefix, a, b, c}) {
    if (key_owner.substr(0, part.size()) != part) return false;
    key_owner.remove_prefix(part.size());
  }
  return true;
}

}  // namespace

size_t LeaseTable::KeyHash::operator()(const AttachmentKey& k) const {
  return Fnv().Add(k.subnet).Sep().Add(k.owner).Sep().Add(k.ifname).h;
}

size_t LeaseTable::KeyHash::operator()(const Lease& l) const {
  // Mirrors AttachmentKey::For: "pod:<ns>/<name>" when a pod is known, else "container:<id>".
  Fnv f;
  f.Add(l.subnet).Sep();
  if (!l.owner.pod_name.empty()) {
    f.Add("pod:").Add(l.owner.pod_namespace).Add("/").Add(l.owner.pod_name);
  } else {
    f.Add("container:").Add(l.owner.container_id);
  }
  return f.Sep().Add(l.owner.ifname).h;
}

bool LeaseTable::KeyEq::operator()(const Lease& l, const AttachmentKey& k) const {
  if (l.subnet != k.subnet || l.owner.ifname != k.ifname) return false;
  if (!l.owner.pod_name.empty()) {
    return OwnerEquals(k.owner, "pod:", l.owner.pod_namespace, "/", l.owner.pod_name);
  }
  return OwnerEquals(k.owner, "container:", l.owner.container_id);
}

bool LeaseTable::KeyEq::operator()(const Lease& a, const Lease& b) const {
  return (*this)(a, b.key());
}

const Lease* LeaseTable::Find(const AttachmentKey& key) const {
  auto it = set_.find(key);
  return it == set_.end() ? nullptr : &*it;
}

Lease* LeaseTable::Mutable(const AttachmentKey& key) {
  auto it = set_.find(key);
  // Set elements are const only to protect the hash; the invariant in the header says
  // callers leave key fields alone, so the other fields may change in place.
  return it == set_.end() ? nullptr : const_cast<Lease*>(&*it);
}

const Lease* LeaseTable::Insert(Lease lease) {
  auto [it, inserted] = set_.insert(std::move(lease));
  return inserted ? &*it : nullptr;
}

bool LeaseTable::Erase(const AttachmentKey& key) {
  auto it = set_.find(key);
  if (it == set_.end()) return false;
  set_.erase(it);
  return true;
}

}  // namespace sublease
