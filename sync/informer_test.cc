// Informer against scripted answers (recordings and small fixtures) from ReplayServer.
// The same behaviours against the fake API server are in fake_apiserver_test.cc.
#include "sync/informer.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>

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

std::string Obj(const std::string& name, const std::string& rv, const std::string& extra = "") {
  return "{\"kind\":\"IPBlock\",\"metadata\":{\"name\":\"" + name + "\",\"uid\":\"uid-" + name +
         "\",\"resourceVersion\":\"" + rv + "\"" + extra + "}}";
}
std::string List(const std::string& rv, const std::vector<std::string>& items,
                 const std::string& cont = "") {
  std::string out = "{\"kind\":\"IPBlockList\",\"metadata\":{\"resourceVersion\":\"" + rv +
                    "\",\"continue\":\"" + cont + "\"},\"items\":[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  return out + "]}";
}
std::string Event(const std::string& type, const std::string& object) {
  return "{\"type\":\"" + type + "\",\"object\":" + object + "}";
}
std::string Bookmark(const std::string& rv) {
  return Event("BOOKMARK",
               "{\"kind\":\"IPBlock\",\"metadata\":{\"resourceVersion\":\"" + rv + "\"}}");
}

// Records what the informer tells it, as "ADDED name@rv" etc.
class Recorder : public InformerHandler {
 public:
  void OnAdded(const KubeObject& o) override {
    log.push_back("ADDED " + o.name + "@" + o.resource_version);
  }
  void OnModified(const KubeObject& o) override {
    log.push_back("MODIFIED " + o.name + "@" + o.resource_version);
  }
  void OnDeleted(const KubeObject& o) override {
    log.push_back("DELETED " + o.name + "@" + o.resource_version);
  }
  void OnSynced() override {
    log.push_back("SYNCED");
    ++synced;
  }
  void OnResourceVersion(std::string_view rv) override { versions.emplace_back(rv); }
  std::vector<std::string> log;
  std::vector<std::string> versions;
  int synced = 0;
};

class InformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    server_ = std::make_unique<ReplayServer>(
        &loop_, [this](const std::string&, const std::string& target, const std::string&) {
          bool watch = target.find("watch=1") != std::string::npos;
          auto& queue = watch ? watches_ : lists_;
          if (queue.empty())
            return watch ? WatchResponse({}, true) : JsonResponse(500, "script exhausted");
          ReplayResponse r = queue.front();
          queue.pop_front();
          return r;
        });
    KubeConfig config;
    config.server = server_->url();
    client_ = std::make_unique<KubeClient>(&loop_, config, &clock_);
    options_.path = "/apis/sublease.io/v1/ipblocks";
    options_.watch_timeout_min_s = 60;
    options_.watch_timeout_max_s = 60;
    options_.backoff_initial_ms = 20;
    options_.backoff_max_ms = 200;
    options_.seed = 7;
  }

  void TearDown() override {
    int pending = 0;
    if (informer_) {
      ++pending;
      informer_->Close([&] { --pending; });
    }
    ++pending;
    client_->Close([&] { --pending; });
    EXPECT_TRUE(RunUntil(
        &loop_, [&] { return pending == 0; }, 5000));
    informer_.reset();
    client_.reset();
    server_->Close();
    testing::Drain(&loop_);
    server_.reset();
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a uv handle was left open";
  }

  Informer& Start() {
    informer_ = std::make_unique<Informer>(client_.get(), options_, &recorder_);
    informer_->Start();
    return *informer_;
  }

  // Requests whose target contains `part`.
  std::vector<std::string> Requests(const std::string& part) const {
    std::vector<std::string> out;
    for (const auto& r : server_->requests()) {
      if (r.find(part) != std::string::npos) out.push_back(r);
    }
    return out;
  }

  uv_loop_t loop_;
  FakeClock clock_;
  std::unique_ptr<ReplayServer> server_;
  std::unique_ptr<KubeClient> client_;
  InformerOptions options_;
  Recorder recorder_;
  std::unique_ptr<Informer> informer_;
  std::deque<ReplayResponse> lists_;
  std::deque<ReplayResponse> watches_;
};

