// LeaderElector: one daemon at a time holds a coordination.k8s.io/v1 Lease and acts for
// the cluster (DESIGN §3.5). The semantics are client-go's leaderelection package's:
// - A candidate reads the Lease every retry period (with jitter). It may take the Lease
//   when it does not exist, when holderIdentity is empty (a clean release), or when the
//   Lease's record has not changed for leaseDurationSeconds as measured by THIS
//   process's monotonic clock from the moment it last saw the record change. Remote
//   timestamps (renewTime) are written for people, never trusted for expiry.
// - Taking and renewing are compare-and-swap updates (metadata.resourceVersion; a
//   create when absent). 409 → re-read. acquireTime and leaseTransitions change only
//   when the holder changes.
// - The leader renews every retry period. If no renewal has succeeded within
//   renew_deadline of when the last successful one was SENT, it stops acting
//   (on_stopped) at once. Since renew_deadline < lease_duration and others measure the
//   lease duration from when they saw that write land (later than it was sent), the old
//   leader has stopped before anyone else may start.
// - Close(release=true) stops acting first, then clears holderIdentity (and sets
//   leaseDurationSeconds to 1) so another daemon takes over at its next retry.
// Threading: the loop's thread only. Owns two uv timers: Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"
#include "sync/kube_client.h"

namespace sublease {

// The Lease's spec (coordination.k8s.io/v1 LeaseSpec).
struct LeaseRecord {
  std::string holder_identity;
  int64_t lease_duration_seconds = 0;
  std::string acquire_time;  // MicroTime, RFC 3339 with microseconds
  std::string renew_time;
  int64_t lease_transitions = 0;
  friend bool operator==(const LeaseRecord&, const LeaseRecord&) = default;
};

// "2024-05-01T10:11:12.345000Z" (metav1.MicroTime) for a unix time in milliseconds.
std::string FormatMicroTime(int64_t unix_ms);
// "2024-05-01T10:11:12Z" (metav1.Time).
std::string FormatTime(int64_t unix_ms);

struct DecodedLease {
  std::string resource_version;
  LeaseRecord record;
};
// From a Lease object (GET/PUT/POST answer). kInvalidArgument for malformed JSON or a
// field of the wrong type; absent fields read as empty/0.
Result<DecodedLease> DecodeLease(std::string_view json);
// The whole Lease object for create (resource_version "") or CAS update.
std::string EncodeLease(std::string_view namespace_name, std::string_view name,
                        std::string_view resource_version, const LeaseRecord& record);

struct LeaderElectorOptions {
  std::string identity;  // unique per process, e.g. "<node>_<random hex>"
  std::string namespace_name = "kube-system";
  std::string name = "sublease-leader";
  int64_t lease_duration_ms = 15'000;
  int64_t renew_deadline_ms = 10'000;  // REQUIRES: < lease_duration_ms
  int64_t retry_period_ms = 2'000;     // REQUIRES: < renew_deadline_ms
  uint64_t seed = 0;                   // jitter; 0 = random
};

struct LeaderElectorStats {
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t conflicts = 0;
  uint64_t errors = 0;
  uint64_t acquisitions = 0;  // times this process started leading
  uint64_t losses = 0;        // times it stopped (deadline passed, taken over, Close)
};

class LeaderElector {
 public:
  using Callback = std::function<void()>;

  // `on_started` runs when this process becomes the leader, `on_stopped` when it stops
  // (always paired, always on the loop; on_stopped runs inside Close when leading).
  LeaderElector(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                LeaderElectorOptions options, Callback on_started, Callback on_stopped);
  ~LeaderElector();
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  // Begins campaigning. Call once.
  void Start();
  // Stops campaigning; when leading, calls on_stopped first, then (release) clears the
  // holder so another daemon takes over at once. `done` runs after the release answer
  // (bounded by the request timeout) and the timers are closed.
  void Close(bool release, std::function<void()> done);

  bool leading() const { return leading_; }
  // The holder last seen in the Lease ("" when none or not read yet).
  const std::string& observed_holder() const { return observed_.holder_identity; }
  const std::string& identity() const { return options_.identity; }
  const LeaderElectorStats& stats() const { return stats_; }

 private:
  int64_t NowMono();
  void Tick();
  void Schedule(int64_t delay_ms);
  void Read();
  void OnRead(KubeResult<KubeResponse> r);
  void TryWrite(bool create);
  void OnWritten(int64_t sent_mono, KubeResult<KubeResponse> r);
  void Observe(const DecodedLease& lease);
  void StartLeading();
  void StopLeading(std::string_view why);
  void ArmDeadline(int64_t sent_mono);
  void CloseTimers();
  std::string Path() const;
  int64_t RequestTimeoutMs() const;

  static void OnTimer(uv_timer_t* t);
  static void OnDeadline(uv_timer_t* t);

  uv_loop_t* loop_;
  KubeClient* client_;
  const Clock* clock_;
  LeaderElectorOptions options_;
  Callback on_started_;
  Callback on_stopped_;
  uv_timer_t* timer_;
  uv_timer_t* deadline_timer_;
  int open_timers_ = 2;
  std::mt19937_64 rng_;

  KubeClient::RequestId in_flight_ = 0;
  bool started_ = false;
  bool closing_ = false;
  bool leading_ = false;
  bool have_lease_ = false;         // observed_ came from the server
  std::string observed_rv_;
  LeaseRecord observed_;
  int64_t observed_at_mono_ = 0;    // when observed_ last changed, local monotonic ms
  std::function<void()> close_done_;
  LeaderElectorStats stats_;
};

}  // namespace sublease
