#include "daemon/leader/garbage_collector.h"

#include <simdjson.h>

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "sync/ip_reservation.h"
#include "sync/ipamclaim.h"
#include "sync/kube_object.h"
#include "sync/pod_networks.h"
#include "sync/uv_timer.h"

namespace sublease {

namespace {

// A 404 about the named object itself, not about the path: the API server answers
// `<resource> "<name>" not found`, while an unserved resource (e.g. no apps/v1
// statefulsets) answers "the server could not find the requested resource".
bool IsObjectNotFound(const KubeError& e, const std::string& name) {
  return e.http_status == 404 && e.message.find("\"" + name + "\" not found") != std::string::npos;
}

std::string SeenKey(const std::string& block, uint64_t offset, const BlockAllocation& a) {
  return block + "/" + std::to_string(offset) + "|" + a.pod_namespace + "/" + a.pod_name + "|" +
         a.pod_uid + "|" + a.container_id + "|" + a.ifname;
}

struct StatefulSetInfo {
  int64_t replicas = 1;  // Kubernetes defaults spec.replicas to 1
  std::string uid;
};
// The addresses of an ip_address annotation: "10.0.0.5" or "10.0.0.5,fd00::5", with or
// without prefix lengths (strings; the caller parses them).
std::vector<std::string> AddressesIn(const std::string& value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(' '));
    item = item.substr(0, item.find_first_of(" /"));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::optional<StatefulSetInfo> ParseStatefulSet(const std::string& json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json).get(doc) != simdjson::SUCCESS) return std::nullopt;
  StatefulSetInfo info;
  if (doc["spec"]["replicas"].get(info.replicas) != simdjson::SUCCESS) info.replicas = 1;
  std::string_view uid;
  if (doc["metadata"]["uid"].get(uid) == simdjson::SUCCESS) info.uid = uid;
  return info;
}

}  // namespace

bool MayHoldUnrecordedAddress(const KubeObject& object) {
  auto pod = ParsePod(object);
  if (!pod) return true;
  if (pod->finished) return false;
  size_t wanted = 0;
  if (auto it = pod->annotations.find(std::string(kNetworksAnnotation)); it != pod->annotations.end()) {
    auto selections = ParseNetworksAnnotation(it->second, pod->namespace_name);
    if (!selections) return true;
    wanted += selections->size();
  }
  if (pod->annotations.count("v1.multus-cni.io/default-network")) ++wanted;
  constexpr std::string_view kAllocated = ".kubernetes.io/allocated";
  size_t allocated = 0;
  for (const auto& [key, value] : pod->annotations) {
    if (value == "true" && key.ends_with(kAllocated) && key != "ovn.kubernetes.io/allocated") ++allocated;
  }
  return allocated < wanted;
}

std::optional<std::pair<std::string, uint32_t>> StatefulSetOrdinal(const std::string& pod_name) {
  size_t dash = pod_name.rfind('-');
  if (dash == std::string::npos || dash == 0 || dash + 1 >= pod_name.size()) return std::nullopt;
  std::string digits = pod_name.substr(dash + 1);
  if (digits.size() > 9) return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::make_pair(pod_name.substr(0, dash), static_cast<uint32_t>(std::stoul(digits)));
}

GarbageCollector::GarbageCollector(uv_loop_t* loop, KubeClient* client, const ClusterView* view,
                                   GarbageCollectorOptions options, ReclaimedCallback on_reclaimed)
    : loop_(loop),
      client_(client),
      view_(view),
      options_(options),
      on_reclaimed_(std::move(on_reclaimed)),
      timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

GarbageCollector::~GarbageCollector() = default;  // the timer is freed by Close

int64_t GarbageCollector::NowMono() {
  uv_update_time(loop_);
  return static_cast<int64_t>(uv_now(loop_));
}

