// subleased: wiring only. Parses the configuration, opens the store, loads the
// allocator, starts standalone or cluster mode, listens, runs the loop, and shuts down
// cleanly on SIGTERM/SIGINT (every handle closed: uv_loop_close must succeed).
#include <grp.h>
#include <uv.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/api.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/kube_block_api.h"
#include "daemon/leader/cluster_duties.h"
#include "daemon/leader/event_recorder.h"
#include "daemon/config.h"
#include "daemon/server/http_server.h"
#include "daemon/server/metrics.h"
#include "daemon/server/sd_notify.h"
#include "daemon/server/signals.h"
#include "daemon/service/background_checkpoint.h"
#include "daemon/service/batching_backend.h"
#include "daemon/service/cni_service.h"
#include "daemon/service/subnet_manifest.h"
#include "daemon/shard/node_shard.h"
#include "daemon/store/rebuild.h"
#include "daemon/store/recovery.h"
#include "daemon/store/store.h"
#include "sync/informer.h"
#include "sync/ipblock.h"
#include "sync/kube_client.h"
#include "sync/kube_config.h"

namespace sublease {
namespace {

int Die(const std::string& message) {
  LogError(message);
  return 1;
}

Result<std::optional<gid_t>> ResolveGroup(const std::string& name) {
  if (name.empty()) return std::optional<gid_t>();
  struct group* g = getgrnam(name.c_str());
  if (!g) return Fail(Error::InvalidArgument("--socket-group " + name + ": no such group"));
  return std::optional<gid_t>(g->gr_gid);
}

// Opens the database; a corrupt one is moved aside (kept for a person) and replaced by a
// fresh one, which cluster mode rebuilds from the API server (store/recovery.h). A newer
// schema or an unwritable file is an error: nothing is moved. `recovered` (optional)
// tells the caller that the previous database was corrupt.
Result<std::unique_ptr<Store>> OpenStore(const std::string& path, bool* recovered = nullptr,
                                         const StoreOptions& options = {}) {
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  auto opened = OpenOrRecover(path, SystemClock().NowMs(), options);
  if (!opened) return Fail(opened.error().Wrap("cannot open database " + path));
  if (recovered) *recovered = opened->recovered;
  if (opened->recovered) {
    LogError("database " + path + " was corrupt: " + opened->corrupt_error);
    for (const auto& m : opened->moved) LogError("moved aside (kept for inspection): " + m);
    LogError("started a fresh database at " + path + "; see docs/operations.md");
  }
  return std::move(opened->store);
}

// Runs `steps` one after another, each given a continuation; `done` after the last.
void Sequence(std::vector<std::function<void(std::function<void()>)>> steps, std::function<void()> done) {
  if (steps.empty()) return done();
  auto first = std::move(steps.front());
  steps.erase(steps.begin());
  first([steps = std::move(steps), done = std::move(done)]() mutable { Sequence(std::move(steps), std::move(done)); });
}

// Listens on the sockets and the metrics address, runs the loop until SIGTERM/SIGINT,
// then runs `stop_backend` and stops the server. Returns the exit code.
int Serve(uv_loop_t* loop, const Config& cfg, CniBackend* backend, const Allocator* allocator,
          MetricsRegistry* metrics, std::function<void(std::function<void()>)> stop_backend) {
  int rc = 0;
  auto group = ResolveGroup(cfg.socket_group);
  if (!group) rc = Die(group.error().message);
  Api api(backend, allocator, metrics);
  HttpServer server(loop, HttpServerLimits{cfg.max_request_bytes, cfg.idle_timeout_ms, cfg.max_connections});
  for (size_t i = 0; rc == 0 && i < cfg.sockets.size(); ++i) {
    const auto& path = cfg.sockets[i];
    ListenerConfig l{"unix:" + path, group->has_value() ? 0660u : 0600u, *group,
                     [&api](const HttpRequest& req, Respond respond) { api.ServeCni(req, std::move(respond)); }};
    if (auto r = server.Listen(l); !r) {
      rc = Die("cannot listen on " + path + ": " + r.error().message);
    } else {
      LogInfo("serving the CNI plugin on " + path);
    }
  }
  if (rc == 0 && !cfg.metrics_address.empty()) {
    ListenerConfig l{"tcp:" + cfg.metrics_address, 0, std::nullopt,
                     [&api](const HttpRequest& req, Respond respond) { api.ServeOps(req, std::move(respond)); }};
    if (auto r = server.Listen(l); !r) {
      rc = Die("cannot listen on " + cfg.metrics_address + ": " + r.error().message);
    } else {
      LogInfo("health and metrics on http://" + cfg.metrics_address + "/metrics");
    }
  }
  metrics->SetGaugeCallback("sublease_server_connections", "Socket server connection counters", [&server] {
    HttpServerStats st = server.Stats();
    return MetricsRegistry::GaugeSamples{
        {{{"event", "accepted"}}, static_cast<double>(st.connections_accepted)},
        {{{"event", "refused_capacity"}}, static_cast<double>(st.connections_refused_capacity)},
        {{{"event", "refused_peer"}}, static_cast<double>(st.connections_refused_peer)},
        {{{"event", "timed_out"}}, static_cast<double>(st.connections_timed_out)},
        {{{"event", "active"}}, static_cast<double>(server.ActiveConnections())}};
  });
  ShutdownSignals signals(loop);
  bool stopping = false;
  auto shutdown = [&](int signum) {
    if (stopping) return;
    stopping = true;
    if (signum) LogInfo("signal " + std::to_string(signum) + ": finishing in-flight requests and stopping");
    (void)SdNotify("STOPPING=1");
    signals.Close();
    // Stop answering first, then stop the backend (informers, API client, timers).
    server.Stop([stop_backend] { stop_backend([] {}); });
  };
  if (rc == 0) {
    if (auto r = signals.Start(shutdown); !r) rc = Die("cannot install signal handlers: " + r.error().message);
  }
  if (rc != 0) {
    shutdown(0);
  } else {
    (void)SdNotify("READY=1");
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return rc;
}

int Finish(uv_loop_t* loop, int rc) {
  if (uv_loop_close(loop) != 0) {
    LogError("internal: libuv handles left open at exit");
    return rc == 0 ? 1 : rc;
  }
  LogInfo("stopped");
  return rc;
}

// Standalone mode's bound on the WAL: 16384 pages of 4 KiB, 64 MiB (plus what one commit
// adds). Reaching it makes a commit checkpoint on the loop thread, a pause of the loop
// however little is left to copy, so it should come rarely: at 64 clients, bounds of
// 2048 and 4096 pages gave a p99 of 10-14 ms, 16384 one of 7-10 ms, as before the
// background checkpoint (NOTES-tp.md).
constexpr int kWalBoundPages = 16384;

int RunStandalone(const Config& cfg) {
  bool recovered = false;
  // The WAL is copied into the database from the thread pool (BackgroundCheckpoint)
  // once it holds 1000 pages; a commit checkpoints by itself only past this bound.
  StoreOptions store_options;
  store_options.wal_checkpoint_pages = kWalBoundPages;
  auto store = OpenStore(cfg.db, &recovered, store_options);
  if (!store) return Die(store.error().message);
  if (recovered) {
    // Standalone mode has no API server to rebuild from: the leases of running
    // containers are forgotten, and their addresses can be handed out again.
    LogError("standalone mode: the fresh database starts empty (there is nothing to rebuild it from); "
             "restart the containers that use these subnets, or re-run their CNI ADD, so that they "
             "hold leases again");
  }
  SystemClock clock;
  Allocator allocator;
  CniService service(&allocator, store->get(), &clock);
  if (auto r = service.Load(); !r) return Die(r.error().message);
  auto manifests = LoadSubnetManifests(cfg.subnets);
  if (!manifests) return Die(manifests.error().message);
  for (const auto& s : manifests->skipped) LogInfo("skipping non-Subnet document " + s);
  auto applied = service.ApplySubnets(manifests->subnets);
  if (!applied) return Die(applied.error().message);
  for (const auto& w : *applied) LogWarn(w);
  LogInfo("standalone mode: " + std::to_string(manifests->subnets.size()) + " subnet(s), " +
          std::to_string(allocator.LeaseCount()) + " lease(s) restored from " + cfg.db);

  uv_loop_t loop;
  uv_loop_init(&loop);
  MetricsRegistry metrics;
  BatchingBackend backend(&loop, &service);  // group commit: one transaction per loop turn
  auto checkpointer = Checkpointer::Open(cfg.db);
  if (!checkpointer) return Die(checkpointer.error().message);
  BackgroundCheckpointOptions checkpoint_options;
  checkpoint_options.max_pages = kWalBoundPages;
  BackgroundCheckpoint checkpoint(&loop, store->get(), std::move(*checkpointer), checkpoint_options);
  checkpoint.Start();
  int rc = Serve(&loop, cfg, &backend, &allocator, &metrics, [&backend, &checkpoint](std::function<void()> done) {
    backend.Close([&checkpoint, done = std::move(done)]() mutable { checkpoint.Close(std::move(done)); });
  });
  return Finish(&loop, rc);
}

int RunCluster(const Config& cfg) {
  auto kube = cfg.kubeconfig.empty() ? InClusterConfig() : LoadKubeconfig(cfg.kubeconfig);
  if (!kube) return Die(kube.error().message);
  kube->user_agent = std::string(KubeClient::kUserAgent) + " (node " + cfg.node_name + ")";
  auto store = OpenStore(cfg.db);
  if (!store) return Die(store.error().message);
  SystemClock clock;
  Allocator allocator;
  // A new or recovered database is first rebuilt from this node's IPBlock allocations.
  if (auto r = RebuildFromApiServerIfPending(*kube, cfg.node_name, store->get(), &clock); !r) {
    return Die(r.error().message);
  }
  // The database is this node's journal: subnets and leases as last known.
  CniService journal(&allocator, store->get(), &clock);
  if (auto r = journal.Load(); !r) return Die(r.error().message);
  LogInfo("cluster mode on node " + cfg.node_name + ": " + std::to_string(allocator.LeaseCount()) +
          " lease(s) restored from " + cfg.db + "; API server " + kube->server);

  uv_loop_t loop;
  uv_loop_init(&loop);
  MetricsRegistry metrics;
  KubeClient client(&loop, *kube, &clock);
  KubeBlockApi block_api(&client);
  BlockEngine::Options engine_options;
  engine_options.node = cfg.node_name;
  engine_options.empty_block_linger_ms = cfg.empty_block_linger_ms;
  engine_options.deferred_write_ms = cfg.deferred_write_ms;
  engine_options.ahead_write_window_ms = cfg.ahead_write_window_ms;
  engine_options.learn_ahead_window = cfg.learn_ahead_window;
  engine_options.spare_addresses = static_cast<int>(cfg.spare_addresses);
  engine_options.borrow_backoff_ms = cfg.borrow_backoff_ms;
  BlockEngine engine(&allocator, store->get(), &block_api, &clock, engine_options);
  // The journal's subnets allocate from this node's blocks only, like those the Subnet
  // informer delivers later.
  for (const std::string& subnet : allocator.SubnetNames()) {
    if (auto r = engine.OnSubnetUpsert(subnet); !r) return Die(r.error().message);
  }
  // Spares a rebuild quarantined (the NodeShard lifts it once the pods then on the node
  // are gone).
  if (auto q = (*store)->GetSyncState(std::string(kQuarantinedSparesKey)); q && *q) {
    std::istringstream lines(**q);
    std::string subnet, address;
    while (lines >> subnet >> address) {
      if (auto a = IpAddr::Parse(address)) engine.QuarantineSpare(subnet, *a);
    }
    if (engine.quarantined_spares() > 0) {
      LogInfo(std::to_string(engine.quarantined_spares()) +
              " spare address(es) stay out of use until the pods on this node at its database's rebuild are gone");
    }
  }
  metrics.SetGaugeCallback(
      "sublease_block_engine_total", "IPBlock protocol counters of this node (monotonic)", [&engine] {
        const BlockEngineStats& st = engine.stats();
        auto n = [](uint64_t v) { return static_cast<double>(v); };
        return MetricsRegistry::GaugeSamples{
            {{{"event", "get"}}, n(st.gets)},           {{{"event", "list"}}, n(st.lists)},
            {{{"event", "create"}}, n(st.creates)},     {{{"event", "update"}}, n(st.updates)},
            {{{"event", "delete"}}, n(st.deletes)},     {{{"event", "conflict"}}, n(st.conflicts)},
            {{{"event", "unavailable"}}, n(st.unavailable)},
            {{{"event", "allocation"}}, n(st.allocations)},
            {{{"event", "release"}}, n(st.releases)},   {{{"event", "claim"}}, n(st.claims)},
            {{{"event", "borrow"}}, n(st.borrows)},     {{{"event", "repick"}}, n(st.repicks)},
            {{{"event", "borrow_backoff"}}, n(st.backoffs)},
            {{{"event", "adoption"}}, n(st.adoptions)}, {{{"event", "adopted_away"}}, n(st.adopted_away)},
            {{{"event", "stray_removed"}}, n(st.strays_removed)},
            {{{"event", "spare_taken"}}, n(st.spares_taken)},
            {{{"event", "spare_added"}}, n(st.spares_added)},
            {{{"event", "spare_returned"}}, n(st.spares_returned)}};
      });
  metrics.SetGaugeCallback(
      "sublease_ahead_write_window_ms",
      "How long an allocation made ahead of time now waits to share its IPBlock write (learned: "
      "--learn-ahead-window), the recent write time it was learned with, and the lead times seen",
      [&engine] {
        const AheadWindow& w = engine.ahead_window();
        return MetricsRegistry::GaugeSamples{
            {{{"value", "window"}}, static_cast<double>(w.WindowMs())},
            {{{"value", "write"}}, static_cast<double>(w.write_ms())},
            {{{"value", "lead_times"}}, static_cast<double>(w.lead_times())}};
      });
  // Allocation failures become Events on the pod (kubectl describe pod says why).
  EventRecorderOptions events_options;
  events_options.host = cfg.node_name;
  EventRecorder events(&client, &clock, events_options);
  // Kube-OVN `IP` objects, off the ADD path (--ip-objects).
  IpObjectWriter ip_objects(&loop, &client, IpObjectWriterOptions{});
  NodeShardOptions shard_options;
  shard_options.node = cfg.node_name;
  if (cfg.ip_objects) shard_options.ip_objects = &ip_objects;
  shard_options.release_grace_ms = cfg.release_grace_ms;
  shard_options.retry_interval_ms = cfg.retry_interval_ms;
  shard_options.max_retry_interval_ms = cfg.max_retry_interval_ms;
  shard_options.keep_vm_ips = cfg.keep_vm_ip;
  shard_options.reserved_ips = cfg.reserved_ips;
  shard_options.allocation_failed = [&events](const PodInfo& pod, const Error& error) {
    std::string_view reason = EventReasonFor(error.code);
    if (!reason.empty()) events.PodWarning({pod.namespace_name, pod.name, pod.uid}, reason, error.message);
  };
  shard_options.pod_warning = [&events](const PodInfo& pod, std::string_view reason,
                                        const std::string& message) {
    events.PodWarning({pod.namespace_name, pod.name, pod.uid}, reason, message);
  };
  NodeShard shard(&loop, &allocator, store->get(), &engine, &client, &clock, shard_options);
  metrics.SetGaugeCallback(
      "sublease_shard_total", "This node's pod controller counters (monotonic)", [&shard] {
        const NodeShard::Stats& st = shard.stats();
        auto n = [](uint64_t v) { return static_cast<double>(v); };
        return MetricsRegistry::GaugeSamples{
            {{{"event", "ahead_of_time"}}, n(st.ahead_of_time)},
            {{{"event", "on_demand"}}, n(st.on_demand)},
            {{{"event", "annotations_written"}}, n(st.annotations_written)},
            {{{"event", "annotation_patches"}}, n(st.annotation_patches)},
            {{{"event", "release"}}, n(st.releases)},
            {{{"event", "release_failure"}}, n(st.release_failures)},
            {{{"event", "holder_update"}}, n(st.holder_updates)},
            {{{"event", "reservation_read"}}, n(st.reservation_reads)},
            {{{"event", "reservation_list"}}, n(st.reservation_lists)}};
      });
  InformerOptions subnets_opts;
  subnets_opts.path = "/apis/kubeovn.io/v1/subnets";
  InformerOptions blocks_opts;
  blocks_opts.path = std::string(kIpBlockCollection);
  blocks_opts.label_selector = std::string(kNodeLabel) + "=" + cfg.node_name;
  InformerOptions pods_opts;
  pods_opts.path = "/api/v1/pods";
  pods_opts.field_selector = "spec.nodeName=" + cfg.node_name;
  // A restart resumes each watch from the progress kept in the store (410 → a list).
  subnets_opts.resume_resource_version = shard.ResumeFrom(NodeShard::Feed::kSubnets);
  blocks_opts.resume_resource_version = shard.ResumeFrom(NodeShard::Feed::kBlocks);
  pods_opts.resume_resource_version = shard.ResumeFrom(NodeShard::Feed::kPods);
  Informer subnets(&client, subnets_opts, shard.subnet_handler());
  Informer blocks(&client, blocks_opts, shard.block_handler());
  Informer pods(&client, pods_opts, shard.pod_handler());
  // Every IPPool (few and small; always listed, never resumed): all nodes agree which
  // addresses belong to which pool.
  InformerOptions ippools_opts;
  ippools_opts.path = "/apis/kubeovn.io/v1/ippools";
  Informer ippools(&client, ippools_opts, shard.ippool_handler());
  shard.set_ippool_informer(&ippools);
  shard.set_pod_informer(&pods);
  shard.set_subnet_informer(&subnets);
  shard.set_block_informer(&blocks);
  metrics.SetGaugeCallback(
      "sublease_informer_total", "Watch feeds of this node: events, lists and bytes received (monotonic)",
      [&subnets, &blocks, &pods, &ippools] {
        MetricsRegistry::GaugeSamples out;
        for (auto [feed, informer] : {std::pair<const char*, const Informer*>{"subnets", &subnets},
                                      {"ipblocks", &blocks}, {"pods", &pods}, {"ippools", &ippools}}) {
          const InformerStats& st = informer->stats();
          for (auto [event, v] : {std::pair<const char*, uint64_t>{"event", st.events}, {"bookmark", st.bookmarks},
                                  {"list", st.lists}, {"relist_on_410", st.relists_on_410},
                                  {"watch_bytes", st.watch_bytes}}) {
            out.push_back({{{"feed", feed}, {"event", event}}, static_cast<double>(v)});
          }
        }
        return out;
      });
  shard.Start();
  subnets.Start();
  blocks.Start();
  pods.Start();
  ippools.Start();
  // The cluster's duties (Subnet status, garbage collection) run on whichever node
  // holds the leader Lease.
  ClusterDutiesOptions duties_options;
  duties_options.node = cfg.node_name;
  duties_options.status_debounce_ms = cfg.status_interval_ms;
  duties_options.status_ms_per_node = cfg.status_ms_per_node;
  duties_options.reservation_retry_ms = cfg.retry_interval_ms;
  duties_options.reservation_max_retry_ms = cfg.max_retry_interval_ms;
  if (cfg.leader_candidates == "labelled") duties_options.candidate_selector = std::string(kLeaderCandidateLabel) + "=true";
  if (cfg.reserved_ips) {
    // The leader writes reservations through this node's block engine.
    duties_options.reserve = [&engine](const std::string& name, const std::string& subnet,
                                       const std::string& pod_namespace, const std::string& pod,
                                       const std::vector<std::string>& addresses,
                                       BlockEngine::AddressesDone done) {
      engine.Reserve(name, subnet, pod_namespace, pod, addresses, std::move(done));
    };
  }
  ClusterDuties duties(&loop, &client, &clock, duties_options);
  duties.Start();

  auto stop = [&](std::function<void()> done) {
    Sequence({[&](std::function<void()> next) { subnets.Close(std::move(next)); },
              [&](std::function<void()> next) { blocks.Close(std::move(next)); },
              [&](std::function<void()> next) { pods.Close(std::move(next)); },
              [&](std::function<void()> next) { ippools.Close(std::move(next)); },
              [&](std::function<void()> next) { shard.Close(std::move(next)); },
              [&](std::function<void()> next) { ip_objects.Close(std::move(next)); },
              [&](std::function<void()> next) { duties.Close(std::move(next)); },
              [&](std::function<void()> next) {
                events.Close();
                next();
              },
              [&](std::function<void()> next) { client.Close(std::move(next)); }},
             std::move(done));
  };
  int rc = Serve(&loop, cfg, &shard, &allocator, &metrics, stop);
  return Finish(&loop, rc);
}

}  // namespace
}  // namespace sublease

int main(int argc, char** argv) {
  bool exit_now = false;
  std::string output;
  auto cfg = sublease::ParseConfig(argc, argv, &exit_now, &output);
  if (exit_now) {
    std::fputs(output.c_str(), stdout);
    return 0;
  }
  if (!cfg) {
    std::fprintf(stderr, "subleased: %s\n", cfg.error().message.c_str());
    return 2;
  }
  sublease::LogLevel level = sublease::LogLevel::kInfo;
  sublease::ParseLogLevel(cfg->log_level, &level);
  sublease::SetLogLevel(level);
  return cfg->standalone ? sublease::RunStandalone(*cfg) : sublease::RunCluster(*cfg);
}
