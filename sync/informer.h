// Informer: keeps an up-to-date picture of one kind of object (one collection path plus
// label/field selectors) by LIST then WATCH, and tells a handler what changed.
//
// The Kubernetes API contract it follows (API concepts, "efficient detection of
// changes"):
// - LIST (paged with limit/continue) returns a snapshot and its resourceVersion;
//   a WATCH from that resourceVersion delivers every change after it, in order.
// - With allowWatchBookmarks=true the server sends BOOKMARK events that only advance
//   the resourceVersion (how a narrowly filtered watch keeps its resume point fresh).
// - A watch ends when timeoutSeconds passes or the connection drops: re-watch from the
//   last resourceVersion seen. A resourceVersion that left the server's window is
//   answered with 410 Expired (as an ERROR event inside a 200 stream, or a 410 status):
//   only a new LIST recovers, and the informer then delivers deletions for objects that
//   vanished meanwhile and modifications for the ones that changed.
// - 429/5xx and network failures: retry with exponential backoff and jitter, at least
//   as long as Retry-After says.
//
// Events: OnAdded/OnModified/OnDeleted per change (never for an unchanged
// resourceVersion), OnSynced after each complete (re)list, OnResourceVersion whenever
// the resume point advances (persist it; pass it back as resume_resource_version to
// restart by watching instead of listing). A resumed informer starts with an empty
// cache and no OnSynced until a relist happens; the consumer reconciles its own state
// after any OnSynced, when cache() is the complete truth.
//
// Threading and ownership: everything runs on the KubeClient's loop; handler calls
// come from it. The informer owns two uv timers: Close(done) must run before it is
// destroyed, and the informer, the client and the handler must outlive `done`.
// Handlers may call Close. The client is not owned.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "sync/kube_client.h"
#include "sync/kube_object.h"

namespace sublease {

class InformerHandler {
 public:
  virtual ~InformerHandler() = default;
  virtual void OnAdded(const KubeObject& object) = 0;
  virtual void OnModified(const KubeObject& object) = 0;
  // For a watch DELETED event: the object's final state; after a relist: the last
  // state the informer saw.
  virtual void OnDeleted(const KubeObject& object) = 0;
  virtual void OnSynced() {}
  virtual void OnResourceVersion(std::string_view /*resource_version*/) {}
};

struct InformerOptions {
  std::string path;  // collection, e.g. "/apis/sublease.io/v1/ipblocks"
  std::string label_selector;
  std::string field_selector;
  int64_t page_size = 500;
  // timeoutSeconds of each watch, drawn uniformly from [min, max] so that the nodes'
  // watches do not all end (and re-open) at the same moment.
  int64_t watch_timeout_min_s = 300;
  int64_t watch_timeout_max_s = 600;
  // A watch that delivers no line (event or bookmark) for this long is cancelled and
  // re-opened. Servers since 1.27 send a bookmark about every minute.
  int64_t stall_timeout_ms = 150'000;
  int64_t backoff_initial_ms = 200;
  int64_t backoff_max_ms = 30'000;
  int64_t list_timeout_ms = 60'000;  // per page
  // Non-empty: start by watching from here instead of listing (a cheap restart).
  std::string resume_resource_version;
  uint64_t seed = 0;  // jitter and timeout randomness; 0 = from std::random_device
  // Keep only the metadata of each object (name, namespace, uid, resourceVersion,
  // deleting): no raw JSON, no labels, in the cache and for the handler — except the
  // object of a watch's DELETED event, which is not kept and reaches OnDeleted whole (a
  // deletion found by a relist reaches it trimmed). For feeds whose handler needs
  // nothing more, e.g. the leader's cluster-wide pods (100k pods: ~3 KB each in full;
  // BENCHMARKS.md §7).
  bool metadata_only = false;
};

// Counters for metrics; monotonic.
struct InformerStats {
  uint64_t lists = 0;           // complete list cycles started
  uint64_t list_pages = 0;      // list requests sent
  uint64_t watches = 0;         // watch requests sent
  uint64_t relists_on_410 = 0;  // lists caused by 410 Expired
  uint64_t reconnects = 0;      // watches re-opened after one ended, broke or stalled
  uint64_t stalls = 0;          // watches cancelled for silence
  uint64_t errors = 0;          // failed requests and undecodable answers
  uint64_t events = 0;          // ADDED/MODIFIED/DELETED events received
  uint64_t bookmarks = 0;
  uint64_t watch_bytes = 0;  // bytes of watch events and bookmarks received (newlines included)
};

// What replacing `cache` with a fresh list means, per object key. Pure.
struct RelistDelta {
  std::vector<KubeObject> added;
  std::vector<KubeObject> modified;  // resourceVersion differs
  std::vector<KubeObject> deleted;   // in cache, not listed (the cached state)
};
RelistDelta DiffRelist(const std::map<std::string, KubeObject>& cache,
                       const std::vector<KubeObject>& listed);

class Informer {
 public:
  Informer(KubeClient* client, InformerOptions options, InformerHandler* handler);
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Begins listing (or watching, when resuming). Call once.
  void Start();
  // Stops all work and closes the timers; `done` runs on the loop afterwards.
  void Close(std::function<void()> done);

  bool synced() const { return synced_; }
  const std::string& resource_version() const { return resource_version_; }
  const std::map<std::string, KubeObject>& cache() const { return cache_; }
  const InformerStats& stats() const { return stats_; }

 private:
  enum class Next { kList, kWatch };

  void StartList();
  void RequestPage();
  void OnPage(KubeResult<KubeResponse> result);
  void FinishList(std::string resource_version);
  static void Trim(KubeObject& obj);  // Options.metadata_only
  void StartWatch();
  void OnWatchLine(std::string_view line);
  void OnWatchEnd(KubeResult<void> result);
  void ApplyEvent(WatchEvent& event);
  void StopWatch();
  void Schedule(Next next, int64_t delay_ms);
  int64_t Backoff(int64_t retry_after_ms);
  void SetResourceVersion(const std::string& rv);
  void ArmStallTimer();

  static void OnRetryTimer(uv_timer_t* timer);
  static void OnStallTimer(uv_timer_t* timer);

  KubeClient* client_;
  InformerOptions options_;
  InformerHandler* handler_;
  uv_timer_t* retry_timer_;
  uv_timer_t* stall_timer_;
  int open_timers_ = 2;
  std::function<void()> close_done_;
  bool closed_ = false;
  bool started_ = false;

  std::mt19937_64 rng_;
  Next next_ = Next::kList;
  int attempt_ = 0;  // consecutive failures: the backoff exponent
  KubeClient::RequestId request_id_ = 0;
  bool watching_ = false;
  uint64_t watch_lines_ = 0;
  int64_t watch_started_ms_ = 0;

  std::vector<KubeObject> list_items_;
  std::string continue_token_;
  std::string list_resource_version_;

  std::map<std::string, KubeObject> cache_;
  std::string resource_version_;
  bool synced_ = false;
  InformerStats stats_;
};

}  // namespace sublease
