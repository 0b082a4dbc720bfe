// KubeClient against ReplayServer: recorded answers over plain HTTP on the test's
// loop. TLS, HTTP/2 and the real token flow are covered in fake_apiserver_test.cc.
#include "sync/kube_client.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "sync/test_support.h"

namespace sublease {
namespace {

using testing::FromRawRecording;
using testing::FromTxtRecording;
using testing::JsonResponse;
using testing::ReadRecording;
using testing::ReplayResponse;
using testing::ReplayServer;
using testing::RunUntil;
using testing::WatchResponse;

class KubeClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }

  void TearDown() override {
    if (client_) CloseClient();
    if (server_) {
      server_->Close();
      testing::Drain(&loop_);
      server_.reset();
    }
    testing::Drain(&loop_);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a uv handle was left open";
  }

  void Serve(ReplayServer::Handler handler) {
    server_ = std::make_unique<ReplayServer>(&loop_, std::move(handler));
  }

  KubeClient& Client(KubeConfig config = {}) {
    if (config.server.empty()) config.server = server_->url();
    client_ = std::make_unique<KubeClient>(&loop_, std::move(config), &clock_);
    return *client_;
  }

  void CloseClient() {
    bool closed = false;
    client_->Close([&] { closed = true; });
    EXPECT_TRUE(RunUntil(
        &loop_, [&] { return closed; }, 5000));
    client_.reset();
  }

  // Sends one request and waits for its answer.
  KubeResult<KubeResponse> Await(
      const std::function<KubeClient::RequestId(KubeClient::ResponseCallback)>& send) {
    std::optional<KubeResult<KubeResponse>> got;
    send([&](KubeResult<KubeResponse> r) { got = std::move(r); });
    EXPECT_TRUE(RunUntil(
        &loop_, [&] { return got.has_value(); }, 10000));
    if (!got) return tl::unexpected(KubeError{});
    return std::move(*got);
  }

  uv_loop_t loop_;
  FakeClock clock_;
  std::unique_ptr<ReplayServer> server_;
  std::unique_ptr<KubeClient> client_;
};

TEST_F(KubeClientTest, CreateAnswers201WithTheObject) {
  Serve([](auto&, auto&, auto&) {
    return FromTxtRecording(ReadRecording("01-create-subnet-201.txt"));
  });
  auto r = Await([&](auto cb) { return Client().Create("/apis/kubeovn.io/v1/subnets", "{}", cb); });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 201);
  EXPECT_NE(r->body.find("\"resourceVersion\": \"205\""), std::string::npos);
  EXPECT_EQ(server_->requests()[0], "POST /apis/kubeovn.io/v1/subnets");
  EXPECT_NE(server_->heads()[0].find("User-Agent: subleased/0.1.0"), std::string::npos);
  EXPECT_NE(server_->heads()[0].find("Content-Type: application/json"), std::string::npos);
}

// The daemon names its node in the User-Agent (KubeConfig::user_agent), so the API
// server's audit log tells which node sent a request.
TEST_F(KubeClientTest, AConfiguredUserAgentIsSentInsteadOfTheDefault) {
  Serve([](auto&, auto&, auto&) {
    return FromTxtRecording(ReadRecording("01-create-subnet-201.txt"));
  });
  KubeConfig config;
  config.user_agent = "subleased/0.1.0 (node node-a)";
  auto r = Await([&](auto cb) { return Client(config).Create("/apis/kubeovn.io/v1/subnets", "{}", cb); });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_NE(server_->heads()[0].find("User-Agent: subleased/0.1.0 (node node-a)\r\n"), std::string::npos)
      << server_->heads()[0];
}