TEST(DiffRelistTest, DeliversOnlyRealChanges) {
  std::map<std::string, KubeObject> cache;
  auto put = [&](const std::string& name, const std::string& rv) {
    cache[name] = *ParseKubeObject(Obj(name, rv));
  };
  put("same", "1");
  put("changed", "2");
  put("gone", "3");
  std::vector<KubeObject> listed = {*ParseKubeObject(Obj("same", "1")),
                                    *ParseKubeObject(Obj("changed", "9")),
                                    *ParseKubeObject(Obj("new", "10"))};
  RelistDelta d = DiffRelist(cache, listed);
  ASSERT_EQ(d.added.size(), 1u);
  EXPECT_EQ(d.added[0].name, "new");
  ASSERT_EQ(d.modified.size(), 1u);
  EXPECT_EQ(d.modified[0].resource_version, "9");
  ASSERT_EQ(d.deleted.size(), 1u);
  EXPECT_EQ(d.deleted[0].name, "gone");
  EXPECT_EQ(d.deleted[0].resource_version, "3");
}

TEST_F(InformerTest, ListsThenWatchesFromTheListsResourceVersion) {
  lists_.push_back(FromTxtRecording(ReadRecording("04-list-subnets.txt")));
  watches_.push_back(
      WatchResponse({Event("MODIFIED", Obj("macvlan", "206")), Event("ADDED", Obj("b", "207")),
                     Event("DELETED", Obj("b", "208"))},
                    true));
  options_.label_selector = "sublease.io/node=n1";
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.log.size() >= 5; }, 5000));
  EXPECT_EQ(recorder_.log,
            (std::vector<std::string>{"ADDED macvlan@205", "SYNCED", "MODIFIED macvlan@206",
                                      "ADDED b@207", "DELETED b@208"}));
  EXPECT_EQ(recorder_.versions, (std::vector<std::string>{"205", "206", "207", "208"}));
  EXPECT_TRUE(informer.synced());
  EXPECT_EQ(informer.cache().size(), 1u);
  EXPECT_EQ(informer.cache().at("macvlan").resource_version, "206");
  auto watches = Requests("watch=1");
  ASSERT_EQ(watches.size(), 1u);
  EXPECT_NE(watches[0].find("allowWatchBookmarks=true"), std::string::npos);
  EXPECT_NE(watches[0].find("resourceVersion=205"), std::string::npos);
  EXPECT_NE(watches[0].find("timeoutSeconds=60"), std::string::npos);
  EXPECT_NE(watches[0].find("labelSelector=sublease.io%2Fnode%3Dn1"), std::string::npos);
  EXPECT_NE(server_->requests()[0].find("limit=500"), std::string::npos);
}

// Issue 14: the leader's cluster-wide pods are cached by name and UID only.
TEST_F(InformerTest, MetadataOnlyCachesNoRawJsonButKeepsNameUidAndVersion) {
  lists_.push_back(FromTxtRecording(ReadRecording("04-list-subnets.txt")));
  watches_.push_back(WatchResponse({Event("ADDED", Obj("b", "207")), Event("MODIFIED", Obj("b", "208"))}, true));
  options_.metadata_only = true;
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.log.size() >= 4; }, 5000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"ADDED macvlan@205", "SYNCED", "ADDED b@207",
                                                     "MODIFIED b@208"}));
  ASSERT_EQ(informer.cache().size(), 2u);
  for (const auto& [key, o] : informer.cache()) {
    EXPECT_TRUE(o.raw.empty()) << key;
    EXPECT_TRUE(o.labels.empty()) << key;
    EXPECT_FALSE(o.name.empty()) << key;
  }
  EXPECT_EQ(informer.cache().at("b").resource_version, "208");
  EXPECT_FALSE(informer.cache().at("macvlan").uid.empty());
}

// Recording 32: bookmarks while only objects outside the selector change; the
// resume point follows them, and the next watch starts from the last one.
TEST_F(InformerTest, BookmarksAdvanceTheResourceVersionUsedToReWatch) {
  lists_.push_back(FromTxtRecording(ReadRecording("20-list-pods-on-node.txt")));
  watches_.push_back(FromRawRecording(ReadRecording("32-watch-filtered-with-bookmarks.raw")));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return Requests("watch=1").size() >= 2; }, 5000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"SYNCED", "ADDED macvlan.172-17-0-0-26@208"}));
  EXPECT_EQ(recorder_.versions, (std::vector<std::string>{"208", "257", "263"}));
  EXPECT_EQ(informer.resource_version(), "263");
  EXPECT_NE(Requests("watch=1")[1].find("resourceVersion=263"), std::string::npos);
  EXPECT_EQ(informer.stats().bookmarks, 2u);
  EXPECT_EQ(informer.stats().reconnects, 1u);
  EXPECT_EQ(informer.stats().lists, 1u);
}