void GarbageCollector::Start() {
  if (stopped_) return;
  auto period = static_cast<uint64_t>(options_.sweep_interval_ms);
  uv_timer_start(timer_, &GarbageCollector::OnTimer, period, period);
}

void GarbageCollector::OnTimer(uv_timer_t* t) { static_cast<GarbageCollector*>(t->data)->Sweep(); }

void GarbageCollector::Stop() {
  stopped_ = true;
  uv_timer_stop(timer_);
  for (auto& [token, id] : requests_) client_->Cancel(id);
  requests_.clear();
  jobs_.clear();
  first_seen_.clear();
}

void GarbageCollector::Close(std::function<void()> done) {
  Stop();
  CloseTimerThen(timer_, std::move(done));
}

void GarbageCollector::Send(std::string_view method, const std::string& path, std::string body,
                            Callback cb) {
  uint64_t token = next_token_++;
  std::string_view content_type = body.empty() ? "" : "application/json";
  KubeClient::RequestId id = client_->Request(
      method, path, std::move(body), content_type,
      options_.request_timeout_ms, [this, token, cb = std::move(cb)](KubeResult<KubeResponse> r) {
        requests_.erase(token);
        cb(std::move(r));
      });
  requests_[token] = id;
}

void GarbageCollector::Sweep() {
  if (stopped_ || !view_->blocks_synced || !view_->pods_synced || !view_->nodes_synced) return;
  ++stats_.sweeps;
  const int64_t now = NowMono();
  std::map<std::string, int64_t> seen;
  // Seen now (remembered from its first sighting on): true once it has been seen for
  // reclaim_interval — the two observations every rule here waits for.
  auto observed_long_enough = [&](const std::string& key) {
    auto old = first_seen_.find(key);
    int64_t first = old == first_seen_.end() ? now : old->second;
    seen[key] = first;
    return now - first >= options_.reclaim_interval_ms;
  };
  uint64_t orphans = 0;
  for (const auto& [name, block] : view_->blocks) {
    std::vector<Candidate> due;
    for (const auto& [offset, a] : block.allocations) {
      if (a.pod_name.empty() || a.pod_namespace.empty()) continue;
      auto pod = view_->pods->find(a.pod_namespace + "/" + a.pod_name);
      bool orphan = pod == view_->pods->end() ||
                    (!a.sticky && !a.pod_uid.empty() && pod->second.uid != a.pod_uid);
      if (!orphan) continue;
      ++orphans;
      std::string key = SeenKey(name, offset, a);
      if (observed_long_enough(key)) due.push_back({offset, a, key});
    }
    std::string gone_key;
    // (A spare is the affine node's, for its next pods: with the node gone, nobody's.)
    if (OnlySpares(block) && !view_->nodes->count(block.node)) {
      gone_key = "node|" + name + "|" + block.node;
      if (!observed_long_enough(gone_key)) gone_key.clear();
    }
    // Spares asked back, and the same version of the block still there: unanswered.
    std::string unanswered_key;
    if (gone_key.empty() && block.return_spares &&
        std::any_of(block.allocations.begin(), block.allocations.end(),
                    [&](const auto& e) { return e.second.spare && e.second.node == block.node; })) {
      unanswered_key = "ask|" + name + "|" + block.resource_version;
      if (!observed_long_enough(unanswered_key)) unanswered_key.clear();
    }
    // A deleted pod's spare, the block unchanged since: ask the node for its spares.
    std::string ask;
    if (auto d = departed_.find(name); d != departed_.end()) {
      for (auto it = d->second.begin(); it != d->second.end();) {
        auto entry = block.allocations.find(it->first);
        const bool still = it->second.resource_version == block.resource_version &&
                           !block.return_spares && entry != block.allocations.end() &&
                           entry->second.spare && entry->second.node == block.node;
        if (!still) {
          it = d->second.erase(it);
        } else {
          if (ask.empty() && now - it->second.seen_ms >= options_.reclaim_interval_ms / 2) {
            ask = "pod " + it->second.pod + " is gone and its address " +
                  block.AddressAt(it->first).ToString() + " is still a spare of node " + block.node +
                  ", never recorded";
          }
          ++it;
        }
      }
      if (d->second.empty()) departed_.erase(d);
    }
    if ((due.empty() && gone_key.empty() && unanswered_key.empty() && ask.empty()) ||
        jobs_.count(name) || jobs_.size() >= options_.max_jobs) {
      continue;
    }
    Job& job = jobs_[name];
    job.block = name;
    if (!due.empty()) {
      job.candidates = std::move(due);
      CheckCandidates(name);
    } else if (!gone_key.empty()) {
      job.gone_node = block.node;
      job.gone_key = gone_key;
      CheckNodeGone(name);
    } else if (!unanswered_key.empty()) {
      job.unanswered_key = unanswered_key;
      job.unanswered_version = block.resource_version;
      CheckUnansweredSpares(name);
    } else {
      departed_.erase(name);
      AskForSpares(name, ask);
    }
  }
  // (Blocks gone meanwhile.)
  for (auto it = departed_.begin(); it != departed_.end();) {
    it = view_->blocks.count(it->first) ? std::next(it) : departed_.erase(it);
  }
  // Only what is orphaned now stays remembered (answers come later, on the loop).
  first_seen_ = std::move(seen);
  stats_.orphans_seen = orphans;
}