TEST_F(KubeClientTest, AlreadyExistsAndStaleUpdateAreBothConflictsWithDifferentReasons) {
  Serve([](const std::string& method, auto&, auto&) {
    return FromTxtRecording(ReadRecording(method == "POST"
                                              ? "02-create-subnet-again-409-alreadyexists.txt"
                                              : "06-update-subnet-stale-rv-409-conflict.txt"));
  });
  KubeClient& client = Client();
  auto created =
      Await([&](auto cb) { return client.Create("/apis/kubeovn.io/v1/subnets", "{}", cb); });
  auto updated = Await(
      [&](auto cb) { return client.Update("/apis/kubeovn.io/v1/subnets/macvlan", "{}", cb); });
  ASSERT_FALSE(created);
  ASSERT_FALSE(updated);
  EXPECT_EQ(created.error().code, Code::kConflict);
  EXPECT_EQ(updated.error().code, Code::kConflict);
  EXPECT_TRUE(created.error().IsAlreadyExists());
  EXPECT_FALSE(updated.error().IsAlreadyExists());
  EXPECT_EQ(updated.error().reason, "Conflict");
  EXPECT_EQ(server_->requests()[1], "PUT /apis/kubeovn.io/v1/subnets/macvlan");
}

TEST_F(KubeClientTest, DeleteSendsDeleteOptionsAndPatchSendsMergePatch) {
  std::vector<std::string> bodies;
  Serve([&](auto&, auto&, const std::string& body) {
    bodies.push_back(body);
    return JsonResponse(200, "{\"kind\":\"Status\",\"status\":\"Success\"}");
  });
  KubeClient& client = Client();
  DeleteOptions options;
  options.precondition_uid = "u1";
  options.grace_period_seconds = 0;
  ASSERT_TRUE(
      Await([&](auto cb) { return client.Delete("/api/v1/namespaces/d/pods/p", options, cb); }));
  ASSERT_TRUE(Await(
      [&](auto cb) { return client.MergePatch("/api/v1/namespaces/d/pods/p", "{\"a\":1}", cb); }));
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[0], EncodeDeleteOptions(options));
  EXPECT_EQ(server_->requests()[0], "DELETE /api/v1/namespaces/d/pods/p");
  EXPECT_EQ(bodies[1], "{\"a\":1}");
  EXPECT_EQ(server_->requests()[1], "PATCH /api/v1/namespaces/d/pods/p");
  EXPECT_NE(server_->heads()[1].find("Content-Type: application/merge-patch+json"),
            std::string::npos);
}

TEST_F(KubeClientTest, ListEscapesSelectorsAndPaging) {
  Serve([](auto&, auto&, auto&) {
    return FromTxtRecording(ReadRecording("20-list-pods-on-node.txt"));
  });
  ListOptions options;
  options.field_selector = "spec.nodeName=node-a";
  options.label_selector = "a in (x,y)";
  options.limit = 2;
  options.continue_token = "tok/en=";
  ASSERT_TRUE(Await([&](auto cb) { return Client().List("/api/v1/pods", options, cb); }));
  EXPECT_EQ(
      server_->requests()[0],
      "GET /api/v1/pods?labelSelector=a%20in%20%28x%2Cy%29&fieldSelector=spec.nodeName%3Dnode-a"
      "&limit=2&continue=tok%2Fen%3D");
}

constexpr char kThrottled[] =
    R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","details":{"retryAfterSeconds":1},"code":429})";
constexpr char kInternalError[] =
    R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"Internal error occurred: etcdserver: request timed out","reason":"InternalError","code":500})";

// Sends one request with the given timeout and waits (bounded) for its answer.
KubeResult<KubeResponse> AwaitWithTimeout(uv_loop_t* loop, KubeClient& client,
                                          std::string_view method, int64_t timeout_ms,
                                          uint64_t* elapsed_ms = nullptr) {
  std::optional<KubeResult<KubeResponse>> got;
  uv_update_time(loop);
  uint64_t start = uv_now(loop);
  client.Request(method, "/api/v1/pods", method == "GET" ? "" : "{\"a\":1}",
                 method == "GET" ? "" : "application/json", timeout_ms,
                 [&](KubeResult<KubeResponse> r) { got = std::move(r); });
  EXPECT_TRUE(RunUntil(
      loop, [&] { return got.has_value(); }, 30000));
  if (elapsed_ms != nullptr) *elapsed_ms = uv_now(loop) - start;
  if (!got) return tl::unexpected(KubeError{});
  return std::move(*got);
}

