// ClusterView: what the leader knows of the cluster during one term of leadership — every
// IPBlock (decoded, kept current by the blocks informer), and the pods and nodes
// informers' caches. Owned by ClusterDuties; read by SubnetStatusWriter and
// GarbageCollector. Loop thread only.
#pragma once

#include <map>
#include <set>
#include <string>

#include "sync/ipblock.h"
#include "sync/kube_object.h"

namespace sublease {

struct ClusterView {
  std::map<std::string, IpBlock> blocks;                     // by metadata.name
  const std::map<std::string, KubeObject>* pods = nullptr;   // by "namespace/name"
  const std::map<std::string, KubeObject>* nodes = nullptr;  // by name
  // Names of the reserved IPs (Kube-OVN IP objects that reserve an address) the leader's
  // watch shows now; a reservation's allocation is never collected while its name is here.
  std::set<std::string> reserved_ips;
  bool subnets_synced = false;
  bool blocks_synced = false;
  bool pods_synced = false;
  bool nodes_synced = false;
};

}  // namespace sublease
