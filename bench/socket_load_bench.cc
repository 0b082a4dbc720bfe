// socket_load_bench: C concurrent clients on the daemon's Unix socket, each doing
// POST /v1/cni/add then POST /v1/cni/del (docs/protocol.md) for a fresh attachment, in a
// loop, the way many CNI plugins on one node would. One connection per request with
// `Connection: close`, as the plugin does (or --keepalive: one connection per client).
//
//   socket_load_bench --socket PATH --provider P -c 1,8,64 -n PAIRS_PER_LEVEL
//                     [--max-seconds S] [--keepalive] [--json OUT]
//
// Reports, per concurrency level: allocations/s (one allocation = one ADD and its DEL,
// both committed), requests/s, p50/p99 of ADD and DEL. Every loop is bounded by the pair
// count and by --max-seconds. Correctness only decides the exit code: every answer must
// be 200, and no ADD may return an address that another client still holds.
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct Options {
  std::string socket, provider = "bench.default";
  std::vector<int> levels = {1, 8, 64};
  long pairs = 20000;
  double max_seconds = 60;
  bool keepalive = false;
  std::string json_out;
};

// Shared by the clients of one level: the addresses currently held, for the duplicate check.
struct Held {
  std::mutex mu;
  std::set<std::string> addresses;
  std::atomic<long> duplicates{0};
};

class Client {
 public:
  Client(const Options& o) : o_(o) {}
  ~Client() { Close(); }

  // One request; returns the HTTP status (0 on a transport error) and the body.
  int Post(const std::string& path, const std::string& body, std::string* reply) {
    if (fd_ < 0 && !Connect()) return 0;
    std::string req = "POST " + path + " HTTP/1.1\r\nHost: sublease\r\nContent-Type: application/json\r\n" +
                      (o_.keepalive ? "" : "Connection: close\r\n") +
                      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    if (!WriteAll(req)) return Fail();
    // Read the head, then Content-Length bytes.
    buf_.clear();
    size_t head_end = std::string::npos;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadSome()) return Fail();
    }
    int status = std::atoi(buf_.c_str() + 9);
    size_t len = 0;
    auto cl = buf_.find("Content-Length:");
    if (cl == std::string::npos) cl = buf_.find("content-length:");
    if (cl != std::string::npos && cl < head_end) len = std::strtoul(buf_.c_str() + cl + 15, nullptr, 10);
    while (buf_.size() < head_end + 4 + len) {
      if (!ReadSome()) return Fail();
    }
    *reply = buf_.substr(head_end + 4, len);
    if (!o_.keepalive) Close();
    return status;
  }

 private:
  bool Connect() {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", o_.socket.c_str());
    if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Close();
      return false;
    }
    return true;
  }
  bool WriteAll(const std::string& s) {
    for (size_t off = 0; off < s.size();) {
      ssize_t n = write(fd_, s.data() + off, s.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool ReadSome() {
    char b[4096];
    for (;;) {
      ssize_t n = read(fd_, b, sizeof b);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buf_.append(b, static_cast<size_t>(n));
      return true;
    }
  }
  int Fail() {
    Close();
    return 0;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  const Options& o_;
  int fd_ = -1;
  std::string buf_;
};

std::string FirstAddress(const std::string& body) {
  auto k = body.find("\"address\"");
  if (k == std::string::npos) return "";
  auto q1 = body.find('"', body.find(':', k) + 1);
  auto q2 = body.find('"', q1 + 1);
  return q1 == std::string::npos || q2 == std::string::npos ? "" : body.substr(q1 + 1, q2 - q1 - 1);
}

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct LevelResult {
  int clients = 0;
  long pairs = 0, errors = 0, duplicates = 0;
  double seconds = 0;
  std::vector<double> add_ms, del_ms;
  std::string first_error;
};

LevelResult RunLevel(const Options& o, int clients, int level_index) {
  LevelResult r;
  r.clients = clients;
  Held held;
  std::atomic<long> next{0};
  std::atomic<long> errors{0};
  std::mutex mu;
  double deadline = NowMs() + o.max_seconds * 1000;
  std::vector<std::thread> threads;
  double start = NowMs();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      Client client(o);
      std::vector<double> adds, dels;
      std::string reply, first_error;
      for (;;) {
        long i = next.fetch_add(1);
        if (i >= o.pairs || NowMs() > deadline) break;
        std::string cid = "load" + std::to_string(getpid()) + "-" + std::to_string(level_index) + "-" +
                          std::to_string(i);
        std::string body = "{\"containerID\":\"" + cid + "\",\"ifname\":\"net1\",\"netns\":\"/proc/self/ns/net\","
                           "\"provider\":\"" + o.provider + "\",\"podNamespace\":\"bench\",\"podName\":\"pod-" +
                           std::to_string(c) + "-" + std::to_string(i) + "\",\"podUID\":\"uid-" + cid + "\"}";
        double t0 = NowMs();
        int st = client.Post("/v1/cni/add", body, &reply);
        double t1 = NowMs();
        std::string addr = FirstAddress(reply);
        if (st != 200 || addr.empty()) {
          if (errors.fetch_add(1) == 0) first_error = "add " + std::to_string(st) + ": " + reply.substr(0, 200);
          continue;
        }
        {
          std::lock_guard<std::mutex> g(held.mu);
          if (!held.addresses.insert(addr).second) held.duplicates++;
        }
        adds.push_back(t1 - t0);
        {
          // Forget the address before the DEL: after the DEL the daemon may hand it out again.
          std::lock_guard<std::mutex> g(held.mu);
          held.addresses.erase(addr);
        }
        double t2 = NowMs();
        st = client.Post("/v1/cni/del", body, &reply);
        double t3 = NowMs();
        if (st != 200) {
          if (errors.fetch_add(1) == 0) first_error = "del " + std::to_string(st) + ": " + reply.substr(0, 200);
          continue;
        }
        dels.push_back(t3 - t2);
      }
      std::lock_guard<std::mutex> g(mu);
      r.add_ms.insert(r.add_ms.end(), adds.begin(), adds.end());
      r.del_ms.insert(r.del_ms.end(), dels.begin(), dels.end());
      if (r.first_error.empty()) r.first_error = first_error;
    });
  }
  for (auto& t : threads) t.join();
  r.seconds = (NowMs() - start) / 1000;
  r.pairs = static_cast<long>(r.del_ms.size());
  r.errors = errors.load();
  r.duplicates = held.duplicates.load();
  return r;
}