TEST_F(KubeClientTest, TooManyRequestsIsRetriedAfterRetryAfterThenSucceeds) {
  std::vector<std::string> bodies;
  int answers = 0;
  Serve([&](auto&, auto&, const std::string& body) {
    bodies.push_back(body);
    if (++answers <= 2) return JsonResponse(429, kThrottled, "Retry-After: 0\r\n");
    return JsonResponse(201, "{\"ok\":true}");
  });
  auto r = AwaitWithTimeout(&loop_, Client(), "POST", 5000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 201);
  ASSERT_EQ(bodies.size(), 3u);
  EXPECT_EQ(bodies[2], "{\"a\":1}") << "the body is sent again";
}

TEST_F(KubeClientTest, RetryWaitsForRetryAfter) {
  int answers = 0;
  Serve([&](auto&, auto&, auto&) {
    if (++answers == 1) return JsonResponse(429, kThrottled, "Retry-After: 1\r\n");
    return JsonResponse(200, "{}");
  });
  uint64_t elapsed = 0;
  auto r = AwaitWithTimeout(&loop_, Client(), "GET", 10000, &elapsed);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(server_->requests().size(), 2u);
  EXPECT_GE(elapsed, 1000u);
}

TEST_F(KubeClientTest, TooManyRequestsGivesUpAfterTenRetries) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(429, kThrottled, "Retry-After: 0\r\n"); });
  auto r = AwaitWithTimeout(&loop_, Client(), "GET", 10000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kUnavailable);
  EXPECT_EQ(r.error().http_status, 429);
  EXPECT_EQ(r.error().reason, "TooManyRequests");
  EXPECT_EQ(server_->requests().size(), 1u + KubeClient::kMaxRetries);
}

TEST_F(KubeClientTest, RetriesStayWithinTheRequestTimeout) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(429, kThrottled, "Retry-After: 3\r\n"); });
  uint64_t elapsed = 0;
  auto r = AwaitWithTimeout(&loop_, Client(), "GET", 1000, &elapsed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kUnavailable);
  EXPECT_EQ(r.error().retry_after_ms, 3000);
  EXPECT_EQ(r.error().reason, "TooManyRequests");
  EXPECT_EQ(server_->requests().size(), 1u) << "a 3 s wait does not fit in 1 s";
  EXPECT_LT(elapsed, 1000u);
}

TEST_F(KubeClientTest, RetriesStopWhenTheNextWaitWouldPassTheTimeout) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(429, kThrottled, "Retry-After: 1\r\n"); });
  uint64_t elapsed = 0;
  auto r = AwaitWithTimeout(&loop_, Client(), "GET", 2500, &elapsed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status, 429);
  // Sent at 0, ~1 s and ~2 s; a third wait would end past 2.5 s.
  EXPECT_EQ(server_->requests().size(), 3u);
  EXPECT_GE(elapsed, 2000u);
  EXPECT_LE(elapsed, 2500u + 1000u);  // generous: the deadline is the bound
}

TEST_F(KubeClientTest, ServerErrorIsRetriedOnlyWithRetryAfter) {
  int answers = 0;
  Serve([&](auto&, const std::string& target, auto&) {
    if (target == "/api/v1/pods" && ++answers == 1) {
      return JsonResponse(503, R"({"kind":"Status","code":503,"reason":"ServiceUnavailable"})",
                          "Retry-After: 0\r\n");
    }
    if (target == "/no-retry-after") return JsonResponse(500, kInternalError);
    if (target == "/date") {
      return JsonResponse(503, "{}", "Retry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n");
    }
    return JsonResponse(200, "{}");
  });
  KubeClient& client = Client();
  auto r = AwaitWithTimeout(&loop_, client, "PUT", 5000);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(server_->requests().size(), 2u);

  // A 500 without Retry-After: the write may have landed; the caller decides.
  auto plain = Await([&](auto cb) { return client.Update("/no-retry-after", "{}", cb); });
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().code, Code::kUnavailable);
  EXPECT_EQ(plain.error().reason, "InternalError");
  EXPECT_EQ(server_->requests().size(), 3u);
  // client-go honours whole seconds only; an HTTP date is not retried.
  auto dated = Await([&](auto cb) { return client.Get("/date", cb); });
  ASSERT_FALSE(dated);
  EXPECT_EQ(server_->requests().size(), 4u);
}

