// ClusterDuties: what one daemon at a time does for the whole cluster (DESIGN §3.5):
// Subnet and IPPool status and conditions (SubnetStatusWriter, IpPoolStatusWriter) and
// garbage collection
// (GarbageCollector), while it holds the coordination.k8s.io Lease (LeaderElector).
//
// Every daemon runs one and campaigns; only the leader acts. While leading it opens its
// own informers on the client — all Subnets, all IPBlocks, all Pods, all Nodes (the one
// daemon allowed to watch the whole cluster; the others keep watching only their node's
// share) — and closes them the moment it stops leading: the writers are stopped
// synchronously inside the elector's on_stopped, so nothing is written after the renew
// deadline passed. A new term starts from fresh informers (a full list).
//
// How to wire it (daemon/main.cc, RunCluster), after the informers are created:
//   ClusterDutiesOptions duties_options;
//   duties_options.node = cfg.node_name;
//   ClusterDuties duties(&loop, &client, &clock, duties_options);
//   duties.Start();
// and in `stop`, before the client is closed:
//   [&](std::function<void()> next) { duties.Close(std::move(next)); },
// Close releases the Lease when leading, so another daemon takes over at once.
// Threading: the loop's thread. Close before destruction; the client must outlive it.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "daemon/leader/garbage_collector.h"
#include "daemon/leader/ippool_status.h"
#include "daemon/leader/leader_elector.h"
#include "daemon/leader/reservations.h"
#include "daemon/leader/status_writer.h"
#include "sync/kube_client.h"

namespace sublease {

// The node label that makes a node a leader candidate (--leader-candidates=labelled).
inline constexpr std::string_view kLeaderCandidateLabel = "sublease.io/leader-candidate";

struct ClusterDutiesOptions {
  std::string node;      // this daemon's node
  std::string identity;  // "" = "<node>_<8 random hex digits>"
  std::string lease_namespace = "kube-system";
  std::string lease_name = "sublease-leader";
  int64_t lease_duration_ms = 15'000;
  int64_t renew_deadline_ms = 10'000;
  int64_t retry_period_ms = 2'000;
  // Leader candidacy (--leader-candidates=labelled): when set, Start lists the nodes with
  // this label selector first, and this node campaigns only if it is one of them — or if
  // none is (so the cluster never goes without a leader), or the list fails (logged).
  // Checked once, at Start: a label change takes effect at the daemon's next start.
  // Empty = every node campaigns (each polls the Lease every retry period: 2,500 GETs/s
  // at 5,000 nodes; BENCHMARKS.md §7).
  std::string candidate_selector;
  // Garbage collection: an allocation seen orphaned twice this far apart is re-checked
  // and reclaimed; sweeps run every sweep_interval. With 20 s and 5 s a leaked address
  // is free again at most ~30 s after its pod was deleted (60 s is the promise).
  int64_t reclaim_interval_ms = 20'000;
  int64_t sweep_interval_ms = 5'000;
  int64_t status_debounce_ms = 500;
  // Status writes of a Subnet or IPPool reach every node's watch: the interval between
  // two is at least this much per node the leader knows (5 ms: 500 ms at 100 nodes, 25 s
  // at 5,000), so the status events the API server sends out stay ~200/s per object
  // whatever the cluster's size. 0 = status_debounce_ms alone.
  int64_t status_ms_per_node = 0;
  bool release_on_close = true;
  // Kube-OVN reserved IPs (reservations.h): writes a reservation's allocation — on this
  // node, BlockEngine::Reserve. Empty = reserved IPs are not handled (IP objects are not
  // watched).
  ReserveFn reserve;
  // A reservation that cannot be made (or an API error) is tried again after this,
  // doubling while it keeps failing up to the max (reservations.h).
  int64_t reservation_retry_ms = 10'000;
  int64_t reservation_max_retry_ms = 300'000;
  uint64_t seed = 0;  // elector jitter, informer timeouts; 0 = random
};

struct ClusterDutiesStats {
  LeaderElectorStats election;
  uint64_t terms = 0;  // times leadership started here
  GarbageCollectorStats gc;          // of the current (or last) term
  SubnetStatusWriterStats status;    // of the current (or last) term
};

class ClusterDuties {
 public:
  ClusterDuties(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                ClusterDutiesOptions options);
  ~ClusterDuties();
  ClusterDuties(const ClusterDuties&) = delete;
  ClusterDuties& operator=(const ClusterDuties&) = delete;

  void Start();
  // Stops acting, releases the Lease (release_on_close), closes informers and timers;
  // `done` on the loop afterwards.
  void Close(std::function<void()> done);

  bool leading() const { return elector_.leading(); }
  // False until decided, and for a node that is not a candidate (candidate_selector).
  bool campaigning() const { return campaigning_; }
  bool candidacy_decided() const { return candidacy_decided_; }
  const std::string& identity() const { return elector_.identity(); }
  ClusterDutiesStats stats() const;

  // Called for each reclaimed allocation (tests measure with it). Set before Start.
  void set_on_reclaimed(GarbageCollector::ReclaimedCallback cb) { on_reclaimed_ = std::move(cb); }

 private:
  struct Term;

  void BeginTerm();
  void EndTerm();
  void CloseTerm(std::unique_ptr<Term> term);
  void MaybeFinishClose();

  uv_loop_t* loop_;
  KubeClient* client_;
  const Clock* clock_;
  ClusterDutiesOptions options_;
  LeaderElector elector_;
  std::unique_ptr<Term> term_;
  int closing_terms_ = 0;
  uint64_t terms_ = 0;
  GarbageCollectorStats last_gc_;
  SubnetStatusWriterStats last_status_;
  GarbageCollector::ReclaimedCallback on_reclaimed_;
  bool elector_closed_ = false;
  bool campaigning_ = false;
  bool candidacy_decided_ = false;
  bool closing_ = false;
  KubeClient::RequestId candidacy_request_ = 0;
  std::function<void()> close_done_;
};

}  // namespace sublease
