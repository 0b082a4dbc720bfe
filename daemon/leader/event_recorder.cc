#include "daemon/leader/event_recorder.h"

#include <simdjson.h>

#include <cstdio>
#include <utility>
#include <vector>

#include "common/json_writer.h"
#include "common/log.h"
#include "daemon/leader/leader_elector.h"  // FormatTime

namespace sublease {
namespace {
// Tries of one Event's create answered with a server error (or not at all) in a row.
constexpr int kCreateTries = 3;
}  // namespace

std::string_view EventReasonFor(Code code) {
  switch (code) {
    case Code::kExhausted: return kReasonAddressExhausted;
    case Code::kConflict: return kReasonAddressConflict;
    case Code::kInvalidArgument: return kReasonInvalidRequest;
    default: return "";
  }
}

EventRecorder::EventRecorder(KubeClient* client, const Clock* clock, EventRecorderOptions options)
    : client_(client), clock_(clock), options_(std::move(options)) {}

void EventRecorder::PodWarning(const PodRef& pod, std::string_view reason,
                               std::string_view message) {
  if (pod.namespace_name.empty()) return;
  ObjectWarning({"v1", "Pod", pod.namespace_name, pod.name, pod.uid}, reason, message);
}

void EventRecorder::ObjectWarning(const ObjectRef& object, std::string_view reason,
                                  std::string_view message) {
  if (closed_ || object.name.empty()) return;
  const int64_t now = clock_->NowMs();
  Evict(now);
  Key key{object.namespace_name.empty() ? "default" : object.namespace_name, object.name,
          object.uid, std::string(reason)};
  auto [it, fresh] = entries_.try_emplace(key);
  Entry& e = it->second;
  if (fresh) {
    e.first_ms = now;
    e.api_version = object.api_version;
    e.kind = object.kind;
    e.involved_namespace = object.namespace_name;
  }
  ++e.count;
  e.last_ms = now;
  e.message = message;
  Send(key);
}

void EventRecorder::Evict(int64_t now_ms) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    bool old = now_ms - it->second.last_ms > options_.dedup_window_ms;
    it = old && it->second.in_flight == 0 ? entries_.erase(it) : std::next(it);
  }
  // Still too many: forget the least recently bumped idle ones.
  while (entries_.size() >= options_.max_tracked) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.in_flight == 0 &&
          (oldest == entries_.end() || it->second.last_ms < oldest->second.last_ms)) {
        oldest = it;
      }
    }
    if (oldest == entries_.end()) break;
    entries_.erase(oldest);
  }
}

void EventRecorder::Send(const Key& key) {
  Entry& e = entries_.at(key);
  if (e.in_flight != 0 || e.sent_count == e.count) return;  // the answer sends the rest
  if (e.event_name.empty()) {
    Create(key, e);
  } else {
    Patch(key, e);
  }
}

void EventRecorder::Create(const Key& key, Entry& e) {
  const auto& [ns, pod, uid, reason] = key;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".%llx",
                static_cast<unsigned long long>(clock_->NowMs()) * 1'000'000ULL +
                    static_cast<unsigned long long>(sequence_++ % 1'000'000));
  std::string name = pod + suffix;
  JsonWriter w;
  w.BeginObject().Field("apiVersion", "v1").Field("kind", "Event");
  w.Key("metadata").BeginObject().Field("name", name).Field("namespace", ns).EndObject();
  w.Key("involvedObject").BeginObject().Field("apiVersion", e.api_version).Field("kind", e.kind);
  if (!e.involved_namespace.empty()) w.Field("namespace", e.involved_namespace);
  w.Field("name", pod);
  if (!uid.empty()) w.Field("uid", uid);
  w.EndObject();
  w.Field("reason", reason).Field("message", e.message).Field("type", "Warning");
  w.Key("source").BeginObject().Field("component", options_.component);
  if (!options_.host.empty()) w.Field("host", options_.host);
  w.EndObject();
  w.Field("firstTimestamp", FormatTime(e.first_ms)).Field("lastTimestamp", FormatTime(e.last_ms));
  w.Field("count", e.count);
  w.Field("reportingComponent", options_.component);
  w.Field("reportingInstance", options_.host);
  w.EndObject();
  e.sent_count = e.count;
  e.in_flight = client_->Create("/api/v1/namespaces/" + ns + "/events", w.Take(),
                                [this, key, name](KubeResult<KubeResponse> r) {
                                  auto it = entries_.find(key);
                                  if (it == entries_.end()) return;
                                  Entry& entry = it->second;
                                  entry.in_flight = 0;
                                  if (!r) {
                                    ++stats_.failed;
                                    entry.sent_count = 0;
                                    LogWarn("event on " + entry.kind + " " + std::get<0>(key) +
                                            "/" + std::get<1>(key) + ": " + r.error().message);
                                    // A server error or a lost answer may be passing (an
                                    // Event that says why a pod has no address may never
                                    // occur again): sent again, a few times. Anything
                                    // else waits for the next occurrence.
                                    if (r.error().code == Code::kUnavailable &&
                                        ++entry.failed_creates < kCreateTries) {
                                      Send(key);
                                    }
                                    return;
                                  }
                                  entry.failed_creates = 0;
                                  ++stats_.created;
                                  entry.event_name = name;
                                  Send(key);
                                });
}

void EventRecorder::Patch(const Key& key, Entry& e) {
  const std::string& ns = std::get<0>(key);
  JsonWriter w;
  w.BeginObject()
      .Field("count", e.count)
      .Field("lastTimestamp", FormatTime(e.last_ms))
      .Field("message", e.message)
      .EndObject();
  e.sent_count = e.count;
  e.in_flight = client_->MergePatch(
      "/api/v1/namespaces/" + ns + "/events/" + e.event_name, w.Take(),
      [this, key](KubeResult<KubeResponse> r) {
        auto it = entries_.find(key);
        if (it == entries_.end()) return;
        Entry& entry = it->second;
        entry.in_flight = 0;
        if (!r) {
          ++stats_.failed;
          entry.sent_count = 0;
          // Gone (expired after its TTL, or deleted): the next write creates a new one.
          if (r.error().http_status == 404) {
            entry.event_name.clear();
            entry.first_ms = entry.last_ms;
            Send(key);
          }
          return;
        }
        ++stats_.patched;
        Send(key);
      });
}

void EventRecorder::Close() {
  closed_ = true;
  for (auto& [key, e] : entries_) {
    if (e.in_flight != 0) client_->Cancel(e.in_flight);
    e.in_flight = 0;
  }
  entries_.clear();
}

}  // namespace sublease
