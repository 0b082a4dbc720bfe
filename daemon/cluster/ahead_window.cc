#include "daemon/cluster/ahead_window.h"

#include <algorithm>
#include <cmath>

namespace sublease {

AheadWindow::AheadWindow(Options options) : options_(options) {
  if (options_.samples == 0) options_.samples = 1;
  options_.min_samples = std::min(std::max<size_t>(options_.min_samples, 1), options_.samples);
  options_.quantile = std::clamp(options_.quantile, 0.0, 1.0);
  lead_.reserve(options_.samples);
}

void AheadWindow::NoteLeadTime(int64_t ms) {
  ms = std::max<int64_t>(ms, 0);
  if (lead_.size() < options_.samples) {
    lead_.push_back(ms);
  } else {
    lead_[next_] = ms;
    next_ = (next_ + 1) % options_.samples;
  }
}

void AheadWindow::NoteWrite(int64_t ms) {
  const double v = static_cast<double>(std::max<int64_t>(ms, 0));
  write_ms_ = any_write_ ? 0.8 * write_ms_ + 0.2 * v : v;
  any_write_ = true;
}

int64_t AheadWindow::WindowMs() const {
  if (options_.max_ms <= 0) return 0;
  if (!options_.learn) return options_.max_ms;
  if (lead_.size() < options_.min_samples) return std::min(options_.initial_ms, options_.max_ms);
  std::vector<int64_t> sorted = lead_;
  const size_t rank = static_cast<size_t>(
      std::floor(options_.quantile * static_cast<double>(sorted.size() - 1)));
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(rank), sorted.end());
  const int64_t window = sorted[rank] - write_ms();
  return std::clamp<int64_t>(window, 0, options_.max_ms);
}

}  // namespace sublease
