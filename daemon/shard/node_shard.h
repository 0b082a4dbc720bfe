// NodeShard: one node's share of the cluster's IPAM (cluster mode).
//
// Owns what a daemon does for its own node: it serves the CNI API (as a CniBackend),
// allocates ahead of time for new pods on this node and writes Kube-OVN's annotations
// back, keeps Subnets in step with the API server, feeds this node's IPBlocks to the
// BlockEngine, and releases leases when their pods are gone (DESIGN §3.4): at once when
// the CNI DEL came, after `release_grace_ms` when it did not; a StatefulSet pod's lease
// is kept while its StatefulSet still wants that ordinal. Every allocation goes through
// the BlockEngine, so nothing is answered before the API server holds it. A repeated
// ADD for a committed lease is answered from memory, with the API server down too.
// Single-threaded: the daemon's loop thread. The informers are owned by the caller and
// deliver to the handlers returned by subnet_handler(), block_handler(), pod_handler().
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "daemon/allocator/allocator.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/service/cni_backend.h"
#include "daemon/shard/ip_objects.h"
#include "daemon/shard/ippool_feed.h"
#include "daemon/store/store.h"
#include "sync/informer.h"
#include "sync/ipamclaim.h"
#include "sync/kube_client.h"
#include "sync/pod_networks.h"

namespace sublease {

// The Event reason for a pod annotation asking for a MAC address, which an IPAM plugin
// cannot set (NodeShardOptions::pod_warning).
inline constexpr std::string_view kReasonMacAddressIgnored = "MacAddressIgnored";

struct NodeShardOptions {
  std::string node;
  int64_t release_grace_ms = 30'000;   // pod gone, no DEL: release after this
  int64_t retry_interval_ms = 5'000;   // failed releases and ahead-of-time allocations retry
  int64_t max_retry_interval_ms = 60'000;  // ... and back off up to this while failing again
  // Kube-OVN's keep-vm-ip: a KubeVirt launcher pod's address (without an IPAMClaim) is
  // kept per (VM, subnet, interface) across its pods until the VM and VMI are gone.
  bool keep_vm_ips = true;
  // Called when an allocation for a pod on this node fails (the daemon turns it into a
  // Kubernetes Event on the pod, so `kubectl describe pod` says why). May be empty.
  std::function<void(const PodInfo& pod, const Error& error)> allocation_failed;
  // Called once per pod attachment whose annotations ask for something sublease cannot
  // do (a mac_address: an IPAM plugin cannot set a MAC), with a reason and a message
  // that says what works instead; the daemon makes it a Warning Event. May be empty.
  std::function<void(const PodInfo& pod, std::string_view reason, const std::string& message)>
      pod_warning;
  // Kube-OVN `IP` objects mirroring this node's allocations (ip_objects.h); nullptr = off.
  IpObjectWriter* ip_objects = nullptr;
  // Kube-OVN reserved IPs (reservations.cc): before an attachment's first allocation its
  // `IP` object is read by name (one GET); a reservation there decides the address.
  bool reserved_ips = true;
};

class NodeShard final : public CniBackend {
 public:
  NodeShard(uv_loop_t* loop, Allocator* allocator, Store* store, BlockEngine* engine,
            KubeClient* client, const Clock* clock, NodeShardOptions options);
  ~NodeShard() override;
  NodeShard(const NodeShard&) = delete;
  NodeShard& operator=(const NodeShard&) = delete;

  InformerHandler* subnet_handler();
  InformerHandler* block_handler();
  InformerHandler* pod_handler();
  // The IPPool feed (all kubeovn.io/v1 IPPools; ippool_feed.h). Readiness waits for its
  // first list, so that no dynamic pick lands in a pool this node has not seen.
  InformerHandler* ippool_handler();
  void set_ippool_informer(const Informer* informer) { pool_feed_->set_informer(informer); }
  // The informer that feeds pod_handler(): after each (re)list its cache is compared with
  // the pods this shard knows (a relist after a resumed watch reports no deletions).
  void set_pod_informer(const Informer* informer) { pod_informer_ = informer; }
  // The Subnet and own-IPBlock informers: after a relist, what the shard and the engine
  // still hold but the list lacks was deleted meanwhile.
  void set_subnet_informer(const Informer* informer) { subnet_informer_ = informer; }
  void set_block_informer(const Informer* informer) { block_informer_ = informer; }

