#include "daemon/server/peer_policy.h"

namespace sublease {

bool PeerAllowed(uid_t peer_uid, gid_t peer_gid, uid_t self_euid, std::optional<gid_t> group) {
  if (peer_uid == 0 || peer_uid == self_euid) return true;
  return group.has_value() && peer_gid == *group;
}

}  // namespace sublease
