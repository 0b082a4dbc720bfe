// ClusterView: what the leader knows of the cluster during one term of leadership — every
// IPBlock (decoded, kept current by the blocks informer), and the pods and nodes
// informers' caches. Owned by ClusterDuties; read by SubnetStatusWriter and
// GarbageCollector. Loop thread only.
#pragma once

#include <map>
#include <string>

#include "sync/ipblock.h"
#include "sync/kube_object.h"

namespace sublease {

struct ClusterView {
  std::map<std::string, IpBlock> blocks;                     // by metadata.name
  const std::map<std::string, KubeObject>* pods = nullptr;   // by "namespace/name"
  const std::map<std::string, KubeObject>* nodes = nullptr;  // by name
  bool subnets_synced = false;
  bool blocks_synced = false;
  bool pods_synced = false;
  bool nodes_synced = false;
};

}  // namespace sublease