TEST_F(KubeClientTest, WatchAnsweredTooManyRequestsIsNotRetried) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(429, kThrottled, "Retry-After: 0\r\n"); });
  std::optional<KubeResult<void>> end;
  Client().Watch(
      "/x?watch=1", 0, [](std::string_view) {}, [&](KubeResult<void> r) { end = std::move(r); });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return end.has_value(); }, 5000));
  ASSERT_FALSE(*end);
  EXPECT_EQ(end->error().http_status, 429);
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(KubeClientTest, CancelWhileWaitingToRetryRunsNoCallback) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(429, kThrottled, "Retry-After: 1\r\n"); });
  KubeClient& client = Client();
  bool called = false;
  auto id = client.Get("/api/v1/pods", [&](KubeResult<KubeResponse>) { called = true; });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return server_->requests().size() == 1; }, 5000));
  RunUntil(
      &loop_, [] { return false; }, 100);  // the 429 arrives; the retry waits
  EXPECT_FALSE(called);
  EXPECT_EQ(client.active_requests(), 1u);
  client.Cancel(id);
  EXPECT_EQ(client.active_requests(), 0u);
  RunUntil(
      &loop_, [] { return false; }, 1300);
  EXPECT_FALSE(called);
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(KubeClientTest, ConnectionRefusedIsUnavailable) {
  KubeConfig config;
  {
    // A port that was just free: bind, read the port, close.
    Serve([](auto&, auto&, auto&) { return ReplayResponse{}; });
    config.server = server_->url();
    server_->Close();
    testing::Drain(&loop_);
    server_.reset();
  }
  auto r = Await([&](auto cb) { return Client(config).Get("/api", cb); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kUnavailable);
  EXPECT_EQ(r.error().http_status, 0);
  EXPECT_NE(r.error().message.find("GET /api"), std::string::npos) << r.error().message;
}

TEST_F(KubeClientTest, SilentServerTimesOut) {
  Serve([](auto&, auto&, auto&) { return ReplayResponse{"", true}; });
  std::optional<KubeResult<KubeResponse>> got;
  Client().Request("GET", "/api", "", "", 300,
                   [&](KubeResult<KubeResponse> r) { got = std::move(r); });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return got.has_value(); }, 5000));
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().code, Code::kUnavailable);
  EXPECT_NE(got->error().message.find("imeout"), std::string::npos) << got->error().message;
}

TEST_F(KubeClientTest, WatchDeliversRecordedLinesThenEndsCleanly) {
  Serve([](auto&, auto&, auto&) {
    return FromRawRecording(ReadRecording("21-watch-pods-on-node.raw"));
  });
  std::vector<std::string> lines;
  std::optional<KubeResult<void>> end;
  Client().Watch(
      "/api/v1/pods?watch=1", 0, [&](std::string_view l) { lines.emplace_back(l); },
      [&](KubeResult<void> r) { end = std::move(r); });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return end.has_value(); }, 5000));
  EXPECT_TRUE(*end) << end->error().message;
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines[0].rfind("{\"type\":\"ADDED\"", 0), 0u);
  EXPECT_EQ(lines[6].rfind("{\"type\":\"BOOKMARK\"", 0), 0u);
}

TEST_F(KubeClientTest, WatchAnsweredWithAStatusEndsWithThatError) {
  Serve([](auto&, auto&, auto&) {
    return FromTxtRecording(ReadRecording("31-list-with-compacted-rv-exact-410.txt"));
  });
  int lines = 0;
  std::optional<KubeResult<void>> end;
  Client().Watch(
      "/x?watch=1", 0, [&](std::string_view) { ++lines; },
      [&](KubeResult<void> r) { end = std::move(r); });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return end.has_value(); }, 5000));
  ASSERT_FALSE(*end);
  EXPECT_TRUE(end->error().IsExpired());
  EXPECT_EQ(lines, 0);
}

