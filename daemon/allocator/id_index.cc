#include "daemon/allocator/id_index.h"

namespace sublease {

void IdIndex::Place(Slot s) {
  size_t i = s.hash & mask_;
  while (slots_[i].id_plus_1 != 0) i = (i + 1) & mask_;
  slots_[i] = s;
}

void IdIndex::Grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
  mask_ = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.id_plus_1 != 0) Place(s);
  }
}

void IdIndex::Insert(uint32_t hash, uint32_t id) {
  // Load factor at most 4/5: linear probing stays short, 10–20 bytes per entry.
  if ((size_ + 1) * 5 > slots_.size() * 4) Grow();
  Place(Slot{id + 1, hash});
  ++size_;
}

void IdIndex::Erase(uint32_t h, uint32_t id) {
  if (slots_.empty()) return;
  size_t i = h & mask_;
  for (;; i = (i + 1) & mask_) {
    if (slots_[i].id_plus_1 == 0) return;
    if (slots_[i].id_plus_1 == id + 1) break;
  }
  // Backward shift: pull later entries of the probe run into the hole when the hole is
  // between their home slot and where they sit, so no tombstones are needed.
  for (size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    const Slot& s = slots_[j];
    if (s.id_plus_1 == 0) break;
    const size_t home = s.hash & mask_;
    if (((j - home) & mask_) >= ((j - i) & mask_)) {
      slots_[i] = s;
      i = j;
    }
  }
  slots_[i] = Slot{};
  --size_;
}

}  // namespace sublease
