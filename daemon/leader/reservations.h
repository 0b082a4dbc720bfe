// ReservationKeeper: the leader's half of Kube-OVN reserved IPs (docs/kubeovn-compat.md,
// docs/cluster-protocol.md "Reserved IPs"). A user creates an `IP` object named
// `<pod>.<ns>.<provider>` (`.<iface>` in per-interface mode) with spec.subnet,
// spec.podName, spec.namespace and, optionally, an address; it reserves that address
// (or one picked here) for the pod before the pod exists.
//
// Fed by the leader's watch of IP objects that are reservations (label selector
// `ovn.kubernetes.io/ip_reserved!=false`: labelled true, or not labelled at all). For each
// one, once the view's IPBlocks are listed:
// - an allocation carrying `reservedIp: <name>` in any block means it is made: its
//   addresses are written into the object if it lacks them (and the label, true);
// - otherwise `reserve` (BlockEngine::Reserve on this node) writes one; then the object
//   is filled in. One reservation at a time per name, and a name reserved in this term is
//   not reserved again before the view shows it (the view lags our own write).
// - What cannot be honoured — an unknown Subnet, an address outside it or held by someone
//   else, a malformed object, a name that is not `<podName>.<namespace>.<provider>[.x]` — is an
//   Event (Warning) on the IP object and a log line; no address is taken, and it is tried again
//   after `retry_ms`, then twice as long after each failure in a row up to `max_retry_ms`
//   (each try that fails again is an Event PATCH and a log line), and at once whenever the
//   object changes. The API server unreachable: tried again the same way, no Event.
// The names the watch shows are put in view->reserved_ips, which the garbage collector
// keeps (it frees a reservation's allocation only once its object is gone).
// Loop thread only. Owns one uv timer: Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/ip.h"
#include "common/result.h"
#include "daemon/leader/cluster_view.h"
#include "daemon/leader/event_recorder.h"
#include "sync/ip_reservation.h"
#include "sync/kube_client.h"

namespace sublease {

// Writes a reservation's allocation into the IPBlocks (BlockEngine::Reserve): name,
// subnet, pod namespace, pod name, addresses ("" = pick one), then the addresses held.
using ReserveFn = std::function<void(const std::string&, const std::string&, const std::string&,
                                     const std::string&, const std::vector<std::string>&,
                                     std::function<void(Result<std::vector<IpAddr>>)>)>;

struct ReservationKeeperOptions {
  int64_t retry_ms = 10'000;
  int64_t max_retry_ms = 300'000;
};

struct ReservationKeeperStats {
  uint64_t reserved = 0;  // allocations written
  uint64_t filled = 0;    // objects filled in (address, label)
  uint64_t refused = 0;   // Events for reservations that cannot be honoured
  uint64_t errors = 0;    // API errors (retried)
};

class ReservationKeeper {
 public:
  ReservationKeeper(uv_loop_t* loop, KubeClient* client, ClusterView* view, EventRecorder* events,
                    ReserveFn reserve, ReservationKeeperOptions options);
  ~ReservationKeeper();
  ReservationKeeper(const ReservationKeeper&) = delete;
  ReservationKeeper& operator=(const ReservationKeeper&) = delete;

  void Upserted(const KubeObject& object);
  void Deleted(const KubeObject& object);
  void Synced();         // the IP objects' first list is in
  void BlocksChanged();  // the view's IPBlocks changed (or were listed)
  // Synchronously: nothing is written afterwards.
  void Stop();
  void Close(std::function<void()> done);
  const ReservationKeeperStats& stats() const { return stats_; }

 private:
  void Reconcile(const std::string& name);
  void ReconcileAll();
  // The addresses of the allocations carrying `reservedIp: name`, from the view.
  std::vector<IpAddr> Held(const std::string& name) const;
  void Fill(const IpReservation& r, const std::vector<IpAddr>& held);
  void Refuse(const KubeObject& object, const Error& error);
  // Schedules the next try of `name` after a failure; returns the wait (ms).
  int64_t RetryLater(const std::string& name);

  uv_loop_t* loop_;
  KubeClient* client_;
  ClusterView* view_;
  EventRecorder* events_;
  ReserveFn reserve_;
  ReservationKeeperOptions options_;
  uv_timer_t* timer_;
  bool synced_ = false;
  bool stopped_ = false;
  std::map<std::string, KubeObject> objects_;            // the reservations, by name
  std::set<std::string> reserving_;                      // Reserve or fill in flight
  std::map<std::string, std::vector<IpAddr>> reserved_;  // made this term, by name
  std::map<std::string, uint64_t> failed_;  // to try again on the timer, at this uv_now
  std::map<std::string, int64_t> waits_;    // the last wait after a failure, per name
  // Answers (the engine's, the API server's) may come after the term ended and this
  // keeper is gone: they hold a weak reference to this and check it first.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
  ReservationKeeperStats stats_;
};

}  // namespace sublease
