#include "daemon/store/rebuild.h"

#include <uv.h>

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "common/log.h"
#include "daemon/allocator/subnet.h"
#include "daemon/store/recovery.h"
#include "sync/kube_client.h"
#include "sync/kube_object.h"

namespace sublease {

namespace {

constexpr std::string_view kSubnetCollection = "/apis/kubeovn.io/v1/subnets";
constexpr int64_t kPageSize = 500;
constexpr int kMaxPages = 10'000;  // bounds a list that never ends
constexpr auto kRetryPause = std::chrono::milliseconds(1000);

std::string Where(const IpBlock& block, uint64_t offset) {
  return block.AddressAt(offset).ToString() + " (IPBlock " + block.name + ")";
}

// One List page, run to completion on the private loop, bounded by `deadline`.
Result<ListPage> ListPageNow(uv_loop_t* loop, KubeClient* client, std::string_view path,
                             const ListOptions& options,
                             std::chrono::steady_clock::time_point deadline) {
  std::optional<KubeResult<KubeResponse>> answer;
  const KubeClient::RequestId id =
      client->List(path, options, [&answer](KubeResult<KubeResponse> r) { answer = std::move(r); });
  while (!answer && std::chrono::steady_clock::now() < deadline) uv_run(loop, UV_RUN_ONCE);
  if (!answer) {
    client->Cancel(id);
    return Fail(Error::Unavailable("listing " + std::string(path) + ": no answer in time"));
  }
  if (!*answer) return Fail(Error{answer->error().code, answer->error().message});
  return ParseListPage((*answer)->body);
}

// Every item of a collection (paged), retrying while the API server is unavailable.
Result<std::vector<KubeObject>> ListAllNow(uv_loop_t* loop, KubeClient* client,
                                           std::string_view path,
                                           std::chrono::steady_clock::time_point deadline) {
  Error last = Error::Unavailable("listing " + std::string(path) + ": no answer in time");
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<KubeObject> items;
    ListOptions options;
    options.limit = kPageSize;
    bool complete = false;
    std::optional<Error> failed;
    for (int page = 0; page < kMaxPages && !complete && !failed; ++page) {
      auto got = ListPageNow(loop, client, path, options, deadline);
      if (!got) {
        failed = got.error();
        break;
      }
      for (auto& item : got->items) items.push_back(std::move(item));
      options.continue_token = got->continue_token;
      complete = got->continue_token.empty();
    }
    if (complete) return items;
    if (failed && failed->code != Code::kUnavailable && failed->code != Code::kConflict) {
      return Fail(*failed);  // 401/403/decode errors: retrying will not help
    }
    if (failed) last = *failed;  // 5xx, unreachable, 410 on a continue token: list again
    std::this_thread::sleep_for(kRetryPause);
  }
  return Fail(last);
}

}  // namespace

Result<RebuildReport> RebuildFromBlocks(Store* store, const std::string& node,
                                        const std::vector<SubnetSpec>& subnets,
                                        const std::vector<IpBlock>& blocks, int64_t now_ms) {
  RebuildReport report;
  std::map<std::string, Subnet> valid;
  for (const SubnetSpec& spec : subnets) {
    auto subnet = NormalizeSubnet(spec);
    if (subnet) valid.emplace(spec.name, std::move(*subnet));
  }

  // Group this node's allocations into leases: one per attachment, v4 and v6 together.
  std::map<AttachmentKey, Lease> leases;
  std::set<std::string> used_blocks;
  std::string quarantined;
  for (const IpBlock& block : blocks) {
    auto subnet = valid.find(block.subnet);
    for (const auto& [offset, a] : block.allocations) {
      if (a.spare && a.node == node && block.node == node) {
        quarantined += block.subnet + " " + block.AddressAt(offset).ToString() + "\n";
        ++report.quarantined;
      }
      // A spare (held for the node's next pods) is no lease; the node's next write of the
      // block keeps it or gives it back.
      if (a.node != node || a.spare) continue;
      if (subnet == valid.end()) {
        report.warnings.push_back("allocation " + Where(block, offset) + " of Subnet " +
                                  block.subnet + " left out: the Subnet is absent or invalid");
        continue;
      }
      const IpAddr address = block.AddressAt(offset);
      const SubnetFamily* family = subnet->second.family(address.family());
      if (family == nullptr || !family->cidr.Contains(address)) {
        report.warnings.push_back("allocation " + Where(block, offset) +
                                  " left out: outside Subnet " + block.subnet + "'s CIDR");
        continue;
      }
      Owner owner{a.pod_namespace, a.pod_name, a.pod_uid, a.container_id, a.ifname};
      const AttachmentKey key = AttachmentKey::For(block.subnet, owner);
      auto [it, fresh] = leases.try_emplace(key);
      Lease& lease = it->second;
      if (fresh) {
        lease.subnet = block.subnet;
        lease.owner = owner;
        lease.provider = a.provider.empty() ? subnet->second.provider : a.provider;
        lease.sticky = a.sticky;
        lease.state = LeaseState::kCommitted;
      }
      std::optional<IpAddr>& slot = address.is_v4() ? lease.v4 : lease.v6;
      if (slot) {
        report.warnings.push_back("allocation " + Where(block, offset) + " left out: " +
                                  key.ToString() + " also holds " + slot->ToString());
        continue;
      }
      slot = address;
      used_blocks.insert(block.name);
    }
  }

  auto tx = store->Begin();
  if (!tx) return Fail(tx.error().Wrap("rebuilding the database"));
  std::set<std::string> upserted;
  for (const auto& [key, lease] : leases) {
    if (upserted.insert(lease.subnet).second) {
      if (auto r = store->UpsertSubnet(valid.at(lease.subnet), now_ms); !r) return Fail(r.error());
    }
    // Each insert is atomic on its own (a savepoint): a refused one leaves the others.
    if (auto r = store->InsertLease(lease, now_ms); !r) {
      if (r.error().code != Code::kConflict) return Fail(r.error());
      report.warnings.push_back("lease of " + key.ToString() + " left out: " + r.error().message);
      continue;
    }
    ++report.leases;
  }
  if (auto r = store->PutSyncState(std::string(kQuarantinedSparesKey), quarantined, now_ms); !r) {
    return Fail(r.error());
  }
  if (auto r = store->PutSyncState(std::string(kQuarantinePodsKey), "", now_ms); !r) return Fail(r.error());
  if (auto r = ClearRebuildPending(store, now_ms); !r) return Fail(r.error());
  if (auto r = tx->Commit(); !r) return Fail(r.error().Wrap("rebuilding the database"));
  report.blocks = used_blocks.size();
  return report;
}

