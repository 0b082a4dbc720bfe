// store_bench: the cost of one lease's life in a file-backed WAL database.
//
// Each iteration inserts a pending lease, commits it and releases it, as the daemon
// does: BM_LeaseLifecycle runs each step in its own transaction (what happens when the
// steps are separated by a block update and a pod's lifetime), BM_LeaseLifecycleOneTx
// runs all three in one. The database holds 0, 100k or 1M committed leases first
// (built once per size per run in a temporary file, removed at exit). BM_LoadLiveLeases
// and BM_Open measure start-up: reading every live lease back, and the integrity check.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "daemon/store/store.h"

namespace sublease {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kNow = 1700000000000;
// Existing leases fill 10.0.0.0/8 from 10.0.0.1 upwards; benchmark leases cycle through
// 64k addresses of 10.128.0.0/16 (never held by the prefill), so after release they
// come round again as a reused address would.
constexpr uint32_t kPrefillBase = 0x0A000001;
constexpr uint32_t kChurnBase = 0x0A800000;
constexpr uint32_t kChurnSpan = 1 << 16;

[[noreturn]] void Die(const std::string& what, const Error& e) {
  std::fprintf(stderr, "store_bench: %s: %s\n", what.c_str(), e.message.c_str());
  std::exit(1);
}

// Appends rather than `"p" + std::to_string(n)`, which trips GCC 12's false -Wrestrict
// (GCC bug 105329) at -O3.
std::string Name(const char* prefix, uint64_t n) {
  std::string name(prefix);
  name += std::to_string(n);
  return name;
}

Lease MakeLease(const std::string& name, uint32_t v4) {
  Lease l;
  l.subnet = "bench";
  l.owner = Owner{"bench", name, "uid-" + name, "ctr-" + name, "net1"};
  l.v4 = IpAddr(Family::kV4, v4);
  l.provider = "macvlan.bench";
  return l;
}

// One database per prefill size, built on first use and deleted at exit.
class Databases {
 public:
  ~Databases() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  std::string Path(int64_t existing) const {
    return (dir_ / ("prefill-" + std::to_string(existing) + ".db")).string();
  }

  Store& Get(int64_t existing) {
    auto it = stores_.find(existing);
    if (it != stores_.end()) return *it->second;
    if (dir_.empty()) {
      std::string tmpl = (fs::temp_directory_path() / "store_bench.XXXXXX").string();
      if (mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp", Error::Internal("failed"));
      dir_ = tmpl;
    }
    const std::string path = Path(existing);
    auto store = Store::Open(path);
    if (!store) Die("open", store.error());
    auto subnet = NormalizeSubnet(SubnetSpec{"bench", "macvlan.bench", "10.0.0.0/8", "", {}, "", ""});
    if (!subnet) Die("subnet", subnet.error());
    if (auto ok = (*store)->UpsertSubnet(*subnet, kNow); !ok) Die("upsert", ok.error());
    // Bounded: existing <= 1M, in one transaction per 100k rows.
    for (int64_t done = 0; done < existing;) {
      auto tx = (*store)->Begin();
      if (!tx) Die("begin", tx.error());
      for (int64_t i = 0; i < 100000 && done < existing; ++i, ++done) {
        Lease l = MakeLease(Name("pre-", static_cast<uint64_t>(done)), kPrefillBase + static_cast<uint32_t>(done));
        l.state = LeaseState::kCommitted;
        if (auto ok = (*store)->InsertLease(l, kNow); !ok) Die("prefill", ok.error());
      }
      if (auto ok = tx->Commit(); !ok) Die("commit", ok.error());
    }
    return *(stores_[existing] = std::move(*store));
  }

 private:
  fs::path dir_;
  std::map<int64_t, std::unique_ptr<Store>> stores_;
};

Databases& Dbs() {
  static Databases dbs;
  return dbs;
}

// Iteration i uses churn address i mod 64k and a name unique within the run.
uint64_t g_serial = 0;

void BM_LeaseLifecycle(benchmark::State& state) {
  Store& store = Dbs().Get(state.range(0));
  for (auto _ : state) {
    const uint64_t n = g_serial++;
    const Lease l = MakeLease(Name("p", n), kChurnBase + static_cast<uint32_t>(n % kChurnSpan));
    const int64_t now = kNow + static_cast<int64_t>(n);
    if (auto ok = store.InsertLease(l, now); !ok) Die("insert", ok.error());
    if (auto ok = store.SetLeaseState(l.key(), LeaseState::kCommitted, now); !ok) Die("commit", ok.error());
    if (auto ok = store.ReleaseLease(l.key(), now); !ok) Die("release", ok.error());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LeaseLifecycleOneTx(benchmark::State& state) {
  Store& store = Dbs().Get(state.range(0));
  for (auto _ : state) {
    const uint64_t n = g_serial++;
    const Lease l = MakeLease(Name("p", n), kChurnBase + static_cast<uint32_t>(n % kChurnSpan));
    const int64_t now = kNow + static_cast<int64_t>(n);
    auto tx = store.Begin();
    if (!tx) Die("begin", tx.error());
    if (auto ok = store.InsertLease(l, now); !ok) Die("insert", ok.error());
    if (auto ok = store.SetLeaseState(l.key(), LeaseState::kCommitted, now); !ok) Die("commit", ok.error());
    if (auto ok = store.ReleaseLease(l.key(), now); !ok) Die("release", ok.error());
    if (auto ok = tx->Commit(); !ok) Die("tx commit", ok.error());
  }
  state.SetItemsProcessed(state.iterations());
}

// Start-up cost: reading every live lease back (rebuilding the allocator).
void BM_LoadLiveLeases(benchmark::State& state) {
  Store& store = Dbs().Get(state.range(0));
  for (auto _ : state) {
    auto leases = store.LoadLiveLeases();
    if (!leases) Die("load", leases.error());
    benchmark::DoNotOptimize(leases->size());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Start-up cost: Open runs the integrity check (quick_check above 64 MiB).
void BM_Open(benchmark::State& state) {
  Store& store = Dbs().Get(state.range(0));
  (void)store;
  const std::string path = Dbs().Path(state.range(0));
  for (auto _ : state) {
    auto again = Store::Open(path);
    if (!again) Die("reopen", again.error());
  }
}

BENCHMARK(BM_LeaseLifecycle)->Arg(0)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LeaseLifecycleOneTx)->Arg(0)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LoadLiveLeases)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Open)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace sublease

BENCHMARK_MAIN();
