#include "daemon/config.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>

#include <cstdlib>

#include "common/log.h"

namespace sublease {
namespace {

// Applies the YAML file's keys to cfg. Unknown keys are an error (a typo must not be
// silently ignored).
Result<void> ApplyYaml(const std::string& path, Config* cfg) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Fail(Error::InvalidArgument("--config " + path + ": " + e.what()));
  }
  if (root.IsNull()) return Ok();
  if (!root.IsMap()) return Fail(Error::InvalidArgument("--config " + path + ": expected a mapping of option: value"));
  try {
    for (const auto& kv : root) {
      auto key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "standalone") cfg->standalone = v.as<bool>();
      else if (key == "subnets") cfg->subnets = v.as<std::string>();
      else if (key == "socket") cfg->sockets = v.IsSequence() ? v.as<std::vector<std::string>>() : std::vector<std::string>{v.as<std::string>()};
      else if (key == "socket-group") cfg->socket_group = v.as<std::string>();
      else if (key == "db") cfg->db = v.as<std::string>();
      else if (key == "metrics-address") cfg->metrics_address = v.as<std::string>();
      else if (key == "kubeconfig") cfg->kubeconfig = v.as<std::string>();
      else if (key == "node-name") cfg->node_name = v.as<std::string>();
      else if (key == "log-level") cfg->log_level = v.as<std::string>();
      else if (key == "max-request-bytes") cfg->max_request_bytes = v.as<uint64_t>();
      else if (key == "idle-timeout-ms") cfg->idle_timeout_ms = v.as<uint64_t>();
      else if (key == "max-connections") cfg->max_connections = v.as<uint64_t>();
      else if (key == "release-grace-ms") cfg->release_grace_ms = v.as<int64_t>();
      else if (key == "retry-interval-ms") cfg->retry_interval_ms = v.as<int64_t>();
      else if (key == "max-retry-interval-ms") cfg->max_retry_interval_ms = v.as<int64_t>();
      else if (key == "empty-block-linger-ms") cfg->empty_block_linger_ms = v.as<int64_t>();
      else if (key == "deferred-write-ms") cfg->deferred_write_ms = v.as<int64_t>();
      else if (key == "ahead-write-window-ms") cfg->ahead_write_window_ms = v.as<int64_t>();
      else if (key == "learn-ahead-window") cfg->learn_ahead_window = v.as<bool>();
      else if (key == "spare-addresses") cfg->spare_addresses = v.as<int64_t>();
      else if (key == "borrow-backoff-ms") cfg->borrow_backoff_ms = v.as<int64_t>();
      else if (key == "status-interval-ms") cfg->status_interval_ms = v.as<int64_t>();
      else if (key == "status-ms-per-node") cfg->status_ms_per_node = v.as<int64_t>();
      else if (key == "leader-candidates") cfg->leader_candidates = v.as<std::string>();
      else if (key == "ip-objects") cfg->ip_objects = v.as<bool>();
      else if (key == "keep-vm-ip") cfg->keep_vm_ip = v.as<bool>();
      else if (key == "reserved-ips") cfg->reserved_ips = v.as<bool>();
      else return Fail(Error::InvalidArgument("--config " + path + ": unknown option '" + key + "' (see subleased --help)"));
    }
  } catch (const YAML::Exception& e) {
    return Fail(Error::InvalidArgument("--config " + path + ": wrong type: " + e.what()));
  }
  return Ok();
}

}  // namespace

