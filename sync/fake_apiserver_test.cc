// KubeClient and Informer against the project's fake API server
// (tests/fakeapi/fake_apiserver.py, docs/fake-apiserver.md): real TLS with CA
// verification, bearer tokens, optimistic concurrency, paging, watches with
// bookmarks, dropped watches, compaction (410) and injected faults.
// Each test starts its own server process and kills it at the end; every wait is
// bounded.
#include <gtest/gtest.h>
#include <signal.h>
#include <simdjson.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "sync/informer.h"
#include "sync/kube_client.h"
#include "sync/kube_config.h"
#include "sync/test_support.h"

extern char** environ;

namespace sublease {
namespace {

namespace fs = std::filesystem;
using testing::RunUntil;

constexpr char kBlocks[] = "/apis/sublease.io/v1alpha1/ipblocks";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The fake API server as a child process.
class FakeApiServer {
 public:
  ~FakeApiServer() { Stop(); }

  // Starts the server and waits (bounded) for its ready file. Empty on success.
  std::string Start(const std::vector<std::string>& extra_args) {
    std::string tmpl = (fs::temp_directory_path() / "sync_fakeapi.XXXXXX").string();
    state_dir_ = mkdtemp(tmpl.data());
    ready_file_ = state_dir_ + "/ready.json";
    std::vector<std::string> args = {
        "python3",      std::string(SUBLEASE_SOURCE_DIR) + "/tests/fakeapi/fake_apiserver.py",
        "--port",       "0",
        "--state-dir",  state_dir_,
        "--ready-file", ready_file_};
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
    for (int i = 0; i < 300 && !fs::exists(ready_file_); ++i) {  // 30 s at most
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return "fake API server exited at start: " + ReadFile(log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!fs::exists(ready_file_)) return "fake API server not ready after 30 s: " + ReadFile(log);
    simdjson::dom::parser parser;
    simdjson::dom::element ready;
    if (parser.parse(simdjson::padded_string(ReadFile(ready_file_))).get(ready) !=
        simdjson::SUCCESS) {
      return "unreadable ready file";
    }
    url_ = std::string(std::string_view(ready["url"]));
    control_url_ = std::string(std::string_view(ready["control_url"]));
    kubeconfig_ = std::string(std::string_view(ready["kubeconfig"]));
    token_file_ = std::string(std::string_view(ready["token_file"]));
    serviceaccount_dir_ = std::string(std::string_view(ready["serviceaccount_dir"]));
    port_ = std::to_string(int64_t(ready["port"]));
    return "";
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      bool exited = false;
      for (int i = 0; i < 50 && !exited; ++i) {  // 5 s, then SIGKILL
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

  const std::string& url() const { return url_; }
  const std::string& control_url() const { return control_url_; }
  const std::string& kubeconfig() const { return kubeconfig_; }
  const std::string& token_file() const { return token_file_; }
  const std::string& serviceaccount_dir() const { return serviceaccount_dir_; }
  const std::string& port() const { return port_; }

 private:
  pid_t pid_ = 0;
  std::string state_dir_, ready_file_, url_, control_url_, kubeconfig_, token_file_,
      serviceaccount_dir_, port_;
};

std::string Block(const std::string& name, const std::string& node, const std::string& rv = "",
                  const std::string& uid = "") {
  std::string meta = "\"name\":\"" + name + "\",\"labels\":{\"sublease.io/node\":\"" + node + "\"}";
  if (!rv.empty()) meta += ",\"resourceVersion\":\"" + rv + "\"";
  if (!uid.empty()) meta += ",\"uid\":\"" + uid + "\"";
  return "{\"apiVersion\":\"sublease.io/v1alpha1\",\"kind\":\"IPBlock\",\"metadata\":{" + meta +
         "},\"spec\":{\"node\":\"" + node + "\"}}";
}

class Recorder : public InformerHandler {
 public:
  void OnAdded(const KubeObject& o) override { log.push_back("ADDED " + o.name); }
  void OnModified(const KubeObject& o) override { log.push_back("MODIFIED " + o.name); }
  void OnDeleted(const KubeObject& o) override { log.push_back("DELETED " + o.name); }
  void OnSynced() override {
    log.push_back("SYNCED");
    ++synced;
  }
  void OnResourceVersion(std::string_view rv) override {
    last_rv = rv;
    ++rv_updates;
  }
  bool Saw(const std::string& entry) const {
    return std::find(log.begin(), log.end(), entry) != log.end();
  }
  std::vector<std::string> log;
  std::string last_rv;
  int rv_updates = 0;
  int synced = 0;
};

class FakeApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    StartServer({"--bookmark-interval", "0.3"});
  }

  void StartServer(const std::vector<std::string>& args) {
    std::string error = server_.Start(args);
    ASSERT_EQ(error, "")
        << "the fake API server (tests/fakeapi/fake_apiserver.py) must run for these tests";
    KubeConfig control;
    control.server = server_.control_url();
    control_ = std::make_unique<KubeClient>(&loop_, control, &clock_);
  }

  void TearDown() override {
    int pending = 0;
    auto done = [&] { --pending; };
    if (informer_) {
      ++pending;
      informer_->Close(done);
    }
    for (auto* c : {client_.get(), control_.get()}) {
      if (c != nullptr) {
        ++pending;
        c->Close(done);
      }
    }
    EXPECT_TRUE(RunUntil(
        &loop_, [&] { return pending == 0; }, 5000));
    informer_.reset();
    client_.reset();
    control_.reset();
    testing::Drain(&loop_);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a uv handle was left open";
    server_.Stop();
  }

  KubeConfig Kubeconfig() {
    auto config = LoadKubeconfig(server_.kubeconfig());
    EXPECT_TRUE(config) << config.error().message;
    return config ? *config : KubeConfig{};
  }

  KubeClient& Client(std::optional<KubeConfig> config = std::nullopt) {
    client_ = std::make_unique<KubeClient>(&loop_, config ? *config : Kubeconfig(), &clock_);
    return *client_;
  }

  KubeResult<KubeResponse> Await(const std::function<void(KubeClient::ResponseCallback)>& send) {
    std::optional<KubeResult<KubeResponse>> got;
    send([&](KubeResult<KubeResponse> r) { got = std::move(r); });
    EXPECT_TRUE(RunUntil(
        &loop_, [&] { return got.has_value(); }, 15000))
        << "no answer in 15 s";
    if (!got) return tl::unexpected(KubeError{});
    return std::move(*got);
  }

  // Calls the fake server's control API (plain HTTP on its control port).
  std::string Control(const std::string& method, const std::string& path,
                      const std::string& body = "") {
    auto r = Await([&](auto cb) {
      control_->Request(method, "/_fake" + path, body, "application/json", 0, cb);
    });
    EXPECT_TRUE(r) << method << " " << path << ": " << r.error().message;
    return r ? r->body : "";
  }

  KubeObject MustCreate(KubeClient& client, const std::string& name,
                        const std::string& node = "n1") {
    auto r = Await([&](auto cb) { client.Create(kBlocks, Block(name, node), cb); });
    EXPECT_TRUE(r) << r.error().message;
    auto obj = ParseKubeObject(r ? r->body : "{}");
    return obj ? *obj : KubeObject{};
  }

  Informer& StartInformer(InformerOptions options) {
    options.path = kBlocks;
    options.seed = 11;
    informer_ = std::make_unique<Informer>(client_.get(), options, &recorder_);
    informer_->Start();
    return *informer_;
  }

  uv_loop_t loop_;
  FakeClock clock_;
  FakeApiServer server_;
  std::unique_ptr<KubeClient> control_;
  std::unique_ptr<KubeClient> client_;
  std::unique_ptr<Informer> informer_;
  Recorder recorder_;
};

TEST_F(FakeApiServerTest, TlsWithTheClusterCaFromTheKubeconfig) {
  KubeConfig config = Kubeconfig();
  EXPECT_FALSE(config.ca_data.empty());
  EXPECT_EQ(config.server.rfind("https://", 0), 0u);
  auto r = Await([&](auto cb) { Client(config).Get("/version", cb); });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(r->body.find("gitVersion"), std::string::npos);
  // The server logs a request after answering it: poll (bounded) for the entry.
  std::string log;
  for (int i = 0; i < 50 && log.find("subleased/0.1.0") == std::string::npos; ++i) {
    if (i > 0) RunUntil(&loop_, [] { return false; }, 20);
    log = Control("GET", "/requests");
  }
  EXPECT_NE(log.find("subleased/0.1.0"), std::string::npos) << log;
}

TEST_F(FakeApiServerTest, ACaThatDidNotSignTheServerFailsNamingTheCertificate) {
  KubeConfig config = Kubeconfig();
  config.ca_data.clear();
  config.ca_file = "/etc/ssl/certs/ca-certificates.crt";  // public roots only
  auto r = Await([&](auto cb) { Client(config).Get("/version", cb); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kInternal);
  EXPECT_NE(r.error().message.find("certificate"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("certificate-authority"), std::string::npos)
      << r.error().message;
}

TEST_F(FakeApiServerTest, InClusterConfigFromTheServiceAccountDirectory) {
  setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", server_.port().c_str(), 1);
  auto config = InClusterConfig(server_.serviceaccount_dir());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  ASSERT_TRUE(config) << config.error().message;
  auto r = Await([&](auto cb) { Client(*config).List(kBlocks, {}, cb); });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(r->body.find("IPBlockList"), std::string::npos);
}

TEST_F(FakeApiServerTest, WrongTokenIsRejectedWith401AndAMessageAboutTheToken) {
  KubeConfig config = Kubeconfig();
  config.token = "not-the-token";
  auto r = Await([&](auto cb) { Client(config).Get(kBlocks, cb); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status, 401);
  EXPECT_EQ(r.error().code, Code::kInternal);
  EXPECT_NE(r.error().message.find("401 Unauthorized"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("bearer token"), std::string::npos) << r.error().message;
}

TEST_F(FakeApiServerTest, CreateGetAndCompareAndSwapUpdate) {
  KubeClient& client = Client();
  KubeObject created = MustCreate(client, "b1");
  ASSERT_FALSE(created.resource_version.empty());
  auto again = Await([&](auto cb) { client.Create(kBlocks, Block("b1", "n1"), cb); });
  ASSERT_FALSE(again);
  EXPECT_TRUE(again.error().IsAlreadyExists()) << again.error().message;

  auto got = Await([&](auto cb) { client.Get(std::string(kBlocks) + "/b1", cb); });
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(ParseKubeObject(got->body)->uid, created.uid);

  const std::string path = std::string(kBlocks) + "/b1";
  auto updated =
      Await([&](auto cb) { client.Update(path, Block("b1", "n2", created.resource_version), cb); });
  ASSERT_TRUE(updated) << updated.error().message;
  EXPECT_NE(ParseKubeObject(updated->body)->resource_version, created.resource_version);
  // The same compare-and-swap again carries a stale resourceVersion now.
  auto stale =
      Await([&](auto cb) { client.Update(path, Block("b1", "n3", created.resource_version), cb); });
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, Code::kConflict);
  EXPECT_EQ(stale.error().reason, "Conflict");
  EXPECT_FALSE(stale.error().IsAlreadyExists());

  auto missing = Await([&](auto cb) { client.Get(std::string(kBlocks) + "/nosuch", cb); });
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Code::kNotFound);
}

TEST_F(FakeApiServerTest, MergePatchChangesOnlyTheGivenFields) {
  KubeClient& client = Client();
  MustCreate(client, "b1");
  auto patched = Await([&](auto cb) {
    client.MergePatch(std::string(kBlocks) + "/b1", R"({"metadata":{"labels":{"extra":"yes"}}})",
                      cb);
  });
  ASSERT_TRUE(patched) << patched.error().message;
  auto obj = ParseKubeObject(patched->body);
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->labels.at("extra"), "yes");
  EXPECT_EQ(obj->labels.at("sublease.io/node"), "n1");
}

TEST_F(FakeApiServerTest, DeleteWithAStaleUidPreconditionIsAConflict) {
  KubeClient& client = Client();
  KubeObject created = MustCreate(client, "b1");
  const std::string path = std::string(kBlocks) + "/b1";
  DeleteOptions wrong;
  wrong.precondition_uid = "00000000-0000-0000-0000-000000000000";
  auto refused = Await([&](auto cb) { client.Delete(path, wrong, cb); });
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::kConflict);
  EXPECT_NE(refused.error().message.find("precondition"), std::string::npos)
      << refused.error().message;

  DeleteOptions right;
  right.precondition_uid = created.uid;
  right.grace_period_seconds = 0;
  ASSERT_TRUE(Await([&](auto cb) { client.Delete(path, right, cb); }));
  auto gone = Await([&](auto cb) { client.Get(path, cb); });
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Code::kNotFound);
}

TEST_F(FakeApiServerTest, ListPagesWithContinueTokens) {
  KubeClient& client = Client();
  for (int i = 0; i < 5; ++i) MustCreate(client, "b" + std::to_string(i));
  ListOptions options;
  options.limit = 2;
  std::vector<std::string> names;
  int pages = 0;
  for (; pages < 10; ++pages) {
    auto r = Await([&](auto cb) { client.List(kBlocks, options, cb); });
    ASSERT_TRUE(r) << r.error().message;
    auto page = ParseListPage(r->body);
    ASSERT_TRUE(page) << page.error().message;
    EXPECT_LE(page->items.size(), 2u);
    for (auto& o : page->items) names.push_back(o.name);
    options.continue_token = page->continue_token;
    if (options.continue_token.empty()) break;
  }
  EXPECT_EQ(pages, 2);  // 2 + 2 + 1
  EXPECT_EQ(names, (std::vector<std::string>{"b0", "b1", "b2", "b3", "b4"}));
}

TEST_F(FakeApiServerTest, InformerSyncsThenDeliversChangesAndBookmarks) {
  KubeClient& client = Client();
  MustCreate(client, "mine", "n1");
  MustCreate(client, "other", "n2");
  InformerOptions options;
  options.label_selector = "sublease.io/node=n1";
  options.page_size = 1;
  Informer& informer = StartInformer(options);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1; }, 10000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"ADDED mine", "SYNCED"}));

  KubeObject second = MustCreate(client, "mine2", "n1");
  auto patched = Await([&](auto cb) {
    client.MergePatch(std::string(kBlocks) + "/mine", R"({"spec":{"note":"x"}})", cb);
  });
  ASSERT_TRUE(patched);
  ASSERT_TRUE(Await([&](auto cb) { client.Delete(std::string(kBlocks) + "/mine2", {}, cb); }));
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.log.size() == 5; }, 10000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"ADDED mine", "SYNCED", "ADDED mine2",
                                                     "MODIFIED mine", "DELETED mine2"}));

  // Only objects outside the selector change now: bookmarks move the resume point.
  const std::string before = informer.resource_version();
  MustCreate(client, "other2", "n2");
  ASSERT_TRUE(RunUntil(
      &loop_,
      [&] { return informer.stats().bookmarks >= 2 && informer.resource_version() != before; },
      10000));
  EXPECT_EQ(recorder_.last_rv, informer.resource_version());
  EXPECT_EQ(recorder_.log.size(), 5u);
  EXPECT_EQ(informer.cache().size(), 1u);
}

