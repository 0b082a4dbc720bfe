#include "sync/informer.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "common/log.h"

namespace sublease {
namespace {

// Retry-After beyond this is not honoured in full: the informer must come back.
constexpr int64_t kMaxRetryAfterMs = 300'000;
// A watch that ends cleanly sooner than this without a line counts as a failure
// (client-go treats very short watches the same way), so a server that closes
// watches at once cannot make the informer spin.
constexpr int64_t kShortWatchMs = 1'000;

uv_handle_t* H(uv_timer_t* t) { return reinterpret_cast<uv_handle_t*>(t); }

}  // namespace

RelistDelta DiffRelist(const std::map<std::string, KubeObject>& cache,
                       const std::vector<KubeObject>& listed) {
  RelistDelta delta;
  std::map<std::string, const KubeObject*> seen;
  for (const KubeObject& obj : listed) {
    std::string key = obj.Key();
    auto it = cache.find(key);
    if (it == cache.end()) {
      delta.added.push_back(obj);
    } else if (it->second.resource_version != obj.resource_version) {
      delta.modified.push_back(obj);
    }
    seen.emplace(std::move(key), &obj);
  }
  for (const auto& [key, obj] : cache) {
    if (seen.count(key) == 0) delta.deleted.push_back(obj);
  }
  return delta;
}

Informer::Informer(KubeClient* client, InformerOptions options, InformerHandler* handler)
    : client_(client),
      options_(std::move(options)),
      handler_(handler),
      retry_timer_(new uv_timer_t),
      stall_timer_(new uv_timer_t),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
  uv_timer_init(client_->loop(), retry_timer_);
  uv_timer_init(client_->loop(), stall_timer_);
  retry_timer_->data = this;
  stall_timer_->data = this;
  options_.watch_timeout_min_s = std::max<int64_t>(1, options_.watch_timeout_min_s);
  options_.watch_timeout_max_s =
      std::max(options_.watch_timeout_min_s, options_.watch_timeout_max_s);
}

Informer::~Informer() {
  assert(closed_ && open_timers_ == 0 && "Informer destroyed before Close(done) finished");
}

void Informer::Start() {
  assert(!started_);
  started_ = true;
  if (!options_.resume_resource_version.empty()) {
    resource_version_ = options_.resume_resource_version;
    StartWatch();
  } else {
    StartList();
  }
}

void Informer::Close(std::function<void()> done) {
  if (closed_) return;
  closed_ = true;
  close_done_ = std::move(done);
  if (request_id_ != 0) client_->Cancel(request_id_);
  request_id_ = 0;
  auto on_closed = [](uv_handle_t* h) {
    auto* self = static_cast<Informer*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
    if (--self->open_timers_ == 0 && self->close_done_) {
      auto cb = std::move(self->close_done_);
      self->close_done_ = nullptr;
      cb();  // may destroy the informer
    }
  };
  uv_close(H(retry_timer_), on_closed);
  uv_close(H(stall_timer_), on_closed);
}

void Informer::StartList() {
  if (closed_) return;
  ++stats_.lists;
  list_items_.clear();
  continue_token_.clear();
  list_resource_version_.clear();
  RequestPage();
}

void Informer::RequestPage() {
  ++stats_.list_pages;
  ListOptions list;
  list.label_selector = options_.label_selector;
  list.field_selector = options_.field_selector;
  list.limit = options_.page_size;
  list.continue_token = continue_token_;
  list.timeout_ms = options_.list_timeout_ms;
  // No resourceVersion: a consistent (quorum) read, which is what paging needs.
  request_id_ = client_->List(options_.path, list,
                              [this](KubeResult<KubeResponse> r) { OnPage(std::move(r)); });
}

void Informer::OnPage(KubeResult<KubeResponse> result) {
  request_id_ = 0;
  if (!result) {
    ++stats_.errors;
    const KubeError& e = result.error();
    if (e.IsExpired() && !continue_token_.empty()) {
      // The continue token outlived the server's window: start the list over.
      LogWarn("informer " + options_.path + ": list continuation expired; listing again");
      Schedule(Next::kList, 0);
      return;
    }
    int64_t delay = Backoff(e.retry_after_ms);
    LogWarn("informer " + options_.path + ": list failed (" + e.message + "); retrying in " +
            std::to_string(delay) + " ms");
    Schedule(Next::kList, delay);
    return;
  }
  auto page = ParseListPage(result->body);
  if (!page) {
    ++stats_.errors;
    LogError("informer " + options_.path + ": " + page.error().message);
    Schedule(Next::kList, Backoff(0));
    return;
  }
  if (list_resource_version_.empty()) list_resource_version_ = page->resource_version;
  for (KubeObject& obj : page->items) {
    if (options_.metadata_only) Trim(obj);
    list_items_.push_back(std::move(obj));
  }
  continue_token_ = page->continue_token;
  if (!continue_token_.empty()) {
    RequestPage();
    return;
  }
  FinishList(page->resource_version.empty() ? list_resource_version_ : page->resource_version);
}

