#include "sync/line_splitter.h"

namespace sublease {
namespace {

std::string_view TrimCr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace

bool LineSplitter::Feed(std::string_view chunk, const LineFn& on_line) {
  while (!chunk.empty()) {
    size_t nl = chunk.find('\n');
    if (nl == std::string_view::npos) {
      if (pending_.size() + chunk.size() > max_line_) {
        overflowed_ = true;
        return false;
      }
      pending_.append(chunk);
      return true;
    }
    std::string_view line;
    if (pending_.empty()) {
      line = chunk.substr(0, nl);  // the common case: no copy
    } else {
      pending_.append(chunk.substr(0, nl));
      line = pending_;
    }
    chunk.remove_prefix(nl + 1);
    line = TrimCr(line);
    bool go_on = line.empty() || on_line(line);
    pending_.clear();
    if (!go_on) return false;
  }
  return true;
}

}  // namespace sublease
