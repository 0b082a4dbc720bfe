// Property tests: seeded random sequences of allocate (dynamic, static, pool) and
// release, against a reference model that is a std::map of held addresses. Small
// subnets make exhaustion, conflicts and reuse frequent. Fixed seeds; the seed and the
// step are printed on failure; bounded at kSeeds x kSteps. The cluster-mode run adds
// local blocks (/29 and /125) that come and go, foreign holds, and `within` picks.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>

#include "daemon/allocator/allocator.h"

namespace sublease {
namespace {

constexpr int kSeeds = 20;
constexpr int kSteps = 5000;
constexpr int kPods = 60;
constexpr auto kTimeBudget = std::chrono::seconds(120);

const char* const kPoolAnnotation = "10.0.0.40,fd00::40;10.0.0.41,fd00::41;10.0.0.42;10.0.0.43,fd00::43";

// The model: who holds what, and the subnet's usable sets.
struct Model {
  std::map<IpAddr, AttachmentKey> held;
  std::map<AttachmentKey, std::vector<IpAddr>> leases;
  std::set<IpAddr> foreign;
  std::vector<IpNet> local_blocks;
  bool cluster = false;
  Subnet subnet;

  bool Free(const IpAddr& a) const {
    return subnet.family(a.family())->usable.Contains(a) && held.count(a) == 0 &&
           foreign.count(a) == 0;
  }
  bool Local(const IpAddr& a) const {
    for (const IpNet& b : local_blocks) {
      if (b.Contains(a)) return true;
    }
    return false;
  }
  // The lowest free address a dynamic pick may take: inside `within` when given,
  // else (cluster mode) inside a local block.
  std::optional<IpAddr> LowestFree(Family f, const IpNet* within = nullptr) const {
    const SubnetFamily* sf = subnet.family(f);
    if (sf == nullptr) return std::nullopt;
    std::optional<IpAddr> out;
    sf->usable.ForEach([&](const IpRange& r) {
      for (U128 v = r.first.value(); !out && v <= r.last.value(); ++v) {
        IpAddr a(f, v);
        bool allowed = within ? within->Contains(a) : (!cluster || Local(a));
        if (allowed && Free(a)) out = a;
      }
    });
    return out;
  }
  U128 FreeCount(Family f) const {
    const SubnetFamily* sf = subnet.family(f);
    if (sf == nullptr) return 0;
    U128 n = 0;
    sf->usable.ForEach([&](const IpRange& r) {
      for (U128 v = r.first.value(); v <= r.last.value(); ++v) n += Free(IpAddr(f, v)) ? 1 : 0;
    });
    return n;
  }
  U128 HeldCount(Family f) const {
    U128 n = 0;
    for (const auto& [a, k] : held) n += a.family() == f ? 1 : 0;
    return n;
  }
};

Subnet MakeSubnet(int variant) {
  // Two definitions the sequence switches between: exclusions move, CIDRs stay.
  std::vector<std::string> exclude = variant == 0
      ? std::vector<std::string>{"10.0.0.40..10.0.0.45", "fd00::40..fd00::45"}
      : std::vector<std::string>{"10.0.0.2..10.0.0.9", "10.0.0.40..10.0.0.45", "fd00::30..fd00::3f"};
  return *NormalizeSubnet(SubnetSpec{"net", "net.default", "10.0.0.0/26,fd00::/122", "",
                                     exclude, "", ""});
}

class PropertyRun {
 public:
  PropertyRun(uint32_t seed, bool cluster) : rng_(seed) {
    model_.subnet = MakeSubnet(0);
    model_.cluster = cluster;
    EXPECT_TRUE(alloc_.UpsertSubnet(model_.subnet));
    EXPECT_TRUE(alloc_.SetClusterMode("net", cluster));
  }

  void Step() {
    int op = Pick(100);
    if (op < 35) Allocate(Kind::kDynamic);
    else if (op < 50) Allocate(Kind::kStatic);
    else if (op < 62) Allocate(Kind::kPool);
    else if (op < 90) Release();
    else if (op < 97 && model_.cluster) ClusterChange();
    else if (op < 97) Release();
    else Redefine();
    CheckCounts();
  }

