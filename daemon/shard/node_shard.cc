#include "daemon/shard/node_shard.h"

#include <simdjson.h>

#include <algorithm>
#include <sstream>
#include <utility>

#include "common/log.h"
#include "daemon/allocator/pool.h"
#include "daemon/allocator/text.h"
#include "daemon/service/cni_service.h"
#include "daemon/store/rebuild.h"
#include "sync/ipblock.h"
#include "sync/uv_timer.h"

namespace sublease {

// Informer handlers: thin adapters that forward to the shard.
class NodeShard::SubnetHandler final : public InformerHandler {
 public:
  explicit SubnetHandler(NodeShard* s) : s_(s) {}
  void OnAdded(const KubeObject& o) override { s_->UpsertSubnet(o); }
  void OnModified(const KubeObject& o) override { s_->UpsertSubnet(o); }
  void OnDeleted(const KubeObject& o) override { s_->RemoveSubnet(o); }
  void OnSynced() override {
    // As for pods below: a relist after a resumed watch's 410 reports no deletion for
    // Subnets deleted meanwhile (the journal still had them).
    if (s_->subnet_informer_) {
      std::vector<std::string> gone;
      for (const std::string& name : s_->allocator_->SubnetNames()) {
        if (!s_->subnet_informer_->cache().count(name)) gone.push_back(name);
      }
      for (const std::string& name : gone) {
        KubeObject object;
        object.name = name;
        s_->RemoveSubnet(object);
      }
    }
    s_->subnets_synced_ = true;
  }
  void OnResourceVersion(std::string_view rv) override { s_->NoteProgress(Feed::kSubnets, rv); }

 private:
  NodeShard* s_;
};

class NodeShard::BlockHandler final : public InformerHandler {
 public:
  explicit BlockHandler(NodeShard* s) : s_(s) {}
  void OnAdded(const KubeObject& o) override { Upsert(o); }
  void OnModified(const KubeObject& o) override { Upsert(o); }
  void OnDeleted(const KubeObject& o) override { s_->engine_->OnBlockDeleted(o.name, o.uid); }
  void OnSynced() override {
    if (s_->block_informer_) {
      std::set<std::string> present;
      for (const auto& [key, object] : s_->block_informer_->cache()) present.insert(object.name);
      s_->engine_->ForgetOwnBlocksNotIn(present);
    }
    s_->blocks_synced_ = true;
  }
  void OnResourceVersion(std::string_view rv) override { s_->NoteProgress(Feed::kBlocks, rv); }

 private:
  void Upsert(const KubeObject& o) {
    auto block = DecodeIpBlock(o.raw);
    if (!block) {
      LogWarn("ignoring IPBlock " + o.name + ": " + block.error().message);
      return;
    }
    s_->engine_->OnBlockUpsert(*block);
  }
  NodeShard* s_;
};

class NodeShard::PodHandler final : public InformerHandler {
 public:
  explicit PodHandler(NodeShard* s) : s_(s) {}
  void OnAdded(const KubeObject& o) override { s_->PodChanged(o); }
  void OnModified(const KubeObject& o) override { s_->PodChanged(o); }
  void OnDeleted(const KubeObject& o) override { s_->PodGone(o); }
  void OnSynced() override {
    // After a (re)list the informer's cache is the whole truth; a relist after a resumed
    // watch's 410 delivers no deletion for pods that went meanwhile (its cache started
    // empty), so pods this shard still knows but the list lacks are gone.
    if (s_->pod_informer_) {
      std::map<std::string, std::string> listed;
      for (const auto& [key, object] : s_->pod_informer_->cache()) listed[key] = object.uid;
      s_->ForgetPodsNotIn(listed);
    }
    s_->PodsSynced();
  }
  void OnResourceVersion(std::string_view rv) override { s_->NoteProgress(Feed::kPods, rv); }

 private:
  NodeShard* s_;
};

NodeShard::NodeShard(uv_loop_t* loop, Allocator* allocator, Store* store, BlockEngine* engine,
                     KubeClient* client, const Clock* clock, NodeShardOptions options)
    : loop_(loop),
      allocator_(allocator),
      store_(store),
      engine_(engine),
      client_(client),
      clock_(clock),
      options_(std::move(options)),
      subnet_handler_(std::make_unique<SubnetHandler>(this)),
      block_handler_(std::make_unique<BlockHandler>(this)),
      pod_handler_(std::make_unique<PodHandler>(this)),
      pool_feed_(std::make_unique<IpPoolFeed>(allocator, [this] {
        // Pods waiting for a pool (missing, not Ready) may be served now.
        if (recovered_) ReconcileAllPods();
      })) {}

NodeShard::~NodeShard() = default;

InformerHandler* NodeShard::subnet_handler() { return subnet_handler_.get(); }
InformerHandler* NodeShard::block_handler() { return block_handler_.get(); }
InformerHandler* NodeShard::pod_handler() { return pod_handler_.get(); }
InformerHandler* NodeShard::ippool_handler() { return pool_feed_.get(); }

std::string NodeShard::ProgressKey(Feed feed) const {
  switch (feed) {
    case Feed::kSubnets:
      return "resume/subnets";
    case Feed::kBlocks:
      return "resume/ipblocks/node=" + options_.node;
    case Feed::kPods:
      return "resume/pods/node=" + options_.node;
  }
  return "";
}

std::string NodeShard::ResumeFrom(Feed feed) {
  auto stored = store_->GetSyncState(ProgressKey(feed));
  if (!stored) {
    LogWarn("reading the stored progress of " + ProgressKey(feed) + ": " + stored.error().message +
            " (listing instead)");
    return "";
  }
  if (!stored->has_value()) return "";
  // A resumed feed gets no OnSynced until it relists (sync/informer.h). What it
  // delivered before the restart is in the store (Subnets) or is read on demand
  // (IPBlocks: the engine lists a subnet's blocks before it picks in them), and the
  // watch replays every change since; so it counts as synced for readiness now. Pods
  // get one list at start (ListPodsOnce) for the leases whose pods went meanwhile.
  if (feed == Feed::kSubnets) subnets_synced_ = true;
  if (feed == Feed::kBlocks) blocks_synced_ = true;
  if (feed == Feed::kPods) pods_resumed_ = true;
  progress_[feed] = {**stored, false};
  return **stored;
}

void NodeShard::NoteProgress(Feed feed, std::string_view resource_version) {
  auto& [version, dirty] = progress_[feed];
  if (version == resource_version) return;
  version = std::string(resource_version);
  dirty = true;  // saved by the next Tick: at most once a second per feed
}

void NodeShard::SaveProgress() {
  for (auto& [feed, entry] : progress_) {
    auto& [version, dirty] = entry;
    if (!dirty) continue;
    if (auto r = store_->PutSyncState(ProgressKey(feed), version, clock_->NowMs()); !r) {
      LogWarn("saving the progress of " + ProgressKey(feed) + ": " + r.error().message);
      continue;
    }
    dirty = false;
  }
}

void NodeShard::Start() {
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<NodeShard*>(t->data)->Tick(); }, 1000, 1000);
  flush_timer_ = new uv_timer_t;
  uv_timer_init(loop_, flush_timer_);
  flush_timer_->data = this;
  // An allocation made ahead of time may be held for a short window (the engine's
  // ahead_write_window_ms); the engine asks for a Tick at its deadline.
  engine_timer_ = new uv_timer_t;
  uv_timer_init(loop_, engine_timer_);
  engine_timer_->data = this;
  engine_->SetWake([this](int64_t delay_ms) {
    if (engine_timer_ == nullptr) return;
    // (+2 ms: the loop's clock and the engine's are read at different moments; firing a
    // hair early would find nothing due and leave it to the 1 s tick.)
    delay_ms += 2;
    uint64_t due = uv_now(loop_) + static_cast<uint64_t>(delay_ms);
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(engine_timer_)) && engine_wake_at_ <= due) return;
    engine_wake_at_ = due;
    uv_timer_start(engine_timer_, [](uv_timer_t* t) { static_cast<NodeShard*>(t->data)->engine_->Tick(); },
                   static_cast<uint64_t>(delay_ms), 0);
  });
  // Before readiness: pending leases are settled from their blocks (read one by one),
  // so nothing is answered from a reservation whose write may not have landed.
  Recover();
  if (pods_resumed_) ListPodsOnce();
  ProbeIpPools();
}

void NodeShard::ProbeIpPools() {
  if (pool_probing_ || pool_feed_->synced()) return;
  pool_probing_ = true;
  ListOptions options;
  options.limit = 1;
  client_->List("/apis/kubeovn.io/v1/ippools", options, [this](KubeResult<KubeResponse> r) {
    pool_probing_ = false;
    if (!r && r.error().code == Code::kNotFound) pool_feed_->MarkResourceMissing();
  });
}

void NodeShard::Recover() {
  recovery_due_ = false;
  engine_->Recover([this](Result<void> r) {
    if (!r) {
      LogWarn("recovering pending leases: " + r.error().message + " (retrying)");
      recovery_due_ = true;
    }
    recovered_ = true;
    // Pods seen while their leases were pending were skipped: settle them now; and a
    // lease pending when the pod list was compared (skipped then) whose pod is gone.
    ReconcileAllPods();
    if (pods_synced_) ReleaseOrphans();
  });
}