// Recording 30: a 200 watch whose only event is ERROR 410. The informer lists again
// and delivers what changed meanwhile: deletions included, nothing for unchanged objects.
TEST_F(InformerTest, ExpiredErrorEventRelistsAndDeliversDeletions) {
  lists_.push_back(
      JsonResponse(200, List("20", {Obj("keep", "10"), Obj("gone", "11"), Obj("edit", "12")})));
  watches_.push_back(FromRawRecording(ReadRecording("30-watch-from-compacted-rv-error-410.raw")));
  lists_.push_back(
      JsonResponse(200, List("30", {Obj("keep", "10"), Obj("edit", "25"), Obj("new", "26")})));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 2; }, 5000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{
                               "ADDED keep@10", "ADDED gone@11", "ADDED edit@12", "SYNCED",
                               "DELETED gone@11", "ADDED new@26", "MODIFIED edit@25", "SYNCED"}));
  EXPECT_EQ(informer.stats().relists_on_410, 1u);
  EXPECT_EQ(informer.stats().lists, 2u);
  EXPECT_EQ(informer.cache().size(), 3u);
  EXPECT_EQ(informer.resource_version(), "30");
}

TEST_F(InformerTest, ExpiredStatusOnTheWatchRequestRelists) {
  lists_.push_back(JsonResponse(200, List("20", {Obj("a", "10")})));
  watches_.push_back(FromTxtRecording(ReadRecording("31-list-with-compacted-rv-exact-410.txt")));
  lists_.push_back(JsonResponse(200, List("30", {})));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 2; }, 5000));
  EXPECT_EQ(recorder_.log,
            (std::vector<std::string>{"ADDED a@10", "SYNCED", "DELETED a@10", "SYNCED"}));
  EXPECT_EQ(informer.stats().relists_on_410, 1u);
}

TEST_F(InformerTest, PagedListFollowsContinueTokens) {
  options_.page_size = 1;
  lists_.push_back(JsonResponse(200, List("40", {Obj("a", "1")}, "c1/x")));
  lists_.push_back(JsonResponse(200, List("40", {Obj("b", "2")}, "c2")));
  lists_.push_back(JsonResponse(200, List("40", {Obj("c", "3")})));
  Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1; }, 5000));
  EXPECT_EQ(recorder_.log,
            (std::vector<std::string>{"ADDED a@1", "ADDED b@2", "ADDED c@3", "SYNCED"}));
  auto lists = Requests("limit=1");
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_EQ(lists[0].find("continue="), std::string::npos);
  EXPECT_NE(lists[1].find("continue=c1%2Fx"), std::string::npos);
  EXPECT_NE(lists[2].find("continue=c2"), std::string::npos);
}

TEST_F(InformerTest, ServerErrorsAreRetriedWithGrowingBackoffAndRetryAfter) {
  for (int i = 0; i < 3; ++i)
    lists_.push_back(JsonResponse(500, "{\"kind\":\"Status\",\"code\":500}"));
  lists_.push_back(JsonResponse(429, "{}", "Retry-After: 1\r\n"));
  lists_.push_back(JsonResponse(200, List("5", {})));
  std::vector<uint64_t> times;
  uv_update_time(&loop_);
  uint64_t start = uv_now(&loop_);
  Informer& informer = Start();
  size_t seen = 0;
  ASSERT_TRUE(RunUntil(
      &loop_,
      [&] {
        if (server_->requests().size() > seen) {
          seen = server_->requests().size();
          times.push_back(uv_now(&loop_) - start);
        }
        return recorder_.synced == 1;
      },
      10000));
  // The 429 never reaches the informer: KubeClient retries it after its Retry-After
  // (client-go does the same), so the informer counts the three 500s only.
  EXPECT_EQ(informer.stats().errors, 3u);
  ASSERT_GE(times.size(), 5u);
  // Backoff 20, 40, 80 ms (each at least half of it); then Retry-After: 1 s.
  EXPECT_GE(times[1] - times[0], 10u);
  EXPECT_GE(times[3] - times[2], 40u);
  EXPECT_GE(times[4] - times[3], 1000u);
}