  // The informer feeds. Each one's progress (resourceVersion) is kept in the store, at
  // most once a second and at Close, so a restart resumes its watch instead of listing.
  enum class Feed { kSubnets, kBlocks, kPods };
  // The stored resume point of `feed` ("" = none: list first), to be passed as
  // InformerOptions::resume_resource_version. Call before Start(); a feed resumed this
  // way gets no OnSynced until a relist, and readiness does not wait for one (below).
  std::string ResumeFrom(Feed feed);

  // Recovers pending leases (reading their blocks), then becomes ready once every feed
  // is synced: listed, or resumed. A resumed Subnet feed stands on the Subnets loaded
  // from the store; a resumed IPBlock feed needs nothing before the first allocation
  // (the engine lists a subnet's blocks before picking in them); a resumed pod feed is
  // complemented by one list of this node's pods, which finds the pods deleted while the
  // daemon was down (their leases are released) and those created meanwhile.
  void Start();
  // Stops timers, saves the feeds' progress and drops waiting work; `done` after the
  // timer handle is closed.
  void Close(std::function<void()> done);

  // CniBackend.
  void Add(const CniRequest& request, ReplyCallback done) override;
  void Del(const CniRequest& request, DoneCallback done) override;
  void Check(const CniRequest& request, ReplyCallback done) override;
  void Gc(const GcRequest& request, GcCallback done) override;
  bool Ready() const override;

  struct Stats {
    uint64_t ahead_of_time = 0, on_demand = 0, annotations_written = 0, annotation_patches = 0,
             releases = 0, release_failures = 0, holder_updates = 0;
    uint64_t pod_reads = 0;  // ADDs for a pod this node had not seen: read it first
    uint64_t subnet_reads = 0;  // ADDs for a provider no Subnet here serves: Subnets read
    uint64_t claim_reads = 0;  // ADDs of an attachment with an IPAMClaim: the claim is read
    uint64_t pool_reads = 0;  // requests naming an IPPool this node had not seen: read it first
    uint64_t reservation_reads = 0;  // first allocations: the IP object of that name is read
    uint64_t reservation_lists = 0;  // ... or, in a burst, every reservation is listed once
  };
  const Stats& stats() const { return stats_; }

 private:
  class SubnetHandler;
  class BlockHandler;
  class PodHandler;
  struct Inflight {
    std::string pod_uid;  // the pod the work is for ("" = not known)
    std::vector<ReplyCallback> waiters;
    std::vector<WireRoute> routes;  // the NAD's routes of the first CNI request, if any
    // The sandbox of a CNI ADD that joined work started without one (ahead of time): the
    // lease and its block allocation learn it once the allocation is committed.
    std::string container_id;
  };