void Informer::Trim(KubeObject& obj) {
  obj.raw = std::string();  // (clear() would keep the capacity)
  obj.labels.clear();
}

void Informer::FinishList(std::string resource_version) {
  RelistDelta delta = DiffRelist(cache_, list_items_);
  std::map<std::string, KubeObject> fresh;
  for (KubeObject& obj : list_items_) {
    std::string key = obj.Key();
    fresh.insert_or_assign(std::move(key), std::move(obj));
  }
  list_items_.clear();
  cache_ = std::move(fresh);
  attempt_ = 0;
  synced_ = true;
  for (const KubeObject& obj : delta.deleted) {
    handler_->OnDeleted(obj);
    if (closed_) return;
  }
  for (const KubeObject& obj : delta.added) {
    handler_->OnAdded(obj);
    if (closed_) return;
  }
  for (const KubeObject& obj : delta.modified) {
    handler_->OnModified(obj);
    if (closed_) return;
  }
  SetResourceVersion(resource_version);
  if (closed_) return;
  handler_->OnSynced();
  if (closed_) return;
  StartWatch();
}

void Informer::StartWatch() {
  if (closed_) return;
  std::uniform_int_distribution<int64_t> dist(options_.watch_timeout_min_s,
                                              options_.watch_timeout_max_s);
  int64_t timeout_s = dist(rng_);
  std::string path = options_.path;
  path += path.find('?') == std::string::npos ? '?' : '&';
  path += "watch=1&allowWatchBookmarks=true&resourceVersion=" + QueryEscape(resource_version_) +
          "&timeoutSeconds=" + std::to_string(timeout_s);
  if (!options_.label_selector.empty())
    path += "&labelSelector=" + QueryEscape(options_.label_selector);
  if (!options_.field_selector.empty())
    path += "&fieldSelector=" + QueryEscape(options_.field_selector);
  ++stats_.watches;
  watching_ = true;
  watch_lines_ = 0;
  watch_started_ms_ = static_cast<int64_t>(uv_now(client_->loop()));
  // The server ends the watch after timeout_s; the client-side limit only catches a
  // server that forgets to.
  request_id_ = client_->Watch(
      path, (timeout_s + 30) * 1000, [this](std::string_view line) { OnWatchLine(line); },
      [this](KubeResult<void> r) { OnWatchEnd(std::move(r)); });
  ArmStallTimer();
}

void Informer::ArmStallTimer() {
  if (options_.stall_timeout_ms <= 0) return;
  uv_timer_start(stall_timer_, &Informer::OnStallTimer,
                 static_cast<uint64_t>(options_.stall_timeout_ms), 0);
}

void Informer::StopWatch() {
  watching_ = false;
  uv_timer_stop(stall_timer_);
  if (request_id_ != 0) client_->Cancel(request_id_);
  request_id_ = 0;
}

void Informer::OnWatchLine(std::string_view line) {
  if (closed_ || !watching_) return;
  ArmStallTimer();
  ++watch_lines_;
  stats_.watch_bytes += line.size() + 1;
  auto event = ParseWatchEvent(line);
  if (!event) {
    // Skipping an event would silently lose state: relist instead.
    ++stats_.errors;
    LogError("informer " + options_.path + ": " + event.error().message + "; listing again");
    StopWatch();
    Schedule(Next::kList, Backoff(0));
    return;
  }
  attempt_ = 0;  // the server is answering
  if (event->type == WatchEventType::kError) {
    StopWatch();
    const KubeStatus& st = event->status;
    if (st.code == 410 || st.reason == "Expired" || st.reason == "Gone") {
      // Kubernetes: the resourceVersion is older than the server's window; only a
      // new list can recover.
      ++stats_.relists_on_410;
      LogInfo("informer " + options_.path + ": resourceVersion " + resource_version_ +
              " expired (" + st.message + "); listing again");
      Schedule(Next::kList, 0);
    } else {
      ++stats_.errors;
      ++stats_.reconnects;
      int64_t delay = Backoff(0);
      LogWarn("informer " + options_.path + ": watch ERROR " + std::to_string(st.code) + " " +
              st.reason + ": " + st.message + "; watching again in " + std::to_string(delay) +
              " ms");
      Schedule(Next::kWatch, delay);
    }
    return;
  }
  ApplyEvent(*event);
}