const IpBlock* GarbageCollector::CurrentBlock(const Job& job) const {
  if (job.base) return &*job.base;
  auto it = view_->blocks.find(job.block);
  return it == view_->blocks.end() ? nullptr : &it->second;
}

void GarbageCollector::CheckCandidates(const std::string& block) {
  Job& job = jobs_.at(block);
  job.pending = job.candidates.size();
  for (size_t i = 0; i < job.candidates.size(); ++i) {
    job.candidates[i].verdict = Verdict::kPending;
    CheckPod(block, i);
  }
}

void GarbageCollector::CheckPod(const std::string& block, size_t index) {
  const BlockAllocation& checked = jobs_.at(block).candidates[index].allocation;
  if (!checked.ipam_claim.empty()) return CheckClaim(block, index);
  if (!checked.virtual_machine.empty()) return CheckVirtualMachine(block, index, /*vmi=*/false);
  if (!checked.reserved_ip.empty()) return CheckReservation(block, index);
  std::string path = "/api/v1/namespaces/" + checked.pod_namespace + "/pods/" + checked.pod_name;
  Send("GET", path, "", [this, block, index](KubeResult<KubeResponse> r) {
    auto it = jobs_.find(block);
    if (it == jobs_.end()) return;
    const BlockAllocation& a = it->second.candidates[index].allocation;
    if (r) {
      auto pod = ParseKubeObject(r->body);
      if (!pod) return Decided(block, index, Verdict::kUnknown);
      // Never while the pod exists — unless it is another pod under the same name.
      bool other_pod = !a.sticky && !a.pod_uid.empty() && pod->uid != a.pod_uid;
      if (!other_pod) ++stats_.kept_pod_exists;
      return Decided(block, index, other_pod ? Verdict::kReclaim : Verdict::kKeep);
    }
    if (!IsObjectNotFound(r.error(), a.pod_name)) {
      ++stats_.errors;
      return Decided(block, index, Verdict::kUnknown);
    }
    if (a.sticky && StatefulSetOrdinal(a.pod_name)) return CheckStatefulSet(block, index);
    Decided(block, index, Verdict::kReclaim);
  });
}

