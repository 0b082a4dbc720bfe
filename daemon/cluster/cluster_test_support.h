// Test support for the block engine: nodes (allocator + SQLite :memory: store + engine)
// sharing one FakeBlockApi, and the checks every test ends with. Tests only.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "daemon/allocator/allocator.h"
#include "daemon/cluster/block_engine.h"
#include "daemon/cluster/fake_block_api.h"
#include "daemon/store/store.h"

namespace sublease::testing {

inline IpAddr Ip(const char* text) { return *IpAddr::Parse(text); }

// Subnet "net" (provider net.default) of `cidr`, with a block-size override or none.
inline SubnetSpec Spec(const std::string& cidr, const std::string& block_size = "") {
  return SubnetSpec{"net", "net.default", cidr, "", {}, "", block_size};
}

// Every test loop runs at most this many scheduler steps.
constexpr size_t kMaxSteps = 2'000'000;

struct Node {
  std::string name;
  FakeClock clock;
  Allocator allocator;
  std::unique_ptr<Store> store;
  std::unique_ptr<BlockEngine> engine;
};

class ClusterHarness {
 public:
  explicit ClusterHarness(SubnetSpec spec) : spec_(std::move(spec)) {}

  // A node with the subnet loaded and its engine watching its own blocks; its store in
  // memory, or in the file `db` (which a test may then open a second connection to).
  Node& AddNode(const std::string& name, BlockEngine::Options options = {},
                const std::string& db = ":memory:") {
    auto node = std::make_unique<Node>();
    node->name = name;
    auto store = Store::Open(db);
    EXPECT_TRUE(store) << store.error().message;
    node->store = std::move(*store);
    auto subnet = NormalizeSubnet(spec_);
    EXPECT_TRUE(subnet) << subnet.error().message;
    EXPECT_TRUE(node->allocator.UpsertSubnet(*subnet));
    EXPECT_TRUE(node->store->UpsertSubnet(*subnet, node->clock.NowMs()));
    options.node = name;
    if (options.seed == 0) options.seed = 1000 + nodes_.size();
    node->engine = std::make_unique<BlockEngine>(&node->allocator, node->store.get(), &api,
                                                 &node->clock, options);
    EXPECT_TRUE(node->engine->OnSubnetUpsert(spec_.name));  // as the daemon does
    // Through the node: a test may replace its engine (a restart).
    Node* raw = node.get();
    api.Watch(
        name, [raw](const IpBlock& b) { if (raw->engine) raw->engine->OnBlockUpsert(b); },
        [raw](const std::string& n, const std::string& uid) {
          if (raw->engine) raw->engine->OnBlockDeleted(n, uid);
        });
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }

  AllocateRequest Request(const std::string& pod, std::vector<std::string> static_ips = {}) const {
    AllocateRequest r;
    r.subnet = spec_.name;
    r.owner = Owner{"default", pod, "uid-" + pod, "c-" + pod, "net1"};
    r.provider = spec_.provider;
    r.static_ips = std::move(static_ips);
    return r;
  }

  // Allocates and runs the scheduler (oldest first) until the answer came.
  Result<Lease> AllocateNow(Node& node, const AllocateRequest& r) {
    std::optional<Result<Lease>> out;
    node.engine->Allocate(r, [&out](Result<Lease> l) { out = std::move(l); });
    for (size_t i = 0; i < kMaxSteps && !out && api.RunNext(); ++i) {
    }
    api.RunAll(kMaxSteps);  // watch deliveries and anything left
    if (!out) return Fail(Error::Internal("no answer"));
    return *out;
  }
  // An allocation made ahead of time (AllocateRequest.unhurried); its answer lands in
  // `answers` under the pod's name when it comes. Runs the scheduler until idle.
  void AllocateAhead(Node& node, const std::string& pod, std::map<std::string, Result<Lease>>* answers) {
    AllocateRequest r = Request(pod);
    r.unhurried = true;
    node.engine->Allocate(r, [answers, pod](Result<Lease> l) { answers->emplace(pod, std::move(l)); });
    api.RunAll(kMaxSteps);
  }
  Result<void> ReleaseNow(Node& node, const std::string& pod) {
    std::optional<Result<void>> out;
    node.engine->Release(AttachmentKey::For(spec_.name, Request(pod).owner),
                         [&out](Result<void> r) { out = std::move(r); });
    api.RunAll(kMaxSteps);
    if (!out) return Fail(Error::Internal("no answer"));
    return *out;
  }

