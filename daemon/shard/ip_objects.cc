#include "daemon/shard/ip_objects.h"

#include <utility>
#include <vector>

#include "common/json_writer.h"
#include "common/log.h"
#include "sync/ip_reservation.h"
#include "sync/kube_object.h"
#include "sync/uv_timer.h"

namespace sublease {
namespace {

constexpr std::string_view kIps = kIpObjectCollection;

}  // namespace

std::string IpObjectName(const std::string& pod, const std::string& pod_namespace,
                         const std::string& provider, const std::string& ifname) {
  std::string name = pod + "." + pod_namespace + "." + provider;
  if (!ifname.empty()) name += "." + ifname;
  return name;
}

std::string EncodeIpObject(const IpObject& o, const std::string& resource_version) {
  std::string both = o.v4.empty() ? o.v6 : (o.v6.empty() ? o.v4 : o.v4 + "," + o.v6);
  JsonWriter w;
  w.BeginObject().Field("apiVersion", "kubeovn.io/v1").Field("kind", "IP");
  w.Key("metadata").BeginObject().Field("name", o.name);
  if (!resource_version.empty()) w.Field("resourceVersion", resource_version);
  // Kube-OVN's labels (controller/ip.go createOrUpdateIPCR).
  w.Key("labels")
      .BeginObject()
      .Field("ovn.kubernetes.io/subnet", o.subnet)
      .Field("ovn.kubernetes.io/node-name", o.node)
      .Field(o.subnet, "")
      .Field("ovn.kubernetes.io/ip_reserved", "false")
      .EndObject();
  w.EndObject();
  w.Key("spec")
      .BeginObject()
      .Field("podName", o.pod_name)
      .Field("namespace", o.namespace_name)
      .Field("subnet", o.subnet)
      .Field("nodeName", o.node)
      .Field("ipAddress", both)
      .Field("v4IpAddress", o.v4)
      .Field("v6IpAddress", o.v6)
      .Field("macAddress", o.mac)
      .Field("podType", o.pod_type);
  for (const char* key : {"attachSubnets", "attachIps", "attachMacs"})
    w.Key(key).BeginArray().EndArray();
  w.EndObject().EndObject();
  return w.Take();
}

IpObjectWriter::IpObjectWriter(uv_loop_t* loop, KubeClient* client, IpObjectWriterOptions options)
    : loop_(loop), client_(client), options_(options), timer_(new uv_timer_t) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

IpObjectWriter::~IpObjectWriter() = default;  // the timer is freed by Close

void IpObjectWriter::Put(IpObject object) {
  std::string name = object.name;
  queue_[name] = std::move(object);
  Arm(options_.flush_delay_ms);
}

void IpObjectWriter::Remove(const std::string& name) {
  auto it = queue_.find(name);
  if (it != queue_.end() && it->second && !written_.count(name) && !in_flight_.count(name)) {
    // Created and gone before anything was sent: nothing to write.
    queue_.erase(it);
    ++stats_.cancelled;
    return;
  }
  queue_[name] = std::nullopt;
  Arm(options_.flush_delay_ms);
}

void IpObjectWriter::Arm(int64_t delay_ms) {
  if (closed_ || queue_.empty() || uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) return;
  uv_timer_start(
      timer_, [](uv_timer_t* t) { static_cast<IpObjectWriter*>(t->data)->Flush(); },
      static_cast<uint64_t>(delay_ms), 0);
}

void IpObjectWriter::Flush() {
  if (closed_) return;
  std::vector<std::string> names;
  for (const auto& [name, want] : queue_) {
    if (static_cast<int>(in_flight_.size() + names.size()) >= options_.max_in_flight) break;
    if (!in_flight_.count(name)) names.push_back(name);
  }
  for (const std::string& name : names) {
    auto it = queue_.find(name);
    std::optional<IpObject> want = std::move(it->second);
    queue_.erase(it);
    Send(name, std::move(want));
  }
}

void IpObjectWriter::Send(const std::string& name, std::optional<IpObject> want) {
  in_flight_.insert(name);
  if (!want) {
    if (!written_.count(name)) return CheckThenDelete(name);
    return Delete(name);
  }
  ++stats_.creates;
  client_->Create(kIps, EncodeIpObject(*want),
                  [this, name, want](KubeResult<KubeResponse> r) mutable {
                    if (closed_) return;
                    if (!r && r.error().IsAlreadyExists()) return Update(name, std::move(*want));
                    if (!r && r.error().http_status == 404) {
                      // No ips.kubeovn.io resource (its CRD is not installed): nothing to
                      // mirror into; said once, and the write is dropped, not retried.
                      if (!missing_resource_logged_) {
                        LogWarn(
                            "the API server has no kubeovn.io/v1 IP resource: IP objects are not "
                            "written (install packaging/kubernetes/crd-ip.yaml, or set "
                            "ip-objects: false)");
                        missing_resource_logged_ = true;
                      }
                      return Done(name, std::nullopt, true);
                    }
                    Done(name, want, r.has_value());
                  });
}

void IpObjectWriter::Delete(const std::string& name) {
  ++stats_.deletes;
  client_->Delete(std::string(kIps) + "/" + name, DeleteOptions{},
                  [this, name](KubeResult<KubeResponse> r) {
                    if (closed_) return;
                    Done(name, std::nullopt, r || r.error().http_status == 404);
                  });
}

// Not written by this writer (a restart came between): a user's reservation of the same
// name is left alone.
void IpObjectWriter::CheckThenDelete(const std::string& name) {
  ++stats_.gets;
  client_->Get(std::string(kIps) + "/" + name, [this, name](KubeResult<KubeResponse> r) {
    if (closed_) return;
    if (!r && r.error().http_status == 404) return Done(name, std::nullopt, true);
    auto object =
        r ? ParseKubeObject(r->body) : Result<KubeObject>(Fail(static_cast<Error>(r.error())));
    if (!object) return Done(name, std::nullopt, false);
    if (IsReservation(*object)) return Done(name, std::nullopt, true);
    Delete(name);
  });
}

// The object exists (adopted from another node, or left over): read it, then replace it,
// unless it is a user's reservation.
void IpObjectWriter::Update(const std::string& name, IpObject want) {
  ++stats_.gets;
  client_->Get(
      std::string(kIps) + "/" + name, [this, name, want](KubeResult<KubeResponse> r) mutable {
        if (closed_) return;
        auto object =
            r ? ParseKubeObject(r->body) : Result<KubeObject>(Fail(static_cast<Error>(r.error())));
        if (!object) return Done(name, want, false);
        if (IsReservation(*object)) {
          // A user's reservation (docs/kubeovn-compat.md): the leader fills it in, and it
          // outlives this allocation; it is not overwritten here. Only the node its pod
          // runs on is written in (`kubectl get ips` shows it), as Kube-OVN does.
          auto reservation = DecodeIpReservation(object->raw);
          if (!reservation || reservation->node_name == want.node) {
            return Done(name, std::nullopt, true);
          }
          return PatchNode(name, std::move(want));
        }
        ++stats_.updates;
        client_->Update(std::string(kIps) + "/" + name,
                        EncodeIpObject(want, object->resource_version),
                        [this, name, want](KubeResult<KubeResponse> u) {
                          if (closed_) return;
                          Done(name, want, u.has_value());
                        });
      });
}

void IpObjectWriter::PatchNode(const std::string& name, IpObject want) {
  ++stats_.updates;
  JsonWriter w;
  w.BeginObject();
  w.Key("metadata").BeginObject().Key("labels").BeginObject();
  w.Field("ovn.kubernetes.io/node-name", want.node).EndObject().EndObject();
  w.Key("spec").BeginObject().Field("nodeName", want.node).EndObject();
  w.EndObject();
  client_->MergePatch(std::string(kIps) + "/" + name, w.Take(),
                      [this, name, want](KubeResult<KubeResponse> r) {
                        if (closed_) return;
                        // Written, or the reservation was deleted meanwhile (404): done, and
                        // never this writer's object. Else tried again (create, read, patch).
                        if (r || r.error().http_status == 404) return Done(name, std::nullopt, true);
                        Done(name, want, false);
                      });
}

void IpObjectWriter::Done(const std::string& name, std::optional<IpObject> want, bool ok) {
  if (closed_) return;
  in_flight_.erase(name);
  if (ok) {
    if (want) {
      written_.insert(name);
    } else {
      written_.erase(name);
    }
  } else {
    ++stats_.errors;
    LogWarn(std::string("writing IP object ") + name + " (" + (want ? "create" : "delete") +
            ") failed; will retry");
    queue_.emplace(name, std::move(want));  // unless something newer is queued
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) {
      uv_timer_start(
          timer_, [](uv_timer_t* t) { static_cast<IpObjectWriter*>(t->data)->Flush(); },
          static_cast<uint64_t>(options_.retry_ms), 0);
    }
    return;
  }
  Arm(0);
}

void IpObjectWriter::Close(std::function<void()> done) {
  closed_ = true;
  CloseTimerThen(timer_, std::move(done));
}

}  // namespace sublease
