// Property tests: seeded random sequences of allocate (dynamic, static, pool) and
// release, against a reference model that is a std::map of held addresses. Small
// subnets make exhaustion, conflicts and reuse frequent. Fixed seeds; the seed and the
// step are printed on failure; bounded at kSeeds x kSteps.
#include <gtest/gtest.h>

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
  Subnet subnet;

  std::optional<IpAddr> LowestFree(Family f) const {
    const SubnetFamily* sf = subnet.family(f);
    if (sf == nullptr) return std::nullopt;
    std::optional<IpAddr> out;
    sf->usable.ForEach([&](const IpRange& r) {
      for (U128 v = r.first.value(); !out && v <= r.last.value(); ++v) {
        if (held.count(IpAddr(f, v)) == 0) out = IpAddr(f, v);
      }
    });
    return out;
  }
  U128 FreeCount(Family f) const {
    const SubnetFamily* sf = subnet.family(f);
    if (sf == nullptr) return 0;
    U128 n = sf->usable.Count();
    for (const auto& [a, k] : held) n -= sf->usable.Contains(a) ? 1 : 0;
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
  explicit PropertyRun(uint32_t seed) : rng_(seed) {
    model_.subnet = MakeSubnet(0);
    EXPECT_TRUE(alloc_.UpsertSubnet(model_.subnet));
  }

  void Step() {
    int op = Pick(100);
    if (op < 35) Allocate(Kind::kDynamic);
    else if (op < 50) Allocate(Kind::kStatic);
    else if (op < 62) Allocate(Kind::kPool);
    else if (op < 97) Release();
    else Redefine();
    CheckCounts();
  }

  void CheckEverything() {
    ASSERT_EQ(alloc_.LeaseCount(), model_.leases.size());
    for (const auto& [addr, key] : model_.held) {
      const Lease* h = alloc_.Holder("net", addr);
      ASSERT_NE(h, nullptr) << addr.ToString();
      ASSERT_EQ(h->key(), key) << addr.ToString();
    }
    auto u = *alloc_.Usage("net");
    IpRangeList held4(Family::kV4);
    for (const auto& [addr, key] : model_.held) {
      if (addr.is_v4()) held4.Add(addr);
    }
    ASSERT_EQ(u.v4_using_range, held4.ToString());
    ASSERT_EQ(u.v4_available_range, model_.subnet.v4->usable.Subtract(held4).ToString());
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
    return r;
  }

  static IpAddr Ip(const char* s) { return *IpAddr::Parse(s); }

  void Allocate(Kind kind) {
    AllocateRequest r = Request(kind);
    AttachmentKey key = AttachmentKey::For(r.subnet, r.owner);
    auto lowest4 = model_.LowestFree(Family::kV4), lowest6 = model_.LowestFree(Family::kV6);
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
      if (model_.subnet.family(a.family())->usable.Contains(a)) {
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

TEST(AllocatorPropertyTest, RandomSequencesMatchTheReferenceModel) {
  auto deadline = std::chrono::steady_clock::now() + kTimeBudget;
  for (uint32_t seed = 1; seed <= kSeeds; ++seed) {
    PropertyRun run(seed);
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

}  // namespace
}  // namespace sublease