TEST_F(KubeClientTest, CancelFromInsideOnLineStopsTheWatchWithoutFurtherCallbacks) {
  Serve([](auto&, auto&, auto&) {
    return WatchResponse({"{\"n\":1}", "{\"n\":2}", "{\"n\":3}"}, true);
  });
  KubeClient& client = Client();
  int lines = 0;
  bool ended = false;
  KubeClient::RequestId id = 0;
  id = client.Watch(
      "/x?watch=1", 0,
      [&](std::string_view) {
        ++lines;
        client.Cancel(id);
        client.Cancel(id);  // twice is harmless
      },
      [&](KubeResult<void>) { ended = true; });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return lines > 0; }, 5000));
  RunUntil(
      &loop_, [] { return false; }, 200);
  EXPECT_EQ(lines, 1);
  EXPECT_FALSE(ended);
  EXPECT_EQ(client.active_requests(), 0u);
}

TEST_F(KubeClientTest, RequestFromInsideOnLineIsSent) {
  Serve([](auto&, const std::string& target, auto&) {
    if (target.find("watch=1") != std::string::npos) return WatchResponse({"{\"n\":1}"}, true);
    return JsonResponse(200, "{}");
  });
  KubeClient& client = Client();
  std::optional<KubeResult<KubeResponse>> got;
  client.Watch(
      "/x?watch=1", 0,
      [&](std::string_view) {
        client.Get("/y", [&](KubeResult<KubeResponse> r) { got = std::move(r); });
      },
      [](KubeResult<void>) {});
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return got.has_value(); }, 5000));
  EXPECT_TRUE(*got);
}

TEST_F(KubeClientTest, CloseFromInsideOnLineFinishesAndLeavesNoHandles) {
  Serve([](auto&, auto&, auto&) { return WatchResponse({"{\"n\":1}", "{\"n\":2}"}, true); });
  KubeClient& client = Client();
  bool closed = false;
  int lines = 0;
  client.Watch(
      "/x?watch=1", 0,
      [&](std::string_view) {
        ++lines;
        client.Close([&] { closed = true; });
      },
      [](KubeResult<void>) { ADD_FAILURE() << "no on_end after Close"; });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return closed; }, 5000));
  EXPECT_EQ(lines, 1);
  client_.reset();  // TearDown checks uv_loop_close
}

TEST_F(KubeClientTest, ServerDroppingAWatchEndsItWithUnavailable) {
  Serve([](auto&, auto&, auto&) { return WatchResponse({"{\"n\":1}"}, true); });
  int lines = 0;
  std::optional<KubeResult<void>> end;
  Client().Watch(
      "/x?watch=1", 0, [&](std::string_view) { ++lines; },
      [&](KubeResult<void> r) { end = std::move(r); });
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return lines == 1; }, 5000));
  server_->DropHeld();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return end.has_value(); }, 5000));
  ASSERT_FALSE(*end);
  EXPECT_EQ(end->error().code, Code::kUnavailable);
}