Result<Config> ParseConfig(int argc, const char* const* argv, bool* exit_now, std::string* output) {
  *exit_now = false;
  Config defaults;
  Config flags;  // values bound to CLI11; applied over the YAML only where given
  std::string config_path;
  CLI::App app{
      "subleased: IP address management for Kubernetes attachment networks.\n"
      "Serves the `sublease` (alias `kube-ovn`) CNI IPAM plugin over a Unix socket.\n"
      "Options may also be set in a YAML file (--config) with the option names as keys;\n"
      "flags override the file.",
      "subleased"};
  app.set_version_flag("--version", "subleased 0.1.0");
  app.add_option("--config", config_path, "YAML file of options (keys are option names without dashes)");
  auto* o_standalone = app.add_flag("--standalone", flags.standalone,
      "Run without Kubernetes: Subnets come from --subnets, leases live from CNI ADD to DEL");
  auto* o_subnets = app.add_option("--subnets", flags.subnets,
      "Standalone mode: a kubeovn.io/v1 Subnet manifest file, or a directory of them");
  auto* o_socket = app.add_option("--socket", flags.sockets,
      "Unix socket to serve the plugin on; repeat to listen on several (e.g. also "
      "/run/openvswitch/kube-ovn-daemon.sock for Kube-OVN NADs)")->default_str(defaults.sockets[0]);
  auto* o_group = app.add_option("--socket-group", flags.socket_group,
      "Group allowed to use the socket (mode 0660); default: root only (mode 0600)");
  auto* o_db = app.add_option("--db", flags.db, "SQLite database file")->default_str(defaults.db);
  auto* o_metrics = app.add_option("--metrics-address", flags.metrics_address,
      "HOST:PORT for /healthz, /readyz and /metrics; empty disables")->default_str(defaults.metrics_address);
  auto* o_kubeconfig = app.add_option("--kubeconfig", flags.kubeconfig,
      "Cluster mode: kubeconfig file (default: in-cluster config)");
  auto* o_node = app.add_option("--node-name", flags.node_name, "Cluster mode: this node's name (default $NODE_NAME)");
  auto* o_log = app.add_option("--log-level", flags.log_level, "debug, info, warn or error")->default_str("info");
  auto* o_max_req = app.add_option("--max-request-bytes", flags.max_request_bytes,
      "Largest request accepted on a socket")->default_str(std::to_string(defaults.max_request_bytes));
  auto* o_idle = app.add_option("--idle-timeout-ms", flags.idle_timeout_ms,
      "A connection with no complete request for this long is closed")->default_str(std::to_string(defaults.idle_timeout_ms));
  auto* o_keep_vm = app.add_option("--keep-vm-ip", flags.keep_vm_ip,
      "Cluster mode: a KubeVirt VM's launcher pods keep its address without an IPAMClaim (Kube-OVN's rules); false turns it off")->default_str("true");
  auto* o_grace = app.add_option("--release-grace-ms", flags.release_grace_ms,
      "Cluster mode: a lease whose pod is gone without a CNI DEL is released after this")->default_str(std::to_string(defaults.release_grace_ms));
  auto* o_retry = app.add_option("--retry-interval-ms", flags.retry_interval_ms,
      "Cluster mode: a failed allocation made ahead of time, or a failed release, is tried again after this; "
      "allocations that keep failing back off, doubling")->default_str(std::to_string(defaults.retry_interval_ms));
  auto* o_max_retry = app.add_option("--max-retry-interval-ms", flags.max_retry_interval_ms,
      "Cluster mode: the longest wait between two tries of an allocation that keeps failing (the pod's CNI ADD "
      "does not wait for it)")->default_str(std::to_string(defaults.max_retry_interval_ms));
  auto* o_linger = app.add_option("--empty-block-linger-ms", flags.empty_block_linger_ms,
      "Cluster mode: an own IPBlock left empty (beyond one kept per subnet) is deleted after staying empty this long")->default_str(std::to_string(defaults.empty_block_linger_ms));
  auto* o_deferred = app.add_option("--deferred-write-ms", flags.deferred_write_ms,
      "Cluster mode: releases and container-ID updates wait up to this long to ride with their IPBlock's next write; 0 = at once")->default_str(std::to_string(defaults.deferred_write_ms));
  auto* o_ahead = app.add_option("--ahead-write-window-ms", flags.ahead_write_window_ms,
      "Cluster mode: an allocation made ahead of time (from the pod watch, before the CNI ADD) waits up to this long "
      "for others to share its IPBlock write; the ADD sends it at once; 0 = at once")->default_str(std::to_string(defaults.ahead_write_window_ms));
  auto* o_learn_ahead = app.add_option("--learn-ahead-window", flags.learn_ahead_window,
      "Cluster mode: learn that wait from how long after their allocation the pods' CNI ADDs come (a quarter of them "
      "less one write, at most --ahead-write-window-ms); false = always --ahead-write-window-ms "
      "(true/false)")->default_str(defaults.learn_ahead_window ? "true" : "false");
  auto* o_spares = app.add_option("--spare-addresses", flags.spare_addresses,
      "Cluster mode: addresses per subnet and family this node holds in its own IPBlocks for pods it has not seen "
      "yet; a CNI ADD that gets one is answered with no API write first, and its pod is recorded in the block "
      "soon after; given back when another node finds no other free address; 0 = none")->default_str(std::to_string(defaults.spare_addresses));
  auto* o_borrow_backoff = app.add_option("--borrow-backoff-ms", flags.borrow_backoff_ms,
      "Cluster mode: a write into another node's IPBlock (a borrow, when every block is claimed) answered 409 is "
      "retried after a random wait up to this long (at least the recent write time), doubling with each 409 in a "
      "row up to 200 ms, so that nodes borrowing from the same blocks do not retry in lockstep; 0 = at "
      "once")->default_str(std::to_string(defaults.borrow_backoff_ms));
  auto* o_status = app.add_option("--status-interval-ms", flags.status_interval_ms,
      "Cluster mode, the leader: a Subnet's or IPPool's status is written at most once per this interval (every node watches every Subnet)")->default_str(std::to_string(defaults.status_interval_ms));
  auto* o_status_per_node = app.add_option("--status-ms-per-node", flags.status_ms_per_node,
      "Cluster mode, the leader: the status interval is at least this much per node in the cluster (each node watches "
      "every Subnet and IPPool): 500 ms at 100 nodes, 25 s at 5,000; 0 = --status-interval-ms alone")->default_str(std::to_string(defaults.status_ms_per_node));
  auto* o_candidates = app.add_option("--leader-candidates", flags.leader_candidates,
      "Cluster mode: which daemons campaign for the leader Lease: all, or labelled (only nodes labelled "
      "sublease.io/leader-candidate=true, checked at start; every node when none is labelled)")->default_str(defaults.leader_candidates);
  auto* o_ip_objects = app.add_option("--ip-objects", flags.ip_objects,
      "Cluster mode: write a Kube-OVN IP object (ips.kubeovn.io) per allocation, for `kubectl get ips` "
      "(true/false)")->default_str(defaults.ip_objects ? "true" : "false");
  auto* o_reserved = app.add_option("--reserved-ips", flags.reserved_ips,
      "Cluster mode: honour Kube-OVN reserved IPs (an IP object created before its pod); each "
      "attachment's first allocation reads its IP object (true/false)")->default_str(defaults.reserved_ips ? "true" : "false");
  auto* o_maxconn = app.add_option("--max-connections", flags.max_connections,
      "Concurrent connections beyond this are refused")->default_str(std::to_string(defaults.max_connections));
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    *exit_now = true;
    *output = e.get_name() == "CallForVersion" ? "subleased 0.1.0\n" : app.help();
    return Config{};
  } catch (const CLI::ParseError& e) {
    return Fail(Error::InvalidArgument(std::string(e.what()) + "; see subleased --help"));
  }

  Config cfg;
  if (!config_path.empty()) {
    if (auto r = ApplyYaml(config_path, &cfg); !r) return Fail(r.error());
  }
  if (o_standalone->count()) cfg.standalone = flags.standalone;
  if (o_subnets->count()) cfg.subnets = flags.subnets;
  if (o_socket->count()) cfg.sockets = flags.sockets;
  if (o_group->count()) cfg.socket_group = flags.socket_group;
  if (o_db->count()) cfg.db = flags.db;
  if (o_metrics->count()) cfg.metrics_address = flags.metrics_address;
  if (o_kubeconfig->count()) cfg.kubeconfig = flags.kubeconfig;
  if (o_node->count()) cfg.node_name = flags.node_name;
  if (o_log->count()) cfg.log_level = flags.log_level;
  if (o_max_req->count()) cfg.max_request_bytes = flags.max_request_bytes;
  if (o_idle->count()) cfg.idle_timeout_ms = flags.idle_timeout_ms;
  if (o_maxconn->count()) cfg.max_connections = flags.max_connections;
  if (o_grace->count()) cfg.release_grace_ms = flags.release_grace_ms;
  if (o_retry->count()) cfg.retry_interval_ms = flags.retry_interval_ms;
  if (o_max_retry->count()) cfg.max_retry_interval_ms = flags.max_retry_interval_ms;
  if (o_linger->count()) cfg.empty_block_linger_ms = flags.empty_block_linger_ms;
  if (o_deferred->count()) cfg.deferred_write_ms = flags.deferred_write_ms;
  if (o_ahead->count()) cfg.ahead_write_window_ms = flags.ahead_write_window_ms;
  if (o_learn_ahead->count()) cfg.learn_ahead_window = flags.learn_ahead_window;
  if (o_spares->count()) cfg.spare_addresses = flags.spare_addresses;
  if (o_borrow_backoff->count()) cfg.borrow_backoff_ms = flags.borrow_backoff_ms;
  if (o_status->count()) cfg.status_interval_ms = flags.status_interval_ms;
  if (o_status_per_node->count()) cfg.status_ms_per_node = flags.status_ms_per_node;
  if (o_candidates->count()) cfg.leader_candidates = flags.leader_candidates;
  if (o_ip_objects->count()) cfg.ip_objects = flags.ip_objects;
  if (o_keep_vm->count()) cfg.keep_vm_ip = flags.keep_vm_ip;
  if (o_reserved->count()) cfg.reserved_ips = flags.reserved_ips;

  LogLevel level;
  if (!ParseLogLevel(cfg.log_level, &level)) {
    return Fail(Error::InvalidArgument("--log-level " + cfg.log_level + ": use debug, info, warn or error"));
  }
  if (cfg.sockets.empty()) return Fail(Error::InvalidArgument("at least one --socket is needed"));
  if (cfg.standalone && cfg.subnets.empty()) {
    return Fail(Error::InvalidArgument("--standalone needs --subnets FILE|DIR with kubeovn.io/v1 Subnet manifests"));
  }
  if (!cfg.standalone) {
    // Cluster mode: the node's name comes from the flag or the downward API.
    if (cfg.node_name.empty()) {
      const char* env = std::getenv("NODE_NAME");
      if (env) cfg.node_name = env;
    }
    if (cfg.node_name.empty()) {
      return Fail(Error::InvalidArgument(
          "cluster mode needs this node's name: pass --node-name or set NODE_NAME (in a "
          "DaemonSet, from the downward API spec.nodeName); or run with --standalone "
          "--subnets FILE|DIR"));
    }
    if (!cfg.subnets.empty()) {
      return Fail(Error::InvalidArgument("--subnets is for --standalone; in cluster mode Subnets come from the API server"));
    }
  }
  if (cfg.release_grace_ms < 0) return Fail(Error::InvalidArgument("--release-grace-ms must not be negative"));
  if (cfg.retry_interval_ms < 100 || cfg.max_retry_interval_ms < cfg.retry_interval_ms) {
    return Fail(Error::InvalidArgument(
        "--retry-interval-ms must be at least 100 and --max-retry-interval-ms at least --retry-interval-ms (now " +
        std::to_string(cfg.retry_interval_ms) + " and " + std::to_string(cfg.max_retry_interval_ms) + ")"));
  }
  if (cfg.empty_block_linger_ms < 0 || cfg.deferred_write_ms < 0 || cfg.status_interval_ms < 0 ||
      cfg.ahead_write_window_ms < 0 || cfg.status_ms_per_node < 0 || cfg.borrow_backoff_ms < 0) {
    return Fail(Error::InvalidArgument(
        "--empty-block-linger-ms, --deferred-write-ms, --ahead-write-window-ms, --status-interval-ms, "
        "--status-ms-per-node and --borrow-backoff-ms must not be negative"));
  }
  if (cfg.spare_addresses < 0 || cfg.spare_addresses > 64) {
    return Fail(Error::InvalidArgument("--spare-addresses must be 0 to 64 (now " + std::to_string(cfg.spare_addresses) +
                                       "); 4-8 covers a node starting a pod every 50 ms"));
  }
  if (cfg.borrow_backoff_ms > 200) {
    return Fail(Error::InvalidArgument("--borrow-backoff-ms is at most 200 (now " + std::to_string(cfg.borrow_backoff_ms) +
                                       "): a CNI ADD waits for it; 5-20 suits most clusters"));
  }
  if (cfg.ahead_write_window_ms > 10'000) {
    return Fail(Error::InvalidArgument(
        "--ahead-write-window-ms is at most 10000 (a pod's address must become a cluster-wide fact soon); "
        "100-200 suits most clusters"));
  }
  if (cfg.leader_candidates != "all" && cfg.leader_candidates != "labelled") {
    return Fail(Error::InvalidArgument("--leader-candidates must be all or labelled, not '" + cfg.leader_candidates +
                                       "'"));
  }
  if (cfg.max_request_bytes < 1024) return Fail(Error::InvalidArgument("--max-request-bytes must be at least 1024"));
  if (cfg.max_connections < 1) return Fail(Error::InvalidArgument("--max-connections must be at least 1"));
  return cfg;
}

}  // namespace sublease
