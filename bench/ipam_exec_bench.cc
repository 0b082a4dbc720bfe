// ipam_exec_bench: times whole-process CNI plugin invocations, the way a container
// runtime (or a main plugin) makes them: fork, exec with the CNI environment, the network
// config on stdin, read stdout, wait. Several variants (e.g. sublease and host-local, or
// macvlan+sublease and macvlan+host-local) are interleaved in one run so that they see the
// same machine load. Each iteration is ADD then DEL with a fresh container ID.
//
//   ipam_exec_bench -n 2000 [--hostns NAME] [--netns PATH] [--cni-path DIRS]
//       --variant NAME PLUGIN CONFIG_FILE [--variant ...] [--json OUT]
//   ipam_exec_bench --version-only -n 500 --variant sublease PLUGIN -   (exec of VERSION)
//
// Timing is CLOCK_MONOTONIC around fork..waitpid; "cpu p50" is the plugin process's own
// user+system CPU time (wait4's rusage), which other load on the machine barely moves,
// unlike the wall time. Correctness only decides the exit code:
// every invocation must exit 0 and every ADD must print a result with "ips". Timing never
// fails the run.
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Variant {
  std::string name, plugin, config;
  std::vector<double> add_ms, del_ms, pair_ms, version_ms;
  std::vector<double> add_cpu_ms, del_cpu_ms, pair_cpu_ms, version_cpu_ms;
  int failures = 0;
  std::string first_error;
};

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Runs `plugin` with `env`, writing `input` to its stdin; returns the exit status (or -1),
// stdout in *out, the elapsed wall time in *ms and the child's CPU time in *cpu_ms.
int Run(const std::string& plugin, const std::vector<std::string>& env, const std::string& input,
        std::string* out, double* ms, double* cpu_ms) {
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) return -1;
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(plugin.c_str()), nullptr};
  double start = NowMs();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    execve(plugin.c_str(), argv, envp.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  // Configs are small (< pipe buffer), so writing all before reading cannot deadlock.
  size_t off = 0;
  while (off < input.size()) {
    ssize_t n = write(in_pipe[1], input.data() + off, input.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  close(in_pipe[1]);
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = read(out_pipe[0], buf, sizeof buf);
    if (n > 0) out->append(buf, static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  close(out_pipe[0]);
  int status = 0;
  rusage ru{};
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  *ms = NowMs() - start;
  *cpu_ms = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

void Fail(Variant& v, const std::string& what) {
  if (v.failures++ == 0) v.first_error = what;
}

int Usage() {
  std::fprintf(stderr,
               "usage: ipam_exec_bench -n N [--hostns NAME] [--netns PATH] [--cni-path DIRS] "
               "[--version-only] [--json FILE] --variant NAME PLUGIN CONFIG_FILE ...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 2000;
  std::string hostns, netns = "/proc/self/ns/net", cni_path = "/usr/lib/cni", json_out;
  bool version_only = false;
  std::vector<Variant> variants;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "-n") n = std::atoi(next().c_str());
    else if (a == "--hostns") hostns = next();
    else if (a == "--netns") netns = next();
    else if (a == "--cni-path") cni_path = next();
    else if (a == "--json") json_out = next();
    else if (a == "--version-only") version_only = true;
    else if (a == "--variant" && i + 3 < argc) {
      Variant v;
      v.name = argv[++i];
      v.plugin = argv[++i];
      std::string file = argv[++i];
      v.config = file == "-" ? "" : ReadFile(file);
      variants.push_back(std::move(v));
    } else {
      return Usage();
    }
  }
  if (variants.empty() || n <= 0 || n > 1'000'000) return Usage();
  if (!hostns.empty()) {
    // Like `ip netns exec`: the plugins run in the stand-in host namespace.
    int fd = open(("/var/run/netns/" + hostns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "cannot enter netns %s: %s\n", hostns.c_str(), std::strerror(errno));
      return 1;
    }
    close(fd);
  }
  std::string pid = std::to_string(getpid());
  std::string out;
  int progress_every = std::max(1, n / 10);
  for (int it = 0; it < n; ++it) {
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      Variant& v = variants[vi];
      double ms = 0, cpu = 0;
      if (version_only) {
        int rc = Run(v.plugin, {"CNI_COMMAND=VERSION"}, "", &out, &ms, &cpu);
        if (rc != 0 || out.find("cniVersion") == std::string::npos) Fail(v, "VERSION rc=" + std::to_string(rc));
        v.version_ms.push_back(ms);
        v.version_cpu_ms.push_back(cpu);
        continue;
      }
      // CNI spec: container IDs are [a-zA-Z0-9][a-zA-Z0-9_.-]*, so no variant name here.
      std::string cid = "bench" + pid + "-v" + std::to_string(vi) + "-" + std::to_string(it);
      std::vector<std::string> env = {
          "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netns, "CNI_IFNAME=net1", "CNI_PATH=" + cni_path,
          "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-" + std::to_string(it) +
              ";K8S_POD_INFRA_CONTAINER_ID=" + cid,
          "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
      env.push_back("CNI_COMMAND=ADD");
      double add = 0, del = 0, add_cpu = 0, del_cpu = 0;
      int rc = Run(v.plugin, env, v.config, &out, &add, &add_cpu);
      if (rc != 0 || out.find("\"ips\"") == std::string::npos) {
        Fail(v, "ADD rc=" + std::to_string(rc) + ": " + out.substr(0, 300));
      }
      env.back() = "CNI_COMMAND=DEL";
      rc = Run(v.plugin, env, v.config, &out, &del, &del_cpu);
      if (rc != 0) Fail(v, "DEL rc=" + std::to_string(rc) + ": " + out.substr(0, 300));
      v.add_ms.push_back(add);
      v.del_ms.push_back(del);
      v.pair_ms.push_back(add + del);
      v.add_cpu_ms.push_back(add_cpu);
      v.del_cpu_ms.push_back(del_cpu);
      v.pair_cpu_ms.push_back(add_cpu + del_cpu);
    }
    if ((it + 1) % progress_every == 0) std::fprintf(stderr, "  %d/%d\n", it + 1, n);
  }
  std::FILE* json = json_out.empty() ? nullptr : std::fopen(json_out.c_str(), "w");
  if (json) std::fprintf(json, "{");
  std::printf("%-22s %-8s %9s %9s %9s %9s %9s\n", "variant", "op", "p50 ms", "p90 ms", "p99 ms",
              "mean ms", "cpu p50");
  bool first = true;
  for (auto& v : variants) {
    struct Op {
      const char* name;
      std::vector<double>* samples;
      std::vector<double>* cpu;
    };
    std::vector<Op> ops = version_only ? std::vector<Op>{{"VERSION", &v.version_ms, &v.version_cpu_ms}}
                                       : std::vector<Op>{{"ADD", &v.add_ms, &v.add_cpu_ms},
                                                         {"DEL", &v.del_ms, &v.del_cpu_ms},
                                                         {"ADD+DEL", &v.pair_ms, &v.pair_cpu_ms}};
    for (auto& [op, samples, cpu] : ops) {
      std::printf("%-22s %-8s %9.3f %9.3f %9.3f %9.3f %9.3f\n", v.name.c_str(), op, Pct(*samples, 50),
                  Pct(*samples, 90), Pct(*samples, 99), Mean(*samples), Pct(*cpu, 50));
      if (json) {
        std::fprintf(json,
                     "%s\"%s/%s\":{\"n\":%zu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"mean\":%.4f,"
                     "\"cpu_p50\":%.4f}",
                     first ? "" : ",", v.name.c_str(), op, samples->size(), Pct(*samples, 50),
                     Pct(*samples, 90), Pct(*samples, 99), Mean(*samples), Pct(*cpu, 50));
        first = false;
      }
    }
  }
  if (json) {
    std::fprintf(json, "}\n");
    std::fclose(json);
  }
  if (variants.size() >= 2 && !version_only) {
    for (size_t i = 1; i < variants.size(); ++i) {
      const auto& a = variants[0];
      const auto& b = variants[i];
      std::printf("ratio %s/%s: ADD p50 %.2f, ADD p99 %.2f, ADD+DEL p50 %.2f, ADD+DEL p99 %.2f\n", a.name.c_str(),
                  b.name.c_str(), Pct(a.add_ms, 50) / Pct(b.add_ms, 50), Pct(a.add_ms, 99) / Pct(b.add_ms, 99),
                  Pct(a.pair_ms, 50) / Pct(b.pair_ms, 50), Pct(a.pair_ms, 99) / Pct(b.pair_ms, 99));
    }
  }
  int failed = 0;
  for (const auto& v : variants) {
    if (v.failures) {
      std::fprintf(stderr, "FAIL %s: %d failed invocation(s); first: %s\n", v.name.c_str(), v.failures,
                   v.first_error.c_str());
      failed = 1;
    }
  }
  return failed;
}
