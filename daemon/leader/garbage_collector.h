// GarbageCollector: the leader's reclaiming of addresses no node will give back
// (DESIGN §3.5) — allocations whose pod is gone without a CNI DEL reaching a daemon
// (node down, force delete, a pod deleted during its own ADD, an ambiguous write), and
// empty blocks of deleted nodes. The reconciler races that produced duplicate addresses
// in Whereabouts and Spiderpool are why every rule is conservative:
//
// - Orphan: an allocation whose pod (namespace/name) is not in the pods cache, or whose
//   pod there has another UID (a re-created pod; not for sticky allocations, which belong
//   to the name). Allocations without a pod name are never touched.
// - Two observations: a sweep (every sweep_interval) records when it first saw an
//   allocation orphaned; seen orphaned again at least reclaim_interval later, it becomes
//   a candidate. Seen alive in between, the clock restarts.
// - Final re-check, right before the write: GET the pod. Reclaim only on an object 404,
//   or a pod with a different UID (non-sticky). Never while the pod exists. A sticky
//   (StatefulSet) allocation whose pod is 404 is reclaimed only when its StatefulSet
//   (GET apps/v1, name = pod name minus "-<ordinal>") is an object 404 or no longer
//   wants the ordinal (ordinal >= spec.replicas, or a re-created StatefulSet: its UID is
//   not the allocation's ownerUID). When the StatefulSet cannot be read
//   (any other error, or the API serves no statefulsets) it is kept. A sticky
//   allocation whose pod name has no ordinal is treated as not sticky.
// - An IPAMClaim's allocation (ipamClaim set) whose pod is gone is reclaimed only when the
//   claim is an object 404, or its status.ips list other addresses; never while the
//   claim holds it (its VM's next pod takes it over, on any node). A KubeVirt VM's
//   allocation kept without a claim (virtualMachine set) is reclaimed only when neither
//   its VirtualMachine nor its VirtualMachineInstance exists (both object 404).
// - A reserved IP's allocation (reservedIp set: a Kube-OVN IP object reserves it) is
//   never reclaimed while the object exists, whether or not its pod does (Kube-OVN's own
//   GC may remove a reservation made before its pod; ours must not): an object the
//   view's watch shows costs nothing, any other is read (GET); reclaimed on an object
//   404, or when the object is no longer a reservation (ip_reserved=false).
// - The removal is a CAS update of the block (resourceVersion). 409/404 → GET the block,
//   and if a candidate is still there unchanged, re-check its pod and write again (at
//   most kMaxAttempts). All of a block's candidates leave in one update.
// - Blocks of deleted nodes: a block with no allocations but the node's spares (kept for
//   its next pods: nobody's once it is gone) whose spec.node is not in the
//   nodes cache, seen so twice reclaim_interval apart, is deleted after GET node says
//   404, with a resourceVersion precondition (a concurrent claim or borrow wins). A block
//   of a deleted node that still holds live pods' allocations is kept as it is, affine
//   to the deleted node: no daemon watches it, other nodes may borrow from it, its
//   allocations are reclaimed as their pods go, and it is deleted once empty. (If the
//   node comes back under the same name, its daemon finds its block again.)
// - Spares asked back and not given (docs/cluster-protocol.md "Spares"): a block whose
//   spec.returnSpares is set while it still holds its node's spares, unchanged (same
//   resourceVersion) across two sweeps reclaim_interval apart, belongs to a node that is
//   not answering (down, or its daemon is). Such a node may have handed some of them out
//   in its last moments without recording them, so the node's pods are listed
//   (fieldSelector spec.nodeName): if any of them asks for attachments that sublease has
//   not all annotated as allocated, nothing is taken (the clock restarts); otherwise every
//   spare no pod's ip_address annotation names is removed, a CAS update on the very
//   version that was seen (a write by the node in between wins, and is an answer).
//   The leader asks too: a deleted pod whose ip_address annotation names an address that
//   is still its node's spare (handed out, never recorded) while that block stays the
//   same version for reclaim_interval / 2 — a node that is up writes the block within
//   --deferred-write-ms when such a pod goes — gets returnSpares set on that block.
// Worst case from a pod's deletion to its address being free again:
// sweep_interval + reclaim_interval + sweep_interval + two requests (30 s by default).
// Loop thread only. Owns one uv timer: Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/leader/cluster_view.h"
#include "sync/ipblock.h"
#include "sync/kube_client.h"