class TokenFileTest : public KubeClientTest {
 protected:
  void SetUp() override {
    KubeClientTest::SetUp();
    std::string tmpl = (std::filesystem::temp_directory_path() / "sync_token.XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    token_file_ = dir_ + "/token";
  }
  void TearDown() override {
    KubeClientTest::TearDown();
    std::filesystem::remove_all(dir_);
  }
  // Writes the token with a distinct mtime (file systems with coarse timestamps).
  void WriteToken(const std::string& token) {
    std::ofstream(token_file_ + ".tmp") << token << "\n";
    timespec times[2] = {{mtime_s_, 0}, {mtime_s_, 0}};
    ++mtime_s_;
    utimensat(AT_FDCWD, (token_file_ + ".tmp").c_str(), times, 0);
    std::filesystem::rename(token_file_ + ".tmp", token_file_);  // atomic, as the kubelet does
  }
  std::string SentToken(size_t i) const {
    const std::string& head = server_->heads().at(i);
    size_t p = head.find("Authorization: Bearer ");
    if (p == std::string::npos) return "";
    return head.substr(p + 22, head.find("\r\n", p) - p - 22);
  }
  // Accepts only `valid_`.
  void ServeWithToken() {
    Serve([this](auto&, auto&, auto&) {
      const std::string& head = server_->heads().back();
      if (head.find("Authorization: Bearer " + valid_ + "\r\n") == std::string::npos) {
        return FromTxtRecording(ReadRecording("10-unauthorized-401.txt"));
      }
      return JsonResponse(200, "{}");
    });
  }
  KubeConfig Config() {
    KubeConfig config;
    config.server = server_->url();
    config.token = "static-token-is-ignored";
    config.token_file = token_file_;
    return config;
  }

  std::string dir_;
  std::string token_file_;
  std::string valid_;
  time_t mtime_s_ = 1'700'000'000;
};

TEST_F(TokenFileTest, RotatedTokenIsPickedUpAfterTheRecheckInterval) {
  valid_ = "*";  // accept anything: this test only looks at what was sent
  Serve([](auto&, auto&, auto&) { return JsonResponse(200, "{}"); });
  WriteToken("one");
  KubeClient& client = Client(Config());
  ASSERT_TRUE(Await([&](auto cb) { return client.Get("/a", cb); }));
  WriteToken("two");
  ASSERT_TRUE(Await([&](auto cb) { return client.Get("/a", cb); }));
  clock_.Advance(KubeClient::kTokenRecheckMs);
  ASSERT_TRUE(Await([&](auto cb) { return client.Get("/a", cb); }));
  EXPECT_EQ(SentToken(0), "one");
  EXPECT_EQ(SentToken(1), "one");  // within the recheck interval: no stat
  EXPECT_EQ(SentToken(2), "two");
}

TEST_F(TokenFileTest, UnauthorizedRetriesOnceWithTheReReadToken) {
  ServeWithToken();
  valid_ = "old";
  WriteToken("old");
  KubeClient& client = Client(Config());
  ASSERT_TRUE(Await([&](auto cb) { return client.Get("/a", cb); }));
  // Rotation: the server accepts only the new token before the client's recheck is due.
  valid_ = "new";
  WriteToken("new");
  auto r = Await([&](auto cb) { return client.Get("/a", cb); });
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(server_->requests().size(), 3u);
  EXPECT_EQ(SentToken(1), "old");
  EXPECT_EQ(SentToken(2), "new");
}

TEST_F(TokenFileTest, WrongTokenFailsAfterOneRetryNamingTheToken) {
  ServeWithToken();
  valid_ = "right";
  WriteToken("wrong");
  auto r = Await([&](auto cb) { return Client(Config()).Get("/a", cb); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kInternal);
  EXPECT_EQ(r.error().http_status, 401);
  EXPECT_NE(r.error().message.find("401 Unauthorized"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("token"), std::string::npos);
  EXPECT_EQ(server_->requests().size(), 2u);
}

TEST_F(TokenFileTest, MissingTokenFileFailsTheRequestAsynchronously) {
  Serve([](auto&, auto&, auto&) { return JsonResponse(200, "{}"); });
  KubeClient& client = Client(Config());
  bool returned = false;
  std::optional<KubeResult<KubeResponse>> got;
  client.Get("/a", [&](KubeResult<KubeResponse> r) {
    EXPECT_TRUE(returned) << "callback ran inside Get";
    got = std::move(r);
  });
  returned = true;
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return got.has_value(); }, 5000));
  ASSERT_FALSE(*got);
  EXPECT_NE(got->error().message.find(token_file_), std::string::npos) << got->error().message;
  EXPECT_TRUE(server_->requests().empty());
}

}  // namespace
}  // namespace sublease