void NodeShard::ListPodsOnce() {
  if (pods_listing_) return;
  pods_listing_ = true;
  ListOptions options;
  options.field_selector = "spec.nodeName=" + options_.node;
  client_->List("/api/v1/pods", options, [this](KubeResult<KubeResponse> r) {
    pods_listing_ = false;
    auto page = r ? ParseListPage(r->body) : Result<ListPage>(Fail(static_cast<Error>(r.error())));
    if (!page) {
      LogWarn("listing this node's pods: " + page.error().message + " (retrying)");
      return;  // pods_synced_ stays false: Tick lists again
    }
    if (pods_synced_) return;  // the informer relisted meanwhile: it knows better
    std::map<std::string, std::string> listed;
    for (const KubeObject& pod : page->items) {
      listed[pod.Key()] = pod.uid;
      PodChanged(pod);
    }
    ForgetPodsNotIn(listed);
    PodsSynced();
  });
}

void NodeShard::Close(std::function<void()> done) {
  SaveProgress();
  inflight_.clear();
  if (!timer_) {
    if (done) done();
    return;
  }
  uv_timer_stop(timer_);
  uv_timer_stop(flush_timer_);
  annotation_batch_.clear();  // (written again from the leases after a restart)
  patching_.clear();
  // The flush and engine timers close first; the tick timer's close callback runs `done`.
  uv_close(reinterpret_cast<uv_handle_t*>(flush_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  flush_timer_ = nullptr;
  engine_->SetWake(nullptr);
  CloseTimerThen(engine_timer_, nullptr);
  engine_timer_ = nullptr;
  CloseTimerThen(timer_, std::move(done));
  timer_ = nullptr;
}

bool NodeShard::Ready() const {
  return subnets_synced_ && blocks_synced_ && pods_synced_ && recovered_ && pool_feed_->synced();
}

// ---- Subnets ----

void NodeShard::UpsertSubnet(const KubeObject& object) {
  auto spec = DecodeSubnet(object.raw);
  if (!spec) {
    LogWarn("ignoring Subnet " + object.name + ": " + spec.error().message);
    return;
  }
  if (spec->provider.empty() || spec->provider == "ovn") return;  // not an attachment network
  auto subnet = NormalizeSubnet(*spec);
  if (!subnet) {
    LogWarn("Subnet " + object.name + " is invalid and allocates nothing: " + subnet.error().message);
    return;
  }
  const Subnet* same_provider = allocator_->FindSubnetByProvider(spec->provider);
  if (same_provider && same_provider->name != spec->name) {
    LogWarn("Subnet " + spec->name + " has provider " + spec->provider + ", already served by Subnet " +
            same_provider->name + "; it allocates nothing until one of them changes");
    return;
  }
  if (const Subnet* known = allocator_->FindSubnet(spec->name)) {
    // Block names and offsets follow from the block size. A cidrBlock or block-size
    // change that alters it would put later allocations in blocks that overlap the ones
    // this node's leases are in (and never see those): duplicates. Kube-OVN, too, lets a
    // CIDR change only a Subnet with no addresses in use.
    for (Family family : {Family::kV4, Family::kV6}) {
      std::optional<int> was = BlockEngine::BlockPrefixOf(*known, family);
      std::optional<int> now = BlockEngine::BlockPrefixOf(*subnet, family);
      if (was && now && *was != *now) {
        LogWarn("Subnet " + spec->name + " changed its " + (family == Family::kV4 ? "IPv4" : "IPv6") +
                " block size from /" + std::to_string(*was) + " to /" + std::to_string(*now) +
                " (cidrBlock or sublease.io/block-size); this node keeps allocating with the old definition. "
                "To change it, delete the Subnet once no pod uses it and create it anew");
        return;
      }
    }
  }
  if (auto r = store_->UpsertSubnet(*subnet, clock_->NowMs()); !r) {
    LogError("storing Subnet " + spec->name + ": " + r.error().message);
    return;
  }
  const bool is_new = allocator_->FindSubnet(spec->name) == nullptr;
  if (auto r = allocator_->UpsertSubnet(*subnet); !r) {
    LogError("Subnet " + spec->name + ": " + r.error().message);
    return;
  }
  // Dynamic picks from this node's blocks only (cluster mode). The allocator keeps the
  // mode and the blocks' locality across later upserts (every status write is one).
  if (auto r = is_new ? engine_->OnSubnetUpsert(spec->name) : Result<void>(Ok()); !r) {
    LogError("Subnet " + spec->name + ": " + r.error().message);
    return;
  }
  pool_feed_->Apply();  // its IPPools, resolved against the new definition
  // Pods that named its provider before the Subnet arrived (the two are often created
  // together, and the feeds deliver them in any order) get their addresses now.
  if (is_new && recovered_) ReconcileAllPods();
}

void NodeShard::RemoveSubnet(const KubeObject& object) {
  if (!allocator_->FindSubnet(object.name)) return;
  if (auto r = allocator_->RemoveSubnet(object.name); !r) {
    LogWarn("Subnet " + object.name + " was deleted but this node still holds leases in it; they stay "
            "until their pods are gone: " + r.error().message);
    return;
  }
  if (auto r = store_->DeleteSubnet(object.name); !r && r.error().code != Code::kNotFound) {
    LogWarn("removing Subnet " + object.name + " from the database: " + r.error().message);
  }
  pool_feed_->Apply();
}

// ---- Pods ----

void NodeShard::PodChanged(const KubeObject& object) {
  if (auto ahead = read_ahead_.find(object.Key()); ahead != read_ahead_.end()) {
    if (!object.uid.empty() && object.uid != ahead->second) {
      LogDebug("pod " + object.Key() + ": an event of UID " + object.uid + ", older than UID " +
               ahead->second + " read ahead of the feed; not taken");
      return;
    }
    read_ahead_.erase(ahead);  // the feed has caught up with the read
  }
  if (std::optional<std::string> pod_key = StorePod(object)) ReconcilePod(*pod_key);
}

std::optional<std::string> NodeShard::StorePod(const KubeObject& object) {
  auto pod = ParsePod(object);
  if (!pod) {
    LogWarn("ignoring pod " + object.Key() + ": " + pod.error().message);
    return std::nullopt;
  }
  if (!options_.node.empty() && !pod->node_name.empty() && pod->node_name != options_.node) return std::nullopt;
  std::string pod_key = pod->Key();
  // A pod (again) present: no release is due for its leases.
  for (auto it = release_due_ms_.begin(); it != release_due_ms_.end();) {
    it = it->first.owner == "pod:" + pod_key ? release_due_ms_.erase(it) : std::next(it);
  }
  pods_[pod_key] = std::move(*pod);
  return pod_key;
}

// Allocates ahead of time what the pod asks for and has no lease for yet, and writes
// back the annotations of committed leases it does not show yet.
void NodeShard::ReconcileAllPods() {
  std::vector<std::string> keys;  // (ReconcilePod may change pods_)
  for (const auto& [key, pod] : pods_) keys.push_back(key);
  for (const auto& key : keys) ReconcilePod(key);
}

void NodeShard::ReconcilePod(const std::string& pod_key) {
  auto found = pods_.find(pod_key);
  if (found == pods_.end()) return;
  const PodInfo& stored = found->second;
  if (stored.deleting || stored.finished) return;
  auto networks = stored.annotations.find(std::string(kNetworksAnnotation));
  if (networks == stored.annotations.end()) return;
  auto selections = ParseNetworksAnnotation(networks->second, stored.namespace_name);
  if (!selections) {
    LogWarn("pod " + pod_key + ": " + selections.error().message);
    return;
  }
  auto attachments = AttachmentsOf(stored, *selections);
  if (!attachments) {
    LogWarn("pod " + pod_key + ": " + attachments.error().message);
    return;
  }
  for (const auto& att : *attachments) {
    const Subnet* subnet = allocator_->FindSubnetByProvider(att.provider);
    if (!subnet) continue;  // not an attachment sublease serves
    Owner owner{stored.namespace_name, stored.name, stored.uid, "", att.ifname};
    AttachmentKey key = AttachmentKey::For(subnet->name, owner);
    if (inflight_.count(key)) continue;
    // An IPAMClaim's address is decided at the CNI ADD, which says whether the network
    // config allows persistent IPs (the daemon does not read NetworkAttachmentDefinitions).
    if (!att.ipam_claim.empty() && !allocator_->Find(key)) continue;
    AllocateRequest request;
    request.subnet = subnet->name;
    request.owner = owner;
    request.provider = att.provider;
    ApplyAttachment(stored, att, &request);
    WarnIfMacIgnored(stored, att);
    if (options_.keep_vm_ips && !stored.virtual_machine.empty()) {
      request.virtual_machine = stored.namespace_name + "/" + stored.virtual_machine;
    }
    if (std::optional<Lease> lease = allocator_->Find(key)) {
      if (lease->state != LeaseState::kCommitted) continue;
      if (!stored.uid.empty() && lease->owner.pod_uid != stored.uid) {
        // The pod was re-created under the same name (a StatefulSet member, or a pod
        // whose lease had not been released yet).
        FollowLease(*lease, std::move(request), "", {}, nullptr);
        continue;
      }
      if (!IsAllocated(stored, att.provider, att.per_interface ? att.ifname : "") &&
          !AnnotationsWritten(*lease)) {
        WriteAnnotations(*lease);
      }
      continue;
    }
    ++stats_.ahead_of_time;
    request.unhurried = true;  // no CNI ADD waits yet: its write may share another's
    AllocateFor(std::move(request), {}, nullptr);
  }
}

// Reads spec.replicas and metadata.uid of a StatefulSet object.
static bool ParseStatefulSet(const std::string& json, int64_t* replicas, std::string* uid) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json).get(doc)) return false;
  std::string_view u;
  if (!doc["metadata"]["uid"].get(u)) *uid = std::string(u);
  int64_t r = 1;  // Kubernetes defaults spec.replicas to 1
  if (doc["spec"]["replicas"].get(r)) r = 1;
  *replicas = r;
  return true;
}

