// Private to the block engine's .cc files: what it keeps per queued change, per block,
// and per allocation in progress. See block_engine.h for the contract.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/cluster/block_engine.h"

namespace sublease {

// The attachment an allocation in a block belongs to.
AttachmentKey KeyOfAllocation(const std::string& subnet, const BlockAllocation& a);
// "pod ns/name (container c, net1) on node n", for conflict messages.
std::string DescribeAllocation(const BlockAllocation& a);

// One change queued for a block; it leaves in the block's next write (group commit).
struct BlockEngine::Op {
  enum class Kind { kAdd, kRemove };
  Kind kind = Kind::kAdd;
  uint64_t offset = 0;
  AttachmentKey key;           // whose allocation it adds or removes
  BlockAllocation allocation;  // kAdd: what is written
  bool claim = false;          // kAdd that may only land through this node's own create
  int rounds = 0;              // 409 → re-read rounds so far (bounded)
  std::function<void(Result<void>)> done;
};

struct BlockEngine::BlockState {
  std::string name, subnet;
  IpNet cidr;
  std::optional<IpBlock> object;  // last seen; nullopt = no such object (when known)
  bool known = false;             // `object` reflects a read, a write, a list or the watch
  bool busy = false;              // a read, write or delete is in flight (at most one)
  bool local = false;             // what the allocator was last told (SetBlockLocal)
  // Our last write's resourceVersion, until the watch shows it: watch events before it
  // are older than `object` and are ignored (resourceVersions compare for equality only).
  std::string awaiting_version;
  std::deque<std::string> watched_versions;  // the last few versions the watch delivered
  std::deque<Op> queued;
  std::set<uint64_t> foreign;  // offsets marked in the allocator as foreign holds
};

// One Allocate call in progress.
struct BlockEngine::Job {
  AllocateRequest request;  // `within` grows when a block is chosen to claim or borrow from
  AttachmentKey key;
  LeaseDone done;
  std::optional<Lease> lease;  // the pending reservation of the current attempt
  int outstanding = 0;         // adds of this attempt not answered yet
  std::vector<std::pair<IpAddr, Result<void>>> results;
  std::set<std::string> claims;  // blocks this attempt may only land in by creating them
  int repicks = 0;
  bool refreshed = false;  // a static conflict on a foreign hold re-read its block once
};

struct BlockEngine::ClaimWaiter {
  std::shared_ptr<Job> job;
  Family family;
};

}  // namespace sublease
