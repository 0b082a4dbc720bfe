// NodeShard's reserved IPs (docs/kubeovn-compat.md, docs/cluster-protocol.md "Reserved
// IPs"): a Kube-OVN `IP` object named for a pod's attachment, created before the pod,
// reserves an address for it. The leader writes the reservation into the IPBlocks (and
// fills in the object's address when it had none); the pod's node, at the attachment's
// first allocation, reads the object by name and takes the reservation's allocation
// over. The read is never skipped on a guess: a reservation created a moment before its
// pod may not have reached any watch of this node, and a dynamic address given instead
// would be wrong for good. Reads that pile up (a node's start with hundreds of pods: one
// per attachment) go as one LIST of the reservations instead of a GET each: a LIST is
// as fresh a read as a GET, and a burst of GETs spread the allocations out so that they
// no longer shared block writes (the reboot burst took 4 s instead of 2, BENCHMARKS §4).
#include <map>

#include "common/log.h"
#include "daemon/shard/node_shard.h"
#include "sync/ip_reservation.h"

namespace sublease {
namespace {
// GETs of IP objects in flight at most; further reads wait for one LIST.
constexpr int kMaxReservationGets = 4;
}  // namespace

void NodeShard::ReadReservationThen(const AttachmentKey& key, AllocateRequest request) {
  const Subnet* subnet = allocator_->FindSubnet(request.subnet);
  const std::string provider = !request.provider.empty() ? request.provider
                               : subnet                  ? subnet->provider
                                                         : "";
  std::string name;
  auto pod = pods_.find(request.owner.pod_namespace + "/" + request.owner.pod_name);
  if (pod != pods_.end()) {
    name = IpObjectNameFor(pod->second, provider, request.owner.ifname);
  } else {
    name = IpObjectName(request.owner.pod_name, request.owner.pod_namespace, provider, "");
  }
  if (reservation_gets_ >= kMaxReservationGets || !reservation_batch_.empty()) {
    // A burst: this read waits for the next LIST (one issued after it was asked for).
    reservation_batch_.push_back(ReservationRead{key, name, std::move(request)});
    if (!reservation_listing_) ListReservations();
    return;
  }
  ++stats_.reservation_reads;
  ++reservation_gets_;
  client_->Get(std::string(kIpObjectCollection) + "/" + name,
               [this, key, name, request = std::move(request)](KubeResult<KubeResponse> r) mutable {
                 --reservation_gets_;
                 if (!inflight_.count(key)) return;  // closed meanwhile
                 // 404: no such object (or no ips.kubeovn.io resource at all): no reservation.
                 if (!r && r.error().http_status == 404) return AllocateResolved(key, std::move(request));
                 auto object = r ? ParseKubeObject(r->body)
                                 : Result<KubeObject>(Fail(static_cast<Error>(r.error())));
                 OnReservationRead(key, name, std::move(request), object);
               });
}

void NodeShard::ListReservations() {
  std::vector<ReservationRead> batch = std::move(reservation_batch_);
  reservation_batch_.clear();
  reservation_listing_ = true;
  ++stats_.reservation_lists;
  ListOptions options;
  options.label_selector = std::string(kIpReservedLabel) + "!=false";
  client_->List(kIpObjectCollection, options,
                [this, batch = std::move(batch)](KubeResult<KubeResponse> r) mutable {
                  reservation_listing_ = false;
                  auto page = r ? ParseListPage(r->body)
                                : Result<ListPage>(Fail(static_cast<Error>(r.error())));
                  std::map<std::string, const KubeObject*> by_name;
                  if (page) {
                    for (const KubeObject& o : page->items) by_name.emplace(o.name, &o);
                  }
                  for (ReservationRead& read : batch) {
                    if (!inflight_.count(read.key)) continue;  // closed meanwhile
                    if (!page) {
                      OnReservationRead(read.key, read.name, std::move(read.request),
                                        Result<KubeObject>(Fail(page.error())));
                      continue;
                    }
                    auto found = by_name.find(read.name);
                    if (found == by_name.end()) {
                      AllocateResolved(read.key, std::move(read.request));  // no reservation
                      continue;
                    }
                    OnReservationRead(read.key, read.name, std::move(read.request), *found->second);
                  }
                  if (!reservation_batch_.empty() && !reservation_listing_) ListReservations();
                });
}

void NodeShard::OnReservationRead(const AttachmentKey& key, const std::string& name,
                                  AllocateRequest request, const Result<KubeObject>& object) {
  if (!object) {
    return OnAllocated(key, Fail(Error::Unavailable("reading IP object " + name +
                                                    " (a reservation for this pod?): " +
                                                    object.error().message + "; try again")));
  }
  // A record of an allocation (ip_reserved=false: ours, or Kube-OVN's) decides nothing.
  if (!IsReservation(*object)) return AllocateResolved(key, std::move(request));
  auto reservation = DecodeIpReservation(object->raw);
  if (!reservation) {
    return OnAllocated(key, Fail(Error::InvalidArgument(reservation.error().message +
                                                        "; nothing was allocated")));
  }
  if (reservation->subnet != request.subnet) {
    return OnAllocated(
        key, Fail(Error::InvalidArgument(
                 "IP object " + name + " reserves an address in Subnet " + reservation->subnet +
                 ", but this attachment (provider " + request.provider + ") is served by Subnet " +
                 request.subnet + "; correct spec.subnet of the reservation; nothing was allocated")));
  }
  if (reservation->pod_name != request.owner.pod_name ||
      reservation->namespace_name != request.owner.pod_namespace) {
    return OnAllocated(key, Fail(Error::InvalidArgument(
                                "IP object " + name + " reserves an address for pod " +
                                reservation->namespace_name + "/" + reservation->pod_name +
                                " (spec.namespace, spec.podName), but its name is pod " +
                                request.owner.pod_namespace + "/" + request.owner.pod_name +
                                "'s; correct the reservation; nothing was allocated")));
  }
  if (reservation->addresses().empty()) {
    // The leader picks it and writes it into the object; until then nothing is given
    // (a dynamic address now would not be the reserved one).
    return OnAllocated(key, Fail(Error::Unavailable("IP object " + name +
                                                    " reserves an address for this pod, and the leader has "
                                                    "not filled it in yet; try again")));
  }
  if (!request.static_ips.empty() || !request.pool.empty() || !request.named_pool.empty()) {
    LogInfo("pod " + request.owner.pod_namespace + "/" + request.owner.pod_name + " asks for specific addresses on " +
            request.provider + ", and IP object " + name + " reserves some: the reservation wins");
  }
  request.static_ips = reservation->addresses();
  request.pool.clear();
  request.named_pool.clear();
  request.family.reset();
  request.virtual_machine.clear();
  request.reserved_ip = name;
  AllocateResolved(key, std::move(request));
}

}  // namespace sublease
