#include "daemon/leader/leader_elector.h"

#include <simdjson.h>

#include <ctime>
#include <utility>

#include "common/json_writer.h"
#include "common/log.h"

namespace sublease {

namespace {

std::string FormatUtc(int64_t unix_ms, bool micro) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out(buf, n);
  if (micro) {
    char frac[16];
    std::snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>((unix_ms % 1000) * 1000));
    out += frac;
  }
  return out + "Z";
}

}  // namespace

std::string FormatMicroTime(int64_t unix_ms) { return FormatUtc(unix_ms, true); }
std::string FormatTime(int64_t unix_ms) { return FormatUtc(unix_ms, false); }

Result<DecodedLease> DecodeLease(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(json.data(), json.size()).get(doc) != simdjson::SUCCESS || !doc.is_object()) {
    return Fail(Error::InvalidArgument("Lease: not a JSON object"));
  }
  DecodedLease out;
  std::string_view s;
  if (doc["metadata"]["resourceVersion"].get(s) == simdjson::SUCCESS) out.resource_version = s;
  simdjson::dom::element spec;
  if (doc["spec"].get(spec) != simdjson::SUCCESS || spec.is_null()) return out;
  auto text = [&](const char* key, std::string* dst) -> Result<void> {
    simdjson::dom::element e;
    if (spec[key].get(e) != simdjson::SUCCESS || e.is_null()) return Ok();
    if (e.get(s) != simdjson::SUCCESS) {
      return Fail(Error::InvalidArgument(std::string("Lease spec.") + key + " is not a string"));
    }
    *dst = s;
    return Ok();
  };
  auto number = [&](const char* key, int64_t* dst) -> Result<void> {
    simdjson::dom::element e;
    if (spec[key].get(e) != simdjson::SUCCESS || e.is_null()) return Ok();
    if (e.get(*dst) != simdjson::SUCCESS) {
      return Fail(Error::InvalidArgument(std::string("Lease spec.") + key + " is not an integer"));
    }
    return Ok();
  };
  LeaseRecord& r = out.record;
  for (auto result : {text("holderIdentity", &r.holder_identity), text("acquireTime", &r.acquire_time),
                      text("renewTime", &r.renew_time),
                      number("leaseDurationSeconds", &r.lease_duration_seconds),
                      number("leaseTransitions", &r.lease_transitions)}) {
    if (!result) return Fail(result.error());
  }
  return out;
}

std::string EncodeLease(std::string_view namespace_name, std::string_view name,
                        std::string_view resource_version, const LeaseRecord& record) {
  JsonWriter w;
  w.BeginObject().Field("apiVersion", "coordination.k8s.io/v1").Field("kind", "Lease");
  w.Key("metadata").BeginObject().Field("name", name).Field("namespace", namespace_name);
  if (!resource_version.empty()) w.Field("resourceVersion", resource_version);
  w.EndObject();
  w.Key("spec").BeginObject();
  w.Field("holderIdentity", record.holder_identity);
  w.Field("leaseDurationSeconds", record.lease_duration_seconds);
  if (!record.acquire_time.empty()) w.Field("acquireTime", record.acquire_time);
  if (!record.renew_time.empty()) w.Field("renewTime", record.renew_time);
  w.Field("leaseTransitions", record.lease_transitions);
  w.EndObject().EndObject();
  return w.Take();
}

LeaderElector::LeaderElector(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                             LeaderElectorOptions options, Callback on_started, Callback on_stopped)
    : loop_(loop),
      client_(client),
      clock_(clock),
      options_(std::move(options)),
      on_started_(std::move(on_started)),
      on_stopped_(std::move(on_stopped)),
      timer_(new uv_timer_t),
      deadline_timer_(new uv_timer_t),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
  uv_timer_init(loop_, timer_);
  uv_timer_init(loop_, deadline_timer_);
  timer_->data = this;
  deadline_timer_->data = this;
}

LeaderElector::~LeaderElector() {
  // Close must have run; the timers are freed in their close callbacks.
}

std::string LeaderElector::Path() const {
  return "/apis/coordination.k8s.io/v1/namespaces/" + options_.namespace_name + "/leases/" +
         options_.name;
}