  // Subnets.
  void UpsertSubnet(const KubeObject& object);
  void RemoveSubnet(const KubeObject& object);
  // Pods.
  void PodChanged(const KubeObject& object);
  // Takes the pod into pods_ (no release is due for it any more); its key, or nullopt
  // when it is malformed or on another node.
  std::optional<std::string> StorePod(const KubeObject& object);
  void ReconcilePod(const std::string& pod_key);
  void ReconcileAllPods();
  void PodGone(const KubeObject& object);
  void PodsSynced();
  // Releases (after the grace period; StatefulSet members after asking their
  // StatefulSet) the committed leases of pods not in pods_. Needs pods_ complete.
  void ReleaseOrphans();
  // Lifts the quarantine of spares a rebuild made once the pods of then are gone.
  void TendQuarantine();
  // After a list (`listed`: "ns/name" -> UID): treats every known pod not in it as
  // deleted, except one read ahead of the feed (read_ahead_), which it reads again.
  void ForgetPodsNotIn(const std::map<std::string, std::string>& listed);
  // Reads a pod that was read ahead of the feed again, after a list that showed it
  // otherwise (the list may be older or newer than that read: the read now decides).
  void RereadPod(const std::string& pod_key);
  // Start-up with a resumed pod feed: one list of this node's pods (retried on Tick).
  void ListPodsOnce();
  // Releases a StatefulSet member's lease unless its StatefulSet (same UID when known)
  // still wants the ordinal; asks the API server.
  void CheckStatefulSet(const AttachmentKey& key, const std::string& pod_namespace,
                        const std::string& stateful_set, const std::string& stateful_set_uid,
                        uint32_t ordinal);
  // Feed progress.
  void NoteProgress(Feed feed, std::string_view resource_version);
  void SaveProgress();
  std::string ProgressKey(Feed feed) const;
  // A new pod UID or sandbox of a pod that holds a lease: store and allocator now, the
  // block allocation lazily (group-committed; retried on Tick when it fails).
  Result<void> RecordHolder(const AttachmentKey& key, const std::string& pod_uid,
                            const std::string& container_id);
  void UpdateBlockHolder(const AttachmentKey& key);
  void Recover();
  // Allocation and release.
  // Starts an allocation through the engine; `done` (may be empty) gets the CNI reply.
  void AllocateFor(AllocateRequest request, std::vector<WireRoute> routes, ReplyCallback done);
  void OnAllocated(const AttachmentKey& key, const Result<Lease>& lease);
  // The allocation once reservations are settled: a named pool, or the engine.
  void AllocateResolved(const AttachmentKey& key, AllocateRequest request);
  // engine_->Allocate, held for company only while no CNI ADD waits (unhurried).
  void EngineAllocate(const AttachmentKey& key, AllocateRequest request);
  // Reserved IPs (reservations.cc): reads the attachment's IP object by name (a
  // consistent GET: a reservation created a moment ago, by anyone, is seen). A
  // reservation with addresses replaces the request (the addresses, taken over from the
  // reservation's allocation wherever it is); 404 or a record that is not a reservation →
  // the request as it is. Unreadable, or a reservation whose address the leader has not
  // filled in yet → kUnavailable (try again); a reservation of another Subnet or pod, or
  // malformed → kInvalidArgument. Answers through OnAllocated.
  void ReadReservationThen(const AttachmentKey& key, AllocateRequest request);
  // reservations.cc: one LIST for the reads waiting in reservation_batch_; and what a read
  // found (the object, or why it could not be read).
  void ListReservations();
  void OnReservationRead(const AttachmentKey& key, const std::string& name, AllocateRequest request,
                         const Result<KubeObject>& object);
  // A first allocation of `key` (its inflight_ entry made): a reservation of the pod's
  // name is read first, a named pool resolved, then the engine allocates.
  void AllocateAnew(const AttachmentKey& key, AllocateRequest request);
  // The Kube-OVN IP object name of the pod's attachment (`.<ifname>` in per-interface mode).
  static std::string IpObjectNameFor(const PodInfo& pod, const std::string& provider,
                                     const std::string& ifname);
  // A request naming an IPPool (request.named_pool): from the pool as this node has it,
  // or after reading it by name (never from a pool not seen: no dynamic fallback).
  // Answers through OnAllocated: the pool missing (kNotFound), of another Subnet or not
  // Ready (kInvalidArgument), unreadable (kUnavailable).
  void AllocateFromNamedPool(const AttachmentKey& key, AllocateRequest request, bool pool_was_read);
  // Until the IPPool feed has synced (at start, then every 10 s): one List that tells
  // whether the IPPool resource exists at all (404: no CRD, no pools; ready without).
  void ProbeIpPools();
  // The lease's Kube-OVN `IP` object is written (after its commit) or deleted (after its
  // release), off the ADD path, when IP objects are on.
  void MirrorIpObject(const Lease& lease);
  void ForgetIpObject(const Lease& lease);
  // Queues the lease's annotations; the writes queued in one turn of the loop leave as
  // one merge patch per pod (FlushAnnotations).
  void WriteAnnotations(const Lease& lease);
  void ArmAnnotationFlush();
  // Whether this lease's annotations (its pod UID and addresses) were written already.
  bool AnnotationsWritten(const Lease& lease) const;
  static std::string AnnotationsWrittenFor(const Lease& lease);
  void FlushAnnotations();
  // Releases a fresh lease whose pod this node does not know, after a GET confirms the
  // pod is gone (404, or another UID holds the name).
  void ReleaseIfPodGone(const Lease& lease);
  void ScheduleRelease(const AttachmentKey& key, int64_t delay_ms);
  void ReleaseNow(const AttachmentKey& key);
  // The wait before the next try of something that failed again (`waits` keeps the last
  // one per key; erase it on success): `first_ms` (0: retry_interval_ms), doubling up to
  // max_retry_interval_ms.
  template <typename Key>
  int64_t NextRetryWait(std::map<Key, int64_t>* waits, const Key& key, int64_t first_ms = 0) const;
  // Removes and returns the keys due at `now`.
  template <typename Key>
  static std::vector<Key> TakeDue(std::map<Key, int64_t>* due_ms, int64_t now);
  // Annotation and holder writes that failed are first retried at the next tick.
  static constexpr int64_t kQuickRetryMs = 1'000;
  void Tick();
  // What the pod asks for: the CNI request's own (Multus runtimeConfig) overridden by
  // the pod's annotations for this attachment (DESIGN §1.3 precedence).
  AllocateRequest RequestFor(const Subnet& subnet, const CniRequest& cni, const PodInfo& pod) const;
  static void ApplyAttachment(const PodInfo& pod, const AttachmentRequest& a, AllocateRequest* request);
  // Once per (pod UID, attachment): a mac_address annotation has no effect; say so.
  void WarnIfMacIgnored(const PodInfo& pod, const AttachmentRequest& a) const;
  // The pod's attachments as its annotations ask (none when they are malformed).
  static std::vector<AttachmentRequest> AttachmentsWanted(const PodInfo& pod);
  // The keys of those attachments that a Subnet of this node serves.
  std::set<AttachmentKey> WantedKeys(const PodInfo& pod) const;
  bool LeaseSatisfies(const Lease& lease, const AllocateRequest& want) const;
  // CNI ADD. The cached pod an ADD may be decided from: seen on this node, with the UID
  // the runtime names (when it names one); nullptr = read it first.
  const PodInfo* KnownPod(const CniRequest& cni) const;
  void AddFor(const CniRequest& cni, ReplyCallback done, bool pod_was_read);
  void JoinInflight(const AttachmentKey& key, const CniRequest& cni, ReplyCallback done);
  // GETs the pod (a consistent read), checks its UID and node, stores it, and serves
  // the ADD from it. Cannot read → kUnavailable (CNI 11); no such pod → kNotFound.
  void ReadPodThen(const CniRequest& cni, ReplyCallback done);
  // An ADD for a provider that no Subnet of this node serves: the Subnet may exist with
  // its watch event still on the way, so the Subnets are read before answering. One
  // with the provider → kUnavailable (CNI 11, try again); none → kNotFound; cannot read
  // → kUnavailable.
  void AnswerUnknownProvider(const CniRequest& cni, ReplyCallback done);
  // A committed lease of an earlier pod of the same name, for the new pod asking `want`:
  // kept if it is what `want` would get and its block still holds it (ConfirmHolder);
  // else released (or found freed) and allocated anew. Answers through inflight_.
  void FollowLease(const Lease& held, AllocateRequest want, const std::string& container_id,
                   std::vector<WireRoute> routes, ReplyCallback done);
  // IPAMClaims (claims.cc). The claim name the pod's networks element for this
  // attachment references, when the network config allows persistent IPs; "" = none.
  std::string ClaimFor(const CniRequest& cni, const PodInfo& pod) const;
  // Reads the claim (unreadable → kUnavailable; missing → kNotFound; spec.network not
  // this network config's name → kInvalidArgument; nothing allocated in these), then
  // allocates its status.ips (taking over the claim's allocation from any earlier pod,
  // on any node), or, when it has none yet, allocates as for any pod and records the
  // addresses in the claim's status before answering (failures: SubnetExhausted,
  // IPAddressConflict conditions).
  void AddWithClaim(const Subnet& subnet, const CniRequest& cni, const PodInfo& pod,
                    const std::string& claim_name, ReplyCallback done);
  // PUT …/ipamclaims/<name>/status, conditional on the claim's resourceVersion.
  void WriteClaimStatus(const IpamClaim& claim, const std::vector<std::string>& ips,
                        const std::string& owner_pod, const std::string& reason,
                        const std::string& message, std::function<void(Result<void>)> done);
  CniReply ReplyFor(const Subnet& subnet, const Lease& lease, const std::vector<WireRoute>& routes) const;
  std::vector<WireRoute> RoutesFor(const Lease& lease, const std::vector<WireRoute>& nad_routes) const;