namespace sublease {

struct GarbageCollectorOptions {
  int64_t reclaim_interval_ms = 20'000;
  int64_t sweep_interval_ms = 5'000;
  size_t max_jobs = 4;                // blocks being checked/written at once
  int64_t request_timeout_ms = 10'000;
};

struct GarbageCollectorStats {
  uint64_t sweeps = 0;
  uint64_t orphans_seen = 0;      // allocations currently observed orphaned (last sweep)
  uint64_t reclaimed = 0;         // allocations removed from blocks
  uint64_t kept_pod_exists = 0;   // candidates whose final re-check found the pod
  uint64_t kept_sticky = 0;       // sticky candidates whose StatefulSet still wants them
  uint64_t kept_claim = 0;        // IPAMClaim allocations whose claim still exists
  uint64_t kept_vm = 0;           // KubeVirt VM allocations whose VM or VMI still exists
  uint64_t kept_reserved = 0;     // reserved IPs' allocations whose IP object still exists
  uint64_t blocks_deleted = 0;    // empty blocks of deleted nodes
  uint64_t spares_reclaimed = 0;  // spares of a node that did not answer returnSpares
  uint64_t spares_kept_pod = 0;   // such checks that found a pod that may hold one
  uint64_t spares_asked = 0;      // asks made for a deleted pod's unrecorded spare
  uint64_t conflicts = 0;         // CAS writes answered 409/404
  uint64_t errors = 0;
};

class GarbageCollector {
 public:
  // Called for every allocation reclaimed (for logs, events and tests).
  using ReclaimedCallback = std::function<void(const IpBlock& block, uint64_t offset,
                                               const BlockAllocation& allocation)>;
  static constexpr int kMaxAttempts = 4;

  // `view` must outlive the collector and be complete (synced) before sweeps act.
  GarbageCollector(uv_loop_t* loop, KubeClient* client, const ClusterView* view,
                   GarbageCollectorOptions options, ReclaimedCallback on_reclaimed = nullptr);
  ~GarbageCollector();
  GarbageCollector(const GarbageCollector&) = delete;
  GarbageCollector& operator=(const GarbageCollector&) = delete;

  void Start();
  // Synchronous: stops the timer and cancels every request; nothing is written after.
  void Stop();
  // Stop, then closes the timer; `done` on the loop afterwards.
  void Close(std::function<void()> done);

  // One observation pass (the timer calls it; tests may too).
  void Sweep();
  // A pod is gone (the pods informer's delete): remember its addresses that are still
  // their node's spares, to ask for them if nothing changes (see above).
  void PodDeleted(const KubeObject& pod);
  const GarbageCollectorStats& stats() const { return stats_; }

 private:
  enum class Verdict { kPending, kReclaim, kKeep, kUnknown };
  struct Candidate {
    uint64_t offset = 0;
    BlockAllocation allocation;
    std::string seen_key;
    Verdict verdict = Verdict::kPending;
  };
  struct Job {
    std::string block;
    std::vector<Candidate> candidates;  // empty for a node-gone block deletion
    std::string gone_node;              // set for a node-gone block deletion
    std::string gone_key;
    std::string unanswered_key;         // set for taking back unanswered spares
    std::string unanswered_version;     // the block's resourceVersion that went unanswered
    std::optional<IpBlock> base;        // the block as last read by this job (after a 409)
    size_t pending = 0;
    int attempt = 0;
  };

  int64_t NowMono();
  using Callback = std::function<void(KubeResult<KubeResponse>)>;
  void Send(std::string_view method, const std::string& path, std::string body, Callback cb);
  void CheckCandidates(const std::string& block);
  void CheckPod(const std::string& block, size_t index);
  void CheckStatefulSet(const std::string& block, size_t index);
  void CheckClaim(const std::string& block, size_t index);
  void CheckVirtualMachine(const std::string& block, size_t index, bool vmi);
  void CheckReservation(const std::string& block, size_t index);
  void CheckKeeper(const std::string& block, size_t index, const std::string& path,
                   const std::string& name, std::function<bool(const std::string& body)> released,
                   uint64_t GarbageCollectorStats::*kept);
  void Decided(const std::string& block, size_t index, Verdict v);
  void WriteJob(const std::string& block);
  void Reread(const std::string& block);
  void CheckNodeGone(const std::string& block);
  void CheckUnansweredSpares(const std::string& block);
  void TakeBackSpares(const std::string& block, const std::set<std::string>& named);
  void AskForSpares(const std::string& block, const std::string& why);
  void Finish(const std::string& block);
  const IpBlock* CurrentBlock(const Job& job) const;

  static void OnTimer(uv_timer_t* t);

  uv_loop_t* loop_;
  KubeClient* client_;
  const ClusterView* view_;
  GarbageCollectorOptions options_;
  ReclaimedCallback on_reclaimed_;
  uv_timer_t* timer_;
  bool stopped_ = false;

  std::map<std::string, int64_t> first_seen_;  // allocation or gone-node key -> mono ms
  std::map<std::string, Job> jobs_;            // by block name
  // A deleted pod's address still a spare: block name -> (offset -> what was seen).
  struct Departed {
    std::string pod;                // "namespace/name"
    std::string resource_version;   // the block's when it was seen
    int64_t seen_ms = 0;
  };
  std::map<std::string, std::map<uint64_t, Departed>> departed_;
  std::map<uint64_t, KubeClient::RequestId> requests_;
  uint64_t next_token_ = 1;
  GarbageCollectorStats stats_;
};

// Whether `pod`, on a node that did not answer for its spares, may hold one the node
// handed out without recording it: it is not finished and asks for more attachments
// (Multus networks, default network) than it has `<provider>.kubernetes.io/allocated`
// annotations (Kube-OVN's own "ovn" provider does not count). Unreadable → true.
bool MayHoldUnrecordedAddress(const KubeObject& pod);

// "web-2" -> {"web", 2}; nullopt when the name does not end in "-<digits>".
std::optional<std::pair<std::string, uint32_t>> StatefulSetOrdinal(const std::string& pod_name);

}  // namespace sublease