int64_t LeaderElector::RequestTimeoutMs() const {
  // A hung request must not outlive the renew deadline by much: the deadline timer
  // stops the leader anyway, this only frees the slot for the next attempt.
  return std::max<int64_t>(options_.retry_period_ms, options_.renew_deadline_ms / 2);
}

int64_t LeaderElector::NowMono() {
  uv_update_time(loop_);
  return static_cast<int64_t>(uv_now(loop_));
}

void LeaderElector::Start() {
  if (started_ || closing_) return;
  started_ = true;
  Schedule(0);
}

void LeaderElector::Schedule(int64_t delay_ms) {
  if (closing_) return;
  uv_timer_start(timer_, &LeaderElector::OnTimer, static_cast<uint64_t>(std::max<int64_t>(0, delay_ms)), 0);
}

void LeaderElector::OnTimer(uv_timer_t* t) { static_cast<LeaderElector*>(t->data)->Tick(); }

void LeaderElector::OnDeadline(uv_timer_t* t) {
  auto* self = static_cast<LeaderElector*>(t->data);
  if (self->leading_) {
    self->StopLeading("no renewal succeeded within the renew deadline of " +
                      std::to_string(self->options_.renew_deadline_ms) + " ms");
  }
}

void LeaderElector::Tick() {
  if (closing_ || in_flight_ != 0) return;
  // A leader renews from what it last wrote (one request per period); anyone else reads.
  if (leading_ && have_lease_) {
    TryWrite(false);
  } else {
    Read();
  }
}

void LeaderElector::Read() {
  ++stats_.reads;
  in_flight_ = client_->Request("GET", Path(), "", "", RequestTimeoutMs(),
                                [this](KubeResult<KubeResponse> r) {
                                  in_flight_ = 0;
                                  OnRead(std::move(r));
                                });
}

void LeaderElector::OnRead(KubeResult<KubeResponse> r) {
  const int64_t jittered =
      options_.retry_period_ms +
      static_cast<int64_t>(std::uniform_int_distribution<int64_t>(0, options_.retry_period_ms / 5)(rng_));
  if (!r) {
    if (r.error().http_status == 404) {
      have_lease_ = false;
      TryWrite(true);
      return;
    }
    ++stats_.errors;
    LogDebug("leader election: reading Lease " + options_.name + ": " + r.error().message);
    Schedule(jittered);
    return;
  }
  auto lease = DecodeLease(r->body);
  if (!lease) {
    ++stats_.errors;
    LogWarn("leader election: " + lease.error().message);
    Schedule(jittered);
    return;
  }
  Observe(*lease);
  const std::string& holder = observed_.holder_identity;
  const int64_t duration_ms = observed_.lease_duration_seconds * 1000;
  if (!holder.empty() && holder != options_.identity &&
      observed_at_mono_ + duration_ms > NowMono()) {
    if (leading_) StopLeading("the Lease is held by " + holder);
    Schedule(jittered);
    return;
  }
  TryWrite(false);
}

void LeaderElector::Observe(const DecodedLease& lease) {
  if (!have_lease_ || lease.resource_version != observed_rv_ || !(lease.record == observed_)) {
    observed_rv_ = lease.resource_version;
    observed_ = lease.record;
    observed_at_mono_ = NowMono();
  }
  have_lease_ = true;
}

void LeaderElector::TryWrite(bool create) {
  const int64_t now_ms = clock_->NowMs();
  LeaseRecord next = create ? LeaseRecord{} : observed_;
  if (create || next.holder_identity != options_.identity) {
    next.acquire_time = FormatMicroTime(now_ms);
    if (!create) ++next.lease_transitions;
  }
  next.holder_identity = options_.identity;
  next.lease_duration_seconds = (options_.lease_duration_ms + 999) / 1000;
  next.renew_time = FormatMicroTime(now_ms);
  const int64_t sent = NowMono();
  ++stats_.writes;
  std::string body =
      EncodeLease(options_.namespace_name, options_.name, create ? "" : observed_rv_, next);
  auto cb = [this, sent](KubeResult<KubeResponse> r) {
    in_flight_ = 0;
    OnWritten(sent, std::move(r));
  };
  if (create) {
    in_flight_ = client_->Request("POST",
                                  "/apis/coordination.k8s.io/v1/namespaces/" +
                                      options_.namespace_name + "/leases",
                                  std::move(body), "application/json", RequestTimeoutMs(), cb);
  } else {
    in_flight_ = client_->Request("PUT", Path(), std::move(body), "application/json",
                                  RequestTimeoutMs(), cb);
  }
}

