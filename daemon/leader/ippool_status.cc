#include "daemon/leader/ippool_status.h"

#include <optional>
#include <utility>

#include "common/log.h"
#include "daemon/leader/leader_elector.h"  // FormatTime
#include "sync/ipblock.h"
#include "sync/uv_timer.h"

namespace sublease {

SubnetStatusValue DesiredPoolStatus(const ResolvedPool& pool, const std::vector<IpAddr>& allocated,
                                    const std::vector<SubnetCondition>& previous,
                                    const std::string& now) {
  SubnetStatusValue s;
  for (Family f : {Family::kV4, Family::kV6}) {
    IpRangeList used(f);
    for (const IpAddr& a : allocated) {
      if (a.family() == f && pool.in_cidr.of(f).Contains(a)) used.Add(a);
    }
    IpRangeList available = pool.ready ? pool.usable.of(f).Subtract(used) : IpRangeList(f);
    FamilyUsage& u = f == Family::kV4 ? s.v4 : s.v6;
    u = FamilyUsage{used.Count(), available.Count(), used.ToString(), available.ToString()};
  }
  s.conditions.push_back(Condition("Ready", pool.ready, pool.reason, pool.message, previous, now));
  return s;
}

IpPoolStatusWriter::IpPoolStatusWriter(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                                       const ClusterView* view, IpPoolStatusWriterOptions options)
    : loop_(loop),
      client_(client),
      clock_(clock),
      view_(view),
      options_(options),
      timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

IpPoolStatusWriter::~IpPoolStatusWriter() = default;  // the timer is freed by Close

void IpPoolStatusWriter::PoolUpserted(const KubeObject& object) {
  pools_[object.name].raw = object.raw;
  if (auto spec = DecodeIpPool(object.raw)) {
    specs_[object.name] = std::move(*spec);
    unreadable_.erase(object.name);
  } else {
    specs_.erase(object.name);
    unreadable_[object.name] = spec.error().message;
  }
  MarkAllDirty();  // an overlap it causes or ends changes others' verdicts
}

void IpPoolStatusWriter::PoolDeleted(const KubeObject& object) {
  auto it = pools_.find(object.name);
  if (it != pools_.end() && it->second.in_flight != 0) client_->Cancel(it->second.in_flight);
  pools_.erase(object.name);
  specs_.erase(object.name);
  unreadable_.erase(object.name);
  MarkAllDirty();
}

void IpPoolStatusWriter::SubnetUpserted(const KubeObject& object) {
  auto spec = DecodeSubnet(object.raw);
  if (!spec) {
    subnets_.erase(object.name);
  } else {
    auto it = subnets_.find(object.name);
    if (it != subnets_.end() && it->second == *spec) return;  // a status write of its own
    subnets_[object.name] = std::move(*spec);
  }
  if (!pools_.empty()) MarkAllDirty();
}

void IpPoolStatusWriter::SubnetDeleted(const KubeObject& object) {
  if (subnets_.erase(object.name) > 0 && !pools_.empty()) MarkAllDirty();
}

void IpPoolStatusWriter::BlockChanged(const std::string& subnet) {
  for (const auto& [name, spec] : specs_) {
    if (spec.subnet == subnet) return MarkAllDirty();
  }
}

void IpPoolStatusWriter::Synced() {
  synced_ = true;
  MarkAllDirty();
}

int64_t IpPoolStatusWriter::Interval() const {
  return options_.interval_ms ? options_.interval_ms() : options_.debounce_ms;
}

void IpPoolStatusWriter::MarkAllDirty() {
  dirty_ = true;
  Arm(Interval());
}

void IpPoolStatusWriter::Arm(int64_t delay_ms) {
  if (stopped_ || !synced_ || !dirty_ || uv_is_active(reinterpret_cast<uv_handle_t*>(timer_)))
    return;
  uv_timer_start(timer_, &IpPoolStatusWriter::OnTimer, static_cast<uint64_t>(delay_ms), 0);
}

void IpPoolStatusWriter::OnTimer(uv_timer_t* t) {
  static_cast<IpPoolStatusWriter*>(t->data)->Flush();
}

void IpPoolStatusWriter::Flush() {
  if (stopped_ || !synced_) return;
  dirty_ = false;
  std::map<std::string, std::optional<Subnet>> normal;
  std::map<std::string, const Subnet*> subnets;
  for (const auto& [name, spec] : subnets_) {
    if (auto s = NormalizeSubnet(spec)) {
      normal[name] = std::move(*s);
      subnets[name] = &*normal[name];
    }
  }
  std::vector<IpPoolSpec> specs;
  std::set<std::string> pool_subnets;
  for (const auto& [name, spec] : specs_) {
    specs.push_back(spec);
    pool_subnets.insert(spec.subnet);
  }
  std::map<std::string, ResolvedPool> resolved = ResolvePools(specs, subnets);
  for (const auto& [name, why] : unreadable_) {
    ResolvedPool& r = resolved[name];
    r.spec.name = name;
    r.reason = "UpdateIPAMFailed";
    r.message = "IPPool " + name + " cannot be read: " + why;
  }
  // The allocated addresses of the pools' Subnets, from every block the leader sees.
  std::map<std::string, std::vector<IpAddr>> allocated;
  for (const auto& [block_name, block] : view_->blocks) {
    if (!pool_subnets.count(block.subnet)) continue;
    auto& out = allocated[block.subnet];
    for (const auto& [offset, a] : block.allocations) {
      if (!a.spare) out.push_back(block.AddressAt(offset));
    }
  }
  std::string now = FormatTime(clock_->NowMs());
  for (auto& [name, entry] : pools_) {
    auto pool = resolved.find(name);
    if (pool == resolved.end()) continue;
    if (entry.in_flight != 0) {
      dirty_ = true;  // after the answer
      continue;
    }
    ++stats_.computed;
    auto current = ParseSubnetStatus(entry.raw, StatusKeys::kIpPool);
    SubnetStatusValue was = current ? *current : SubnetStatusValue{};
    SubnetStatusValue want =
        DesiredPoolStatus(pool->second, allocated[pool->second.spec.subnet], was.conditions, now);
    if (SameStatus(want, was)) {
      ++stats_.unchanged;
      continue;
    }
    std::string pool_name = name;
    entry.in_flight = client_->Request(
        "PATCH", "/apis/kubeovn.io/v1/ippools/" + name + "/status",
        EncodeStatusPatch(want, StatusKeys::kIpPool), "application/merge-patch+json",
        options_.request_timeout_ms, [this, pool_name](KubeResult<KubeResponse> r) {
          auto it = pools_.find(pool_name);
          if (it == pools_.end()) return;
          it->second.in_flight = 0;
          if (!r) {
            ++stats_.errors;
            if (r.error().http_status != 404) {
              LogWarn("writing the status of IPPool " + pool_name + ": " + r.error().message);
              dirty_ = true;
              Arm(options_.retry_ms);
            }
            return;
          }
          ++stats_.written;
          it->second.raw = r->body;
          Arm(Interval());
        });
  }
}

void IpPoolStatusWriter::Stop() {
  stopped_ = true;
  uv_timer_stop(timer_);
  for (auto& [name, e] : pools_) {
    if (e.in_flight != 0) client_->Cancel(e.in_flight);
    e.in_flight = 0;
  }
}

void IpPoolStatusWriter::Close(std::function<void()> done) {
  Stop();
  CloseTimerThen(timer_, std::move(done));
}

}  // namespace sublease
