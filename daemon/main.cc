// subleased: wiring only. Parses the configuration, opens the store, loads the
// allocator, listens, runs the loop, and shuts down cleanly on SIGTERM/SIGINT.
#include <grp.h>
#include <uv.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/api.h"
#include "daemon/config.h"
#include "daemon/server/http_server.h"
#include "daemon/server/metrics.h"
#include "daemon/server/sd_notify.h"
#include "daemon/server/signals.h"
#include "daemon/service/cni_service.h"
#include "daemon/service/subnet_manifest.h"
#include "daemon/store/store.h"

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

int Run(const Config& cfg) {
  std::error_code ec;
  auto db_dir = std::filesystem::path(cfg.db).parent_path();
  if (!db_dir.empty()) std::filesystem::create_directories(db_dir, ec);
  auto store = Store::Open(cfg.db);
  if (!store) return Die("cannot open database " + cfg.db + ": " + store.error().message);

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

  auto group = ResolveGroup(cfg.socket_group);
  if (!group) return Die(group.error().message);

  uv_loop_t loop;
  uv_loop_init(&loop);
  MetricsRegistry metrics;
  StandaloneBackend backend(&service);
  Api api(&backend, &allocator, &metrics);
  HttpServer server(&loop, HttpServerLimits{cfg.max_request_bytes, cfg.idle_timeout_ms, cfg.max_connections});
  int rc = 0;
  for (const auto& path : cfg.sockets) {
    ListenerConfig l{"unix:" + path, group->has_value() ? 0660u : 0600u, *group,
                     [&api](const HttpRequest& req, Respond respond) { api.ServeCni(req, std::move(respond)); }};
    if (auto r = server.Listen(l); !r) {
      rc = Die("cannot listen on " + path + ": " + r.error().message);
      break;
    }
    LogInfo("serving the CNI plugin on " + path);
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

  metrics.SetGaugeCallback("sublease_server_connections", "Socket server connection counters", [&server] {
    HttpServerStats st = server.Stats();
    return MetricsRegistry::GaugeSamples{
        {{{"event", "accepted"}}, static_cast<double>(st.connections_accepted)},
        {{{"event", "refused_capacity"}}, static_cast<double>(st.connections_refused_capacity)},
        {{{"event", "refused_peer"}}, static_cast<double>(st.connections_refused_peer)},
        {{{"event", "timed_out"}}, static_cast<double>(st.connections_timed_out)},
        {{{"event", "active"}}, static_cast<double>(server.ActiveConnections())}};
  });
  ShutdownSignals signals(&loop);
  auto shutdown = [&](int signum) {
    if (signum) LogInfo("signal " + std::to_string(signum) + ": finishing in-flight requests and stopping");
    (void)SdNotify("STOPPING=1");
    signals.Close();
    server.Stop([] {});
  };
  if (rc != 0) {
    shutdown(0);
  } else {
    if (auto r = signals.Start(shutdown); !r) {
      rc = Die("cannot install signal handlers: " + r.error().message);
      shutdown(0);
    } else {
      (void)SdNotify("READY=1");
    }
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) LogError("internal: libuv handles left open at exit");
  else LogInfo("stopped");
  return rc;
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
  return sublease::Run(*cfg);
}
