// Runs the built plugin as a real process, under both of its names, to prove that
// main.cc wires environment, stdin, stdout and the exit status the way RunPlugin
// is tested in-process.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

namespace {

struct ProcessResult {
  int exit_status = -1;  // -1 when it did not exit normally in time
  std::string out;
};

// Runs `path` with exactly `env`, feeding `input` on stdin; bounded to 20 s.
ProcessResult RunProcess(const std::string& path, const std::vector<std::string>& env,
                         const std::string& input) {
  ProcessResult r;
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (rc != 0) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    return r;
  }
  // Small inputs fit in the pipe buffer; the plugin may exit without reading (VERSION).
  signal(SIGPIPE, SIG_IGN);
  [[maybe_unused]] ssize_t written = write(in_pipe[1], input.data(), input.size());
  close(in_pipe[1]);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  char buf[4096];
  for (int reads = 0; reads < 10000; ++reads) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{out_pipe[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    ssize_t n = read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    r.out.append(buf, static_cast<size_t>(n));
  }
  close(out_pipe[0]);
  // EOF on stdout comes a moment before the exit (sanitizer reports run at exit).
  int status = 0;
  pid_t done = 0;
  for (int polls = 0; polls < 2000 && done == 0; ++polls) {
    done = waitpid(pid, &status, WNOHANG);
    if (done == 0 && std::chrono::steady_clock::now() >= deadline) break;
    if (done == 0) usleep(10'000);
  }
  if (done == 0) {
    kill(pid, SIGKILL);  // overran the deadline
    waitpid(pid, &status, 0);
    return r;
  }
  if (done == pid && WIFEXITED(status)) r.exit_status = WEXITSTATUS(status);
  return r;
}

class PluginBinaryTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PluginBinaryTest, VersionPrintsSupportedVersions) {
  auto r = RunProcess(GetParam(), {"CNI_COMMAND=VERSION"}, "");
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_EQ(r.out,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":"
            "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n");
}

TEST_P(PluginBinaryTest, BadConfigExitsNonZeroWithCniError7) {
  auto r = RunProcess(GetParam(),
                      {"CNI_COMMAND=ADD", "CNI_CONTAINERID=abc", "CNI_NETNS=/var/run/netns/x",
                       "CNI_IFNAME=net1", "CNI_PATH=/opt/cni/bin"},
                      R"({"cniVersion":"0.3.1","name":"m","ipam":{"type":"kube-ovn",)"
                      R"("server_socket":"/run/x.sock"}})");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_EQ(r.out.rfind(R"({"cniVersion":"0.3.1","code":7,"msg":"ipam.provider is required")", 0),
            0u)
      << r.out;
}

TEST_P(PluginBinaryTest, UnparsableConfigIsDecodeFailure) {
  auto r = RunProcess(GetParam(), {"CNI_COMMAND=DEL", "CNI_CONTAINERID=abc", "CNI_IFNAME=net1"},
                      "{not json");
  EXPECT_EQ(r.exit_status, 1);
  EXPECT_NE(r.out.find(R"("code":6)"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Names, PluginBinaryTest,
                         ::testing::Values(SUBLEASE_PLUGIN_PATH, SUBLEASE_KUBE_OVN_PATH),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           return p.index == 0 ? std::string("sublease") : std::string("kube_ovn");
                         });

}  // namespace