void LeaderElector::OnWritten(int64_t sent_mono, KubeResult<KubeResponse> r) {
  if (!r) {
    if (r.error().http_status == 409 || r.error().http_status == 404) {
      // Someone else wrote first (or the Lease vanished): re-read at once.
      ++stats_.conflicts;
      have_lease_ = false;
      Schedule(0);
      return;
    }
    ++stats_.errors;
    LogDebug("leader election: writing Lease " + options_.name + ": " + r.error().message);
    // A leader keeps trying every retry period until the deadline timer stops it.
    Schedule(options_.retry_period_ms);
    return;
  }
  auto lease = DecodeLease(r->body);
  if (!lease) {
    ++stats_.errors;
    Schedule(options_.retry_period_ms);
    return;
  }
  Observe(*lease);
  // The renew deadline counts from when this successful write was sent.
  ArmDeadline(sent_mono);
  if (!leading_) StartLeading();
  Schedule(options_.retry_period_ms);
}

void LeaderElector::ArmDeadline(int64_t sent_mono) {
  int64_t due = sent_mono + options_.renew_deadline_ms - NowMono();
  uv_timer_start(deadline_timer_, &LeaderElector::OnDeadline,
                 static_cast<uint64_t>(std::max<int64_t>(0, due)), 0);
}

void LeaderElector::StartLeading() {
  leading_ = true;
  ++stats_.acquisitions;
  LogInfo("leader election: " + options_.identity + " now leads (Lease " +
          options_.namespace_name + "/" + options_.name + ")");
  if (on_started_) on_started_();
}

void LeaderElector::StopLeading(std::string_view why) {
  if (!leading_) return;
  leading_ = false;
  ++stats_.losses;
  uv_timer_stop(deadline_timer_);
  LogWarn("leader election: " + options_.identity + " stops leading: " + std::string(why));
  if (on_stopped_) on_stopped_();
}

void LeaderElector::Close(bool release, std::function<void()> done) {
  if (closing_) return;
  const bool was_leading = leading_;
  StopLeading("shutting down");
  closing_ = true;
  close_done_ = std::move(done);
  uv_timer_stop(timer_);
  uv_timer_stop(deadline_timer_);
  if (in_flight_ != 0) {
    client_->Cancel(in_flight_);
    in_flight_ = 0;
  }
  if (!release || !was_leading || !have_lease_ || observed_.holder_identity != options_.identity) {
    CloseTimers();
    return;
  }
  // Release (client-go's ReleaseOnCancel): empty holder, 1 s duration, same transitions.
  LeaseRecord next = observed_;
  const int64_t now_ms = clock_->NowMs();
  next.holder_identity.clear();
  next.lease_duration_seconds = 1;
  next.acquire_time = FormatMicroTime(now_ms);
  next.renew_time = FormatMicroTime(now_ms);
  ++stats_.writes;
  in_flight_ = client_->Request(
      "PUT", Path(), EncodeLease(options_.namespace_name, options_.name, observed_rv_, next),
      "application/json", RequestTimeoutMs(), [this](KubeResult<KubeResponse> r) {
        in_flight_ = 0;
        if (!r) LogWarn("leader election: releasing the Lease: " + r.error().message);
        CloseTimers();
      });
}

void LeaderElector::CloseTimers() {
  auto closed = [](uv_handle_t* h) {
    auto* self = static_cast<LeaderElector*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
    if (--self->open_timers_ == 0 && self->close_done_) {
      auto done = std::move(self->close_done_);
      done();
    }
  };
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(deadline_timer_), closed);
}

}  // namespace sublease
