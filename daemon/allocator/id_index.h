// IdIndex: a hash index from a key to a 32-bit id, where the key itself lives elsewhere
// (in the record the id names). Open addressing with linear probing and backward-shift
// deletion; each slot is 8 bytes (id + 32 bits of the key's hash), so an index costs
// 10–20 bytes per entry instead of a node per entry.
//
// The caller supplies the key's hash, mixed to 32 bits by Mix(), and, for lookups, an
// equality test on ids: the index compares the stored hash first and calls the test
// only on a match. Several ids may be
// stored under equal keys; Find returns one of them, Erase removes the given id.
// Single-threaded, like the Allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sublease {

class IdIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // A 64-bit hash (FNV or similar, not necessarily well mixed) to the 32 bits kept.
  static uint32_t Mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return static_cast<uint32_t>(h >> 32);
  }

  // The id of an entry with this hash for which eq(id) is true, or kNone.
  template <typename Eq>
  uint32_t Find(uint32_t h, Eq&& eq) const {
    if (slots_.empty()) return kNone;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id_plus_1 == 0) return kNone;
      if (s.hash == h && eq(s.id_plus_1 - 1)) return s.id_plus_1 - 1;
    }
  }
  // REQUIRES: id != kNone.
  void Insert(uint32_t hash, uint32_t id);
  // Removes the entry (hash, id); no-op when absent.
  void Erase(uint32_t hash, uint32_t id);
  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }

 private:
  struct Slot {
    uint32_t id_plus_1 = 0;  // 0: empty
    uint32_t hash = 0;
  };
  void Place(Slot s);
  void Grow();

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace sublease