  void CheckEverything() {
    ASSERT_EQ(alloc_.LeaseCount(), model_.leases.size());
    for (const auto& [addr, key] : model_.held) {
      std::optional<Lease> h = alloc_.Holder("net", addr);
      ASSERT_TRUE(h.has_value()) << addr.ToString();
      ASSERT_EQ(h->key(), key) << addr.ToString();
    }
    auto u = *alloc_.Usage("net");
    IpRangeList held4(Family::kV4);
    for (const auto& [addr, key] : model_.held) {
      if (addr.is_v4()) held4.Add(addr);
    }
    ASSERT_EQ(u.v4_using_range, held4.ToString());
    IpRangeList foreign4(Family::kV4);
    for (const IpAddr& a : model_.foreign) {
      if (a.is_v4()) foreign4.Add(a);
    }
    ASSERT_EQ(u.v4_available_range,
              model_.subnet.v4->usable.Subtract(held4).Subtract(foreign4).ToString());
    for (Family f : {Family::kV4, Family::kV6}) {
      ASSERT_EQ(alloc_.HasDynamicFree("net", f), model_.LowestFree(f).has_value());
    }
  }

 private:
  enum class Kind { kDynamic, kStatic, kPool };

  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  AllocateRequest Request(Kind kind) {
    AllocateRequest r;
    r.subnet = "net";
    std::string pod = "pod-" + std::to_string(Pick(kPods));
    r.owner = Owner{"default", pod, "uid", "c" + std::to_string(Pick(1000)), "net1"};
    int fam = Pick(4);
    if (fam == 0) r.family = Family::kV4;
    if (fam == 1) r.family = Family::kV6;
    if (kind == Kind::kStatic) {
      // Anywhere in (and just outside) the CIDRs: valid, excluded, gateway, broadcast...
      bool v6 = r.family ? *r.family == Family::kV6 : Pick(2) == 1;
      r.static_ips.push_back(v6 ? IpAddr(Family::kV6, Ip("fd00::").value() + Pick(66)).ToString()
                                : IpAddr(Family::kV4, Ip("10.0.0.0").value() + Pick(66)).ToString());
    }
    if (kind == Kind::kPool) {
      r.pool = kPoolAnnotation;
      if (Pick(2) == 0) r.ordinal = static_cast<uint32_t>(Pick(5));
    }
    if (kind == Kind::kDynamic && model_.cluster && Pick(3) == 0) r.within.push_back(RandomBlock());
    return r;
  }

  // One of the 8 blocks of either family (/29 of the /26, /125 of the /122).
  IpNet RandomBlock() {
    int i = Pick(8);
    if (Pick(2) == 0) return IpNet(IpAddr(Family::kV4, Ip("10.0.0.0").value() + 8 * i), 29);
    return IpNet(IpAddr(Family::kV6, Ip("fd00::").value() + 8 * i), 125);
  }

  // A block becomes local or stops being local, or a foreign hold comes or goes.
  void ClusterChange() {
    int op = Pick(4);
    if (op == 0) {
      IpNet b = RandomBlock();
      bool local = Pick(3) != 0;
      ASSERT_TRUE(alloc_.SetBlockLocal("net", b, local));
      auto& v = model_.local_blocks;
      v.erase(std::remove(v.begin(), v.end(), b), v.end());
      if (local) v.push_back(b);
      return;
    }
    IpNet b = RandomBlock();
    IpAddr a = b.first().Plus(static_cast<U128>(Pick(8)));
    if (op == 1 && !model_.foreign.empty()) {
      a = *std::next(model_.foreign.begin(), Pick(static_cast<int>(model_.foreign.size())));
    }
    if (op <= 1) {
      ASSERT_TRUE(alloc_.UnmarkForeign("net", a));
      model_.foreign.erase(a);
    } else {
      ASSERT_TRUE(alloc_.MarkForeign("net", a, "pod other/" + a.ToString()));
      model_.foreign.insert(a);
    }
  }

  static IpAddr Ip(const char* s) { return *IpAddr::Parse(s); }

