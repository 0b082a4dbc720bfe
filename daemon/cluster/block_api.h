// BlockApi: the seam between the block engine and wherever IPBlock objects live.
//
// The API server's optimistic concurrency is the only cluster-wide arbiter
// (docs/cluster-protocol.md): Create fails when the name is taken, Update and Delete
// fail when the resourceVersion they carry is stale. Implementations: KubeBlockApi
// (the Kubernetes API server through KubeClient) and FakeBlockApi (in memory, for tests
// that interleave many nodes).
//
// Errors every call may report: kUnavailable when the API server cannot be reached or
// answers 5xx/429 (the write may or may not have happened); kInternal for a refused
// token or RBAC; kInvalidArgument for an object the server rejects.
// Thread: the daemon's loop thread. Callbacks are asynchronous: they never run before
// the call returns, and each runs exactly once unless the implementation is closed.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "sync/ipblock.h"

namespace sublease {

class BlockApi {
 public:
  using BlockDone = std::function<void(Result<IpBlock>)>;
  using MaybeBlockDone = std::function<void(Result<std::optional<IpBlock>>)>;
  using ListDone = std::function<void(Result<std::vector<IpBlock>>)>;
  using VoidDone = std::function<void(Result<void>)>;

  virtual ~BlockApi() = default;

  // The block, or nullopt when no object has that name.
  virtual void Get(const std::string& name, MaybeBlockDone done) = 0;
  // Every block of a subnet (label sublease.io/subnet=<subnet>).
  virtual void ListSubnet(const std::string& subnet, ListDone done) = 0;
  // Creates `block` (its resource_version is ignored) and returns it as stored.
  // kConflict when the name is taken (AlreadyExists).
  virtual void Create(const IpBlock& block, BlockDone done) = 0;
  // Replaces the block if its resource_version is still current; returns it as stored.
  // kConflict when stale, kNotFound when the object is gone.
  virtual void Update(const IpBlock& block, BlockDone done) = 0;
  // Deletes the block if its resourceVersion still equals `resource_version`.
  // kConflict when it changed, kNotFound when it is gone.
  virtual void Delete(const std::string& name, const std::string& resource_version,
                      VoidDone done) = 0;
};

}  // namespace sublease
