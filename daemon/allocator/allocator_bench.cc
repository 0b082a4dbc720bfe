// Allocator benchmarks: the cost of one dynamic allocate+release, and of one static
// allocate+release, by subnet size and fill. Fill is made of real leases (realistic
// owner strings) up to 1M; a fill beyond that (/8 and /64 at 50% and 99%) is made by
// excluding the filled part, which leaves the same free set lowest-first allocation
// would. Each configuration is built once and shared by the benchmark's runs.
//   build-alloc-rel/bin/allocator_bench
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
  std::string subnet = "net";
  double bytes_per_lease = 0;
};

// Strings shaped like real ones: Deployment pod name, UID, 64-hex container ID, MAC.
AllocateRequest Request(uint64_t i) {
  AllocateRequest r;
  r.subnet = "net";
  std::string n = std::to_string(i);
  r.owner = Owner{"default", "web-7d9f8b6c5-" + n, "3f6c1f5e-8d7a-4b8e-9c1a-" + std::string(12 - std::min<size_t>(12, n.size()), '0') + n,
                  std::string(64 - n.size(), 'a') + n, "net1"};
  r.mac = "00:00:00:53:6b:bb";
  r.provider = "macvlan.default";
  return r;
}

// cidr, the fill fraction (percent), and how many real leases to hold at most.
std::unique_ptr<Setup> Build(const std::string& cidr, int fill_percent, uint64_t max_leases) {
  auto setup = std::make_unique<Setup>();
  auto net = *IpNet::Parse(cidr);
  IpRange host = HostRange(net);
  U128 usable = host.last.value() - host.first.value();  // minus the gateway at first
  U128 fill = usable / 100 * fill_percent;
  U128 leases = fill < max_leases ? fill : max_leases;
  std::vector<std::string> exclude;
  if (fill > leases) {
    // Exclude the filled part above the real leases (gateway, leases, then this).
    IpAddr from = host.first.Plus(1 + leases), to = host.first.Plus(fill);
    exclude.push_back(from.ToString() + ".." + to.ToString());
  }
  auto subnet = *NormalizeSubnet(SubnetSpec{"net", "macvlan.default", cidr, "", exclude, "", ""});
  (void)setup->alloc.UpsertSubnet(subnet);
  size_t before = mallinfo2().uordblks;
  for (uint64_t i = 0; i < static_cast<uint64_t>(leases); ++i) (void)setup->alloc.Allocate(Request(i));
  if (leases > 0) setup->bytes_per_lease = double(mallinfo2().uordblks - before) / double(leases);
  return setup;
}

Setup& Cached(const std::string& cidr, int fill_percent, uint64_t max_leases) {
  static std::map<std::string, std::unique_ptr<Setup>> cache;
  std::string key = cidr + "/" + std::to_string(fill_percent) + "/" + std::to_string(max_leases);
  auto& slot = cache[key];
  if (!slot) slot = Build(cidr, fill_percent, max_leases);
  return *slot;
}

const char* const kCidrs[] = {"10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/8", "fd00::/64"};

void BM_DynamicAllocateRelease(benchmark::State& state) {
  const char* cidr = kCidrs[state.range(0)];
  Setup& s = Cached(cidr, static_cast<int>(state.range(1)), static_cast<uint64_t>(state.range(2)));
  AllocateRequest r = Request(~uint64_t{0} >> 1);
  AttachmentKey key = AttachmentKey::For(r.subnet, r.owner);
  for (auto _ : state) {
    auto l = s.alloc.Allocate(r);
    benchmark::DoNotOptimize(l);
    if (!l || !s.alloc.Release(key)) state.SkipWithError("allocation failed");
  }
  state.SetLabel(std::string(cidr) + " fill " + std::to_string(state.range(1)) + "% leases " +
                 std::to_string(s.alloc.LeaseCount()));
  if (s.bytes_per_lease > 0) state.counters["bytes_per_lease"] = s.bytes_per_lease;
}

// Args: cidr index, fill percent, max real leases.
BENCHMARK(BM_DynamicAllocateRelease)
    ->ArgsProduct({{0, 1}, {0, 50, 99}, {1'000'000}})
    ->Args({2, 0, 0})->Args({2, 50, 0})->Args({2, 99, 0})
    ->Args({3, 0, 0})->Args({3, 50, 0})->Args({3, 99, 0})
    ->Args({2, 50, 1'000'000})->Args({3, 1, 1'000'000})
    ->ArgNames({"cidr", "fill", "max_leases"});

void BM_StaticAllocateRelease(benchmark::State& state) {
  const char* cidr = kCidrs[state.range(0)];
  Setup& s = Cached(cidr, static_cast<int>(state.range(1)), static_cast<uint64_t>(state.range(2)));
  AllocateRequest r = Request(~uint64_t{0} >> 1);
  // An address above the fill: free in every configuration below.
  const char* const kStatic[] = {"10.0.0.250", "10.0.255.200", "10.255.0.200", "fd00::ffff:ffff:ffff:fff0"};
  r.static_ips = {kStatic[state.range(0)]};
  AttachmentKey key = AttachmentKey::For(r.subnet, r.owner);
  for (auto _ : state) {
    auto l = s.alloc.Allocate(r);
    benchmark::DoNotOptimize(l);
    if (!l || !s.alloc.Release(key)) state.SkipWithError("allocation failed");
  }
  state.SetLabel(std::string(cidr) + " leases " + std::to_string(s.alloc.LeaseCount()));
}

BENCHMARK(BM_StaticAllocateRelease)
    ->Args({1, 50, 1'000'000})->Args({2, 50, 1'000'000})->Args({3, 1, 1'000'000})
    ->ArgNames({"cidr", "fill", "max_leases"});

}  // namespace
}  // namespace sublease

BENCHMARK_MAIN();
