#include "daemon/leader/status_writer.h"

#include <utility>

#include "common/log.h"
#include "daemon/leader/leader_elector.h"  // FormatTime
#include "daemon/leader/subnet_status.h"
#include "sync/uv_timer.h"

namespace sublease {

SubnetStatusWriter::SubnetStatusWriter(uv_loop_t* loop, KubeClient* client, const Clock* clock,
                                       SubnetStatusWriterOptions options)
    : loop_(loop),
      client_(client),
      clock_(clock),
      options_(options),
      timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

SubnetStatusWriter::~SubnetStatusWriter() = default;  // the timer is freed by Close

void SubnetStatusWriter::SubnetUpserted(const KubeObject& object) {
  SubnetEntry& e = subnets_[object.name];
  auto spec = DecodeSubnet(object.raw);
  SubnetSpec next = spec ? *spec : SubnetSpec{object.name, "", "", "", {}, "", ""};
  if (!(next == e.spec) || e.decoded != spec.has_value()) {
    MarkProvider(e.spec.provider);
    MarkProvider(next.provider);
  }
  e.spec = std::move(next);
  e.decoded = spec.has_value();
  e.raw = object.raw;
  MarkDirty(object.name);  // also verifies a status someone else (or our echo) wrote
}

void SubnetStatusWriter::SubnetDeleted(const KubeObject& object) {
  auto it = subnets_.find(object.name);
  if (it == subnets_.end()) return;
  if (it->second.in_flight != 0) client_->Cancel(it->second.in_flight);
  std::string provider = it->second.spec.provider;
  subnets_.erase(it);
  dirty_.erase(object.name);
  MarkProvider(provider);  // a conflict it caused is over
}

void SubnetStatusWriter::BlockChanged(const std::string& name, const IpBlock* block) {
  auto old = blocks_.find(name);
  if (old != blocks_.end()) {
    auto& counts = allocated_[old->second.subnet];
    for (const IpAddr& a : old->second.addresses) {
      auto it = counts.find(a);
      if (it != counts.end() && --it->second == 0) counts.erase(it);
    }
    MarkDirty(old->second.subnet);
    blocks_.erase(old);
  }
  if (block == nullptr) return;
  BlockEntry entry{block->subnet, {}};
  auto& counts = allocated_[block->subnet];
  for (const auto& [offset, a] : block->allocations) {
    if (a.spare) continue;  // held for the node's next pods: not in use (docs/cluster-protocol.md)
    IpAddr addr = block->AddressAt(offset);
    entry.addresses.push_back(addr);
    ++counts[addr];
  }
  MarkDirty(block->subnet);
  blocks_.emplace(name, std::move(entry));
}

void SubnetStatusWriter::Synced() {
  synced_ = true;
  for (const auto& [name, e] : subnets_) dirty_.insert(name);
  MarkDirty("");
}

void SubnetStatusWriter::MarkProvider(const std::string& provider) {
  if (provider.empty()) return;
  for (const auto& [name, e] : subnets_) {
    if (e.spec.provider == provider) dirty_.insert(name);
  }
  MarkDirty("");
}

void SubnetStatusWriter::MarkDirty(const std::string& subnet) {
  if (stopped_) return;
  if (!subnet.empty() && subnets_.count(subnet)) dirty_.insert(subnet);
  if (!synced_ || dirty_.empty() || uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) return;
  const int64_t interval = options_.interval_ms ? options_.interval_ms() : options_.debounce_ms;
  uv_timer_start(timer_, &SubnetStatusWriter::OnTimer, static_cast<uint64_t>(interval), 0);
}

void SubnetStatusWriter::OnTimer(uv_timer_t* t) { static_cast<SubnetStatusWriter*>(t->data)->Flush(); }

std::vector<IpAddr> SubnetStatusWriter::Allocated(const std::string& subnet) const {
  std::vector<IpAddr> out;
  auto it = allocated_.find(subnet);
  if (it == allocated_.end()) return out;
  out.reserve(it->second.size());
  for (const auto& [a, n] : it->second) out.push_back(a);
  return out;
}

void SubnetStatusWriter::Flush() {
  if (stopped_ || !synced_) return;
  std::set<std::string> dirty = std::move(dirty_);
  dirty_.clear();
  for (const std::string& name : dirty) {
    auto it = subnets_.find(name);
    if (it == subnets_.end()) continue;
    if (it->second.in_flight != 0) {
      dirty_.insert(name);  // after the answer
      continue;
    }
    Write(name);
  }
}

void SubnetStatusWriter::Write(const std::string& name) {
  SubnetEntry& e = subnets_.at(name);
  ++stats_.computed;
  std::vector<SubnetSpec> others;
  if (!e.spec.provider.empty()) {
    for (const auto& [other, o] : subnets_) {
      if (other != name && o.decoded && o.spec.provider == e.spec.provider) others.push_back(o.spec);
    }
  }
  SubnetVerdict verdict;
  std::optional<Subnet> subnet;
  if (e.decoded) {
    verdict = ValidateSubnet(e.spec, others);
    if (auto s = NormalizeSubnet(e.spec)) subnet = std::move(*s);
  } else {
    verdict = {false, "InvalidSpec",
               "Subnet " + name + " cannot be read (a field has the wrong type); it allocates nothing",
               {}};
  }
  auto current = ParseSubnetStatus(e.raw);
  SubnetStatusValue now_status = current ? *current : SubnetStatusValue{};
  SubnetStatusValue desired = DesiredStatus(verdict, subnet, Allocated(name),
                                            now_status.conditions, FormatTime(clock_->NowMs()));
  if (SameStatus(desired, now_status)) {
    ++stats_.unchanged;
    return;
  }
  std::string path = "/apis/kubeovn.io/v1/subnets/" + name + "/status";
  e.in_flight = client_->Request(
      "PATCH", path, EncodeStatusPatch(desired), "application/merge-patch+json",
      options_.request_timeout_ms, [this, name](KubeResult<KubeResponse> r) {
        auto it = subnets_.find(name);
        if (it == subnets_.end()) return;
        it->second.in_flight = 0;
        if (!r) {
          ++stats_.errors;
          if (r.error().http_status != 404) {
            LogWarn("writing the status of Subnet " + name + ": " + r.error().message);
            dirty_.insert(name);
            uv_timer_start(timer_, &SubnetStatusWriter::OnTimer,
                           static_cast<uint64_t>(options_.retry_ms), 0);
          }
          return;
        }
        ++stats_.written;
        it->second.raw = r->body;  // compare later changes with what we wrote
        if (dirty_.count(name)) MarkDirty("");
      });
}

void SubnetStatusWriter::Stop() {
  stopped_ = true;
  uv_timer_stop(timer_);
  for (auto& [name, e] : subnets_) {
    if (e.in_flight != 0) client_->Cancel(e.in_flight);
    e.in_flight = 0;
  }
}

void SubnetStatusWriter::Close(std::function<void()> done) {
  Stop();
  CloseTimerThen(timer_, std::move(done));
}

}  // namespace sublease