// An IPAMClaim's allocation belongs to the claim, not to the pod it names: reclaimed only
// when the claim is an object 404, or its status.ips name other addresses (an allocation
// that lost a race to record itself in the claim). Unreadable → kept.
void GarbageCollector::CheckClaim(const std::string& block, size_t index) {
  const Job& job = jobs_.at(block);
  const Candidate& candidate = job.candidates[index];
  std::string address;
  if (const IpBlock* current = CurrentBlock(job)) {
    address = current->AddressAt(candidate.offset).ToString();
  }
  const std::string& claim = candidate.allocation.ipam_claim;
  size_t slash = claim.find('/');
  if (slash == std::string::npos) return Decided(block, index, Verdict::kKeep);
  std::string name = claim.substr(slash + 1);
  auto released = [address](const std::string& body) {
    auto c = DecodeIpamClaim(body);
    if (!c || c->ips.empty() || address.empty()) return false;
    for (const std::string& ip : c->ips) {
      if (ip.substr(0, ip.find('/')) == address) return false;
    }
    return true;
  };
  CheckKeeper(block, index, IpamClaimPath(claim.substr(0, slash), name), name, released,
              &GarbageCollectorStats::kept_claim);
}

// GETs `path`, the object `name` that keeps a candidate's allocation beyond its pods:
// 404 → reclaimed; unreadable → unknown; read → reclaimed when `released(body)` says
// the object lets go of it, else kept (counted in `kept`).
void GarbageCollector::CheckKeeper(const std::string& block, size_t index, const std::string& path,
                                   const std::string& name,
                                   std::function<bool(const std::string& body)> released,
                                   uint64_t GarbageCollectorStats::*kept) {
  Send("GET", path, "",
       [this, block, index, name, released = std::move(released), kept](KubeResult<KubeResponse> r) {
         if (!jobs_.count(block)) return;
         Verdict v = Verdict::kKeep;
         if (r) {
           if (released(r->body)) v = Verdict::kReclaim;
         } else if (IsObjectNotFound(r.error(), name)) {
           v = Verdict::kReclaim;
         } else {
           ++stats_.errors;
           v = Verdict::kUnknown;
         }
         if (v == Verdict::kKeep) ++(stats_.*kept);
         Decided(block, index, v);
       });
}

// A KubeVirt VM's address kept without a claim (Kube-OVN's rules): reclaimed once neither
// the VirtualMachine nor the VirtualMachineInstance of that name is an object (both 404;
// an ephemeral VMI has no VM, so its deletion frees it). Unreadable → kept.
void GarbageCollector::CheckVirtualMachine(const std::string& block, size_t index, bool vmi) {
  const std::string& vm = jobs_.at(block).candidates[index].allocation.virtual_machine;
  size_t slash = vm.find('/');
  if (slash == std::string::npos) return Decided(block, index, Verdict::kKeep);
  std::string name = vm.substr(slash + 1);
  std::string path = "/apis/kubevirt.io/v1/namespaces/" + vm.substr(0, slash) +
                     (vmi ? "/virtualmachineinstances/" : "/virtualmachines/") + name;
  Send("GET", path, "", [this, block, index, name, vmi](KubeResult<KubeResponse> r) {
    if (!jobs_.count(block)) return;
    if (r) {
      ++stats_.kept_vm;
      return Decided(block, index, Verdict::kKeep);
    }
    if (!IsObjectNotFound(r.error(), name)) {
      ++stats_.errors;
      return Decided(block, index, Verdict::kUnknown);
    }
    if (!vmi) return CheckVirtualMachine(block, index, /*vmi=*/true);
    Decided(block, index, Verdict::kReclaim);
  });
}

// A reserved IP's allocation belongs to its IP object, not to the pod it names (which may
// not exist yet). Unreadable → kept.
void GarbageCollector::CheckReservation(const std::string& block, size_t index) {
  const std::string name = jobs_.at(block).candidates[index].allocation.reserved_ip;
  if (view_->reserved_ips.count(name)) {
    ++stats_.kept_reserved;
    return Decided(block, index, Verdict::kKeep);
  }
  auto released = [](const std::string& body) {
    auto object = ParseKubeObject(body);
    return object && !IsReservation(*object);  // ip_reserved=false: a record, not a reservation
  };
  CheckKeeper(block, index, std::string(kIpObjectCollection) + "/" + name, name, released,
              &GarbageCollectorStats::kept_reserved);
}