std::vector<int> ParseLevels(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--socket") o.socket = next();
    else if (a == "--provider") o.provider = next();
    else if (a == "-c") o.levels = ParseLevels(next());
    else if (a == "-n") o.pairs = std::atol(next().c_str());
    else if (a == "--max-seconds") o.max_seconds = std::atof(next().c_str());
    else if (a == "--keepalive") o.keepalive = true;
    else if (a == "--json") o.json_out = next();
    else {
      std::fprintf(stderr, "usage: socket_load_bench --socket PATH [--provider P] [-c 1,8,64] [-n PAIRS] "
                           "[--max-seconds S] [--keepalive] [--json FILE]\n");
      return 2;
    }
  }
  if (o.socket.empty() || o.levels.empty() || o.pairs <= 0) return 2;
  int failed = 0;
  std::FILE* json = o.json_out.empty() ? nullptr : std::fopen(o.json_out.c_str(), "w");
  if (json) std::fprintf(json, "[");
  std::printf("%8s %8s %9s %11s %10s %10s %10s %10s\n", "clients", "pairs", "seconds", "allocs/s", "add p50",
              "add p99", "del p50", "del p99");
  for (size_t li = 0; li < o.levels.size(); ++li) {
    int c = o.levels[li];
    if (c <= 0 || c > 1024) return 2;
    LevelResult r = RunLevel(o, c, static_cast<int>(li));
    double rate = r.seconds > 0 ? static_cast<double>(r.pairs) / r.seconds : 0;
    double a50 = Pct(r.add_ms, 50), a99 = Pct(r.add_ms, 99), d50 = Pct(r.del_ms, 50), d99 = Pct(r.del_ms, 99);
    std::printf("%8d %8ld %9.2f %11.0f %8.3fms %8.3fms %8.3fms %8.3fms\n", c, r.pairs, r.seconds, rate, a50, a99,
                d50, d99);
    std::fflush(stdout);
    if (json) {
      std::fprintf(json,
                   "%s{\"clients\":%d,\"pairs\":%ld,\"seconds\":%.3f,\"allocs_per_s\":%.1f,\"add_p50_ms\":%.4f,"
                   "\"add_p99_ms\":%.4f,\"del_p50_ms\":%.4f,\"del_p99_ms\":%.4f,\"errors\":%ld,\"duplicates\":%ld}",
                   li ? "," : "", c, r.pairs, r.seconds, rate, a50, a99, d50, d99, r.errors, r.duplicates);
    }
    if (r.errors || r.duplicates) {
      std::fprintf(stderr, "FAIL at %d clients: %ld error(s), %ld duplicate(s); first: %s\n", c, r.errors,
                   r.duplicates, r.first_error.c_str());
      failed = 1;
    }
  }
  if (json) {
    std::fprintf(json, "]\n");
    std::fclose(json);
  }
  return failed;
}
