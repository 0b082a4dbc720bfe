// Verify: a node's database against the API server's IPBlocks.
//
// The API server is the point where allocations become cluster facts; the node's
// database is a cache of them plus its journal. Compare() says, per address, where
// the two disagree for one node. FetchAllocations() reads every IPBlock (a node's
// allocations may sit in other nodes' blocks when it borrowed). subleasectl verify
// exits 0 when clean, 1 on differences, 2 when it could not tell.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "ctl/local_state.h"

namespace sublease::ctl {

// One allocation as the API server records it (an IPBlock's spec.allocations entry).
struct ApiAllocation {
  std::string subnet, address, block, node;  // node: the node that made it
  std::string pod_namespace, pod_name, pod_uid, ifname, container_id, provider;
  bool sticky = false;
  // Kept beyond its pods — by an IPAMClaim, a KubeVirt VM or a Kube-OVN reserved IP
  // ("claim <ns>/<name>", "vm <ns>/<vm>", "reserved IP <name>"; "" = its pod): no lease
  // is expected for it while no pod uses it.
  std::string kept_for = {};
};

struct Difference {
  // "missing": the API server has it for this node, the database has no live lease (an
  // allocation kept beyond its pods, ApiAllocation::kept_for, is not missing);
  // "extra": the database has a committed lease the API server does not know;
  // "mismatched": both have the address, with different holders or nodes.
  std::string kind;
  std::string subnet, address;
  std::string local;  // the database's holder ("" when absent)
  std::string api;    // the API server's holder and node ("" when absent)
};

// Pure: `local` are the node's leases (pending ones are in flight and not compared),
// `api` every allocation of every block. Sorted by subnet, address.
std::vector<Difference> Compare(const std::vector<LeaseRow>& local,
                                const std::vector<ApiAllocation>& api, const std::string& node);

// Lists every IPBlock (in pages) through the kubeconfig ("" = in-cluster config).
// kUnavailable when the API server cannot be reached, kInternal for an answer it
// cannot read.
Result<std::vector<ApiAllocation>> FetchAllocations(const std::string& kubeconfig);

}  // namespace sublease::ctl
