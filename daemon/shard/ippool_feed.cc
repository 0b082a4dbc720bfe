#include "daemon/shard/ippool_feed.h"

#include <set>
#include <utility>
#include <vector>

#include "common/log.h"
#include "sync/ipblock.h"

namespace sublease {

IpPoolFeed::IpPoolFeed(Allocator* allocator, std::function<void()> changed)
    : allocator_(allocator), changed_(std::move(changed)) {}

void IpPoolFeed::Upsert(const KubeObject& object) {
  auto spec = DecodeIpPool(object.raw);
  if (!spec) {
    LogWarn("IPPool " + object.name +
            " cannot be read and gives no address: " + spec.error().message);
    specs_.erase(object.name);
    bad_[object.name] = spec.error().message;
  } else {
    bad_.erase(spec->name);
    auto it = specs_.find(spec->name);
    if (it != specs_.end() && it->second == *spec) return;
    specs_[spec->name] = std::move(*spec);
  }
  Apply();
}

void IpPoolFeed::OnDeleted(const KubeObject& object) {
  bool known = specs_.erase(object.name) + bad_.erase(object.name) > 0;
  if (known) Apply();
}

void IpPoolFeed::OnSynced() {
  if (informer_ != nullptr) {
    // A relist after a 410 reports no deletions: what the list lacks is gone.
    std::vector<std::string> gone;
    for (const auto& [name, spec] : specs_) {
      if (!informer_->cache().count(name)) gone.push_back(name);
    }
    for (const std::string& name : gone) specs_.erase(name);
  }
  synced_ = true;
  Apply();
}

void IpPoolFeed::MarkResourceMissing() {
  if (synced_) return;
  LogWarn(
      "the API server has no kubeovn.io/v1 IPPool resource (install "
      "packaging/kubernetes/crd-ippool.yaml "
      "or Kube-OVN's CRD to use named pools); allocating without IPPools");
  synced_ = true;
}

const ResolvedPool* IpPoolFeed::Find(const std::string& name) const {
  auto it = resolved_.find(name);
  return it == resolved_.end() ? nullptr : &it->second;
}

void IpPoolFeed::Apply() {
  std::map<std::string, const Subnet*> subnets;
  for (const std::string& name : allocator_->SubnetNames())
    subnets[name] = allocator_->FindSubnet(name);
  std::vector<IpPoolSpec> specs;
  for (const auto& [name, spec] : specs_) specs.push_back(spec);
  std::map<std::string, ResolvedPool> resolved = ResolvePools(specs, subnets);
  for (const auto& [name, why] : bad_) {
    ResolvedPool& r = resolved[name];
    r.spec.name = name;
    r.reason = "UpdateIPAMFailed";
    r.message = "IPPool " + name + " cannot be read: " + why;
  }
  bool changed = false;
  for (const auto& [name, r] : resolved) {
    auto old = resolved_.find(name);
    if (old == resolved_.end() || old->second.ready != r.ready ||
        old->second.message != r.message) {
      if (!r.ready) LogWarn(r.message);
      changed = true;
    }
  }
  changed = changed || resolved.size() != resolved_.size();
  resolved_ = std::move(resolved);

  std::map<std::string, std::map<std::string, PoolAddresses>> want;
  for (const auto& [name, r] : resolved_) {
    if (r.ready) want[r.spec.subnet][name] = r.usable;
  }
  for (auto it = pushed_.begin(); it != pushed_.end();) {
    it = subnets.count(it->first) ? std::next(it)
                                  : pushed_.erase(it);  // a removed Subnet lost its pools
  }
  for (const auto& [subnet, s] : subnets) {
    auto& now = want[subnet];
    auto was = pushed_.find(subnet);
    if (was == pushed_.end() ? now.empty() : was->second == now) continue;
    if (auto r = allocator_->SetNamedPools(subnet, now); !r) {
      LogError("IPPools of Subnet " + subnet + ": " + r.error().message);
      continue;
    }
    pushed_[subnet] = now;
    changed = true;
  }
  if (changed && changed_) changed_();
}

}  // namespace sublease
