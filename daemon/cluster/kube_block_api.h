// KubeBlockApi: BlockApi over the Kubernetes API server (KubeClient), on the
// cluster-scoped collection /apis/sublease.io/v1alpha1/ipblocks.
//
// Get: 404 → nullopt. ListSubnet: labelSelector sublease.io/subnet=<subnet>. Create:
// POST (409 AlreadyExists → kConflict). Update: PUT with metadata.resourceVersion (409
// Conflict → kConflict). Delete: DELETE with a resourceVersion precondition (409 →
// kConflict). KubeClient's codes pass through: kUnavailable for 5xx/429/network,
// kInternal for 401/403 (token, RBAC).
// Ownership: borrows the client, which must outlive it; Close()ing the client cancels
// every callback. Thread: the client's loop thread; callbacks come from the loop.
#pragma once

#include <string>

#include "daemon/cluster/block_api.h"
#include "sync/kube_client.h"

namespace sublease {

class KubeBlockApi final : public BlockApi {
 public:
  explicit KubeBlockApi(KubeClient* client) : client_(client) {}

  void Get(const std::string& name, MaybeBlockDone done) override;
  void ListSubnet(const std::string& subnet, ListDone done) override;
  void Create(const IpBlock& block, BlockDone done) override;
  void Update(const IpBlock& block, BlockDone done) override;
  void Delete(const std::string& name, const std::string& resource_version, VoidDone done) override;

 private:
  KubeClient* client_;
};

}  // namespace sublease