void GarbageCollector::CheckStatefulSet(const std::string& block, size_t index) {
  const BlockAllocation& a = jobs_.at(block).candidates[index].allocation;
  auto [sts, ordinal] = *StatefulSetOrdinal(a.pod_name);
  std::string path = "/apis/apps/v1/namespaces/" + a.pod_namespace + "/statefulsets/" + sts;
  Send("GET", path, "",
       [this, block, index, sts = sts, ordinal = ordinal,
        owner = a.owner_uid](KubeResult<KubeResponse> r) {
         if (!jobs_.count(block)) return;
         Verdict v = Verdict::kKeep;
         if (r) {
           // Wanted while the same StatefulSet (UID, when recorded) keeps the ordinal.
           auto info = ParseStatefulSet(r->body);
           if (info && (static_cast<int64_t>(ordinal) >= info->replicas ||
                        (!owner.empty() && !info->uid.empty() && owner != info->uid))) {
             v = Verdict::kReclaim;
           }
         } else if (IsObjectNotFound(r.error(), sts)) {
           v = Verdict::kReclaim;
         }
         if (v == Verdict::kKeep) ++stats_.kept_sticky;
         Decided(block, index, v);
       });
}

void GarbageCollector::Decided(const std::string& block, size_t index, Verdict v) {
  Job& job = jobs_.at(block);
  Candidate& c = job.candidates[index];
  c.verdict = v;
  // Kept: the allocation must be seen orphaned twice again before another check.
  if (v == Verdict::kKeep) first_seen_.erase(c.seen_key);
  if (--job.pending == 0) WriteJob(block);
}

void GarbageCollector::WriteJob(const std::string& name) {
  Job& job = jobs_.at(name);
  const IpBlock* current = CurrentBlock(job);
  if (!current) return Finish(name);  // the block is gone: nothing to free
  IpBlock next = *current;
  std::vector<std::pair<uint64_t, BlockAllocation>> removed;
  for (const Candidate& c : job.candidates) {
    if (c.verdict != Verdict::kReclaim) continue;
    auto it = next.allocations.find(c.offset);
    // Only the very allocation that was checked: a re-used offset is someone else's.
    if (it == next.allocations.end() || !(it->second == c.allocation)) continue;
    removed.emplace_back(c.offset, it->second);
    next.allocations.erase(it);
  }
  if (removed.empty()) return Finish(name);
  Send("PUT", std::string(kIpBlockCollection) + "/" + name, EncodeIpBlock(next),
       [this, name, next, removed](KubeResult<KubeResponse> r) {
         if (!jobs_.count(name)) return;
         if (r) {
           for (const auto& [offset, a] : removed) {
             ++stats_.reclaimed;
             LogInfo("reclaimed " + next.AddressAt(offset).ToString() + " (block " + name +
                     ") of pod " + a.pod_namespace + "/" + a.pod_name + " uid " + a.pod_uid +
                     ": the pod is gone");
             if (on_reclaimed_) on_reclaimed_(next, offset, a);
           }
           return Finish(name);
         }
         if (r.error().http_status == 409 || r.error().http_status == 404) {
           ++stats_.conflicts;
           return Reread(name);
         }
         ++stats_.errors;
         LogWarn("reclaiming in block " + name + ": " + r.error().message);
         Finish(name);
       });
}