void NodeShard::PodGone(const KubeObject& object) {
  std::string pod_key = object.Key();
  if (auto ahead = read_ahead_.find(pod_key); ahead != read_ahead_.end() && ahead->second == object.uid) {
    read_ahead_.erase(ahead);
  }
  auto known = pods_.find(pod_key);
  // The deletion of an earlier pod of this name can arrive after this node read the
  // newer one (an ADD that outran the watch): the newer pod stays, and settles the
  // leases it attaches too (FollowLease keeps or replaces them); the rest go.
  const bool newer_known = known != pods_.end() && !object.uid.empty() && !known->second.uid.empty() &&
                           known->second.uid != object.uid;
  std::set<AttachmentKey> taken_over;
  PodInfo pod;
  if (newer_known) {
    taken_over = WantedKeys(known->second);
    if (auto parsed = ParsePod(object)) pod = *parsed;
  } else if (known != pods_.end()) {
    pod = known->second;
    pods_.erase(known);
    retry_backoff_ms_.erase(pod_key);
  } else if (auto parsed = ParsePod(object)) {
    pod = *parsed;
  }
  std::vector<Lease> leases;
  allocator_->ForEachLease([&](const Lease& l) {
    if (l.owner.pod_namespace != object.namespace_name || l.owner.pod_name != object.name) return;
    if (!l.owner.pod_uid.empty() && !object.uid.empty() && l.owner.pod_uid != object.uid) return;
    leases.push_back(l);
  });
  for (const auto& lease : leases) {
    AttachmentKey key = lease.key();
    if (taken_over.count(key)) continue;
    if (!lease.sticky) {
      ScheduleRelease(key, del_received_.count(key) ? 0 : options_.release_grace_ms);
      continue;
    }
    // A StatefulSet pod keeps its address while its StatefulSet still wants this ordinal.
    if (pod.stateful_set.empty() || !pod.ordinal) {
      ScheduleRelease(key, options_.release_grace_ms);
      continue;
    }
    CheckStatefulSet(key, pod.namespace_name, pod.stateful_set, pod.stateful_set_uid, *pod.ordinal);
  }
}

void NodeShard::CheckStatefulSet(const AttachmentKey& key, const std::string& pod_namespace,
                                 const std::string& stateful_set, const std::string& stateful_set_uid,
                                 uint32_t ordinal) {
  std::string path = "/apis/apps/v1/namespaces/" + pod_namespace + "/statefulsets/" + stateful_set;
  client_->Get(path, [this, key, stateful_set_uid, ordinal](KubeResult<KubeResponse> r) {
    int64_t replicas = 0;
    std::string uid;
    bool gone = !r && r.error().code == Code::kNotFound;
    bool wants = r && ParseStatefulSet(r->body, &replicas, &uid) &&
                 (stateful_set_uid.empty() || uid == stateful_set_uid) &&
                 static_cast<int64_t>(ordinal) < replicas;
    if (gone || (r && !wants)) {
      ScheduleRelease(key, 0);  // deleted, re-created (new UID) or scaled below the ordinal
    } else if (!r) {
      ScheduleRelease(key, options_.release_grace_ms);  // cannot tell now: look again later
    }
  });
}

// "web-2" -> {"web", 2}: a StatefulSet pod's name is its StatefulSet's plus "-<ordinal>".
static std::optional<std::pair<std::string, uint32_t>> SplitOrdinal(const std::string& pod_name) {
  size_t dash = pod_name.rfind('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 == pod_name.size() || pod_name.size() - dash > 10) {
    return std::nullopt;
  }
  uint32_t ordinal = 0;
  for (size_t i = dash + 1; i < pod_name.size(); ++i) {
    if (pod_name[i] < '0' || pod_name[i] > '9') return std::nullopt;
    ordinal = ordinal * 10 + static_cast<uint32_t>(pod_name[i] - '0');
  }
  return std::make_pair(pod_name.substr(0, dash), ordinal);
}

// What PodGone needs of a pod that is gone: its name and the UID it had.
static KubeObject GonePod(const PodInfo& pod, const std::string& uid) {
  KubeObject object;
  object.name = pod.name;
  object.namespace_name = pod.namespace_name;
  object.uid = uid;
  return object;
}

void NodeShard::ForgetPodsNotIn(const std::map<std::string, std::string>& listed) {
  std::vector<std::string> reread;
  for (const auto& [key, uid] : read_ahead_) {
    auto it = listed.find(key);
    if (it == listed.end() || it->second != uid) reread.push_back(key);
  }
  std::vector<KubeObject> gone;
  for (const auto& [key, pod] : pods_) {
    if (listed.count(key) || read_ahead_.count(key)) continue;
    gone.push_back(GonePod(pod, pod.uid));
  }
  for (const auto& object : gone) PodGone(object);
  for (const std::string& key : reread) RereadPod(key);
}

void NodeShard::RereadPod(const std::string& pod_key) {
  auto read = read_ahead_.find(pod_key);
  auto pod = pods_.find(pod_key);
  if (read == read_ahead_.end()) {
    reread_due_.erase(pod_key);  // the feed settled it
    return;
  }
  if (pod == pods_.end()) {
    read_ahead_.erase(read);  // nothing of it left to protect
    reread_due_.erase(pod_key);
    return;
  }
  const std::string uid = read->second;
  if (!rereading_.insert(pod_key).second) return;
  reread_due_.erase(pod_key);
  ++stats_.pod_reads;
  client_->Get("/api/v1/namespaces/" + pod->second.namespace_name + "/pods/" + pod->second.name,
               [this, pod_key, uid](KubeResult<KubeResponse> r) {
    rereading_.erase(pod_key);
    auto ahead = read_ahead_.find(pod_key);
    if (ahead == read_ahead_.end() || ahead->second != uid) return;  // settled meanwhile
    std::optional<KubeObject> object;
    if (r) {
      if (auto parsed = ParseKubeObject(r->body)) object = std::move(*parsed);
    }
    if ((!r && r.error().code != Code::kNotFound) || (r && !object)) {
      // Cannot tell now (the list is all the feed will say of it): read again next Tick.
      LogWarn("reading pod " + pod_key + " again after a list: " +
              (r ? std::string("unreadable answer") : r.error().message) + " (retrying)");
      reread_due_.insert(pod_key);
      return;
    }
    read_ahead_.erase(ahead);
    auto known = pods_.find(pod_key);
    if (known != pods_.end() && (!object || object->uid != uid)) {
      PodGone(GonePod(known->second, uid));  // the pod read ahead is gone
    }
    if (object) {
      if (std::optional<std::string> stored = StorePod(*object)) {
        read_ahead_[*stored] = object->uid;  // ahead of the feed again, perhaps
        ReconcilePod(*stored);
      }
    }
  });
}

void NodeShard::PodsSynced() {
  pods_synced_ = true;
  ReleaseOrphans();
  TendQuarantine();
}

// Spares a rebuild quarantined (rebuild.h): one may be in use by a pod that was on this
// node when the database was lost. The first complete view of the node's pods names
// every such pod (they existed before); once all of them are gone, nothing can use one.
void NodeShard::TendQuarantine() {
  if (engine_->quarantined_spares() == 0 || !pods_synced_) return;
  auto noted = store_->GetSyncState(std::string(kQuarantinePodsKey));
  if (!noted) return;  // the store failed: next Tick
  const int64_t now = clock_->NowMs();
  constexpr std::string_view kHeader = "pods\n";
  if (!*noted || (*noted)->rfind(kHeader, 0) != 0) {
    std::string uids(kHeader);
    for (const auto& [key, pod] : pods_) uids += pod.uid + "\n";
    if (store_->PutSyncState(std::string(kQuarantinePodsKey), uids, now)) {
      LogInfo("the quarantined spares of this node wait for its " + std::to_string(pods_.size()) +
              " pod(s) of now to be gone");
    }
    return;
  }
  std::set<std::string> live;
  for (const auto& [key, pod] : pods_) live.insert(pod.uid);
  std::istringstream lines((*noted)->substr(kHeader.size()));
  for (std::string uid; std::getline(lines, uid);) {
    if (!uid.empty() && live.count(uid)) return;  // still there
  }
  if (!store_->PutSyncState(std::string(kQuarantinedSparesKey), "", now) ||
      !store_->PutSyncState(std::string(kQuarantinePodsKey), "", now)) {
    return;  // next Tick
  }
  LogInfo("the pods that were on this node when its database was rebuilt are gone: its " +
          std::to_string(engine_->quarantined_spares()) + " quarantined spare(s) are usable again");
  engine_->LiftQuarantine();
}