TEST_F(FakeApiServerTest, InformerReWatchesAfterTheServerDropsWatches) {
  KubeClient& client = Client();
  MustCreate(client, "a");
  InformerOptions options;
  options.backoff_initial_ms = 50;
  Informer& informer = StartInformer(options);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1 && informer.stats().watches == 1; }, 10000));
  for (const char* mode : {"clean", "abort"}) {
    // A bookmark proves the server holds the watch (a drop before that would miss it).
    uint64_t bookmarks = informer.stats().bookmarks;
    ASSERT_TRUE(RunUntil(
        &loop_, [&] { return informer.stats().bookmarks > bookmarks; }, 10000));
    uint64_t watches = informer.stats().watches;
    Control("POST", "/drop-watches", std::string("{\"mode\":\"") + mode + "\"}");
    ASSERT_TRUE(RunUntil(
        &loop_, [&] { return informer.stats().watches > watches; }, 10000))
        << mode;
  }
  MustCreate(client, "b");
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.Saw("ADDED b"); }, 10000));
  EXPECT_EQ(informer.stats().lists, 1u);  // resumed from the last version: no relist
  EXPECT_GE(informer.stats().reconnects, 2u);
}

TEST_F(FakeApiServerTest, InformerRelistsAfterCompactionAndDeliversWhatItMissed) {
  KubeClient& client = Client();
  MustCreate(client, "keep");
  MustCreate(client, "gone");
  InformerOptions options;
  options.backoff_initial_ms = 50;
  options.backoff_max_ms = 200;
  Informer& informer = StartInformer(options);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1 && informer.stats().watches == 1; }, 10000));
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return informer.stats().bookmarks > 0; }, 10000));  // watch is held
  // Cut the informer off: watches fail with 500 while things change and etcd compacts.
  Control(
      "POST", "/faults",
      R"({"path_prefix":"/apis/sublease.io/v1alpha1/ipblocks","query_contains":"watch=1","count":-1,"status":500})");
  Control("POST", "/drop-watches", R"({"mode":"abort"})");
  ASSERT_TRUE(Await([&](auto cb) { client.Delete(std::string(kBlocks) + "/gone", {}, cb); }));
  MustCreate(client, "new");
  Control("POST", "/compact");
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return informer.stats().errors >= 2; }, 10000));
  Control("DELETE", "/faults");
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 2; }, 10000));
  EXPECT_EQ(informer.stats().relists_on_410, 1u);
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"ADDED gone", "ADDED keep", "SYNCED",
                                                     "DELETED gone", "ADDED new", "SYNCED"}));
  EXPECT_EQ(informer.cache().count("gone"), 0u);
}

