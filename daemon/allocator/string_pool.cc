#include "daemon/allocator/string_pool.h"

namespace sublease {

StringPool::Id StringPool::Intern(std::string_view text) {
  if (auto it = ids_.find(text); it != ids_.end()) {
    ++entries_[it->second].refs;
    return it->second;
  }
  Id id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = static_cast<Id>(entries_.size());
    entries_.emplace_back();
  }
  Entry& e = entries_[id];
  e.text.assign(text);
  e.refs = 1;
  ids_.emplace(std::string_view(e.text), id);
  return id;
}

void StringPool::Unref(Id id) {
  Entry& e = entries_[id];
  if (--e.refs > 0) return;
  ids_.erase(std::string_view(e.text));
  e.text = std::string();  // frees the heap text, if any
  free_.push_back(id);
}

std::optional<StringPool::Id> StringPool::Lookup(std::string_view text) const {
  auto it = ids_.find(text);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

}  // namespace sublease