void NodeShard::ReleaseOrphans() {
  // Leases whose pod vanished while the daemon was not watching (pods_ is complete now).
  std::vector<Lease> orphans;
  allocator_->ForEachLease([&](const Lease& l) {
    if (l.owner.pod_name.empty() || l.state != LeaseState::kCommitted) return;
    if (!pods_.count(l.owner.pod_namespace + "/" + l.owner.pod_name)) orphans.push_back(l);
  });
  for (const Lease& lease : orphans) {
    AttachmentKey key = lease.key();
    if (release_due_ms_.count(key)) continue;
    auto sts = lease.sticky ? SplitOrdinal(lease.owner.pod_name) : std::nullopt;
    if (!sts) {
      ScheduleRelease(key, options_.release_grace_ms);
      continue;
    }
    // A StatefulSet member's lease waits for its pod while the StatefulSet wants it.
    // (The StatefulSet's UID is not in the lease: a re-created StatefulSet of the same
    // name keeps it; the cluster's reconciler settles that case.)
    CheckStatefulSet(key, lease.owner.pod_namespace, sts->first, "", sts->second);
  }
}

// ---- Allocation ----

void NodeShard::AllocateFor(AllocateRequest request, std::vector<WireRoute> routes, ReplyCallback done) {
  AttachmentKey key = AttachmentKey::For(request.subnet, request.owner);
  Inflight& entry = inflight_[key];
  // (Whose it is: a CNI ADD of another pod of this name must not join it, JoinInflight.)
  entry.pod_uid = request.owner.pod_uid;
  if (done) entry.waiters.push_back(std::move(done));
  entry.routes = std::move(routes);
  AllocateAnew(key, std::move(request));
}

void NodeShard::AllocateAnew(const AttachmentKey& key, AllocateRequest request) {
  if (options_.reserved_ips && request.ipam_claim.empty() && request.reserved_ip.empty()) {
    return ReadReservationThen(key, std::move(request));
  }
  AllocateResolved(key, std::move(request));
}

void NodeShard::AllocateResolved(const AttachmentKey& key, AllocateRequest request) {
  if (!request.named_pool.empty()) return AllocateFromNamedPool(key, std::move(request), false);
  EngineAllocate(key, std::move(request));
}

void NodeShard::EngineAllocate(const AttachmentKey& key, AllocateRequest request) {
  // A CNI ADD that joined while an IPPool or reservation was read: someone waits now.
  auto entry = inflight_.find(key);
  if (request.unhurried && entry != inflight_.end() && !entry->second.waiters.empty())
    request.unhurried = false;
  engine_->Allocate(request, [this, key](Result<Lease> lease) { OnAllocated(key, lease); });
}

void NodeShard::AllocateFromNamedPool(const AttachmentKey& key, AllocateRequest request,
                                      bool pool_was_read) {
  const std::string name = request.named_pool;
  const ResolvedPool* pool = pool_feed_->Find(name);
  if (pool == nullptr) {
    if (pool_was_read) {
      return OnAllocated(
          key, Fail(Error::Internal("IPPool " + name + " was read but is still not known here")));
    }
    // The watch may not have delivered it yet (created just before the pod): read it.
    // Never fall back to a dynamic address for a pod that asked for a pool.
    ++stats_.pool_reads;
    client_->Get("/apis/kubeovn.io/v1/ippools/" + name, [this, key, name,
                                                         request = std::move(request)](
                                                            KubeResult<KubeResponse> r) mutable {
      if (!inflight_.count(key)) return;  // closed meanwhile
      if (!r && r.error().code == Code::kNotFound) {
        // (kInvalidArgument: the pod's annotation is what is wrong, and it gets an Event.)
        std::string why = "IPPool " + name + " (ip_pool annotation) does not exist; create a " +
                          "kubeovn.io/v1 IPPool " + name + " with spec.subnet: " + request.subnet +
                          ", or correct the annotation; nothing was allocated";
        return OnAllocated(key, Fail(Error::InvalidArgument(why)));
      }
      auto object =
          r ? ParseKubeObject(r->body) : Result<KubeObject>(Fail(static_cast<Error>(r.error())));
      if (!object) {
        return OnAllocated(key, Fail(Error::Unavailable("reading IPPool " + name + ": " +
                                                        object.error().message + "; try again")));
      }
      pool_feed_->Upsert(*object);
      AllocateFromNamedPool(key, std::move(request), true);
    });
    return;
  }
  if (pool->spec.subnet != request.subnet) {
    return OnAllocated(
        key, Fail(Error::InvalidArgument(
                 "IPPool " + name + " belongs to Subnet " + pool->spec.subnet +
                 ", but this attachment (provider " + request.provider + ") is served by Subnet " +
                 request.subnet + "; name a pool of Subnet " + request.subnet +
                 " in the ip_pool annotation; nothing was allocated")));
  }
  if (!pool->ready) {
    return OnAllocated(
        key, Fail(Error::InvalidArgument("IPPool " + name + " is not Ready: " + pool->message)));
  }
  EngineAllocate(key, std::move(request));
}

void NodeShard::OnAllocated(const AttachmentKey& key, const Result<Lease>& lease) {
  auto it = inflight_.find(key);
  if (it == inflight_.end()) return;  // closed meanwhile
  Inflight entry = std::move(it->second);
  inflight_.erase(it);
  const Subnet* subnet = allocator_->FindSubnet(key.subnet);
  for (auto& waiter : entry.waiters) {
    if (!lease) {
      waiter(Fail(lease.error()));
    } else if (!subnet) {
      waiter(Fail(Error::NotFound("Subnet " + key.subnet + " was deleted")));
    } else {
      waiter(MakeCniReply(*subnet, *lease, RoutesFor(*lease, entry.routes)));
    }
  }
  if (!lease) {
    LogWarn("allocation for " + key.ToString() + " failed: " + lease.error().message);
    constexpr std::string_view kPodPrefix = "pod:";
    if (key.owner.rfind(kPodPrefix, 0) == 0) {
      std::string pod_key = key.owner.substr(kPodPrefix.size());
      if (auto pod = pods_.find(pod_key); pod != pods_.end()) {
        if (options_.allocation_failed) options_.allocation_failed(pod->second, lease.error());
        // Try again later: the API server may be back, or an address freed. A request
        // that is wrong in itself waits for the pod to change instead.
        if (lease.error().code != Code::kInvalidArgument && lease.error().code != Code::kNotFound) {
          // Doubling while it keeps failing (a full subnet, the API server down): each try
          // costs API requests and an Event. The pod's CNI ADD does not wait for it.
          retry_pods_due_ms_[pod_key] = clock_->NowMs() + NextRetryWait(&retry_backoff_ms_, pod_key);
        }
      }
    }
    return;
  }
  const std::string pod_key = lease->owner.pod_namespace + "/" + lease->owner.pod_name;
  retry_backoff_ms_.erase(pod_key);
  if (!pods_.count(pod_key)) {
    // The pod went away while its allocation was in flight (or its ADD came after its
    // deletion, or the pod list is still being read after a restart — a lease still
    // pending then is skipped by the orphan check): release it, but only once the API
    // server confirms the pod is gone, since a brand-new pod may simply not have reached
    // this node's watch yet.
    ReleaseIfPodGone(*lease);
    return;
  }
  Lease committed = *lease;
  if (!entry.container_id.empty() && committed.owner.container_id != entry.container_id) {
    // A CNI ADD joined an allocation made ahead of time (which had no sandbox yet): the
    // lease learns its container now, the block allocation with the block's next write
    // (as for a re-created sandbox).
    if (auto r = RecordHolder(key, "", entry.container_id); r) {
      committed.owner.container_id = entry.container_id;
      UpdateBlockHolder(key);
    } else {
      LogWarn("recording container " + entry.container_id + " of " + key.ToString() + ": " +
              r.error().message + " (the next CNI ADD records it)");
    }
  }
  WriteAnnotations(committed);
  MirrorIpObject(committed);
}