Result<RebuildReport> RebuildFromApiServer(const KubeConfig& kube, const std::string& node,
                                           Store* store, const Clock* clock, int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  uv_loop_t loop;
  uv_loop_init(&loop);
  Result<std::vector<KubeObject>> subnet_objects = Fail(Error::Internal("not listed"));
  Result<std::vector<KubeObject>> block_objects = Fail(Error::Internal("not listed"));
  {
    KubeClient client(&loop, kube, clock);
    subnet_objects = ListAllNow(&loop, &client, kSubnetCollection, deadline);
    if (subnet_objects) block_objects = ListAllNow(&loop, &client, kIpBlockCollection, deadline);
    bool closed = false;
    client.Close([&closed] { closed = true; });
    // Close cancels everything; its handles are closed within a few loop turns.
    for (int i = 0; i < 1000 && !closed; ++i) uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  uv_loop_close(&loop);
  if (!subnet_objects)
    return Fail(subnet_objects.error().Wrap("rebuilding the database from the API server"));
  if (!block_objects)
    return Fail(block_objects.error().Wrap("rebuilding the database from the API server"));

  std::vector<SubnetSpec> subnets;
  for (const KubeObject& o : *subnet_objects) {
    if (auto s = DecodeSubnet(o.raw)) subnets.push_back(std::move(*s));
  }
  std::vector<IpBlock> blocks;
  RebuildReport undecodable;
  for (const KubeObject& o : *block_objects) {
    auto b = DecodeIpBlock(o.raw);
    if (!b) {
      undecodable.warnings.push_back("IPBlock " + o.name + " ignored: " + b.error().message);
      continue;
    }
    blocks.push_back(std::move(*b));
  }
  auto report = RebuildFromBlocks(store, node, subnets, blocks, clock->NowMs());
  if (!report) return report;
  report->warnings.insert(report->warnings.begin(), undecodable.warnings.begin(),
                          undecodable.warnings.end());
  return report;
}

Result<void> RebuildFromApiServerIfPending(const KubeConfig& kube, const std::string& node,
                                           Store* store, const Clock* clock) {
  auto pending = RebuildPending(store);
  if (!pending) return Fail(pending.error());
  if (!*pending) return Ok();
  LogInfo("the database is new or was recovered: rebuilding node " + node +
          "'s leases from the IPBlocks in the API server " + kube.server);
  auto report = RebuildFromApiServer(kube, node, store, clock);
  if (!report) {
    return Fail(report.error().Wrap(
        "node " + node +
        " cannot serve before its leases are rebuilt "
        "(it would give its pods new addresses); it retries at the next start"));
  }
  for (const auto& w : report->warnings) LogWarn("rebuild: " + w);
  LogInfo("rebuilt " + std::to_string(report->leases) + " lease(s) of node " + node + " from " +
          std::to_string(report->blocks) + " IPBlock(s)");
  if (report->quarantined > 0) {
    LogWarn("rebuild: " + std::to_string(report->quarantined) +
            " spare address(es) of this node are kept out of use until the pods now on the node are "
            "gone (one may have been handed to a pod whose record was lost with the database)");
  }
  return Ok();
}

}  // namespace sublease
