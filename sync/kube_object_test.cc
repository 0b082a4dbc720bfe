#include "sync/kube_object.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "sync/kube_client.h"
#include "sync/line_splitter.h"
#include "sync/test_support.h"

namespace sublease {
namespace {

using testing::DechunkedBody;
using testing::ReadRecording;
using testing::RecordedBody;
using testing::RecordedStatus;

std::vector<std::string> SplitAll(const std::vector<std::string_view>& chunks) {
  LineSplitter splitter;
  std::vector<std::string> lines;
  for (std::string_view c : chunks) {
    EXPECT_TRUE(splitter.Feed(c, [&](std::string_view l) {
      lines.emplace_back(l);
      return true;
    }));
  }
  return lines;
}

TEST(LineSplitterTest, SeveralLinesInOneChunk) {
  EXPECT_EQ(SplitAll({"a\nbb\nccc\n"}), (std::vector<std::string>{"a", "bb", "ccc"}));
}

TEST(LineSplitterTest, LineSpanningChunksIsJoined) {
  EXPECT_EQ(SplitAll({"{\"ty", "pe\":", "1}\n{", "}\n"}),
            (std::vector<std::string>{"{\"type\":1}", "{}"}));
}

TEST(LineSplitterTest, CrlfAndEmptyLinesAndIncompleteTail) {
  LineSplitter splitter;
  std::vector<std::string> lines;
  auto collect = [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  };
  splitter.Feed("a\r\n\n\r\nb", collect);
  EXPECT_EQ(lines, (std::vector<std::string>{"a"}));
  EXPECT_EQ(splitter.pending(), "b");
}

TEST(LineSplitterTest, StopsWhenTheCallbackSaysSo) {
  LineSplitter splitter;
  int seen = 0;
  EXPECT_FALSE(splitter.Feed("a\nb\nc\n", [&](std::string_view) { return ++seen < 2; }));
  EXPECT_EQ(seen, 2);
}

TEST(LineSplitterTest, RefusesAnOverlongLine) {
  LineSplitter splitter(8);
  EXPECT_TRUE(splitter.Feed("12345", [](std::string_view) { return true; }));
  EXPECT_FALSE(splitter.Feed("67890", [](std::string_view) { return true; }));
  EXPECT_TRUE(splitter.overflowed());
}

// The recorded watch of pods on a node (21), cut at every possible chunk size and at
// random boundaries, always yields the same seven events.
TEST(LineSplitterTest, RecordedWatchSplitsIdenticallyAtAnyChunkBoundary) {
  const std::string body = DechunkedBody(ReadRecording("21-watch-pods-on-node.raw"));
  const std::vector<std::string> whole = SplitAll({body});
  ASSERT_EQ(whole.size(), 7u);
  for (size_t step : {1u, 2u, 3u, 7u, 64u, 1000u, 4096u}) {
    std::vector<std::string_view> chunks;
    for (size_t i = 0; i < body.size(); i += step)
      chunks.push_back(std::string_view(body).substr(i, step));
    EXPECT_EQ(SplitAll(chunks), whole) << "step " << step;
  }
  std::mt19937 rng(42);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::string_view> chunks;
    size_t i = 0;
    while (i < body.size()) {
      size_t n = std::uniform_int_distribution<size_t>(1, 3000)(rng);
      chunks.push_back(std::string_view(body).substr(i, n));
      i += n;
    }
    EXPECT_EQ(SplitAll(chunks), whole) << "round " << round;
  }
}

std::vector<WatchEvent> EventsOf(const std::string& raw_recording) {
  std::vector<WatchEvent> events;
  for (const std::string& line : SplitAll({DechunkedBody(ReadRecording(raw_recording))})) {
    auto e = ParseWatchEvent(line);
    EXPECT_TRUE(e) << e.error().message;
    if (e) events.push_back(std::move(*e));
  }
  return events;
}

TEST(WatchEventTest, PodWatchShowsBindingGracefulDeleteAndBookmarks) {
  auto events = EventsOf("21-watch-pods-on-node.raw");
  ASSERT_EQ(events.size(), 7u);
  std::vector<WatchEventType> types;
  for (auto& e : events) types.push_back(e.type);
  EXPECT_EQ(types, (std::vector<WatchEventType>{
                       WatchEventType::kAdded, WatchEventType::kModified, WatchEventType::kModified,
                       WatchEventType::kModified, WatchEventType::kDeleted,
                       WatchEventType::kBookmark, WatchEventType::kBookmark}));
  EXPECT_EQ(events[0].object.name, "samplepod");
  EXPECT_EQ(events[0].object.namespace_name, "default");
  EXPECT_EQ(events[0].object.Key(), "default/samplepod");
  EXPECT_EQ(events[0].object.uid, "6d5ee978-8144-4c8e-bcf1-4798bdf2a0c7");
  EXPECT_EQ(events[0].object.resource_version, "210");
  EXPECT_FALSE(events[0].object.deleting);
  // A graceful delete is first a MODIFIED carrying deletionTimestamp (README).
  EXPECT_TRUE(events[3].object.deleting);
  EXPECT_TRUE(events[4].object.deleting);
  EXPECT_EQ(events[5].object.resource_version, "214");
  // The raw object is kept byte for byte and parses on its own.
  auto again = ParseKubeObject(events[1].object.raw);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->resource_version, "211");
  EXPECT_EQ(events[1].object.raw.front(), '{');
  EXPECT_EQ(events[1].object.raw.back(), '}');
}

