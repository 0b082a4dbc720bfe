// fill_db: makes a daemon database holding N committed leases, for measuring start-up
// time and memory (bench/scale_bench.sh). Applies the Subnets of a manifest the way
// `subleased --standalone --subnets FILE` does, then inserts N leases of the first Subnet
// with realistic owner strings, 50,000 per transaction.
//   fill_db --subnets FILE --db PATH --leases N
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/clock.h"
#include "daemon/service/cni_service.h"
#include "daemon/service/subnet_manifest.h"

int main(int argc, char** argv) {
  using namespace sublease;
  std::string subnets, db;
  uint64_t n = 100'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--subnets") subnets = argv[i + 1];
    else if (a == "--db") db = argv[i + 1];
    else if (a == "--leases") n = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (subnets.empty() || db.empty() || n > 10'000'000) {
    std::fprintf(stderr, "usage: fill_db --subnets FILE --db PATH --leases N\n");
    return 2;
  }
  auto store = Store::Open(db);
  auto manifests = LoadSubnetManifests(subnets);
  if (!store || !manifests || manifests->subnets.empty()) {
    std::fprintf(stderr, "fill_db: cannot open %s or read %s\n", db.c_str(), subnets.c_str());
    return 1;
  }
  SystemClock clock;
  Allocator alloc;
  CniService service(&alloc, store->get(), &clock);
  if (!service.Load() || !service.ApplySubnets(manifests->subnets)) return 1;
  const std::string subnet = manifests->subnets.front().name;
  for (uint64_t done = 0; done < n;) {
    auto tx = (*store)->Begin();
    if (!tx) return 1;
    for (uint64_t k = 0; k < 50'000 && done < n; ++k, ++done) {
      AllocateRequest r;
      r.subnet = subnet;
      std::string s = std::to_string(done);
      r.owner = Owner{"default", "web-7d9f8b6c5-" + s, "3f6c1f5e-8d7a-4b8e-9c1a-" + std::string(12 - std::min<size_t>(12, s.size()), '0') + s,
                      std::string(64 - s.size(), 'a') + s, "net1"};
      r.mac = "00:00:00:53:6b:bb";
      r.provider = manifests->subnets.front().provider;
      auto lease = alloc.Allocate(r);
      if (!lease) {
        std::fprintf(stderr, "fill_db: %s\n", lease.error().message.c_str());
        return 1;
      }
      lease->state = LeaseState::kCommitted;
      (void)alloc.Commit(lease->key());
      if (auto st = (*store)->InsertLease(*lease, clock.NowMs()); !st) {
        std::fprintf(stderr, "fill_db: %s\n", st.error().message.c_str());
        return 1;
      }
    }
    if (!tx->Commit()) return 1;
  }
  std::printf("fill_db: %llu leases in %s\n", static_cast<unsigned long long>(n), db.c_str());
  return 0;
}
