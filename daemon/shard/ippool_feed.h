// IpPoolFeed: this node's view of the cluster's kubeovn.io/v1 IPPools.
//
// Every node watches all IPPools (they are few and small), resolves them against the
// Subnets its allocator knows (ResolvePools: overlap, CIDR, exclusions) and pushes the
// Ready ones into the allocator (SetNamedPools). All nodes apply the same rule to the
// same objects, so they agree which addresses belong to which pool: those addresses
// leave dynamic allocation everywhere, and `ip_pool: <name>` picks among them wherever
// their blocks are. A pool read by name for a CNI ADD (the watch had not delivered it
// yet) is taken in as the watch would deliver it. Loop thread only. The informer that
// feeds it is owned by the caller.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "daemon/allocator/allocator.h"
#include "daemon/allocator/ippool.h"
#include "sync/informer.h"

namespace sublease {

class IpPoolFeed final : public InformerHandler {
 public:
  // `changed` runs after a pool's verdict or addresses changed (pods waiting for a pool
  // may be served now).
  IpPoolFeed(Allocator* allocator, std::function<void()> changed);

  // After a relist, pools the feed holds but the list lacks were deleted meanwhile.
  void set_informer(const Informer* informer) { informer_ = informer; }

  void OnAdded(const KubeObject& object) override { Upsert(object); }
  void OnModified(const KubeObject& object) override { Upsert(object); }
  void OnDeleted(const KubeObject& object) override;
  void OnSynced() override;

  // Takes an IPPool object in (the watch's, or one read by name). A malformed one is
  // logged and held as not Ready.
  void Upsert(const KubeObject& object);
  // Resolves every pool against the allocator's Subnets again and pushes what changed
  // (call after a Subnet was added, changed or removed).
  void Apply();

  // The IPPool resource does not exist (its CRD is not installed: the list is answered
  // 404): there can be no pools, so the feed counts as synced. The informer keeps
  // listing and takes over if the CRD appears.
  void MarkResourceMissing();

  bool synced() const { return synced_; }
  // The pool as resolved here; nullptr when this node has not seen it.
  const ResolvedPool* Find(const std::string& name) const;

 private:
  Allocator* allocator_;
  std::function<void()> changed_;
  const Informer* informer_ = nullptr;
  bool synced_ = false;
  std::map<std::string, IpPoolSpec> specs_;
  std::map<std::string, std::string> bad_;  // name -> why it cannot be read
  std::map<std::string, ResolvedPool> resolved_;
  // What the allocator holds per subnet: the Ready pools' usable addresses.
  std::map<std::string, std::map<std::string, PoolAddresses>> pushed_;
};

}  // namespace sublease