void NodeShard::MirrorIpObject(const Lease& lease) {
  if (options_.ip_objects == nullptr) return;
  auto pod = pods_.find(lease.owner.pod_namespace + "/" + lease.owner.pod_name);
  if (pod == pods_.end()) return;
  const Subnet* subnet = allocator_->FindSubnet(lease.subnet);
  const std::string provider = !lease.provider.empty() ? lease.provider
                               : subnet                ? subnet->provider
                                                       : "";
  IpObject o;
  o.name = IpObjectNameFor(pod->second, provider, lease.owner.ifname);
  o.pod_name = lease.owner.pod_name;
  o.namespace_name = lease.owner.pod_namespace;
  o.subnet = lease.subnet;
  o.node = options_.node;
  o.v4 = lease.v4 ? lease.v4->ToString() : "";
  o.v6 = lease.v6 ? lease.v6->ToString() : "";
  o.mac = lease.mac;
  o.pod_type = pod->second.IsStatefulSetMember() ? "StatefulSet" : "";
  ip_object_names_[lease.key()] = o.name;
  options_.ip_objects->Put(std::move(o));
}

std::string NodeShard::IpObjectNameFor(const PodInfo& pod, const std::string& provider,
                                       const std::string& ifname) {
  bool per_interface = false;
  for (const auto& a : AttachmentsWanted(pod)) {
    if (a.provider == provider && a.ifname == ifname) per_interface = a.per_interface;
  }
  return IpObjectName(pod.name, pod.namespace_name, provider, per_interface ? ifname : "");
}

void NodeShard::ForgetIpObject(const Lease& lease) {
  if (options_.ip_objects == nullptr) return;
  auto it = ip_object_names_.find(lease.key());
  // (After a restart the name is not remembered: Kube-OVN's flat name.)
  std::string name = it != ip_object_names_.end()
                         ? it->second
                         : IpObjectName(lease.owner.pod_name, lease.owner.pod_namespace,
                                        !lease.provider.empty() ? lease.provider
                                        : allocator_->FindSubnet(lease.subnet)
                                            ? allocator_->FindSubnet(lease.subnet)->provider
                                            : "",
                                        "");
  if (it != ip_object_names_.end()) ip_object_names_.erase(it);
  options_.ip_objects->Remove(name);
}

void NodeShard::ReleaseIfPodGone(const Lease& lease) {
  AttachmentKey key = lease.key();
  std::string pod_uid = lease.owner.pod_uid;
  std::string pod_key = lease.owner.pod_namespace + "/" + lease.owner.pod_name;
  std::string path = "/api/v1/namespaces/" + lease.owner.pod_namespace + "/pods/" + lease.owner.pod_name;
  client_->Get(path, [this, key, pod_uid, pod_key](KubeResult<KubeResponse> r) {
    if (r) {
      // The pod exists: keep the lease unless it is a different pod under the same name
      // that this lease was not made for (then the lease's pod is gone).
      auto pod = ParseKubeObject(r->body);
      if (!pod || pod_uid.empty() || pod->uid == pod_uid) return;
    } else if (r.error().code != Code::kNotFound) {
      ScheduleRelease(key, options_.release_grace_ms);  // cannot tell now; the pod watch may settle it
      return;
    }
    if (pods_.count(pod_key)) return;  // it arrived meanwhile
    ScheduleRelease(key, 0);
  });
}

void NodeShard::WriteAnnotations(const Lease& lease) {
  auto pod = pods_.find(lease.owner.pod_namespace + "/" + lease.owner.pod_name);
  const Subnet* subnet = allocator_->FindSubnet(lease.subnet);
  if (pod == pods_.end() || !subnet) return;
  // One write per attachment at a time: the pod's MODIFIED events that arrive while it
  // is in flight do not show it yet and must not send it again.
  if (!annotating_.insert(lease.key()).second) return;
  bool per_interface = false;
  if (auto n = pod->second.annotations.find(std::string(kNetworksAnnotation)); n != pod->second.annotations.end()) {
    if (auto sel = ParseNetworksAnnotation(n->second, pod->second.namespace_name)) {
      if (auto atts = AttachmentsOf(pod->second, *sel)) {
        for (const auto& a : *atts) {
          if (a.provider == lease.provider && a.ifname == lease.owner.ifname) per_interface = a.per_interface;
        }
      }
    }
  }
  AllocatedAnnotations a;
  a.provider = lease.provider.empty() ? subnet->provider : lease.provider;
  a.ifname = per_interface ? lease.owner.ifname : "";
  std::string addrs, gws;
  for (const auto& address : lease.addresses()) {
    const SubnetFamily* fam = subnet->family(address.family());
    if (!addrs.empty()) addrs += ',';
    addrs += address.ToString();
    if (fam && fam->gateway) {
      if (!gws.empty()) gws += ',';
      gws += fam->gateway->ToString();
    }
  }
  a.addresses = addrs;
  a.cidr = CidrText(*subnet);  // Kube-OVN writes the subnet's whole cidrBlock
  a.gateway = gws;
  a.mac = lease.mac;
  if (options_.keep_vm_ips) a.virtual_machine = pod->second.virtual_machine;
  // The batch is per pod object: the path, and the UID the patch is conditional on.
  PodTarget target{"/api/v1/namespaces/" + lease.owner.pod_namespace + "/pods/" + lease.owner.pod_name,
                   lease.owner.pod_uid};
  annotation_batch_[target].emplace_back(lease.key(), std::move(a));
  ArmAnnotationFlush();
}

std::string NodeShard::AnnotationsWrittenFor(const Lease& lease) {
  std::string id = lease.owner.pod_uid;
  for (const IpAddr& a : lease.addresses()) id += " " + a.ToString();
  return id;
}

bool NodeShard::AnnotationsWritten(const Lease& lease) const {
  // A watch event older than our patch (a real server delivers late; the kubelet's
  // status writes before it show no annotations) must not send the patch again.
  auto it = annotated_.find(lease.key());
  return it != annotated_.end() && it->second == AnnotationsWrittenFor(lease);
}

void NodeShard::ArmAnnotationFlush() {
  if (flush_timer_ == nullptr) return FlushAnnotations();  // not started, or closing
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(flush_timer_))) return;
  // Runs at the start of the next loop turn, after every callback of this one: the
  // allocations a block write (or a List) completed together leave in one patch per pod.
  uv_timer_start(flush_timer_, [](uv_timer_t* t) { static_cast<NodeShard*>(t->data)->FlushAnnotations(); },
                 0, 0);
}

// One merge patch per pod, at most one in flight per pod (like the blocks' group commit):
// writes for a pod being patched wait for that patch's answer and leave together.
void NodeShard::FlushAnnotations() {
  std::map<PodTarget, std::vector<std::pair<AttachmentKey, AllocatedAnnotations>>> batch;
  for (auto it = annotation_batch_.begin(); it != annotation_batch_.end();) {
    if (patching_.count(it->first)) {
      ++it;
      continue;
    }
    batch.insert(annotation_batch_.extract(it++));
  }
  for (auto& [target, writes] : batch) {
    patching_.insert(target);
    std::vector<AttachmentKey> keys;
    std::vector<AllocatedAnnotations> annotations;
    for (auto& [key, a] : writes) {
      keys.push_back(key);
      annotations.push_back(std::move(a));
    }
    ++stats_.annotation_patches;
    // Conditional on the pod's UID: a pod re-created under the name meanwhile (another
    // lease, perhaps another address) answers 409 instead of taking these annotations.
    client_->MergePatch(target.first, AllocatedAnnotationsPatch(annotations, target.second),
                        [this, target = target, keys = std::move(keys)](KubeResult<KubeResponse> r) {
                          // (The keys of one batch belong to one pod: same namespace and name.)
                          patching_.erase(target);
                          if (annotation_batch_.count(target)) ArmAnnotationFlush();
                          for (const AttachmentKey& key : keys) {
                            annotating_.erase(key);
                            if (r) {
                              ++stats_.annotations_written;
                              annotations_due_.erase(key);
                              annotation_waits_.erase(key);
                              if (std::optional<Lease> lease = allocator_->Find(key)) {
                                annotated_[key] = AnnotationsWrittenFor(*lease);
                              }
                            } else if (r.error().code == Code::kNotFound ||
                                       r.error().code == Code::kConflict) {
                              annotations_due_.erase(key);  // the pod is gone, or another now
                              annotation_waits_.erase(key);
                            } else {
                              annotations_due_[key] =
                                  clock_->NowMs() + NextRetryWait(&annotation_waits_, key, kQuickRetryMs);
                            }
                          }
                          if (!r && r.error().code == Code::kConflict) {
                            // Another pod has the name now: it gets its own annotations (its
                            // writes were turned away while this patch was in flight).
                            const std::string& owner = keys.front().owner;  // "pod:<ns>/<name>"
                            if (owner.rfind("pod:", 0) == 0) ReconcilePod(owner.substr(4));
                          }
                          if (!r && r.error().code != Code::kNotFound && r.error().code != Code::kConflict) {
                            LogWarn("writing annotations for " + keys.front().ToString() +
                                    (keys.size() > 1 ? " and " + std::to_string(keys.size() - 1) + " more" : "") +
                                    ": " + r.error().message + " (will retry in " +
                                    std::to_string(annotation_waits_[keys.front()]) + " ms)");
                          }
                        });
  }
}