// The block changed under us: read it, and re-check whatever is still there unchanged.
void GarbageCollector::Reread(const std::string& name) {
  Job& job = jobs_.at(name);
  if (++job.attempt >= kMaxAttempts) return Finish(name);
  Send("GET", std::string(kIpBlockCollection) + "/" + name, "",
       [this, name](KubeResult<KubeResponse> r) {
         auto it = jobs_.find(name);
         if (it == jobs_.end()) return;
         if (!r) return Finish(name);  // 404: gone with its allocations; else next sweep
         auto fresh = DecodeIpBlock(r->body);
         if (!fresh) return Finish(name);
         Job& current = it->second;
         std::vector<Candidate> still;
         for (Candidate& c : current.candidates) {
           if (c.verdict != Verdict::kReclaim) continue;
           auto a = fresh->allocations.find(c.offset);
           if (a != fresh->allocations.end() && a->second == c.allocation) still.push_back(c);
         }
         if (still.empty()) return Finish(name);
         current.base = std::move(*fresh);
         current.candidates = std::move(still);
         CheckCandidates(name);
       });
}

void GarbageCollector::CheckNodeGone(const std::string& name) {
  Send("GET", "/api/v1/nodes/" + jobs_.at(name).gone_node, "", [this, name](KubeResult<KubeResponse> r) {
    auto it = jobs_.find(name);
    if (it == jobs_.end()) return;
    Job& job = it->second;
    if (r || !IsObjectNotFound(r.error(), job.gone_node)) {
      if (r) first_seen_.erase(job.gone_key);  // the node exists after all
      return Finish(name);
    }
    const IpBlock* block = CurrentBlock(job);
    if (!block || !OnlySpares(*block)) return Finish(name);
    DeleteOptions options;
    options.precondition_resource_version = block->resource_version;
    options.precondition_uid = block->uid;
    uint64_t token = next_token_++;
    KubeClient::RequestId id = client_->Delete(
        std::string(kIpBlockCollection) + "/" + name, options,
        [this, token, name](KubeResult<KubeResponse> deleted) {
          requests_.erase(token);
          if (!jobs_.count(name)) return;
          if (deleted) {
            ++stats_.blocks_deleted;
            LogInfo("deleted empty block " + name + " of deleted node " + jobs_.at(name).gone_node);
          } else if (deleted.error().http_status == 409) {
            ++stats_.conflicts;  // changed meanwhile (claimed, borrowed): keep it
          } else if (deleted.error().http_status != 404) {
            ++stats_.errors;
          }
          Finish(name);
        });
    requests_[token] = id;
  });
}

void GarbageCollector::PodDeleted(const KubeObject& object) {
  if (stopped_ || !view_->blocks_synced) return;
  auto pod = ParsePod(object);
  if (!pod) return;
  // Its addresses (the ip_address annotations; they do not name the subnet, so a spare
  // of the same address in an overlapping subnet is asked for too: harmless, a node that
  // is up answers).
  std::vector<IpAddr> addresses;
  for (const auto& [key, value] : pod->annotations) {
    if (key.find(".kubernetes.io/ip_address") == std::string::npos) continue;
    for (const std::string& a : AddressesIn(value)) {
      if (auto ip = IpAddr::Parse(a)) addresses.push_back(*ip);
    }
  }
  if (addresses.empty()) return;
  const int64_t now = NowMono();
  for (const auto& [name, block] : view_->blocks) {
    for (const IpAddr& a : addresses) {
      auto offset = block.OffsetOf(a);
      if (!offset) continue;
      auto entry = block.allocations.find(*offset);
      if (entry == block.allocations.end() || !entry->second.spare || entry->second.node != block.node) {
        continue;
      }
      departed_[name][*offset] = Departed{pod->Key(), block.resource_version, now};
    }
  }
}

void GarbageCollector::AskForSpares(const std::string& name, const std::string& why) {
  const IpBlock* current = CurrentBlock(jobs_.at(name));
  if (!current || current->return_spares) return Finish(name);
  IpBlock next = *current;
  next.return_spares = true;
  Send("PUT", std::string(kIpBlockCollection) + "/" + name, EncodeIpBlock(next),
       [this, name, node = next.node, why](KubeResult<KubeResponse> r) {
         if (!jobs_.count(name)) return;
         if (r) {
           ++stats_.spares_asked;
           LogInfo(why + ": asking node " + node + " for its spares in block " + name +
                   " (taken back if it does not answer)");
         } else if (r.error().http_status == 409 || r.error().http_status == 404) {
           ++stats_.conflicts;  // the node wrote meanwhile: it is up
         } else {
           ++stats_.errors;
           LogWarn("asking node " + node + " for its spares in block " + name + ": " + r.error().message);
         }
         Finish(name);
       });
}

