#include "daemon/leader/cluster_duties.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>

#include "common/log.h"
#include "daemon/leader/cluster_view.h"
#include "sync/informer.h"
#include "sync/ipblock.h"

namespace sublease {

namespace {

LeaderElectorOptions ElectorOptions(const ClusterDutiesOptions& o) {
  LeaderElectorOptions e;
  e.identity = o.identity;
  if (e.identity.empty()) {
    std::mt19937_64 rng(o.seed != 0 ? o.seed : std::random_device{}());
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(rng() & 0xffffffffU));
    e.identity = o.node + "_" + hex;
  }
  e.namespace_name = o.lease_namespace;
  e.name = o.lease_name;
  e.lease_duration_ms = o.lease_duration_ms;
  e.renew_deadline_ms = o.renew_deadline_ms;
  e.retry_period_ms = o.retry_period_ms;
  e.seed = o.seed;
  return e;
}

// Forwards informer events to functions.
class FnHandler final : public InformerHandler {
 public:
  std::function<void(const KubeObject&)> upsert;
  std::function<void(const KubeObject&)> remove;
  std::function<void()> synced;
  void OnAdded(const KubeObject& o) override {
    if (upsert) upsert(o);
  }
  void OnModified(const KubeObject& o) override {
    if (upsert) upsert(o);
  }
  void OnDeleted(const KubeObject& o) override {
    if (remove) remove(o);
  }
  void OnSynced() override {
    if (synced) synced();
  }
};

}  // namespace

// One term of leadership: the informers, the view they feed and the two writers.
struct ClusterDuties::Term {
  ClusterView view;
  FnHandler subnets_handler, blocks_handler, pods_handler, nodes_handler, ippools_handler;
  FnHandler ips_handler;
  std::unique_ptr<EventRecorder> events;              // on IP objects (reservations)
  std::unique_ptr<ReservationKeeper> reservations;  // nullptr when not handled
  bool ippools_synced = false;
  std::unique_ptr<SubnetStatusWriter> status;
  std::unique_ptr<IpPoolStatusWriter> pool_status;
  std::unique_ptr<GarbageCollector> gc;
  std::vector<std::unique_ptr<Informer>> informers;  // subnets, blocks, pods, nodes, ippools
};

ClusterDuties::ClusterDuties(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                             ClusterDutiesOptions options)
    : loop_(loop),
      client_(client),
      clock_(clock),
      options_(std::move(options)),
      elector_(loop, client, clock, ElectorOptions(options_), [this] { BeginTerm(); },
               [this] { EndTerm(); }) {}

ClusterDuties::~ClusterDuties() = default;

void ClusterDuties::Start() {
  auto campaign = [this] {
    candidacy_decided_ = true;
    campaigning_ = true;
    elector_.Start();
  };
  if (options_.candidate_selector.empty()) return campaign();
  ListOptions list;
  list.label_selector = options_.candidate_selector;
  candidacy_request_ = client_->List("/api/v1/nodes", list, [this, campaign](KubeResult<KubeResponse> r) {
    candidacy_request_ = 0;
    if (closing_) return;
    auto page = r ? ParseListPage(r->body) : Result<ListPage>(Fail(static_cast<Error>(r.error())));
    if (!page) {
      LogWarn("leader candidacy: listing the nodes labelled " + options_.candidate_selector + ": " +
              page.error().message + "; this node campaigns (as if every node were a candidate)");
      return campaign();
    }
    std::string names;
    bool me = false;
    for (const KubeObject& node : page->items) {
      me = me || node.name == options_.node;
      names += (names.empty() ? "" : ", ") + node.name;
    }
    if (page->items.empty()) {
      LogWarn("leader candidacy: no node is labelled " + options_.candidate_selector +
              "; every node campaigns (label a few nodes to spare the API server the Lease polling)");
      return campaign();
    }
    if (!me) {
      LogInfo("leader candidacy: node " + options_.node + " is not labelled " +
              options_.candidate_selector + " and does not campaign; the candidates are " + names);
      candidacy_decided_ = true;
      return;
    }
    LogInfo("leader candidacy: node " + options_.node + " is a candidate (" + names + ")");
    campaign();
  });
}