std::vector<WireRoute> NodeShard::RoutesFor(const Lease& lease, const std::vector<WireRoute>& nad_routes) const {
  std::vector<WireRoute> routes = nad_routes;
  auto pod = pods_.find(lease.owner.pod_namespace + "/" + lease.owner.pod_name);
  if (pod == pods_.end()) return routes;
  auto n = pod->second.annotations.find(std::string(kNetworksAnnotation));
  if (n == pod->second.annotations.end()) return routes;
  auto sel = ParseNetworksAnnotation(n->second, pod->second.namespace_name);
  if (!sel) return routes;
  auto atts = AttachmentsOf(pod->second, *sel);
  if (!atts) return routes;
  for (const auto& a : *atts) {
    if (a.provider != lease.provider || a.ifname != lease.owner.ifname) continue;
    routes.insert(routes.end(), a.routes.begin(), a.routes.end());
    if (a.default_route) routes.push_back({"", ""});
    // Multus' own `default-route` gateways are installed by Multus after the plugin
    // returns; returning them here too would make its route add fail.
  }
  return routes;
}

void NodeShard::ApplyAttachment(const PodInfo& pod, const AttachmentRequest& a, AllocateRequest* request) {
  // Precedence (DESIGN §1.3): ip_address annotation → Multus ips → ip_pool → dynamic.
  if (!a.static_ips.empty()) request->static_ips = a.static_ips;
  request->pool = a.pool;
  if (IsPoolName(a.pool)) {
    // A single token that is not an address names a kubeovn.io/v1 IPPool.
    request->named_pool = std::string(TrimSpace(a.pool));
    request->pool.clear();
  }
  request->ordinal = a.ordinal;
  request->family = a.family;
  request->sticky = a.sticky;
  request->written_back = !a.static_ips.empty() && IsAllocated(pod, a.provider, a.per_interface ? a.ifname : "");
  if (!a.mac.empty()) request->mac = a.mac;
  if (pod.IsStatefulSetMember()) {
    request->sticky = true;
    request->ordinal = pod.ordinal;
    request->owner_uid = pod.stateful_set_uid;
  }
}

void NodeShard::WarnIfMacIgnored(const PodInfo& pod, const AttachmentRequest& a) const {
  if (a.mac_annotation.empty() || !options_.pod_warning) return;
  constexpr size_t kMaxRemembered = 4096;  // a repeat after a clear is one more Event count
  if (mac_warned_.size() >= kMaxRemembered) mac_warned_.clear();
  if (!mac_warned_.insert(pod.uid + "/" + a.provider + "/" + a.ifname).second) return;
  std::string message = "annotation " + a.mac_annotation + " asks for MAC " + a.mac +
                        ", which sublease cannot set: an IPAM plugin has no say in the "
                        "interface's MAC address (in Kube-OVN the annotation works because "
                        "Kube-OVN is the main plugin too). Set it through Multus instead: "
                        "\"mac\" in the k8s.v1.cni.cncf.io/networks selection with "
                        "\"capabilities\": {\"mac\": true} in the network config, or the "
                        "tuning plugin chained after the main plugin";
  LogWarn("pod " + pod.namespace_name + "/" + pod.name + ": " + message);
  options_.pod_warning(pod, kReasonMacAddressIgnored, message);
}

std::vector<AttachmentRequest> NodeShard::AttachmentsWanted(const PodInfo& pod) {
  auto n = pod.annotations.find(std::string(kNetworksAnnotation));
  if (n == pod.annotations.end()) return {};
  auto selections = ParseNetworksAnnotation(n->second, pod.namespace_name);
  if (!selections) return {};
  auto attachments = AttachmentsOf(pod, *selections);
  return attachments ? *attachments : std::vector<AttachmentRequest>{};
}

std::set<AttachmentKey> NodeShard::WantedKeys(const PodInfo& pod) const {
  std::set<AttachmentKey> keys;
  for (const auto& a : AttachmentsWanted(pod)) {
    if (const Subnet* subnet = allocator_->FindSubnetByProvider(a.provider)) {
      keys.insert(AttachmentKey::For(subnet->name, Owner{pod.namespace_name, pod.name, pod.uid, "", a.ifname}));
    }
  }
  return keys;
}

AllocateRequest NodeShard::RequestFor(const Subnet& subnet, const CniRequest& cni, const PodInfo& pod) const {
  AllocateRequest request;
  request.subnet = subnet.name;
  request.owner = Owner{cni.pod_namespace, cni.pod_name, cni.pod_uid, cni.container_id, cni.ifname};
  request.static_ips = cni.ips;  // Multus `ips` (runtimeConfig) unless the pod says more
  request.mac = cni.mac;
  request.provider = cni.provider;
  if (request.owner.pod_uid.empty()) request.owner.pod_uid = pod.uid;
  bool applied = false;
  for (const auto& a : AttachmentsWanted(pod)) {
    if (a.provider != cni.provider || a.ifname != cni.ifname) continue;
    ApplyAttachment(pod, a, &request);
    WarnIfMacIgnored(pod, a);
    applied = true;
  }
  if (!applied && pod.IsStatefulSetMember()) {
    request.sticky = true;
    request.ordinal = pod.ordinal;
    request.owner_uid = pod.stateful_set_uid;
  }
  if (options_.keep_vm_ips && !pod.virtual_machine.empty()) {
    request.virtual_machine = pod.namespace_name + "/" + pod.virtual_machine;
  }
  return request;
}

// Whether `lease`, made for an earlier pod of the same name, is what `want` (the new
// pod's request) would be given anyway: then the lease follows the name, else it is
// released and the new pod allocated for.
bool NodeShard::LeaseSatisfies(const Lease& lease, const AllocateRequest& want) const {
  if (lease.sticky != want.sticky) return false;
  std::vector<IpAddr> have = lease.addresses();
  for (const IpAddr& a : have) {
    if (want.family && a.family() != *want.family) return false;
  }
  auto held = [&](const IpAddr& a) { return std::find(have.begin(), have.end(), a) != have.end(); };
  if (!want.static_ips.empty()) {
    if (want.static_ips.size() != have.size()) return false;
    for (const std::string& text : want.static_ips) {
      auto a = IpAddr::Parse(std::string_view(text).substr(0, text.find('/')));
      if (!a || !held(*a)) return false;
    }
    return true;
  }
  if (!want.named_pool.empty()) {
    // Each held address of a family the pool has is one of the pool's.
    const ResolvedPool* pool = pool_feed_->Find(want.named_pool);
    if (pool == nullptr || !pool->ready) return false;
    bool any = false;
    for (const IpAddr& a : have) {
      if (pool->usable.of(a.family()).empty()) continue;
      if (!allocator_->NamedPoolContains(lease.subnet, want.named_pool, a)) return false;
      any = true;
    }
    return any;
  }
  if (!want.pool.empty()) {
    const Subnet* subnet = allocator_->FindSubnet(lease.subnet);
    auto entries = subnet ? ParsePool(want.pool, *subnet) : Result<std::vector<PoolEntry>>(Fail(Error::NotFound("")));
    if (!entries) return false;
    // Each held address is the entry's of its family (an entry may leave a family dynamic).
    auto matches = [&](const PoolEntry& e) {
      bool any = false;
      for (const IpAddr& a : have) {
        const std::optional<IpAddr>& mine = a.family() == Family::kV4 ? e.v4 : e.v6;
        if (mine && *mine != a) return false;
        any = any || mine.has_value();
      }
      return any;
    };
    if (want.ordinal) return *want.ordinal < entries->size() && matches((*entries)[*want.ordinal]);
    return std::any_of(entries->begin(), entries->end(), matches);
  }
  return true;  // dynamic: any address of the subnet will do
}

// ---- CNI ----

const PodInfo* NodeShard::KnownPod(const CniRequest& cni) const {
  auto it = pods_.find(cni.pod_namespace + "/" + cni.pod_name);
  if (it == pods_.end()) return nullptr;
  const PodInfo& pod = it->second;
  if (!cni.pod_uid.empty() && pod.uid != cni.pod_uid) return nullptr;
  if (!options_.node.empty() && pod.node_name != options_.node) return nullptr;
  return &pod;
}

void NodeShard::Add(const CniRequest& cni, ReplyCallback done) { AddFor(cni, std::move(done), false); }

