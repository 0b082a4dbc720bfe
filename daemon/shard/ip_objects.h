// IpObjectWriter: mirrors this node's allocations as Kube-OVN `IP` objects
// (ips.kubeovn.io, `kubectl get ips`), for people and tools that read them.
//
// The IPBlocks stay the source of truth: nothing is decided from an IP object, and the
// CNI ADD never waits for one. Put/Remove only queue; a timer sends the queue at most
// `max_in_flight` requests at a time. A Put and a Remove of the same object that meet in
// the queue cancel out (a pod that came and went costs nothing). One write per
// allocation (a create) and one per release (a delete); an object that already exists (a
// StatefulSet pod adopted from another node, or one left over) costs a GET and an update.
// A failed write is retried after `retry_ms`; a delete answered 404 is done. An object
// that is a user's reservation (labelled ovn.kubernetes.io/ip_reserved=true, or without
// that label: sync/ip_reservation.h) is never overwritten, nor deleted unless this writer
// wrote it. Objects are
// named as Kube-OVN names them for an attachment: `<pod>.<namespace>.<provider>`, plus
// `.<interface>` in per-interface mode. Loop thread only; Close before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "sync/kube_client.h"

namespace sublease {

struct IpObject {
  std::string name;
  std::string pod_name, namespace_name, subnet, node;
  std::string v4, v6, mac;
  std::string pod_type;  // "" or "StatefulSet"
};

// `<pod>.<namespace>.<provider>` (+ `.<ifname>` when `ifname` is not empty).
std::string IpObjectName(const std::string& pod, const std::string& pod_namespace,
                         const std::string& provider, const std::string& ifname);
// The object's JSON (labels and spec as Kube-OVN's controller writes them);
// `resource_version` for an update.
std::string EncodeIpObject(const IpObject& object, const std::string& resource_version = "");

struct IpObjectWriterOptions {
  int max_in_flight = 4;
  int64_t flush_delay_ms = 100;  // lets a burst's writes and cancellations meet
  int64_t retry_ms = 5'000;
};

struct IpObjectWriterStats {
  uint64_t creates = 0, updates = 0, deletes = 0, gets = 0, errors = 0, cancelled = 0;
};

class IpObjectWriter {
 public:
  IpObjectWriter(uv_loop_t* loop, KubeClient* client, IpObjectWriterOptions options);
  ~IpObjectWriter();
  IpObjectWriter(const IpObjectWriter&) = delete;
  IpObjectWriter& operator=(const IpObjectWriter&) = delete;

  void Put(IpObject object);
  void Remove(const std::string& name);
  void Close(std::function<void()> done);
  const IpObjectWriterStats& stats() const { return stats_; }
  size_t queued() const { return queue_.size(); }

 private:
  void Arm(int64_t delay_ms);
  void Flush();
  void Send(const std::string& name, std::optional<IpObject> want);
  void Update(const std::string& name, IpObject want);
  // A reservation taken by its pod: spec.nodeName (and the node-name label) only.
  void PatchNode(const std::string& name, IpObject want);
  void Delete(const std::string& name);
  void CheckThenDelete(const std::string& name);
  void Done(const std::string& name, std::optional<IpObject> want, bool ok);

  uv_loop_t* loop_;
  KubeClient* client_;
  IpObjectWriterOptions options_;
  uv_timer_t* timer_;
  bool closed_ = false;
  bool missing_resource_logged_ = false;
  // What each object should become: the object, or nullopt = deleted. Sent in name order.
  std::map<std::string, std::optional<IpObject>> queue_;
  std::set<std::string> in_flight_;
  // Objects this writer created or confirmed, not yet deleted: a Remove of one never
  // created here (and not in flight) needs no delete if a Put is pending for it.
  std::set<std::string> written_;
  IpObjectWriterStats stats_;
};

}  // namespace sublease
