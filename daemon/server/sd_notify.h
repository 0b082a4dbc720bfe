// systemd's notify protocol (sd_notify(3)), written by hand: no libsystemd.
//
// One datagram to the AF_UNIX socket named by $NOTIFY_SOCKET: a path, or an abstract
// socket when the value starts with '@'. Stateless and thread-safe; the daemon calls it
// from the loop thread ("READY=1" once listening, "STOPPING=1" on shutdown).
#pragma once

#include <string_view>

#include "common/result.h"

namespace sublease {

// Sends `state` (e.g. "READY=1\nSTATUS=serving") to $NOTIFY_SOCKET. Success without
// sending when the variable is unset or empty (not started by systemd).
Result<void> SdNotify(std::string_view state);

// Sends `state` to the notify socket `address` ("/path" or "@abstract").
// kInvalidArgument for another form or a name too long; kUnavailable when the send fails.
Result<void> SdNotifyTo(std::string_view address, std::string_view state);

}  // namespace sublease