void ClusterDuties::BeginTerm() {
  ++terms_;
  auto term = std::make_unique<Term>();
  Term* t = term.get();
  SubnetStatusWriterOptions status_options;
  status_options.debounce_ms = options_.status_debounce_ms;
  if (options_.status_ms_per_node > 0) {
    status_options.interval_ms = [t, base = options_.status_debounce_ms,
                                  per = options_.status_ms_per_node]() -> int64_t {
      const int64_t nodes = t->view.nodes ? static_cast<int64_t>(t->view.nodes->size()) : 0;
      return std::max(base, nodes * per);
    };
  }
  t->status = std::make_unique<SubnetStatusWriter>(loop_, client_, clock_, status_options);
  GarbageCollectorOptions gc_options;
  gc_options.reclaim_interval_ms = options_.reclaim_interval_ms;
  gc_options.sweep_interval_ms = options_.sweep_interval_ms;
  t->gc = std::make_unique<GarbageCollector>(loop_, client_, &t->view, gc_options, on_reclaimed_);

  IpPoolStatusWriterOptions pool_status_options;
  pool_status_options.debounce_ms = options_.status_debounce_ms;
  pool_status_options.interval_ms = status_options.interval_ms;
  t->pool_status =
      std::make_unique<IpPoolStatusWriter>(loop_, client_, clock_, &t->view, pool_status_options);

  auto status_synced = [t] {
    if (!t->view.subnets_synced || !t->view.blocks_synced) return;
    t->status->Synced();
    if (t->ippools_synced) t->pool_status->Synced();
  };
  t->subnets_handler.upsert = [t](const KubeObject& o) {
    t->status->SubnetUpserted(o);
    t->pool_status->SubnetUpserted(o);
  };
  t->subnets_handler.remove = [t](const KubeObject& o) {
    t->status->SubnetDeleted(o);
    t->pool_status->SubnetDeleted(o);
  };
  t->ippools_handler.upsert = [t](const KubeObject& o) { t->pool_status->PoolUpserted(o); };
  t->ippools_handler.remove = [t](const KubeObject& o) { t->pool_status->PoolDeleted(o); };
  t->ippools_handler.synced = [t] {
    // (Only the pools' status: the Subnets' was started by the Subnet and block feeds.)
    t->ippools_synced = true;
    if (t->view.subnets_synced && t->view.blocks_synced) t->pool_status->Synced();
  };
  t->subnets_handler.synced = [t, status_synced] {
    t->view.subnets_synced = true;
    status_synced();
  };
  t->blocks_handler.upsert = [t](const KubeObject& o) {
    auto block = DecodeIpBlock(o.raw);
    if (!block) {
      LogWarn("cluster duties: ignoring IPBlock " + o.name + ": " + block.error().message);
      return;
    }
    IpBlock& stored = t->view.blocks[o.name] = std::move(*block);
    t->status->BlockChanged(o.name, &stored);
    t->pool_status->BlockChanged(stored.subnet);
  };
  t->blocks_handler.remove = [t](const KubeObject& o) {
    auto it = t->view.blocks.find(o.name);
    std::string subnet = it == t->view.blocks.end() ? "" : it->second.subnet;
    if (it != t->view.blocks.end()) t->view.blocks.erase(it);
    t->status->BlockChanged(o.name, nullptr);
    if (!subnet.empty()) t->pool_status->BlockChanged(subnet);
  };
  t->blocks_handler.synced = [t, status_synced] {
    t->view.blocks_synced = true;
    status_synced();
    if (t->reservations) t->reservations->BlocksChanged();
  };
  t->pods_handler.synced = [t] { t->view.pods_synced = true; };
  t->pods_handler.remove = [t](const KubeObject& o) { t->gc->PodDeleted(o); };
  t->nodes_handler.synced = [t] { t->view.nodes_synced = true; };

  auto add = [&](const char* path, InformerHandler* handler, bool metadata_only = false,
                 const char* label_selector = "") {
    InformerOptions o;
    o.path = path;
    o.label_selector = label_selector;
    o.seed = options_.seed;
    o.metadata_only = metadata_only;
    t->informers.push_back(std::make_unique<Informer>(client_, o, handler));
  };
  add("/apis/kubeovn.io/v1/subnets", &t->subnets_handler);
  add(std::string(kIpBlockCollection).c_str(), &t->blocks_handler);
  // Of pods and nodes the collection needs names and UIDs only: every pod of the cluster
  // in full would be ~3 KB each (352 MiB at 100k pods, BENCHMARKS.md §7).
  add("/api/v1/pods", &t->pods_handler, /*metadata_only=*/true);
  add("/api/v1/nodes", &t->nodes_handler, /*metadata_only=*/true);
  add("/apis/kubeovn.io/v1/ippools", &t->ippools_handler);
  if (options_.reserve) {
    EventRecorderOptions events_options;
    events_options.host = options_.node;
    t->events = std::make_unique<EventRecorder>(client_, clock_, events_options);
    ReservationKeeperOptions reservation_options;
    reservation_options.retry_ms = options_.reservation_retry_ms;
    reservation_options.max_retry_ms = options_.reservation_max_retry_ms;
    t->reservations = std::make_unique<ReservationKeeper>(
        loop_, client_, &t->view, t->events.get(), options_.reserve, reservation_options);
    t->ips_handler.upsert = [t](const KubeObject& o) { t->reservations->Upserted(o); };
    t->ips_handler.remove = [t](const KubeObject& o) { t->reservations->Deleted(o); };
    t->ips_handler.synced = [t] { t->reservations->Synced(); };
    // Reservations only: labelled ip_reserved=true, or not labelled (a user's new object);
    // the records of allocations (ip_reserved=false) are not watched.
    add(std::string(kIpObjectCollection).c_str(), &t->ips_handler, /*metadata_only=*/false,
        (std::string(kIpReservedLabel) + "!=false").c_str());
  }
  t->view.pods = &t->informers[2]->cache();
  t->view.nodes = &t->informers[3]->cache();
  term_ = std::move(term);
  for (auto& informer : t->informers) informer->Start();
  t->gc->Start();
  LogInfo("cluster duties: " + elector_.identity() + " starts Subnet status and garbage collection");
}

