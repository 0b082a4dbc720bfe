// sublease: the CNI IPAM plugin (also installed as kube-ovn). Wiring only: the
// process environment, stdin and stdout go into RunPlugin (cni/plugin.h).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cni/plugin.h"

namespace {

constexpr size_t kMaxConfigBytes = 4 << 20;

sublease::Result<std::string> ReadStdin() {
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n == 0) return data;
    if (n < 0) {
      if (errno == EINTR) continue;
      return sublease::Fail(
          sublease::Error::Internal(std::string("read: ") + std::strerror(errno)));
    }
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxConfigBytes) {
      return sublease::Fail(
          sublease::Error::InvalidArgument("config on stdin is larger than 4 MiB"));
    }
  }
}

bool WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

int main() {
  std::string out;
  sublease::cni::PluginIo io;
  io.getenv = [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
  io.read_stdin = ReadStdin;
  io.out = &out;
  int code = sublease::cni::RunPlugin(io);
  if (!out.empty()) out += '\n';
  if (!WriteAll(STDOUT_FILENO, out)) return 1;
  return code;
}