TEST(WatchEventTest, FilteredWatchBookmarksCarryOnlyAResourceVersion) {
  auto events = EventsOf("32-watch-filtered-with-bookmarks.raw");
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type, WatchEventType::kAdded);
  EXPECT_EQ(events[0].object.name, "macvlan.172-17-0-0-26");
  EXPECT_EQ(events[0].object.labels.at("example/node"), "node-a");
  EXPECT_EQ(events[0].object.labels.at("example/subnet"), "macvlan");
  EXPECT_EQ(events[1].type, WatchEventType::kBookmark);
  EXPECT_EQ(events[1].object.resource_version, "257");
  EXPECT_EQ(events[1].object.name, "");
  EXPECT_EQ(events[2].object.resource_version, "263");
}

TEST(WatchEventTest, ExpiredResourceVersionIsAnErrorEventWith410) {
  auto events = EventsOf("30-watch-from-compacted-rv-error-410.raw");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, WatchEventType::kError);
  EXPECT_EQ(events[0].status.code, 410);
  EXPECT_EQ(events[0].status.reason, "Expired");
  EXPECT_EQ(events[0].status.message, "too old resource version: 207 (220)");
}

TEST(WatchEventTest, MalformedLinesAreErrors) {
  EXPECT_FALSE(ParseWatchEvent("{\"type\":\"ADDED\""));
  EXPECT_FALSE(ParseWatchEvent(
      "{\"type\":\"WHAT\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\"}}}"));
  EXPECT_FALSE(ParseWatchEvent(
      "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}"));
  EXPECT_FALSE(ParseWatchEvent("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}"));
  EXPECT_FALSE(ParseWatchEvent("[]"));
}

TEST(ListPageTest, RecordedListAndPagedList) {
  auto list = ParseListPage(RecordedBody(ReadRecording("04-list-subnets.txt")));
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->resource_version, "205");
  EXPECT_EQ(list->continue_token, "");
  ASSERT_EQ(list->items.size(), 1u);
  EXPECT_EQ(list->items[0].name, "macvlan");
  EXPECT_EQ(list->items[0].namespace_name, "");
  EXPECT_EQ(list->items[0].uid, "65929916-bfa3-4d12-9673-14bc3728717e");

  auto empty = ParseListPage(RecordedBody(ReadRecording("20-list-pods-on-node.txt")));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->resource_version, "208");
  EXPECT_TRUE(empty->items.empty());

  auto labelled = ParseListPage(RecordedBody(ReadRecording("12-list-examples-labelselector.txt")));
  ASSERT_TRUE(labelled) << labelled.error().message;
  ASSERT_FALSE(labelled->items.empty());
  EXPECT_EQ(labelled->items[0].labels.count("example/node"), 1u);
}

