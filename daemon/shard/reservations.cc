// NodeShard's reserved IPs (docs/kubeovn-compat.md, docs/cluster-protocol.md "Reserved
// IPs"): a Kube-OVN `IP` object named for a pod's attachment, created before the pod,
// reserves an address for it. The leader writes the reservation into the IPBlocks (and
// fills in the object's address when it had none); the pod's node, at the attachment's
// first allocation, reads the object by name and takes the reservation's allocation
// over. The read is never skipped on a guess: a reservation created a moment before its
// pod may not have reached any watch of this node, and a dynamic address given instead
// would be wrong for good.
#include "common/log.h"
#include "daemon/shard/node_shard.h"
#include "sync/ip_reservation.h"

namespace sublease {

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
  ++stats_.reservation_reads;
  client_->Get(
      std::string(kIpObjectCollection) + "/" + name,
      [this, key, name, request = std::move(request)](KubeResult<KubeResponse> r) mutable {
        if (!inflight_.count(key)) return;  // closed meanwhile
        // 404: no such object (or no ips.kubeovn.io resource at all): no reservation.
        if (!r && r.error().http_status == 404) return AllocateResolved(key, std::move(request));
        auto object =
            r ? ParseKubeObject(r->body) : Result<KubeObject>(Fail(static_cast<Error>(r.error())));
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
                       "IP object " + name + " reserves an address in Subnet " +
                       reservation->subnet + ", but this attachment (provider " + request.provider +
                       ") is served by Subnet " + request.subnet +
                       "; correct spec.subnet of the reservation; nothing was allocated")));
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
          return OnAllocated(
              key, Fail(Error::Unavailable("IP object " + name +
                                           " reserves an address for this pod, and the leader has "
                                           "not filled it in yet; try again")));
        }
        if (!request.static_ips.empty() || !request.pool.empty() || !request.named_pool.empty()) {
          LogInfo("pod " + request.owner.pod_namespace + "/" + request.owner.pod_name +
                  " asks for specific addresses on " + request.provider + ", and IP object " +
                  name + " reserves some: the reservation wins");
        }
        request.static_ips = reservation->addresses();
        request.pool.clear();
        request.named_pool.clear();
        request.family.reset();
        request.virtual_machine.clear();
        request.reserved_ip = name;
        AllocateResolved(key, std::move(request));
      });
}

}  // namespace sublease