void NodeShard::AddFor(const CniRequest& cni, ReplyCallback done, bool pod_was_read) {
  if (cni.pod_name.empty() || cni.pod_namespace.empty()) {
    return done(Fail(Error::InvalidArgument(
        "cluster mode needs the pod's identity: CNI_ARGS must carry K8S_POD_NAMESPACE and "
        "K8S_POD_NAME (container runtimes and Multus pass them)")));
  }
  const Subnet* subnet = allocator_->FindSubnetByProvider(cni.provider);
  if (!subnet) return AnswerUnknownProvider(cni, std::move(done));
  Owner owner{cni.pod_namespace, cni.pod_name, cni.pod_uid, cni.container_id, cni.ifname};
  AttachmentKey key = AttachmentKey::For(subnet->name, owner);
  engine_->NoteAdd(key);  // how long after its allocation ahead of time the ADD came
  // Decide only from a pod this node has seen (DESIGN §3.3): the kubelet runs the ADD
  // right after binding, often before the watch shows the pod. Unknown, known under
  // another UID, or not on this node yet → read it first (ReadPodThen).
  const PodInfo* pod = KnownPod(cni);
  auto read_pod = [&] {
    if (pod_was_read) {
      return done(Fail(Error::Internal("pod " + cni.pod_namespace + "/" + cni.pod_name +
                                       " was read but is still not known here")));
    }
    ReadPodThen(cni, std::move(done));
  };
  if (std::optional<Lease> held = allocator_->Find(key); held && held->state == LeaseState::kCommitted) {
    if (claims_unrecorded_.count(key) && !inflight_.count(key)) {
      // Allocated for an IPAMClaim that did not record it: not the claim's address (yet).
      // Its allocation stays in the block (the claim's, until the collection sees the
      // claim list others); the claim is asked again.
      return engine_->Release(
          key, [this, key, cni, done = std::move(done)](Result<void> r) mutable {
            if (!r) return done(Fail(Error::Unavailable(r.error().message + "; try again")));
            claims_unrecorded_.erase(key);
            AddFor(cni, std::move(done), false);
          });
    }
    // Which pod is asking: the runtime says (K8S_POD_UID); else the pod as cached.
    std::string asking_uid = cni.pod_uid;
    if (asking_uid.empty()) {
      auto cached = pods_.find(cni.pod_namespace + "/" + cni.pod_name);
      if (cached != pods_.end()) asking_uid = cached->second.uid;
    }
    if (!asking_uid.empty() && !held->owner.pod_uid.empty() && held->owner.pod_uid != asking_uid) {
      // A new pod of the same name: it may keep the lease only if it wants what the
      // lease holds, and only if the lease's block still has it (FollowLease).
      if (inflight_.count(key)) return JoinInflight(key, cni, std::move(done));
      if (!pod) return read_pod();
      return FollowLease(*held, RequestFor(*subnet, cni, *pod), cni.container_id, cni.routes, std::move(done));
    }
    // A release of this lease is on its way (it may wait for its block's next write,
    // --deferred-write-ms): the pod it was for is gone, so this is a new pod of the name
    // whose UID the runtime did not pass. Never serve an address about to be freed.
    if (releasing_.count(key)) {
      return done(Fail(Error::Unavailable("the address of " + key.ToString() +
                                          " is being released (its pod is gone); try again")));
    }
    // The runtime re-created the sandbox: same pod, same address (DESIGN §3.4). Served
    // from SQLite alone, with the API server down too.
    bool new_sandbox = !cni.container_id.empty() && held->owner.container_id != cni.container_id;
    if (new_sandbox) {
      auto r = RecordHolder(key, "", cni.container_id);
      if (!r) return done(Fail(r.error()));
    }
    Lease lease = *allocator_->Find(key);
    release_due_ms_.erase(key);
    del_received_.erase(key);
    ++stats_.on_demand;
    done(MakeCniReply(*subnet, lease, RoutesFor(lease, cni.routes)));
    // The block learns the new holder after the answer, in its next group commit.
    if (new_sandbox) UpdateBlockHolder(key);
    return;
  }
  if (inflight_.count(key)) return JoinInflight(key, cni, std::move(done));
  if (allocator_->Find(key)) {
    return done(Fail(Error::Unavailable("the lease of " + key.ToString() +
                                        " is still being committed to the API server; retry")));
  }
  if (!pod) return read_pod();
  if (std::string claim = ClaimFor(cni, *pod); !claim.empty()) {
    return AddWithClaim(*subnet, cni, *pod, claim, std::move(done));
  }
  ++stats_.on_demand;
  AllocateFor(RequestFor(*subnet, cni, *pod), cni.routes, std::move(done));
}

void NodeShard::JoinInflight(const AttachmentKey& key, const CniRequest& cni, ReplyCallback done) {
  Inflight& entry = inflight_.at(key);
  if (!cni.pod_uid.empty() && !entry.pod_uid.empty() && entry.pod_uid != cni.pod_uid) {
    // The work in flight is for another pod of this name (the cache is behind).
    return done(Fail(Error::Unavailable("an allocation for another pod named " + cni.pod_namespace + "/" +
                                        cni.pod_name + " (UID " + entry.pod_uid +
                                        ") is still in progress on this node; retry")));
  }
  entry.waiters.push_back(std::move(done));
  if (entry.routes.empty()) entry.routes = cni.routes;
  if (!cni.container_id.empty()) entry.container_id = cni.container_id;
  engine_->Expedite(key);  // an allocation made ahead of time and held: it goes now
}

void NodeShard::ReadPodThen(const CniRequest& cni, ReplyCallback done) {
  std::string pod_key = cni.pod_namespace + "/" + cni.pod_name;
  std::string path = "/api/v1/namespaces/" + cni.pod_namespace + "/pods/" + cni.pod_name;
  ++stats_.pod_reads;
  client_->Get(path, [this, cni, pod_key, done = std::move(done)](KubeResult<KubeResponse> r) mutable {
    if (!r && r.error().code == Code::kNotFound) {
      return done(Fail(Error::NotFound("pod " + pod_key + " does not exist in the API server (deleted, or "
                                       "CNI_ARGS name the wrong pod); nothing was allocated")));
    }
    if (!r) {
      // Never guess what the pod asks for (a static or pool address must not become
      // another): CNI 11, and the runtime retries.
      return done(Fail(Error::Unavailable("reading pod " + pod_key + " from the API server, to see which "
                                          "address it asks for: " + r.error().message + "; try again")));
    }
    auto object = ParseKubeObject(r->body);
    auto pod = object ? ParsePod(*object) : Result<PodInfo>(Fail(object.error()));
    if (!pod) {
      return done(Fail(Error::Unavailable("reading pod " + pod_key + ": " + pod.error().message + "; try again")));
    }
    if (!cni.pod_uid.empty() && pod->uid != cni.pod_uid) {
      return done(Fail(Error::NotFound("pod " + pod_key + " is now UID " + pod->uid + "; this ADD is for UID " +
                                       cni.pod_uid + ", which no longer exists; nothing was allocated")));
    }
    if (!options_.node.empty() && pod->node_name != options_.node) {
      if (pod->node_name.empty()) {
        return done(Fail(Error::Unavailable("pod " + pod_key + " is not bound to a node yet; try again")));
      }
      return done(Fail(Error::InvalidArgument("pod " + pod_key + " is bound to node " + pod->node_name +
                                              ", not to this node (" + options_.node + "); nothing was allocated")));
    }
    // What the watch will show too; until it does, its events of an earlier pod of the
    // name are not taken (read_ahead_).
    std::optional<std::string> stored = StorePod(*object);
    if (stored) read_ahead_[*stored] = pod->uid;
    AddFor(cni, std::move(done), /*pod_was_read=*/true);
    if (stored) ReconcilePod(*stored);  // the pod's other attachments, ahead of time
  });
}

void NodeShard::AnswerUnknownProvider(const CniRequest& cni, ReplyCallback done) {
  ++stats_.subnet_reads;
  auto answer = [provider = cni.provider, done = std::move(done)](KubeResult<KubeResponse> r) mutable {
    auto page = r ? ParseListPage(r->body) : Result<ListPage>(Fail(Error::Unavailable(r.error().message)));
    if (!page) {
      return done(Fail(Error::Unavailable("no Subnet with spec.provider " + provider +
                                          " has reached this node, and reading the Subnets from the API "
                                          "server failed (" + page.error().message + "); try again")));
    }
    for (const KubeObject& item : page->items) {
      auto spec = DecodeSubnet(item.raw);
      if (!spec || spec->provider != provider) continue;
      // Most often its watch event is on the way (a pod created right after its Subnet).
      return done(Fail(Error::Unavailable(
          "Subnet " + spec->name + " (spec.provider " + provider + ") exists but this node does not "
          "serve it yet: its watch event has not arrived, or the Subnet was refused (see the "
          "conditions in kubectl get subnet " + spec->name + " -o yaml); try again")));
    }
    done(Fail(Error::NotFound("no Subnet has spec.provider " + provider +
                              "; create a kubeovn.io/v1 Subnet with provider: " + provider)));
  };
  client_->Get("/apis/kubeovn.io/v1/subnets", std::move(answer));
}