TEST_F(FakeApiServerTest, InformerBacksOffWhileTheServerAnswers500) {
  Client();
  Control("POST", "/faults", R"({"path_prefix":"/apis/sublease.io","count":3,"status":500})");
  InformerOptions options;
  options.backoff_initial_ms = 100;
  options.backoff_max_ms = 1000;
  uv_update_time(&loop_);
  uint64_t start = uv_now(&loop_);
  Informer& informer = StartInformer(options);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1; }, 15000));
  // Three failures: at least 50 + 100 + 200 ms of backoff (half of each step).
  EXPECT_GE(uv_now(&loop_) - start, 350u);
  EXPECT_EQ(informer.stats().errors, 3u);
  EXPECT_EQ(informer.stats().list_pages, 4u);
}

TEST_F(FakeApiServerTest, ThrottledRequestsAreRetriedUntilTheyGoThrough) {
  // Timing (docs/fake-apiserver.md): half of all non-watch requests answered 429 with
  // Retry-After 0, in APF's shape. Every create and read still succeeds, once each.
  KubeClient& client = Client();
  Control("POST", "/timing", R"({"throttle_rate":0.5,"throttle_retry_after":0,"seed":7})");
  for (int i = 0; i < 20; ++i) {
    std::string name = "throttled-" + std::to_string(i);
    auto created = Await([&](auto cb) { client.Create(kBlocks, Block(name, "n1"), cb); });
    ASSERT_TRUE(created) << name << ": " << created.error().message;
    EXPECT_EQ(created->status, 201) << "a 429 comes before the write: never AlreadyExists";
    auto got = Await([&](auto cb) { client.Get(std::string(kBlocks) + "/" + name, cb); });
    ASSERT_TRUE(got) << name << ": " << got.error().message;
  }
  std::string timing = Control("GET", "/timing");
  simdjson::dom::parser parser;
  int64_t throttled = 0;
  ASSERT_EQ(parser.parse(simdjson::padded_string(timing))["counts"]["throttled"].get(throttled),
            simdjson::SUCCESS)
      << timing;
  EXPECT_GE(throttled, 5) << "about half of 40 requests were throttled at least once";

  // A 500 carries no Retry-After: answered once, not retried.
  Control("POST", "/timing", R"({"throttle_rate":0,"error_rate":1})");
  Control("DELETE", "/requests");
  auto failed = Await([&](auto cb) { client.Get(kBlocks, cb); });
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().http_status, 500);
  Control("DELETE", "/timing");
  std::string log;  // the server logs a request after answering it: poll (bounded)
  for (int i = 0; i < 50 && log.find("timing-error") == std::string::npos; ++i) {
    RunUntil(&loop_, [] { return false; }, 20);
    log = Control("GET", "/requests");
  }
  size_t first = log.find("timing-error");
  EXPECT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("timing-error", first + 1), std::string::npos) << log;
}

