#include "daemon/server/sd_notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "daemon/server/test_client.h"

namespace sublease {
namespace {

// A datagram socket bound to `address` ("/path" or "@abstract"), with a receive timeout.
int BindDatagram(const std::string& address) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address.data(), address.size());
  if (address[0] == '@') addr.sun_path[0] = '\0';
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() +
                                    (address[0] == '@' ? 0 : 1));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string Receive(int fd) {
  char buf[512];
  ssize_t n = recv(fd, buf, sizeof(buf), 0);
  return n < 0 ? "<timeout>" : std::string(buf, static_cast<size_t>(n));
}

TEST(SdNotifyTest, SendsExactStateToPathSocket) {
  testing::TempDir dir;
  std::string path = dir.path() + "/notify";
  int fd = BindDatagram(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(setenv("NOTIFY_SOCKET", path.c_str(), 1), 0);
  auto sent = SdNotify("READY=1\nSTATUS=serving");
  unsetenv("NOTIFY_SOCKET");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(Receive(fd), "READY=1\nSTATUS=serving");
  close(fd);
}

TEST(SdNotifyTest, SendsToAbstractSocket) {
  std::string address = "@sublease-test-" + std::to_string(getpid());
  int fd = BindDatagram(address);
  ASSERT_GE(fd, 0);
  auto sent = SdNotifyTo(address, "STOPPING=1");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(Receive(fd), "STOPPING=1");
  close(fd);
}

TEST(SdNotifyTest, UnsetSocketIsSuccessWithoutSending) {
  unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(SdNotify("READY=1"));
}

TEST(SdNotifyTest, RejectsAddressesThatAreNotUnixSockets) {
  for (const std::string& address :
       std::vector<std::string>{"relative/path", "vsock:2:1234", "/" + std::string(200, 'x')}) {
    auto sent = SdNotifyTo(address, "READY=1");
    ASSERT_FALSE(sent) << address;
    EXPECT_EQ(sent.error().code, Code::kInvalidArgument) << address;
  }
}

TEST(SdNotifyTest, MissingListenerIsUnavailable) {
  testing::TempDir dir;
  auto sent = SdNotifyTo(dir.path() + "/nobody", "READY=1");
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Code::kUnavailable);
}

}  // namespace
}  // namespace sublease
