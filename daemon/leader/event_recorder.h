// EventRecorder: core/v1 Events on pods, so `kubectl describe pod` says why an address
// could not be allocated (DESIGN §4). Any daemon may use it (the node's shard does), not
// only the leader.
//
// Kubernetes facts followed (core/v1 Event, client-go's record package):
// - An Event lives in the namespace of the object it is about; involvedObject names it
//   (kind, namespace, name, uid, apiVersion); `kubectl describe` finds it with the field
//   selector involvedObject.name=<pod>,involvedObject.namespace=<ns>.
// - type Warning, a CamelCase reason, a message, source.component/host, firstTimestamp,
//   lastTimestamp, count; the name is "<pod>.<hex of the time in ns>".
// - A repeat of the same (pod, reason) within the dedup window is not a new Event: the
//   existing one's count, lastTimestamp and message are bumped with a merge patch (what
//   client-go's EventCorrelator does). A patch answered 404 (the Event expired) creates a
//   new one.
// Fire and forget: failures are logged and counted, never returned. Loop thread only; no
// uv handles, but in-flight requests: Close() before the client closes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

#include "common/clock.h"
#include "common/result.h"
#include "sync/kube_client.h"

namespace sublease {

inline constexpr std::string_view kReasonAddressExhausted = "AddressExhausted";
inline constexpr std::string_view kReasonAddressConflict = "AddressConflict";
inline constexpr std::string_view kReasonInvalidRequest = "InvalidRequest";

// The Event reason for an allocation failure: exhausted → AddressExhausted, conflict →
// AddressConflict, invalid argument → InvalidRequest; "" for the rest (unavailable is
// retried by the runtime and is not the pod's problem).
std::string_view EventReasonFor(Code code);

struct EventRecorderOptions {
  std::string component = "subleased";
  std::string host;                     // source.host: the node name
  int64_t dedup_window_ms = 600'000;    // repeats within this bump the same Event
  size_t max_tracked = 4096;            // (pod, reason) pairs remembered at most
};

struct EventRecorderStats {
  uint64_t created = 0;
  uint64_t patched = 0;
  uint64_t failed = 0;
};

struct PodRef {
  std::string namespace_name;
  std::string name;
  std::string uid;  // may be "" when unknown
};

// Any object an Event may be about. A cluster-scoped object (namespace "") gets its
// Events in namespace "default", as client-go records them.
struct ObjectRef {
  std::string api_version;
  std::string kind;
  std::string namespace_name;  // "" = cluster-scoped
  std::string name;
  std::string uid;  // may be "" when unknown
};

class EventRecorder {
 public:
  // `client` and `clock` must outlive the recorder.
  EventRecorder(KubeClient* client, const Clock* clock, EventRecorderOptions options);
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  // Records a Warning on the pod (or bumps the count of the same reason's last Event).
  void PodWarning(const PodRef& pod, std::string_view reason, std::string_view message);
  // The same for any object (a Kube-OVN IP object, for a reservation it cannot honour).
  void ObjectWarning(const ObjectRef& object, std::string_view reason, std::string_view message);
  // Cancels requests in flight; nothing is sent afterwards.
  void Close();

  const EventRecorderStats& stats() const { return stats_; }

 private:
  // The Event's namespace, the object's name, uid, reason.
  using Key = std::tuple<std::string, std::string, std::string, std::string>;
  struct Entry {
    std::string api_version, kind, involved_namespace;  // the involvedObject
    std::string event_name;  // "" until the create answered
    int64_t count = 0;       // occurrences so far
    int64_t sent_count = 0;  // count the server holds (or a write in flight carries)
    int64_t first_ms = 0;
    int64_t last_ms = 0;
    std::string message;
    KubeClient::RequestId in_flight = 0;
    int failed_creates = 0;  // in a row: a create answered 5xx (or not at all) is sent again
  };

  void Send(const Key& key);
  void Create(const Key& key, Entry& e);
  void Patch(const Key& key, Entry& e);
  void Evict(int64_t now_ms);

  KubeClient* client_;
  const Clock* clock_;
  EventRecorderOptions options_;
  std::map<Key, Entry> entries_;
  bool closed_ = false;
  uint64_t sequence_ = 0;  // keeps names unique within one millisecond
  EventRecorderStats stats_;
};

}  // namespace sublease