TEST_F(FakeApiServerTest, RotatedTokenIsPickedUpWithoutRestart) {
  KubeConfig config = Kubeconfig();
  config.token.clear();
  config.token_file = server_.token_file();
  KubeClient& client = Client(config);
  ASSERT_TRUE(Await([&](auto cb) { client.Get(kBlocks, cb); }));

  auto rotate = [&](const std::string& token) {
    Control("POST", "/tokens", "{\"token\":\"" + token + "\",\"replace\":true}");
    std::ofstream(config.token_file + ".new") << token << "\n";
    fs::rename(config.token_file + ".new", config.token_file);
  };
  // Within the recheck interval the old token goes out, is refused, and the client
  // re-reads the file and retries once.
  rotate("rotated-1");
  Control("DELETE", "/requests");
  auto r = Await([&](auto cb) { client.Get(kBlocks, cb); });
  ASSERT_TRUE(r) << r.error().message;
  // The server logs a request after answering it: poll (bounded) for both entries.
  std::string log;
  for (int i = 0; i < 50 && log.find("\"status\":200") == std::string::npos; ++i) {
    RunUntil(&loop_, [] { return false; }, 20);
    log = Control("GET", "/requests");
  }
  EXPECT_NE(log.find("\"status\":401"), std::string::npos) << log;
  EXPECT_NE(log.find("\"status\":200"), std::string::npos) << log;

  // After the interval the change is seen before sending: no 401 at all.
  rotate("rotated-2");
  clock_.Advance(KubeClient::kTokenRecheckMs);
  Control("DELETE", "/requests");
  ASSERT_TRUE(Await([&](auto cb) { client.Get(kBlocks, cb); }));
  log.clear();
  for (int i = 0; i < 50 && log.find("\"status\":200") == std::string::npos; ++i) {
    RunUntil(&loop_, [] { return false; }, 20);
    log = Control("GET", "/requests");
  }
  EXPECT_NE(log.find("\"status\":200"), std::string::npos) << log;
  EXPECT_EQ(log.find("\"status\":401"), std::string::npos) << log;
}

}  // namespace
}  // namespace sublease