void ClusterDuties::EndTerm() {
  if (!term_) return;
  // Synchronously: nothing is written from here on.
  term_->status->Stop();
  term_->pool_status->Stop();
  term_->gc->Stop();
  if (term_->reservations) term_->reservations->Stop();
  last_gc_ = term_->gc->stats();
  last_status_ = term_->status->stats();
  CloseTerm(std::move(term_));
}

void ClusterDuties::CloseTerm(std::unique_ptr<Term> term) {
  ++closing_terms_;
  Term* t = term.release();
  auto remaining = std::make_shared<int>(static_cast<int>(t->informers.size()) + 3 +
                                         (t->reservations ? 1 : 0));
  auto one_done = [this, t, remaining] {
    if (--*remaining > 0) return;
    delete t;
    --closing_terms_;
    MaybeFinishClose();
  };
  for (auto& informer : t->informers) informer->Close(one_done);
  t->status->Close(one_done);
  t->pool_status->Close(one_done);
  t->gc->Close(one_done);
  if (t->reservations) t->reservations->Close(one_done);
  if (t->events) t->events->Close();
}

void ClusterDuties::Close(std::function<void()> done) {
  close_done_ = std::move(done);
  closing_ = true;
  if (candidacy_request_ != 0) client_->Cancel(candidacy_request_);
  candidacy_request_ = 0;
  // The elector calls EndTerm (on_stopped) first when leading, then releases the Lease.
  elector_.Close(options_.release_on_close, [this] {
    elector_closed_ = true;
    MaybeFinishClose();
  });
}

void ClusterDuties::MaybeFinishClose() {
  if (!elector_closed_ || closing_terms_ > 0 || term_ || !close_done_) return;
  auto done = std::move(close_done_);
  done();
}

ClusterDutiesStats ClusterDuties::stats() const {
  ClusterDutiesStats s;
  s.election = elector_.stats();
  s.terms = terms_;
  s.gc = term_ ? term_->gc->stats() : last_gc_;
  s.status = term_ ? term_->status->stats() : last_status_;
  return s;
}

}  // namespace sublease