void Informer::ApplyEvent(WatchEvent& event) {
  KubeObject& obj = event.object;
  // (A deleted object is not kept: its handler sees it whole, annotations and all.)
  if (options_.metadata_only && event.type != WatchEventType::kDeleted) Trim(obj);
  if (event.type == WatchEventType::kBookmark) {
    ++stats_.bookmarks;
    SetResourceVersion(obj.resource_version);
    return;
  }
  ++stats_.events;
  std::string rv = obj.resource_version;
  std::string key = obj.Key();
  if (event.type == WatchEventType::kDeleted) {
    cache_.erase(key);
    handler_->OnDeleted(obj);
  } else {
    // ADDED for a known key or MODIFIED for an unknown one happen after a resume
    // (empty cache) or a replay: what matters is whether the handler knew it.
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second.resource_version == rv) {
      SetResourceVersion(rv);
      return;
    }
    bool known = it != cache_.end();
    auto [slot, inserted] = cache_.insert_or_assign(key, std::move(obj));
    (void)inserted;
    if (known) {
      handler_->OnModified(slot->second);
    } else {
      handler_->OnAdded(slot->second);
    }
  }
  if (closed_) return;
  SetResourceVersion(rv);
}

void Informer::OnWatchEnd(KubeResult<void> result) {
  request_id_ = 0;
  watching_ = false;
  uv_timer_stop(stall_timer_);
  if (closed_) return;
  if (!result) {
    const KubeError& e = result.error();
    if (e.IsExpired()) {
      ++stats_.relists_on_410;
      LogInfo("informer " + options_.path + ": " + e.message + "; listing again");
      Schedule(Next::kList, 0);
      return;
    }
    ++stats_.errors;
    ++stats_.reconnects;
    int64_t delay = Backoff(e.retry_after_ms);
    LogWarn("informer " + options_.path + ": watch failed (" + e.message + "); watching again in " +
            std::to_string(delay) + " ms");
    Schedule(Next::kWatch, delay);
    return;
  }
  ++stats_.reconnects;
  int64_t lasted = static_cast<int64_t>(uv_now(client_->loop())) - watch_started_ms_;
  if (watch_lines_ == 0 && lasted < kShortWatchMs) {
    Schedule(Next::kWatch, Backoff(0));
  } else {
    Schedule(Next::kWatch, 0);  // timeoutSeconds passed: the normal case
  }
}

void Informer::Schedule(Next next, int64_t delay_ms) {
  if (closed_) return;
  next_ = next;
  uv_timer_start(retry_timer_, &Informer::OnRetryTimer, static_cast<uint64_t>(delay_ms), 0);
}

void Informer::OnRetryTimer(uv_timer_t* timer) {
  auto* self = static_cast<Informer*>(timer->data);
  if (self->closed_) return;
  if (self->next_ == Next::kList) {
    self->StartList();
  } else {
    self->StartWatch();
  }
}

void Informer::OnStallTimer(uv_timer_t* timer) {
  auto* self = static_cast<Informer*>(timer->data);
  if (self->closed_ || !self->watching_) return;
  ++self->stats_.stalls;
  ++self->stats_.reconnects;
  LogWarn("informer " + self->options_.path + ": watch silent for " +
          std::to_string(self->options_.stall_timeout_ms) + " ms; re-opening it");
  self->StopWatch();
  self->Schedule(Next::kWatch, self->Backoff(0));
}

int64_t Informer::Backoff(int64_t retry_after_ms) {
  int shift = std::min(attempt_, 30);
  int64_t base = options_.backoff_initial_ms;
  for (int i = 0; i < shift && base < options_.backoff_max_ms; ++i) base *= 2;
  base = std::min(base, options_.backoff_max_ms);
  ++attempt_;
  // "Equal jitter": between half and all of the exponential step.
  std::uniform_int_distribution<int64_t> dist(0, base / 2);
  int64_t delay = base - base / 2 + dist(rng_);
  return std::max(delay, std::min(retry_after_ms, kMaxRetryAfterMs));
}

void Informer::SetResourceVersion(const std::string& rv) {
  if (rv.empty() || rv == resource_version_) return;
  resource_version_ = rv;
  handler_->OnResourceVersion(resource_version_);
}

}  // namespace sublease
