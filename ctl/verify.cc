#include "ctl/verify.h"

#include <uv.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "common/clock.h"
#include "sync/ipblock.h"
#include "sync/kube_client.h"
#include "sync/kube_config.h"
#include "sync/kube_object.h"

namespace sublease::ctl {
namespace {

std::string Holder(const std::string& ns, const std::string& pod, const std::string& ifname) {
  return (pod.empty() ? std::string("?") : ns + "/" + pod) + " " + ifname;
}

std::string ApiHolder(const ApiAllocation& a) {
  return Holder(a.pod_namespace, a.pod_name, a.ifname) + " on node " + a.node;
}

}  // namespace

std::vector<Difference> Compare(const std::vector<LeaseRow>& local,
                                const std::vector<ApiAllocation>& api, const std::string& node) {
  using Key = std::pair<std::string, std::string>;  // subnet, canonical address
  std::map<Key, const LeaseRow*> mine;
  for (const auto& l : local) {
    if (l.state == "committed") mine[{l.subnet, l.address}] = &l;
  }
  std::map<Key, const ApiAllocation*> theirs;
  for (const auto& a : api) theirs[{a.subnet, a.address}] = &a;

  std::vector<Difference> out;
  for (const auto& [key, lease] : mine) {
    std::string holder = Holder(lease->pod_namespace, lease->pod_name, lease->ifname);
    auto it = theirs.find(key);
    if (it == theirs.end()) {
      out.push_back({"extra", key.first, key.second, holder, ""});
      continue;
    }
    const ApiAllocation& a = *it->second;
    bool same = a.node == node && a.pod_namespace == lease->pod_namespace &&
                a.pod_name == lease->pod_name && a.ifname == lease->ifname;
    if (!same) out.push_back({"mismatched", key.first, key.second, holder, ApiHolder(a)});
  }
  std::map<Key, bool> live;  // pending leases count as present: their write is in flight
  for (const auto& l : local) {
    if (l.state != "released") live[{l.subnet, l.address}] = true;
  }
  for (const auto& [key, a] : theirs) {
    if (a->node == node && !live.count(key) && a->kept_for.empty()) {
      out.push_back({"missing", key.first, key.second, "", ApiHolder(*a)});
    }
  }
  std::sort(out.begin(), out.end(), [](const Difference& x, const Difference& y) {
    auto ax = IpAddr::Parse(x.address), ay = IpAddr::Parse(y.address);
    return std::make_tuple(x.subnet, ax ? *ax : IpAddr(), x.kind) <
           std::make_tuple(y.subnet, ay ? *ay : IpAddr(), y.kind);
  });
  return out;
}

Result<std::vector<ApiAllocation>> FetchAllocations(const std::string& kubeconfig) {
  auto config = kubeconfig.empty() ? InClusterConfig() : LoadKubeconfig(kubeconfig);
  if (!config) return Fail(config.error());
  uv_loop_t loop;
  uv_loop_init(&loop);
  SystemClock clock;
  std::vector<ApiAllocation> out;
  std::optional<Error> failure;
  {
    KubeClient client(&loop, *config, &clock);
    // One page at a time; each answer asks for the next until the list ends. Bounded:
    // the server's continue tokens end the list, and each page is at least one block.
    std::function<void(std::string)> next_page = [&](std::string token) {
      ListOptions options;
      options.limit = 500;
      options.continue_token = std::move(token);
      client.List(kIpBlockCollection, options, [&](KubeResult<KubeResponse> r) {
        if (!r) {
          failure = Error{r.error().code, "listing IPBlocks: " + r.error().message};
          return client.Close([] {});
        }
        auto page = ParseListPage(r->body);
        if (!page) {
          failure = Error::Internal("listing IPBlocks: " + page.error().message);
          return client.Close([] {});
        }
        for (const auto& item : page->items) {
          auto block = DecodeIpBlock(item.raw);
          if (!block) {
            failure = Error::Internal("IPBlock " + item.name + ": " + block.error().message);
            return client.Close([] {});
          }
          for (const auto& [offset, a] : block->allocations) {
            if (a.spare) continue;  // held for the node's next pods: no lease behind it
            out.push_back({block->subnet, block->AddressAt(offset).ToString(), block->name, a.node,
                           a.pod_namespace, a.pod_name, a.pod_uid, a.ifname, a.container_id,
                           a.provider, a.sticky, KeptFor(a)});
          }
        }
        if (page->continue_token.empty()) return client.Close([] {});
        next_page(page->continue_token);
      });
    };
    next_page("");
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // close callbacks of handles the client released
  if (uv_loop_close(&loop) != 0) return Fail(Error::Internal("libuv handles left open"));
  if (failure) return Fail(*failure);
  return out;
}

}  // namespace sublease::ctl
