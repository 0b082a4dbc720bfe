// SubnetStatusWriter: keeps every Subnet's status (usage numbers, ranges, Validated and
// Ready conditions; subnet_status.h) current while this daemon leads.
//
// Incremental: each block's addresses are indexed when the block changes (O(block)), and
// a change marks only its Subnet dirty; a Subnet's spec change marks it and every Subnet
// of its old and new provider dirty. Dirty Subnets are recomputed after a debounce and
// written with a merge patch on /status only when something a reader sees changed.
// Loop thread only. Owns one uv timer: Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/ip.h"
#include "common/subnet_spec.h"
#include "sync/ipblock.h"
#include "sync/kube_client.h"
#include "sync/kube_object.h"

namespace sublease {

struct SubnetStatusWriterOptions {
  int64_t debounce_ms = 500;
  // When set, the interval instead of debounce_ms, asked at each arming (ClusterDuties:
  // it grows with the number of nodes, every one of which watches every Subnet).
  std::function<int64_t()> interval_ms;
  int64_t retry_ms = 2'000;
  int64_t request_timeout_ms = 10'000;
};

struct SubnetStatusWriterStats {
  uint64_t computed = 0;  // Subnets recomputed
  uint64_t written = 0;   // status patches that succeeded
  uint64_t unchanged = 0; // recomputed, nothing to write
  uint64_t errors = 0;
};

class SubnetStatusWriter {
 public:
  SubnetStatusWriter(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                     SubnetStatusWriterOptions options);
  ~SubnetStatusWriter();
  SubnetStatusWriter(const SubnetStatusWriter&) = delete;
  SubnetStatusWriter& operator=(const SubnetStatusWriter&) = delete;

  void SubnetUpserted(const KubeObject& subnet);
  void SubnetDeleted(const KubeObject& subnet);
  // `block` is the new state, nullptr when deleted.
  void BlockChanged(const std::string& name, const IpBlock* block);
  // Both the subnets and the blocks informers are synced: everything is written once.
  void Synced();

  // Synchronous: cancels requests and the timer; nothing is written after.
  void Stop();
  void Close(std::function<void()> done);

  const SubnetStatusWriterStats& stats() const { return stats_; }

 private:
  struct SubnetEntry {
    SubnetSpec spec;
    bool decoded = false;  // spec came from a decodable object
    std::string raw;       // the object as last seen (its status is compared)
    KubeClient::RequestId in_flight = 0;
  };
  struct BlockEntry {
    std::string subnet;
    std::vector<IpAddr> addresses;
  };

  void MarkDirty(const std::string& subnet);
  void MarkProvider(const std::string& provider);
  void Flush();
  void Write(const std::string& name);
  std::vector<IpAddr> Allocated(const std::string& subnet) const;
  static void OnTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  KubeClient* client_;
  const Clock* clock_;
  SubnetStatusWriterOptions options_;
  uv_timer_t* timer_;
  bool stopped_ = false;
  bool synced_ = false;

  std::map<std::string, SubnetEntry> subnets_;
  std::map<std::string, BlockEntry> blocks_;
  std::map<std::string, std::map<IpAddr, int>> allocated_;  // subnet -> address -> refcount
  std::set<std::string> dirty_;
  SubnetStatusWriterStats stats_;
};

}  // namespace sublease
