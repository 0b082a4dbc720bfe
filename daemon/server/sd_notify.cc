#include "daemon/server/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sublease {

Result<void> SdNotify(std::string_view state) {
  const char* address = std::getenv("NOTIFY_SOCKET");
  if (address == nullptr || *address == '\0') return Ok();
  return SdNotifyTo(address, state);
}

Result<void> SdNotifyTo(std::string_view address, std::string_view state) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (address.empty() || (address[0] != '/' && address[0] != '@')) {
    return Fail(Error::InvalidArgument("NOTIFY_SOCKET \"" + std::string(address) +
                                       "\" is neither a path nor an abstract socket (@name)"));
  }
  if (address.size() > sizeof(addr.sun_path) ||
      (address[0] == '/' && address.size() == sizeof(addr.sun_path))) {
    return Fail(
        Error::InvalidArgument("NOTIFY_SOCKET \"" + std::string(address) + "\" is too long"));
  }
  std::memcpy(addr.sun_path, address.data(), address.size());
  // Abstract namespace: a leading NUL, and the length counts the name exactly.
  if (address[0] == '@') addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() +
                                         (address[0] == '/' ? 1 : 0));

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return Fail(Error::Internal(std::string("sd_notify: socket(): ") + std::strerror(errno)));
  ssize_t sent = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                        reinterpret_cast<const sockaddr*>(&addr), len);
  int err = errno;
  close(fd);
  if (sent < 0) {
    return Fail(
        Error::Unavailable("sd_notify to " + std::string(address) + ": " + std::strerror(err)));
  }
  if (static_cast<size_t>(sent) != state.size()) {
    return Fail(Error::Internal("sd_notify to " + std::string(address) + ": short send"));
  }
  return Ok();
}

}  // namespace sublease
