// IPPool status: what the leader writes into each kubeovn.io/v1 IPPool's status, and the
// writer that keeps it current while this daemon leads.
//
// Kube-OVN's fields (pkg/apis/kubeovn/v1/ippool.go): v4UsingIPs / v4UsingIPRange — the
// addresses of the pool (`ips` inside the Subnet's CIDR) that are allocated in the
// IPBlocks, whoever holds them; v4AvailableIPs / v4AvailableIPRange — the pool's usable
// addresses (excludeIps, gateway, network and last address taken out) not allocated;
// the same for v6; one condition `Ready` (reason UpdateIPAMSucceeded, or
// UpdateIPAMFailed with a message naming what is wrong: an overlapping older pool, a
// missing Subnet, an unreadable item). A pool that is not Ready gives nothing: its
// available count is 0.
//
// IpPoolStatusWriter reads the term's ClusterView for the blocks; it is told about
// pools, Subnets and block changes, recomputes after a debounce, and writes a merge
// patch on /status only when something a reader sees changed. Loop thread only. Owns
// one uv timer: Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "daemon/allocator/ippool.h"
#include "daemon/leader/cluster_view.h"
#include "daemon/leader/subnet_status.h"
#include "sync/kube_client.h"
#include "sync/kube_object.h"

namespace sublease {

// The desired status of `pool`; `allocated`: the allocated addresses of its Subnet.
SubnetStatusValue DesiredPoolStatus(const ResolvedPool& pool, const std::vector<IpAddr>& allocated,
                                    const std::vector<SubnetCondition>& previous,
                                    const std::string& now);

struct IpPoolStatusWriterOptions {
  int64_t debounce_ms = 500;
  std::function<int64_t()> interval_ms;  // as SubnetStatusWriterOptions.interval_ms
  int64_t retry_ms = 2'000;
  int64_t request_timeout_ms = 10'000;
};

struct IpPoolStatusWriterStats {
  uint64_t computed = 0, written = 0, unchanged = 0, errors = 0;
};

class IpPoolStatusWriter {
 public:
  IpPoolStatusWriter(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                     const ClusterView* view, IpPoolStatusWriterOptions options);
  ~IpPoolStatusWriter();
  IpPoolStatusWriter(const IpPoolStatusWriter&) = delete;
  IpPoolStatusWriter& operator=(const IpPoolStatusWriter&) = delete;

  void PoolUpserted(const KubeObject& pool);
  void PoolDeleted(const KubeObject& pool);
  void SubnetUpserted(const KubeObject& subnet);
  void SubnetDeleted(const KubeObject& subnet);
  void BlockChanged(const std::string& subnet);
  // Pools, Subnets and blocks are listed: everything is written once.
  void Synced();

  void Stop();
  void Close(std::function<void()> done);
  const IpPoolStatusWriterStats& stats() const { return stats_; }

 private:
  struct PoolEntry {
    std::string raw;  // the object as last seen (its status is compared)
    KubeClient::RequestId in_flight = 0;
  };
  void MarkAllDirty();
  void Arm(int64_t delay_ms);
  int64_t Interval() const;  // between two writes: options_.interval_ms, else debounce_ms
  void Flush();
  static void OnTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  KubeClient* client_;
  const Clock* clock_;
  const ClusterView* view_;
  IpPoolStatusWriterOptions options_;
  uv_timer_t* timer_;
  bool stopped_ = false;
  bool synced_ = false;
  bool dirty_ = false;
  std::map<std::string, PoolEntry> pools_;
  std::map<std::string, IpPoolSpec> specs_;
  std::map<std::string, std::string> unreadable_;  // pool name -> why
  std::map<std::string, SubnetSpec> subnets_;
  IpPoolStatusWriterStats stats_;
};

}  // namespace sublease