// Non-2xx recordings become errors with the code a caller branches on and the reason.
TEST(ErrorFromResponseTest, RecordedStatusesMapToCodesAndReasons) {
  struct Case {
    const char* recording;
    Code code;
    const char* reason;
    const char* message_part;
  };
  const Case cases[] = {
      {"02-create-subnet-again-409-alreadyexists.txt", Code::kConflict, "AlreadyExists",
       "already exists"},
      {"06-update-subnet-stale-rv-409-conflict.txt", Code::kConflict, "Conflict",
       "has been modified"},
      {"27-delete-with-stale-uid-precondition-409.txt", Code::kConflict, "Conflict",
       "UID in the precondition"},
      {"03-create-subnet-invalid-422.txt", Code::kInvalidArgument, "Invalid", "spec.protocol"},
      {"08-get-missing-404.txt", Code::kNotFound, "NotFound", "not found"},
      {"09-forbidden-403.txt", Code::kInternal, "Forbidden", "RBAC"},
      {"10-unauthorized-401.txt", Code::kInternal, "Unauthorized", "token"},
      {"13-list-examples-fieldselector-unsupported-400.txt", Code::kInvalidArgument, "BadRequest",
       "field label"},
      {"31-list-with-compacted-rv-exact-410.txt", Code::kConflict, "Expired", "too old"},
  };
  for (const Case& c : cases) {
    std::string rec = ReadRecording(c.recording);
    KubeError e = ErrorFromResponse("GET /x", RecordedStatus(rec), RecordedBody(rec));
    EXPECT_EQ(e.code, c.code) << c.recording;
    EXPECT_EQ(e.reason, c.reason) << c.recording;
    EXPECT_EQ(e.http_status, RecordedStatus(rec)) << c.recording;
    EXPECT_NE(e.message.find(c.message_part), std::string::npos) << e.message;
    EXPECT_NE(e.message.find("GET /x: " + std::to_string(e.http_status)), std::string::npos)
        << e.message;
  }
  std::string exists = ReadRecording("02-create-subnet-again-409-alreadyexists.txt");
  std::string stale = ReadRecording("06-update-subnet-stale-rv-409-conflict.txt");
  EXPECT_TRUE(ErrorFromResponse("x", 409, RecordedBody(exists)).IsAlreadyExists());
  EXPECT_FALSE(ErrorFromResponse("x", 409, RecordedBody(stale)).IsAlreadyExists());
  std::string gone = ReadRecording("31-list-with-compacted-rv-exact-410.txt");
  EXPECT_TRUE(ErrorFromResponse("x", 410, RecordedBody(gone)).IsExpired());
}

TEST(ErrorFromResponseTest, NonStatusBodiesAndOverloadStatuses) {
  KubeError busy = ErrorFromResponse("GET /x", 429, "slow down", 3000);
  EXPECT_EQ(busy.code, Code::kUnavailable);
  EXPECT_EQ(busy.retry_after_ms, 3000);
  EXPECT_EQ(busy.reason, "");
  EXPECT_NE(busy.message.find("slow down"), std::string::npos);
  EXPECT_EQ(ErrorFromResponse("GET /x", 503, "").code, Code::kUnavailable);
  EXPECT_EQ(ErrorFromResponse("GET /x", 500, "{}").code, Code::kUnavailable);
}

TEST(DeleteOptionsTest, EncodesPreconditionsAndGracePeriod) {
  DeleteOptions o;
  o.precondition_uid = "u-1";
  o.precondition_resource_version = "42";
  o.grace_period_seconds = 0;
  EXPECT_EQ(EncodeDeleteOptions(o),
            "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\",\"gracePeriodSeconds\":0,"
            "\"preconditions\":{\"uid\":\"u-1\",\"resourceVersion\":\"42\"}}");
  EXPECT_EQ(EncodeDeleteOptions({}), "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\"}");
}

TEST(QueryEscapeTest, EscapesSelectorSyntax) {
  EXPECT_EQ(QueryEscape("example/node=node-a"), "example%2Fnode%3Dnode-a");
  EXPECT_EQ(QueryEscape("spec.nodeName=n1,a!=b"), "spec.nodeName%3Dn1%2Ca%21%3Db");
}

}  // namespace
}  // namespace sublease