  // The cluster-wide invariants: no address held twice (leases of all nodes and the API
  // objects agree), every committed lease is in its block, every block allocation is a
  // committed lease of its node (ghosts allowed only when `allow_ghosts`), a spare is
  // its block's node's and held by no other node's lease (one of its own: handed out,
  // its pod not recorded yet — that lease counts as in its block), no pending
  // row or allocator reservation left once idle, and the store matches the allocator.
  void CheckInvariants(bool allow_ghosts = false) {
    std::map<IpAddr, std::string> holder;  // address -> node/attachment
    for (auto& n : nodes_) {
      EXPECT_EQ(n->engine->busy_attachments(), 0u) << n->name;
      std::map<AttachmentKey, Lease> mine;
      n->allocator.ForEachLease([&](const Lease& l) { mine.emplace(l.key(), l); });
      for (const auto& [key, l] : mine) {
        EXPECT_EQ(l.state, LeaseState::kCommitted) << n->name << " " << key.ToString();
        for (const IpAddr& a : l.addresses()) {
          auto [it, fresh] = holder.emplace(a, n->name + "/" + key.ToString());
          EXPECT_TRUE(fresh) << "duplicate " << a.ToString() << ": " << it->second << " and "
                             << n->name << "/" << key.ToString();
          EXPECT_TRUE(InApi(l, a, n->name))
              << a.ToString() << " of " << key.ToString() << " is not in its IPBlock";
        }
      }
      auto live = n->store->LoadLiveLeases();
      ASSERT_TRUE(live);
      EXPECT_EQ(live->size(), mine.size()) << n->name;
      for (const Lease& l : *live) {
        EXPECT_EQ(l.state, LeaseState::kCommitted) << n->name << " " << l.key().ToString();
        EXPECT_EQ(mine.count(l.key()), 1u) << n->name << " " << l.key().ToString();
      }
    }
    size_t in_api = 0;
    size_t unrecorded = 0;
    for (const auto& [name, b] : api.objects()) {
      for (const auto& [offset, a] : b.allocations) {
        if (a.spare) {
          EXPECT_EQ(a.node, b.node) << "a spare in " << name << " of another node than the block's";
          auto held = holder.find(b.AddressAt(offset));
          if (held != holder.end()) {
            EXPECT_EQ(held->second.rfind(b.node + "/", 0), 0u)
                << "spare " << b.AddressAt(offset).ToString() << " of " << b.node << " held by "
                << held->second;
            ++unrecorded;
          }
          continue;
        }
        ++in_api;
        if (!allow_ghosts) {
          EXPECT_EQ(holder.count(b.AddressAt(offset)), 1u)
              << b.AddressAt(offset).ToString() << " in " << name << " has no lease";
        }
      }
    }
    if (!allow_ghosts) {
      EXPECT_EQ(in_api + unrecorded, holder.size());
    }
  }

  size_t CommittedLeases() const {
    size_t n = 0;
    for (const auto& node : nodes_) n += node->allocator.LeaseCount();
    return n;
  }

  FakeBlockApi api;
  std::vector<std::unique_ptr<Node>>& nodes() { return nodes_; }

 private:
  bool InApi(const Lease& l, const IpAddr& a, const std::string& node) const {
    for (const auto& [name, b] : api.objects()) {
      auto offset = b.OffsetOf(a);
      if (b.subnet != l.subnet || !offset) continue;
      auto it = b.allocations.find(*offset);
      if (it != b.allocations.end() && it->second.spare) return it->second.node == node;
      return it != b.allocations.end() && it->second.pod_name == l.owner.pod_name &&
             it->second.pod_namespace == l.owner.pod_namespace &&
             it->second.ifname == l.owner.ifname && it->second.node == node;
    }
    return false;
  }

  SubnetSpec spec_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace sublease::testing
