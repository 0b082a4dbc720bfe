// Rebuilding a node's database from the API server (cluster mode), after
// OpenOrRecover (recovery.h) created it fresh: "the database is a cache: lost, it is
// rebuilt from this node's blocks and pods" (docs/cluster-protocol.md).
//
// The node's leases are the allocations with `node: <me>` in any IPBlock — its own
// blocks and the blocks it borrowed from. Each becomes a `committed` lease (the API
// server holds it, so it was answered or may be answered). Leases whose pod is gone
// are not filtered here: the shard releases them through the block protocol once its
// pod informer has synced (NodeShard::PodsSynced), which frees them in the block too;
// skipping them would leave them in the block as foreign holds, i.e. leaked.
//
// Split in two: RebuildFromBlocks is a function of values over the store (tested with
// a real SQLite file); RebuildFromApiServer fetches those values with one List of
// Subnets and one of IPBlocks on a private loop, for subleased's start-up, before the
// daemon's own loop runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/subnet_spec.h"
#include "daemon/store/store.h"
#include "sync/ipblock.h"
#include "sync/kube_config.h"

namespace sublease {

// sync_state keys of the spares quarantined by a rebuild (docs/cluster-protocol.md
// "Spares"): "<subnet> <address>" lines ("" = none); and "" until the NodeShard first saw
// its node's pods after the rebuild, then "pods\n" and those pods' UIDs, one per line.
inline constexpr std::string_view kQuarantinedSparesKey = "spares.quarantined";
inline constexpr std::string_view kQuarantinePodsKey = "spares.quarantine_pods";

struct RebuildReport {
  size_t leases = 0;                  // leases inserted (a dual-stack lease counts once)
  // This node's spares in its blocks: any may be in use by a pod whose record never left
  // before the database was lost; kept out of use (kQuarantinedSparesKey).
  size_t quarantined = 0;
  size_t blocks = 0;                  // blocks that held at least one of them
  std::vector<std::string> warnings;  // allocations left out, and why
};

// Inserts, in one transaction, a committed lease for every allocation of `node` in
// `blocks` (a pod's v4 and v6 allocations of one interface form one dual-stack lease),
// upserts the Subnets they belong to, records this node's spares as quarantined, and
// clears the rebuild-pending mark. Allocations
// of a Subnet that is absent or invalid, or a second allocation of one attachment and
// family, are left out with a warning: they stay in their block, never duplicated.
// Errors: the store's (nothing is written then).
Result<RebuildReport> RebuildFromBlocks(Store* store, const std::string& node,
                                        const std::vector<SubnetSpec>& subnets,
                                        const std::vector<IpBlock>& blocks, int64_t now_ms);

// Lists every Subnet and IPBlock (paged), then RebuildFromBlocks. kUnavailable when the
// API server cannot be reached within `timeout_ms` (the mark stays: the next start
// tries again), kInvalidArgument for an answer it cannot decode.
Result<RebuildReport> RebuildFromApiServer(const KubeConfig& kube, const std::string& node,
                                           Store* store, const Clock* clock,
                                           int64_t timeout_ms = 60'000);

// subleased's start-up in cluster mode, before the journal is loaded: when the store
// carries the rebuild-pending mark (recovery.h), RebuildFromApiServer and log what was
// rebuilt and left out; otherwise nothing. An error means the node must not serve: a
// node that forgot its leases would hand its pods new addresses.
Result<void> RebuildFromApiServerIfPending(const KubeConfig& kube, const std::string& node,
                                           Store* store, const Clock* clock);

}  // namespace sublease
