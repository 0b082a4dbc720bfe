#pragma once
// How long an allocation made ahead of time may wait for company (issue 14).
//
// A node allocates for a pod as soon as its watch shows the pod bound; the pod's CNI ADD
// comes later, once the runtime has made the sandbox. Until then nobody waits for the
// allocation, so its IPBlock write can wait for the node's next pods and share their
// write. How long it can wait at no cost to anyone is the time until the ADD comes
// (the lead time) less one write: an ADD that comes while its allocation is still
// held sends it and waits one write, instead of being answered from SQLite.
//
// The lead time depends on the cluster (kubelet, volumes, runtime, the primary CNI), so
// it is measured: the window is the `quantile` of the last `samples` lead times less the
// recent write time, between 0 and `max_ms`. A quarter of the ADDs may come inside the
// window at most, so the ADD's median is that of an allocation written ahead. Until
// `min_samples` lead times were seen, `initial_ms`. Not learning: always `max_ms`.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sublease {

class AheadWindow {
 public:
  struct Options {
    int64_t max_ms = 0;
    int64_t initial_ms = 100;
    bool learn = false;
    size_t samples = 64;
    size_t min_samples = 16;
    double quantile = 0.25;
  };
  explicit AheadWindow(Options options);

  // One allocation's lead time: from the moment it was queued for its block write to
  // its pod's CNI ADD.
  void NoteLeadTime(int64_t ms);
  // One block write's round trip (an exponentially weighted mean is kept).
  void NoteWrite(int64_t ms);

  int64_t WindowMs() const;
  size_t lead_times() const { return lead_.size(); }
  int64_t write_ms() const { return static_cast<int64_t>(write_ms_ + 0.5); }

 private:
  Options options_;
  std::vector<int64_t> lead_;  // ring of the last options_.samples lead times
  size_t next_ = 0;
  double write_ms_ = 0;
  bool any_write_ = false;
};

}  // namespace sublease
