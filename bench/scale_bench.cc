// scale_bench: the cost of one dynamic allocate + release (allocator only, in memory) and
// the allocator's heap per lease, with 1k, 100k and 1M real leases held in a /8. The
// leases carry realistic owner strings (Deployment pod name, UID, 64-hex container ID,
// MAC, provider), as in daemon/allocator/allocator_bench.cc.
//   build/bin/scale_bench --benchmark_min_time=0.2   (bench/scale_bench.sh runs it)
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <map>
#include <memory>
#include <string>

#include "daemon/allocator/allocator.h"

namespace sublease {
namespace {

struct Setup {
  Allocator alloc;
  double bytes_per_lease = 0;
};

AllocateRequest Request(uint64_t i) {
  AllocateRequest r;
  r.subnet = "net";
  std::string n = std::to_string(i);
  r.owner = Owner{"default", "web-7d9f8b6c5-" + n,
                  "3f6c1f5e-8d7a-4b8e-9c1a-" + std::string(12 - std::min<size_t>(12, n.size()), '0') + n,
                  std::string(64 - n.size(), 'a') + n, "net1"};
  r.mac = "00:00:00:53:6b:bb";
  r.provider = "macvlan.default";
  return r;
}

Setup& Cached(uint64_t leases) {
  static std::map<uint64_t, std::unique_ptr<Setup>> cache;
  auto& slot = cache[leases];
  if (slot) return *slot;
  slot = std::make_unique<Setup>();
  (void)slot->alloc.UpsertSubnet(*NormalizeSubnet(SubnetSpec{"net", "macvlan.default", "10.0.0.0/8", "", {}, "", ""}));
  size_t before = mallinfo2().uordblks;
  for (uint64_t i = 0; i < leases; ++i) (void)slot->alloc.Allocate(Request(i));
  slot->bytes_per_lease = double(mallinfo2().uordblks - before) / double(leases);
  return *slot;
}

void BM_AllocateReleaseAtLeases(benchmark::State& state) {
  Setup& s = Cached(static_cast<uint64_t>(state.range(0)));
  AllocateRequest r = Request(~uint64_t{0} >> 1);
  AttachmentKey key = AttachmentKey::For(r.subnet, r.owner);
  for (auto _ : state) {
    auto l = s.alloc.Allocate(r);
    benchmark::DoNotOptimize(l);
    if (!l || !s.alloc.Release(key)) state.SkipWithError("allocation failed");
  }
  state.counters["leases"] = static_cast<double>(s.alloc.LeaseCount());
  state.counters["bytes_per_lease"] = s.bytes_per_lease;
}
BENCHMARK(BM_AllocateReleaseAtLeases)->Arg(1'000)->Arg(100'000)->Arg(1'000'000)->ArgName("leases");

}  // namespace
}  // namespace sublease

BENCHMARK_MAIN();
