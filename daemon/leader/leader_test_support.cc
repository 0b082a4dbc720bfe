#include "daemon/leader/leader_test_support.h"

#include <fcntl.h>
#include <signal.h>
#include <simdjson.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "sync/kube_config.h"

extern char** environ;

namespace sublease::testing {

namespace fs = std::filesystem;

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string FakeApiProcess::Start(const std::vector<std::string>& extra_args) {
  std::string tmpl = (fs::temp_directory_path() / "leader_fakeapi.XXXXXX").string();
  state_dir_ = mkdtemp(tmpl.data());
  std::string ready = state_dir_ + "/ready.json";
  std::vector<std::string> args = {
      "python3", std::string(SUBLEASE_SOURCE_DIR) + "/tests/fakeapi/fake_apiserver.py",
      "--port", "0", "--state-dir", state_dir_, "--ready-file", ready};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  std::string log = state_dir_ + "/server.log";
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  int rc = posix_spawnp(&pid_, "python3", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return std::string("cannot run python3: ") + std::strerror(rc);
  for (int i = 0; i < 300 && !fs::exists(ready); ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return "fake API server exited at start: " + ReadAll(log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!fs::exists(ready)) return "fake API server not ready after 30 s: " + ReadAll(log);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(simdjson::padded_string(ReadAll(ready))).get(doc) != simdjson::SUCCESS) {
    return "unreadable ready file";
  }
  url_ = std::string(std::string_view(doc["url"]));
  control_url_ = std::string(std::string_view(doc["control_url"]));
  ca_file_ = std::string(std::string_view(doc["ca_file"]));
  token_ = std::string(std::string_view(doc["token"]));
  return "";
}

void FakeApiProcess::Stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 50 && !exited; ++i) {
      exited = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = 0;
  }
  if (!state_dir_.empty()) fs::remove_all(state_dir_);
  state_dir_.clear();
}

void FakeApiTest::SetUp() {
  ASSERT_EQ(uv_loop_init(&loop_), 0);
  std::string error = server_.Start(ServerArgs());
  ASSERT_EQ(error, "") << "the fake API server (tests/fakeapi/fake_apiserver.py) must run";
  KubeConfig control;
  control.server = server_.control_url();
  control_ = std::make_unique<KubeClient>(&loop_, control, &clock_);
  KubeConfig config;
  config.server = server_.url();
  config.ca_file = server_.ca_file();
  config.token = server_.token();
  client_ = std::make_unique<KubeClient>(&loop_, config, &clock_);
}

void FakeApiTest::TearDown() {
  int pending = 0;
  auto done = [&] { --pending; };
  for (auto& closer : closers_) {
    ++pending;
    closer(done);
  }
  EXPECT_TRUE(Wait([&] { return pending == 0; }, 15000)) << "closers did not finish";
  closers_.clear();
  std::vector<KubeClient*> clients;
  for (auto& c : user_clients_) clients.push_back(c.get());
  clients.push_back(client_.get());
  clients.push_back(control_.get());
  for (KubeClient* c : clients) {
    if (c == nullptr) continue;
    ++pending;
    c->Close(done);
  }
  EXPECT_TRUE(Wait([&] { return pending == 0; }, 5000));
  user_clients_.clear();
  client_.reset();
  control_.reset();
  Drain(&loop_);
  EXPECT_EQ(uv_loop_close(&loop_), 0) << "a uv handle was left open";
  server_.Stop();
}

KubeClient* FakeApiTest::ClientAs(const std::string& user) {
  std::string token = "token-" + user;
  Control("POST", "/tokens", "{\"token\":\"" + token + "\",\"user\":\"" + user + "\"}");
  KubeConfig config;
  config.server = server_.url();
  config.ca_file = server_.ca_file();
  config.token = token;
  user_clients_.push_back(std::make_unique<KubeClient>(&loop_, config, &clock_));
  return user_clients_.back().get();
}

KubeResult<KubeResponse> FakeApiTest::Call(const std::string& method, const std::string& path,
                                           const std::string& body,
                                           const std::string& content_type) {
  std::optional<KubeResult<KubeResponse>> got;
  client_->Request(method, path, body, body.empty() ? "" : content_type, 0,
                   [&](KubeResult<KubeResponse> r) { got = std::move(r); });
  EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000)) << method << " " << path;
  if (!got) return tl::unexpected(KubeError{});
  return std::move(*got);
}

std::string FakeApiTest::MustCall(const std::string& method, const std::string& path,
                                  const std::string& body, const std::string& content_type) {
  auto r = Call(method, path, body, content_type);
  EXPECT_TRUE(r) << method << " " << path << ": " << (r ? "" : r.error().message);
  return r ? r->body : "";
}

std::string FakeApiTest::Control(const std::string& method, const std::string& path,
                                 const std::string& body) {
  std::optional<KubeResult<KubeResponse>> got;
  control_->Request(method, "/_fake" + path, body, "application/json", 0,
                    [&](KubeResult<KubeResponse> r) { got = std::move(r); });
  EXPECT_TRUE(Wait([&] { return got.has_value(); }, 15000)) << method << " " << path;
  EXPECT_TRUE(got && *got) << method << " " << path << ": "
                           << (got && !*got ? got->error().message : "");
  return got && *got ? (*got)->body : "";
}

std::string PodJson(const std::string& name, const std::string& node,
                    const std::string& extra_metadata) {
  return R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")" + name +
         R"(","namespace":"default")" + extra_metadata + R"(},"spec":{"nodeName":")" + node +
         R"(","containers":[{"name":"c","image":"alpine"}]}})";
}

std::string SubnetJson(const std::string& name, const std::string& provider,
                       const std::string& cidr, const std::string& extra_spec) {
  return R"({"apiVersion":"kubeovn.io/v1","kind":"Subnet","metadata":{"name":")" + name +
         R"("},"spec":{"provider":")" + provider + R"(","cidrBlock":")" + cidr + "\"" +
         extra_spec + "}}";
}

std::string JsonField(const std::string& json, const std::vector<std::string>& path) {
  simdjson::dom::parser parser;
  simdjson::dom::element e;
  if (parser.parse(json).get(e) != simdjson::SUCCESS) return "";
  for (const std::string& key : path) {
    simdjson::dom::element next;
    if (e.is_array()) {
      if (e.at(std::stoul(key)).get(next) != simdjson::SUCCESS) return "";
    } else if (e[key].get(next) != simdjson::SUCCESS) {
      return "";
    }
    e = next;
  }
  std::string_view s;
  if (e.get(s) == simdjson::SUCCESS) return std::string(s);
  return simdjson::minify(e);
}

}  // namespace sublease::testing