  void Allocate(Kind kind) {
    AllocateRequest r = Request(kind);
    AttachmentKey key = AttachmentKey::For(r.subnet, r.owner);
    const IpNet* within4 = nullptr;
    const IpNet* within6 = nullptr;
    for (const IpNet& n : r.within) (n.family() == Family::kV4 ? within4 : within6) = &n;
    auto lowest4 = model_.LowestFree(Family::kV4, within4);
    auto lowest6 = model_.LowestFree(Family::kV6, within6);
    auto result = alloc_.Allocate(r);
    auto existing = model_.leases.find(key);
    if (existing != model_.leases.end()) {  // idempotence: same addresses back
      ASSERT_TRUE(result) << result.error().message;
      ASSERT_EQ(result->addresses(), existing->second);
      return;
    }
    if (!result) {
      // A dynamic request fails only when a needed family has no free address.
      if (kind == Kind::kDynamic) {
        bool need4 = !r.family || *r.family == Family::kV4, need6 = !r.family || *r.family == Family::kV6;
        ASSERT_EQ(result.error().code, Code::kExhausted) << result.error().message;
        ASSERT_TRUE((need4 && !lowest4) || (need6 && !lowest6)) << result.error().message;
      }
      return;  // the count check after the step proves nothing was taken
    }
    for (const IpAddr& a : result->addresses()) {
      ASSERT_EQ(model_.held.count(a), 0u) << "duplicate " << a.ToString();
      ASSERT_EQ(model_.foreign.count(a), 0u) << "foreign-held " << a.ToString();
      ASSERT_TRUE(CheckAssignable(model_.subnet, a)) << "unassignable " << a.ToString();
      bool requested = (kind == Kind::kStatic && r.static_ips[0] == a.ToString()) || kind == Kind::kPool;
      if (!requested) {
        ASSERT_TRUE(model_.subnet.family(a.family())->usable.Contains(a)) << a.ToString();
        ASSERT_EQ(a, a.is_v4() ? *lowest4 : *lowest6) << "not the lowest free";
      }
    }
    ASSERT_EQ(result->v4.has_value(), !r.family || *r.family == Family::kV4);
    ASSERT_EQ(result->v6.has_value(), !r.family || *r.family == Family::kV6);
    for (const IpAddr& a : result->addresses()) model_.held.emplace(a, key);
    model_.leases[key] = result->addresses();
  }

  void Release() {
    if (model_.leases.empty()) return;
    auto it = std::next(model_.leases.begin(), Pick(static_cast<int>(model_.leases.size())));
    auto released = alloc_.Release(it->first);
    ASSERT_TRUE(released) << released.error().message;
    ASSERT_EQ(released->addresses(), it->second);
    for (const IpAddr& a : it->second) model_.held.erase(a);
    model_.leases.erase(it);
    // A usable released address is allocatable again: the lowest free is now at most it.
    for (const IpAddr& a : released->addresses()) {
      if (model_.Free(a) && (!model_.cluster || model_.Local(a))) {
        ASSERT_LE(*model_.LowestFree(a.family()), a);
      }
    }
  }

  void Redefine() {
    model_.subnet = MakeSubnet(Pick(2));
    ASSERT_TRUE(alloc_.UpsertSubnet(model_.subnet));
  }

  void CheckCounts() {
    auto u = alloc_.Usage("net");
    ASSERT_TRUE(u);
    ASSERT_EQ(u->v4_using, model_.HeldCount(Family::kV4));
    ASSERT_EQ(u->v6_using, model_.HeldCount(Family::kV6));
    ASSERT_EQ(u->v4_available, model_.FreeCount(Family::kV4));
    ASSERT_EQ(u->v6_available, model_.FreeCount(Family::kV6));
    ASSERT_EQ(alloc_.LeaseCount(), model_.leases.size());
  }

  std::mt19937 rng_;
  Allocator alloc_;
  Model model_;
};

void RunSeeds(bool cluster) {
  auto deadline = std::chrono::steady_clock::now() + kTimeBudget;
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    PropertyRun run(seed, cluster);
    for (int step = 0; step < kSteps; ++step) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " step " + std::to_string(step));
      run.Step();
      if (::testing::Test::HasFatalFailure()) return;
      if (step % 250 == 0) {
        run.CheckEverything();
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
    run.CheckEverything();
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "time budget exceeded at seed " << seed;
  }
}

TEST(AllocatorPropertyTest, RandomSequencesMatchTheReferenceModel) { RunSeeds(false); }

TEST(AllocatorPropertyTest, ClusterModeSequencesMatchTheReferenceModel) { RunSeeds(true); }

}  // namespace
}  // namespace sublease