// The node did not answer for its spares: list its pods; take back every spare none of
// them can hold.
void GarbageCollector::CheckUnansweredSpares(const std::string& name) {
  const IpBlock* block = CurrentBlock(jobs_.at(name));
  if (!block) return Finish(name);
  const std::string node = block->node;
  Send("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3D" + node, "",
       [this, name, node](KubeResult<KubeResponse> r) {
         auto it = jobs_.find(name);
         if (it == jobs_.end()) return;
         auto page = r ? ParseListPage(r->body) : Result<ListPage>(Fail(static_cast<Error>(r.error())));
         if (!page) {
           ++stats_.errors;
           LogWarn("listing the pods of node " + node + " (its spares in block " + name +
                   " were asked back and not given): " + page.error().message);
           return Finish(name);
         }
         std::set<std::string> named;  // addresses the node's pods are annotated with
         for (const KubeObject& pod : page->items) {
           if (MayHoldUnrecordedAddress(pod)) {
             ++stats_.spares_kept_pod;
             first_seen_.erase(it->second.unanswered_key);  // looked at again later
             LogInfo("node " + node + " has not given back its spares in block " + name +
                     ", but its pod " + pod.Key() + " waits for an address and may hold one of " +
                     "them: they are kept");
             return Finish(name);
           }
           auto info = ParsePod(pod);
           if (!info) continue;  // (MayHoldUnrecordedAddress said it is readable)
           for (const auto& [key, value] : info->annotations) {
             if (key.find(".kubernetes.io/ip_address") == std::string::npos) continue;
             for (const std::string& item : AddressesIn(value)) {
               if (auto a = IpAddr::Parse(item)) named.insert(a->ToString());
             }
           }
         }
         TakeBackSpares(name, named);
       });
}

void GarbageCollector::TakeBackSpares(const std::string& name, const std::set<std::string>& named) {
  const Job& job = jobs_.at(name);
  const IpBlock* current = CurrentBlock(job);
  // (Changed since it went unanswered: the node answered, or someone asked again.)
  if (!current || current->resource_version != job.unanswered_version || !current->return_spares) {
    return Finish(name);
  }
  IpBlock next = *current;
  size_t removed = 0;
  for (auto it = next.allocations.begin(); it != next.allocations.end();) {
    if (it->second.spare && it->second.node == next.node &&
        !named.count(next.AddressAt(it->first).ToString())) {
      it = next.allocations.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  if (removed == 0) {
    first_seen_.erase(job.unanswered_key);
    return Finish(name);
  }
  Send("PUT", std::string(kIpBlockCollection) + "/" + name, EncodeIpBlock(next),
       [this, name, node = next.node, removed](KubeResult<KubeResponse> r) {
         if (!jobs_.count(name)) return;
         if (r) {
           stats_.spares_reclaimed += removed;
           LogInfo("took back " + std::to_string(removed) + " spare(s) of node " + node + " in block " +
                   name + ": asked back, unanswered, and none of the node's pods can hold them");
         } else if (r.error().http_status == 409 || r.error().http_status == 404) {
           ++stats_.conflicts;  // the node (or someone) wrote meanwhile: seen anew next sweep
         } else {
           ++stats_.errors;
           LogWarn("taking back the spares of node " + node + " in block " + name + ": " +
                   r.error().message);
         }
         Finish(name);
       });
}

void GarbageCollector::Finish(const std::string& block) { jobs_.erase(block); }

}  // namespace sublease