  uv_loop_t* loop_;
  Allocator* allocator_;
  Store* store_;
  BlockEngine* engine_;
  KubeClient* client_;
  const Clock* clock_;
  NodeShardOptions options_;
  std::unique_ptr<SubnetHandler> subnet_handler_;
  std::unique_ptr<BlockHandler> block_handler_;
  std::unique_ptr<PodHandler> pod_handler_;
  std::unique_ptr<IpPoolFeed> pool_feed_;
  int pool_probe_ticks_ = 0;
  std::map<AttachmentKey, std::string> ip_object_names_;  // IP objects written, by lease
  bool pool_probing_ = false;
  bool subnets_synced_ = false, blocks_synced_ = false, pods_synced_ = false, recovered_ = false;
  bool recovery_due_ = false;  // Recover failed (API server unreachable): retried on Tick
  bool pods_resumed_ = false, pods_listing_ = false;
  const Informer* pod_informer_ = nullptr;
  const Informer* subnet_informer_ = nullptr;
  const Informer* block_informer_ = nullptr;
  // Per feed: the last resourceVersion seen, and whether it is newer than the stored one.
  std::map<Feed, std::pair<std::string, bool>> progress_;

  std::map<std::string, PodInfo> pods_;               // this node's pods by "ns/name"
  // Pods read from the API server ahead of the pod feed (a CNI ADD that outran it), by
  // "ns/name": the UID read. The feed delivers in order, so until it shows that UID (or
  // its deletion) its events of another UID of the name are an earlier pod's, and are
  // not taken: they would bring that pod back over the newer one (and its lease with it).
  std::map<std::string, std::string> read_ahead_;
  std::set<std::string> rereading_;    // RereadPod in flight
  std::set<std::string> reread_due_;   // RereadPod failed (API server away): next Tick
  std::map<AttachmentKey, Inflight> inflight_;        // allocations waiting for the API
  std::map<AttachmentKey, int64_t> release_due_ms_;   // leases to release at this time
  std::map<AttachmentKey, int64_t> release_backoff_ms_;  // ... after failing: the last wait
  std::set<AttachmentKey> del_received_;              // CNI DEL came for these
  std::set<AttachmentKey> releasing_;                 // ReleaseNow sent, not answered yet
  // Annotation writes and block holder updates to retry at this time, and the last wait
  // after a failure (1 s, doubling while they keep failing).
  std::map<AttachmentKey, int64_t> annotations_due_;
  std::map<AttachmentKey, int64_t> annotation_waits_;
  std::set<AttachmentKey> annotating_;                // annotation writes in flight
  // Annotation writes that succeeded: "<pod uid> <address>..." per attachment, so that a
  // late watch event older than the patch does not send it again (cleared on release).
  std::map<AttachmentKey, std::string> annotated_;
  // "<uid>/<provider>/<ifname>" already warned about an ignored mac_address (bounded).
  mutable std::set<std::string> mac_warned_;
  std::map<std::string, int64_t> retry_pods_due_ms_;  // pods whose allocation failed: retry then
  std::map<std::string, int64_t> retry_backoff_ms_;   // ... and the wait before that retry
  std::map<AttachmentKey, int64_t> holders_due_;
  std::map<AttachmentKey, int64_t> holder_waits_;
  // Leases allocated for an IPAMClaim whose status write has not succeeded yet: not
  // served from SQLite; the next ADD releases them and asks the claim again.
  std::map<AttachmentKey, std::string> claims_unrecorded_;
  // A pod object to patch: its path, and the UID the patch is conditional on.
  using PodTarget = std::pair<std::string, std::string>;
  // Annotation writes waiting, by pod: flushed by flush_timer_ at the next loop turn,
  // or, for a pod with a patch in flight (patching_), when that patch is answered.
  std::map<PodTarget, std::vector<std::pair<AttachmentKey, AllocatedAnnotations>>> annotation_batch_;
  std::set<PodTarget> patching_;
  uv_timer_t* timer_ = nullptr;
  uv_timer_t* flush_timer_ = nullptr;
  // Reserved-IP reads (reservations.cc): GETs in flight, and the reads waiting for a LIST.
  struct ReservationRead {
    AttachmentKey key;
    std::string name;
    AllocateRequest request;
  };
  int reservation_gets_ = 0;
  std::vector<ReservationRead> reservation_batch_;
  bool reservation_listing_ = false;
  uv_timer_t* engine_timer_ = nullptr;  // the engine's wake (a held allocation's deadline)
  uint64_t engine_wake_at_ = 0;         // uv_now when it fires
  Stats stats_;
};

}  // namespace sublease