TEST_F(InformerTest, DroppedWatchReconnectsFromTheLastEventWithoutRelisting) {
  lists_.push_back(JsonResponse(200, List("20", {})));
  watches_.push_back(WatchResponse({Event("ADDED", Obj("a", "21"))}, true));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.log.size() == 2; }, 5000));
  server_->DropHeld();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return Requests("watch=1").size() == 2; }, 5000));
  EXPECT_NE(Requests("watch=1")[1].find("resourceVersion=21"), std::string::npos);
  EXPECT_EQ(informer.stats().lists, 1u);
  EXPECT_EQ(informer.stats().reconnects, 1u);
}

TEST_F(InformerTest, SilentWatchIsCancelledAndReopened) {
  options_.stall_timeout_ms = 150;
  lists_.push_back(JsonResponse(200, List("20", {})));
  watches_.push_back(WatchResponse({}, true));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return Requests("watch=1").size() == 2; }, 5000));
  EXPECT_EQ(informer.stats().stalls, 1u);
  EXPECT_NE(Requests("watch=1")[1].find("resourceVersion=20"), std::string::npos);
}

TEST_F(InformerTest, BookmarksKeepAQuietWatchFromCountingAsStalled) {
  options_.stall_timeout_ms = 400;
  lists_.push_back(JsonResponse(200, List("20", {})));
  watches_.push_back(WatchResponse({Bookmark("21")}, true));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return informer.resource_version() == "21"; }, 5000));
  RunUntil(
      &loop_, [] { return false; }, 200);
  EXPECT_EQ(informer.stats().stalls, 0u);
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return informer.stats().stalls == 1; }, 5000));
}

TEST_F(InformerTest, ResumeWatchesFromTheStoredVersionAndFallsBackToAListOn410) {
  options_.resume_resource_version = "207";
  watches_.push_back(WatchResponse({Event("MODIFIED", Obj("a", "300"))}));
  watches_.push_back(FromRawRecording(ReadRecording("30-watch-from-compacted-rv-error-410.raw")));
  lists_.push_back(JsonResponse(200, List("400", {Obj("b", "350")})));
  Informer& informer = Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.synced == 1; }, 5000));
  ASSERT_GE(server_->requests().size(), 3u);
  EXPECT_NE(server_->requests()[0].find("watch=1"), std::string::npos);
  EXPECT_NE(server_->requests()[0].find("resourceVersion=207"), std::string::npos);
  EXPECT_NE(server_->requests()[1].find("resourceVersion=300"), std::string::npos);
  // Unknown to a resumed informer, a MODIFIED is an add; the relist then removes it.
  EXPECT_EQ(recorder_.log,
            (std::vector<std::string>{"ADDED a@300", "DELETED a@300", "ADDED b@350", "SYNCED"}));
  EXPECT_EQ(informer.stats().relists_on_410, 1u);
}

TEST_F(InformerTest, UnchangedObjectsReplayedByAWatchAreNotDeliveredTwice) {
  lists_.push_back(JsonResponse(200, List("20", {Obj("a", "10")})));
  watches_.push_back(
      WatchResponse({Event("ADDED", Obj("a", "10")), Event("MODIFIED", Obj("a", "11"))}, true));
  Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return recorder_.log.size() == 3; }, 5000));
  EXPECT_EQ(recorder_.log, (std::vector<std::string>{"ADDED a@10", "SYNCED", "MODIFIED a@11"}));
}

TEST_F(InformerTest, HandlerMayCloseTheInformerFromAnEvent) {
  lists_.push_back(JsonResponse(200, List("20", {})));
  watches_.push_back(
      WatchResponse({Event("ADDED", Obj("a", "21")), Event("ADDED", Obj("b", "22"))}, true));
  struct Closer : Recorder {
    Informer* informer = nullptr;
    bool closed = false;
    void OnAdded(const KubeObject& o) override {
      Recorder::OnAdded(o);
      informer->Close([this] { closed = true; });
    }
  } closer;
  auto informer = std::make_unique<Informer>(client_.get(), options_, &closer);
  closer.informer = informer.get();
  informer->Start();
  ASSERT_TRUE(RunUntil(
      &loop_, [&] { return closer.closed; }, 5000));
  RunUntil(
      &loop_, [] { return false; }, 100);
  EXPECT_EQ(closer.log, (std::vector<std::string>{"SYNCED", "ADDED a@21"}));
  informer.reset();
}

}  // namespace
}  // namespace sublease
