#include "daemon/leader/reservations.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/log.h"
#include "sync/uv_timer.h"

namespace sublease {

ReservationKeeper::ReservationKeeper(uv_loop_t* loop, KubeClient* client, ClusterView* view,
                                     EventRecorder* events, ReserveFn reserve,
                                     ReservationKeeperOptions options)
    : loop_(loop),
      client_(client),
      view_(view),
      events_(events),
      reserve_(std::move(reserve)),
      options_(options),
      timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  if (options_.max_retry_ms < options_.retry_ms) options_.max_retry_ms = options_.retry_ms;
  const auto every = static_cast<uint64_t>(options_.retry_ms);
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<ReservationKeeper*>(t->data);
        // (+1/4 of a period: a try due a hair after this tick goes now, not a period late.)
        const uint64_t now = uv_now(self->loop_) + static_cast<uint64_t>(self->options_.retry_ms / 4);
        std::vector<std::string> due;
        for (auto it = self->failed_.begin(); it != self->failed_.end();) {
          if (it->second <= now) {
            due.push_back(it->first);
            it = self->failed_.erase(it);
          } else {
            ++it;
          }
        }
        for (const std::string& name : due) self->Reconcile(name);
      },
      every, every);
}

ReservationKeeper::~ReservationKeeper() = default;  // the timer is freed by Close

void ReservationKeeper::Upserted(const KubeObject& object) {
  if (!IsReservation(object)) return Deleted(object);
  waits_.erase(object.name);  // changed: tried at once, and from the shortest wait again
  objects_[object.name] = object;
  view_->reserved_ips.insert(object.name);
  Reconcile(object.name);
}

void ReservationKeeper::Deleted(const KubeObject& object) {
  // Its allocation stays until the garbage collection sees the object gone (and its pod,
  // if one uses the address: that pod keeps it until it is gone too).
  objects_.erase(object.name);
  view_->reserved_ips.erase(object.name);
  reserved_.erase(object.name);
  failed_.erase(object.name);
  waits_.erase(object.name);
}

int64_t ReservationKeeper::RetryLater(const std::string& name) {
  auto [wait, first] = waits_.emplace(name, options_.retry_ms);
  if (!first) wait->second = std::min(wait->second * 2, options_.max_retry_ms);
  failed_[name] = uv_now(loop_) + static_cast<uint64_t>(wait->second);
  return wait->second;
}

void ReservationKeeper::Synced() {
  synced_ = true;
  ReconcileAll();
}

void ReservationKeeper::BlocksChanged() { ReconcileAll(); }

void ReservationKeeper::ReconcileAll() {
  for (const auto& [name, object] : objects_) Reconcile(name);
}

std::vector<IpAddr> ReservationKeeper::Held(const std::string& name) const {
  std::vector<IpAddr> held;
  for (const auto& [block_name, block] : view_->blocks) {
    for (const auto& [offset, a] : block.allocations) {
      if (a.reserved_ip == name) held.push_back(block.AddressAt(offset));
    }
  }
  return held;
}

void ReservationKeeper::Reconcile(const std::string& name) {
  if (stopped_ || !synced_ || !view_->blocks_synced || reserving_.count(name)) return;
  auto it = objects_.find(name);
  if (it == objects_.end()) return;
  const KubeObject& object = it->second;
  auto r = DecodeIpReservation(object.raw);
  if (!r) return Refuse(object, r.error());
  std::vector<IpAddr> held = Held(name);
  if (held.empty()) {
    if (auto made = reserved_.find(name); made != reserved_.end()) held = made->second;
  } else {
    reserved_.erase(name);  // the view shows it now
  }
  if (!held.empty()) {
    for (const std::string& wanted : r->addresses()) {
      bool found = false;
      for (const IpAddr& a : held) found = found || a.ToString() == wanted;
      if (!found) {
        return Refuse(object, Error::InvalidArgument(
                                  "IP object " + name + " asks for " + wanted +
                                  ", but its reservation holds " + held.front().ToString() +
                                  "; the address of a reservation cannot change: delete the object "
                                  "and create it again"));
      }
    }
    return Fill(*r, held);  // (success ends the backoff: Fill)
  }
  reserving_.insert(name);
  KubeObject copy = object;
  std::weak_ptr<int> token = life_;
  reserve_(name, r->subnet, r->namespace_name, r->pod_name, r->addresses(),
           [this, token, name, copy](Result<std::vector<IpAddr>> made) {
             if (token.expired() || stopped_) return;
             reserving_.erase(name);
             if (!made) {
               if (made.error().code == Code::kUnavailable) {
                 ++stats_.errors;
                 const int64_t wait = RetryLater(name);
                 LogWarn("reserved IP " + name + ": " + made.error().message + "; trying again in " +
                         std::to_string(wait) + " ms");
                 return;
               }
               return Refuse(copy, made.error());
             }
             ++stats_.reserved;
             std::string list;
             for (const IpAddr& a : *made) list += (list.empty() ? "" : ",") + a.ToString();
             LogInfo("reserved IP " + name + ": " + list + " is reserved in the IPBlocks");
             reserved_[name] = *made;
             Reconcile(name);  // fills the object in
           });
}

void ReservationKeeper::Fill(const IpReservation& r, const std::vector<IpAddr>& held) {
  std::string v4, v6;
  for (const IpAddr& a : held) (a.family() == Family::kV4 ? v4 : v6) = a.ToString();
  if (r.v4 == v4 && r.v6 == v6 && r.labelled) {
    waits_.erase(r.name);  // honoured
    return;
  }
  const std::string name = r.name;
  reserving_.insert(name);
  std::weak_ptr<int> token = life_;
  client_->MergePatch(std::string(kIpObjectCollection) + "/" + name,
                      EncodeReservationFill(r, v4, v6),
                      [this, token, name](KubeResult<KubeResponse> w) {
                        if (token.expired() || stopped_) return;
                        reserving_.erase(name);
                        if (w) {
                          ++stats_.filled;
                          waits_.erase(name);
                          return;  // the watch brings the object back
                        }
                        // 409: changed meanwhile; its event comes. Else try again later.
                        if (w.error().http_status != 409 && w.error().http_status != 404) {
                          ++stats_.errors;
                          const int64_t wait = RetryLater(name);
                          LogWarn("filling in reserved IP " + name + ": " + w.error().message +
                                  "; trying again in " + std::to_string(wait) + " ms");
                        }
                      });
}

void ReservationKeeper::Refuse(const KubeObject& object, const Error& error) {
  ++stats_.refused;
  const int64_t wait = RetryLater(object.name);
  std::string message = error.message + "; no address is reserved";
  LogWarn("reserved IP " + object.name + ": " + message + " (checked again in " + std::to_string(wait) +
          " ms, or when the object changes)");
  std::string_view reason = EventReasonFor(error.code);
  if (reason.empty()) reason = kReasonInvalidRequest;
  events_->ObjectWarning({"kubeovn.io/v1", "IP", "", object.name, object.uid}, reason, message);
}

void ReservationKeeper::Stop() {
  stopped_ = true;
  uv_timer_stop(timer_);
}

void ReservationKeeper::Close(std::function<void()> done) {
  Stop();
  CloseTimerThen(timer_, std::move(done));
}

}  // namespace sublease
