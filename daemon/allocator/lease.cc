#include "daemon/allocator/lease.h"

namespace sublease {

std::string_view LeaseStateName(LeaseState s) {
  switch (s) {
    case LeaseState::kPending: return "pending";
    case LeaseState::kCommitted: return "committed";
    case LeaseState::kReleased: return "released";
  }
  return "released";
}

AttachmentKey AttachmentKey::For(const std::string& subnet, const Owner& o) {
  // A pod identity outlives its sandboxes, so it is preferred over the container ID.
  if (!o.pod_name.empty()) return {subnet, "pod:" + o.pod_namespace + "/" + o.pod_name, o.ifname};
  return {subnet, "container:" + o.container_id, o.ifname};
}

std::string AttachmentKey::ToString() const { return subnet + "/" + owner + "/" + ifname; }

std::vector<IpAddr> Lease::addresses() const {
  std::vector<IpAddr> out;
  if (v4) out.push_back(*v4);
  if (v6) out.push_back(*v6);
  return out;
}

std::string Lease::HolderDescription() const {
  if (!owner.pod_name.empty()) {
    return "pod " + owner.pod_namespace + "/" + owner.pod_name + " (container " +
           owner.container_id + ", " + owner.ifname + ")";
  }
  return "container " + owner.container_id + " (" + owner.ifname + ")";
}

}  // namespace sublease
