// Config: every setting of subleased, from a YAML file and flags (flags win).
//
// `subleased --help` documents every option; docs/configuration.md mirrors it. The YAML
// file uses the flag names without dashes as keys (e.g. `socket: [..]`, `db: ..`).
// Parsing is pure apart from reading the --config file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace sublease {

struct Config {
  bool standalone = false;
  std::string subnets;  // --subnets: a file or directory of Subnet manifests
  std::vector<std::string> sockets{"/run/sublease/sublease.sock"};
  std::string socket_group;  // "" = root only (mode 0600); else 0660 with this group
  std::string db = "/var/lib/sublease/sublease.db";
  std::string metrics_address = "127.0.0.1:9468";  // health + metrics; "" disables
  std::string kubeconfig;  // cluster mode; "" = in-cluster config
  std::string node_name;   // cluster mode; "" = $NODE_NAME
  std::string log_level = "info";
  uint64_t max_request_bytes = 64 * 1024;
  uint64_t idle_timeout_ms = 10'000;
  uint64_t max_connections = 256;
  int64_t release_grace_ms = 30'000;  // cluster mode: pod gone, no DEL
  // Cluster mode: a failed allocation made ahead of time, or a failed release, is tried
  // again after this; an allocation that keeps failing (no free address, API server
  // down) backs off, doubling up to max_retry_interval_ms.
  int64_t retry_interval_ms = 5'000;
  int64_t max_retry_interval_ms = 60'000;
  // Cluster mode: an own empty block beyond the reserve is deleted after this (churn
  // refills it instead of deleting it and claiming another; issue 14).
  int64_t empty_block_linger_ms = 60'000;
  // Cluster mode: releases and container-ID updates wait this long (checked every
  // second) to ride with their block's next write (issue 14).
  int64_t deferred_write_ms = 500;
  // Cluster mode: an allocation made ahead of time (no CNI ADD waits yet) waits up to
  // this long for others to share its block write; the ADD ends the wait (issue 14).
  // Learned below it (learn_ahead_window): a quarter of the pods' lead times (from the
  // allocation to the ADD) less one write; 100 ms until 16 were seen.
  int64_t ahead_write_window_ms = 500;
  bool learn_ahead_window = true;
  // Cluster mode: addresses per subnet and family each node holds in its own blocks for
  // pods it has not seen yet; an ADD that gets one needs no API write before its answer
  // (docs/cluster-protocol.md "Spares"). 0 = none.
  int64_t spare_addresses = 8;
  // Cluster mode: a borrow (a write to another node's block) answered 409 is retried
  // after a random wait of up to this long (or the recent write time, if longer),
  // doubling with each 409 in a row, at most 200 ms: nodes borrowing from the last free
  // blocks of a full subnet otherwise retry in lockstep (issue 14). 0 = at once.
  int64_t borrow_backoff_ms = 10;
  // Cluster mode, the leader: Subnet and IPPool status writes at most once per interval
  // per object (each one reaches every node's Subnet watch; BENCHMARKS.md §7).
  int64_t status_interval_ms = 500;
  // ... and at least this much per node of the cluster (25 s at 5,000 nodes).
  int64_t status_ms_per_node = 5;
  // Cluster mode: which daemons campaign for the leader Lease: "all", or "labelled" —
  // only nodes labelled sublease.io/leader-candidate=true (every node when none is).
  std::string leader_candidates = "all";
  // Cluster mode: keep a KubeVirt VM's address across its launcher pods without an
  // IPAMClaim (Kube-OVN's --keep-vm-ip, on by default); docs/kubevirt.md.
  bool keep_vm_ip = true;
  // Cluster mode: mirror allocations as Kube-OVN `IP` objects (kubectl get ips). Off by
  // default: one more write per allocation and per release, which the API server's
  // budget of issue 14 has no room for (docs/decisions.md, "Kube-OVN IP objects").
  bool ip_objects = false;
  // Cluster mode: honour Kube-OVN reserved IPs (an IP object created before its pod):
  // every attachment's first allocation reads its IP object by name (docs/decisions.md).
  bool reserved_ips = true;
};

// Parses argv (and the --config file it names). Returns kInvalidArgument with a message
// for bad input. `--help`/`--version` set *exit_now and fill *output with the text to print.
Result<Config> ParseConfig(int argc, const char* const* argv, bool* exit_now, std::string* output);

}  // namespace sublease