void NodeShard::FollowLease(const Lease& held, AllocateRequest want, const std::string& container_id,
                            std::vector<WireRoute> routes, ReplyCallback done) {
  AttachmentKey key = held.key();
  Inflight& entry = inflight_[key];
  entry.pod_uid = want.owner.pod_uid;
  if (done) entry.waiters.push_back(std::move(done));
  entry.routes = std::move(routes);
  if (!LeaseSatisfies(held, want)) {
    LogInfo("pod " + want.owner.pod_namespace + "/" + want.owner.pod_name + " (UID " + want.owner.pod_uid +
            ") asks for other addresses than the lease of its predecessor (UID " + held.owner.pod_uid +
            "); releasing that lease and allocating anew");
    engine_->Release(key, [this, key, want](Result<void> r) {
      if (!r && r.error().code != Code::kNotFound) {
        return OnAllocated(key, Fail(Error::Unavailable("releasing the lease of the previous pod of " +
                                                        key.ToString() + ": " + r.error().message + "; try again")));
      }
      ++stats_.releases;
      AllocateAnew(key, want);
    });
    return;
  }
  std::string pod_uid = want.owner.pod_uid;
  engine_->ConfirmHolder(key, pod_uid, container_id,
                         [this, key, pod_uid, container_id, want](Result<void> r) {
    if (r) {
      if (auto recorded = RecordHolder(key, pod_uid, container_id); !recorded) {
        return OnAllocated(key, Fail(recorded.error()));
      }
      ++stats_.holder_updates;
      std::optional<Lease> lease = allocator_->Find(key);
      return OnAllocated(key, lease ? Result<Lease>(*lease) : Result<Lease>(Fail(Error::NotFound(key.ToString()))));
    }
    if (r.error().code == Code::kNotFound) {
      // The collection freed it (the engine dropped the lease here), or its release was
      // still on its way: a new allocation, read as any first one is (a reservation of
      // the pod's name, a named pool), never a plain dynamic pick.
      return AllocateAnew(key, want);
    }
    OnAllocated(key, Fail(Error::Unavailable("confirming that " + key.ToString() +
                                             " still holds its address: " + r.error().message + "; try again")));
  });
}

void NodeShard::Del(const CniRequest& cni, DoneCallback done) {
  // CNI spec: DEL succeeds when nothing is allocated.
  const Subnet* subnet = allocator_->FindSubnetByProvider(cni.provider);
  if (!subnet || cni.pod_name.empty()) return done(Ok());
  Owner owner{cni.pod_namespace, cni.pod_name, cni.pod_uid, cni.container_id, cni.ifname};
  AttachmentKey key = AttachmentKey::For(subnet->name, owner);
  std::optional<Lease> lease = allocator_->Find(key);
  if (!lease) return done(Ok());
  if (!cni.container_id.empty() && !lease->owner.container_id.empty() &&
      lease->owner.container_id != cni.container_id) {
    return done(Ok());  // a late DEL of an older sandbox of this pod
  }
  del_received_.insert(key);
  auto pod = pods_.find(cni.pod_namespace + "/" + cni.pod_name);
  bool pod_alive = pod != pods_.end() && (lease->owner.pod_uid.empty() || pod->second.uid == lease->owner.pod_uid);
  // The lease lives as long as the pod object (a re-created sandbox keeps its address);
  // a StatefulSet pod's lease outlives it. A pod this node has not seen (or seen under
  // another UID) may simply be ahead of the watch: released once a read confirms it gone.
  if (!pod_alive && !lease->sticky) ReleaseIfPodGone(*lease);
  done(Ok());
}

void NodeShard::Check(const CniRequest& cni, ReplyCallback done) {
  const Subnet* subnet = allocator_->FindSubnetByProvider(cni.provider);
  if (!subnet) return done(Fail(Error::NotFound("no Subnet has spec.provider " + cni.provider)));
  Owner owner{cni.pod_namespace, cni.pod_name, cni.pod_uid, cni.container_id, cni.ifname};
  std::optional<Lease> lease = allocator_->Find(AttachmentKey::For(subnet->name, owner));
  if (!lease || lease->state != LeaseState::kCommitted) {
    return done(Fail(Error::NotFound("pod " + cni.pod_namespace + "/" + cni.pod_name + " interface " +
                                     cni.ifname + " holds no committed lease in Subnet " + subnet->name)));
  }
  done(MakeCniReply(*subnet, *lease, RoutesFor(*lease, cni.routes)));
}

void NodeShard::Gc(const GcRequest& request, GcCallback done) {
  const Subnet* subnet = allocator_->FindSubnetByProvider(request.provider);
  if (!subnet) return done(Fail(Error::NotFound("no Subnet has spec.provider " + request.provider)));
  std::set<std::pair<std::string, std::string>> valid;
  for (const auto& a : request.valid_attachments) valid.emplace(a.container_id, a.ifname);
  GcOutcome outcome;
  std::vector<AttachmentKey> stale;
  allocator_->ForEachLease([&](const Lease& l) {
    if (l.subnet != subnet->name) return;
    bool listed = valid.count({l.owner.container_id, l.owner.ifname}) > 0;
    bool pod_alive = pods_.count(l.owner.pod_namespace + "/" + l.owner.pod_name) > 0;
    // In cluster mode a lease follows its pod: the runtime forgetting a sandbox is not
    // enough while the pod object exists (it may get a new sandbox).
    if (listed || pod_alive || l.sticky) {
      ++outcome.kept;
    } else {
      stale.push_back(l.key());
    }
  });
  for (const auto& key : stale) ScheduleRelease(key, 0);
  outcome.released = stale.size();
  done(outcome);
}

// ---- Holders ----

Result<void> NodeShard::RecordHolder(const AttachmentKey& key, const std::string& pod_uid,
                                     const std::string& container_id) {
  int64_t now = clock_->NowMs();
  if (!container_id.empty()) {
    if (auto r = store_->UpdateLeaseContainer(key, container_id, now); !r) return r;
  }
  if (!pod_uid.empty()) {
    if (auto r = store_->UpdateLeasePodUid(key, pod_uid, now); !r) return r;
  }
  return allocator_->UpdateOwner(key, pod_uid, container_id);
}

void NodeShard::UpdateBlockHolder(const AttachmentKey& key) {
  holders_due_.erase(key);
  engine_->UpdateHolder(key, [this, key](Result<void> r) {
    if (r) {
      ++stats_.holder_updates;
      holder_waits_.erase(key);
      return;
    }
    const int64_t wait = NextRetryWait(&holder_waits_, key, kQuickRetryMs);
    LogWarn("writing the new holder of " + key.ToString() + " into its IPBlock: " + r.error().message +
            " (will retry in " + std::to_string(wait) + " ms)");
    holders_due_[key] = clock_->NowMs() + wait;
  });
}

// ---- Release and retries ----

template <typename Key>
int64_t NodeShard::NextRetryWait(std::map<Key, int64_t>* waits, const Key& key, int64_t first_ms) const {
  if (first_ms <= 0) first_ms = options_.retry_interval_ms;
  auto [wait, first] = waits->emplace(key, std::min(first_ms, options_.max_retry_interval_ms));
  if (!first) wait->second = std::min(wait->second * 2, options_.max_retry_interval_ms);
  return wait->second;
}

template <typename Key>
std::vector<Key> NodeShard::TakeDue(std::map<Key, int64_t>* due_ms, int64_t now) {
  std::vector<Key> due;
  for (auto it = due_ms->begin(); it != due_ms->end();) {
    if (it->second <= now) {
      due.push_back(it->first);
      it = due_ms->erase(it);
    } else {
      ++it;
    }
  }
  return due;
}

void NodeShard::ScheduleRelease(const AttachmentKey& key, int64_t delay_ms) {
  int64_t due = clock_->NowMs() + delay_ms;
  auto [it, inserted] = release_due_ms_.emplace(key, due);
  if (!inserted && due < it->second) it->second = due;
  if (delay_ms == 0) Tick();
}

void NodeShard::ReleaseNow(const AttachmentKey& key) {
  std::optional<Lease> lease = allocator_->Find(key);
  releasing_.insert(key);
  engine_->Release(key, [this, key, lease](Result<void> r) {
    releasing_.erase(key);
    if (r || r.error().code == Code::kNotFound) {
      ++stats_.releases;
      release_backoff_ms_.erase(key);
      del_received_.erase(key);
      annotated_.erase(key);
      if (r && lease) ForgetIpObject(*lease);
      return;
    }
    ++stats_.release_failures;
    // Doubling while it keeps failing (the API server down or overloaded): each try is a
    // block write, and the address stays held meanwhile, as it must.
    const int64_t wait = NextRetryWait(&release_backoff_ms_, key);
    LogWarn("releasing " + key.ToString() + ": " + r.error().message + " (will retry in " +
            std::to_string(wait) + " ms)");
    release_due_ms_[key] = clock_->NowMs() + wait;
  });
}

void NodeShard::Tick() {
  int64_t now = clock_->NowMs();
  for (const auto& key : TakeDue(&release_due_ms_, now)) ReleaseNow(key);
  engine_->Tick();
  for (const auto& key : TakeDue(&annotations_due_, now)) {
    if (std::optional<Lease> lease = allocator_->Find(key); lease && lease->state == LeaseState::kCommitted) {
      WriteAnnotations(*lease);
    } else {
      annotation_waits_.erase(key);
    }
  }
  for (const auto& key : TakeDue(&holders_due_, now)) {
    if (allocator_->Find(key)) {
      UpdateBlockHolder(key);
    } else {
      holder_waits_.erase(key);
    }
  }
  if (recovery_due_) Recover();
  if (pods_resumed_ && !pods_synced_) ListPodsOnce();
  TendQuarantine();
  for (const auto& pod_key : TakeDue(&retry_pods_due_ms_, now)) ReconcilePod(pod_key);
  for (const std::string& pod_key : std::set<std::string>(reread_due_)) RereadPod(pod_key);
  if (!pool_feed_->synced() && ++pool_probe_ticks_ % 10 == 0) ProbeIpPools();
  SaveProgress();
}

}  // namespace sublease
