// Service benchmarks: one CNI ADD (allocate + commit to a file-backed WAL database)
// followed by its DEL (release, committed), as the daemon does them, by subnet size
// and fill. Fill is real committed leases in the database and the allocator (up to
// 1M, inserted in bulk during set-up); each configuration is built once.
//   build/bin/service_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "daemon/service/cni_service.h"

namespace sublease {
namespace {

struct Setup {
  std::filesystem::path dir;
  std::unique_ptr<Store> store;
  Allocator alloc;
  SystemClock clock;
  std::unique_ptr<CniService> service;
  ~Setup() {
    service.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Owner FillOwner(uint64_t i) {
  std::string n = std::to_string(i);
  return Owner{"default", "web-7d9f8b6c5-" + n, "uid-" + n, std::string(64 - n.size(), 'a') + n, "net1"};
}

std::unique_ptr<Setup> Build(const std::string& cidr, uint64_t leases) {
  auto s = std::make_unique<Setup>();
  std::string tmpl = (std::filesystem::temp_directory_path() / "service_bench.XXXXXX").string();
  s->dir = mkdtemp(tmpl.data());
  s->store = std::move(*Store::Open((s->dir / "sublease.db").string()));
  s->service = std::make_unique<CniService>(&s->alloc, s->store.get(), &s->clock);
  SubnetSpec spec{"net", "macvlan.default", cidr, "", {}, "", ""};
  if (!s->service->ApplySubnets({spec})) return nullptr;
  // Bulk fill: many leases per transaction (the daemon commits one per request).
  for (uint64_t done = 0; done < leases;) {
    auto tx = s->store->Begin();
    for (uint64_t n = 0; n < 50'000 && done < leases; ++n, ++done) {
      AllocateRequest r;
      r.subnet = "net";
      r.owner = FillOwner(done);
      auto lease = s->alloc.Allocate(r);
      if (!lease) return nullptr;
      lease->state = LeaseState::kCommitted;
      (void)s->alloc.Commit(lease->key());
      if (!s->store->InsertLease(*lease, s->clock.NowMs())) return nullptr;
    }
    if (!tx || !tx->Commit()) return nullptr;
  }
  return s;
}

Setup* Cached(const std::string& cidr, uint64_t leases) {
  static std::map<std::string, std::unique_ptr<Setup>> cache;
  auto& slot = cache[cidr + "/" + std::to_string(leases)];
  if (!slot) slot = Build(cidr, leases);
  return slot.get();
}

struct Config { const char* cidr; uint64_t leases; const char* label; };
const Config kConfigs[] = {
    {"10.0.0.0/24", 0, "/24 0%"},       {"10.0.0.0/24", 126, "/24 50%"},
    {"10.0.0.0/24", 251, "/24 99%"},    {"10.0.0.0/16", 0, "/16 0%"},
    {"10.0.0.0/16", 32'766, "/16 50%"}, {"10.0.0.0/16", 64'880, "/16 99%"},
    {"10.0.0.0/8", 0, "/8 0%"},         {"10.0.0.0/8", 1'000'000, "/8 1M leases"},
    {"fd00::/64", 0, "/64 0%"},         {"fd00::/64", 1'000'000, "/64 1M leases"},
};

void BM_AddCommitDel(benchmark::State& state) {
  const Config& c = kConfigs[state.range(0)];
  Setup* s = Cached(c.cidr, c.leases);
  if (!s) {
    state.SkipWithError("set-up failed");
    return;
  }
  CniRequest req;
  req.container_id = "bench-container";
  req.ifname = "net1";
  req.netns = "/var/run/netns/bench";
  req.provider = "macvlan.default";
  for (auto _ : state) {
    auto reply = s->service->Add(req);
    benchmark::DoNotOptimize(reply);
    if (!reply || !s->service->Del(req)) state.SkipWithError("add/del failed");
  }
  state.SetLabel(std::string(c.label) + " (" + std::to_string(s->alloc.LeaseCount()) + " leases)");
}
BENCHMARK(BM_AddCommitDel)->DenseRange(0, std::size(kConfigs) - 1)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sublease

BENCHMARK_MAIN();
