// Who may talk to the daemon over its Unix sockets.
//
// A pure function over the peer's SO_PEERCRED credentials, so the rule is tested
// without changing users. Used by HttpServer on the loop thread; no state.
#pragma once

#include <sys/types.h>

#include <optional>

namespace sublease {

// True for root, for the daemon's own effective uid, and for a peer whose primary gid
// equals `group` when a group is configured. Supplementary groups are not visible in
// SO_PEERCRED and do not count.
bool PeerAllowed(uid_t peer_uid, gid_t peer_gid, uid_t self_euid, std::optional<gid_t> group);

}  // namespace sublease
