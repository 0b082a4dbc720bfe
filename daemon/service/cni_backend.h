// CniBackend: what serves the CNI API, seen from the HTTP layer. Asynchronous, because
// in cluster mode an ADD is answered only after the API server has the allocation.
//
// Every callback is called exactly once, on the loop thread, possibly before the call
// returns (standalone mode answers at once). StandaloneBackend adapts the synchronous
// CniService; cluster mode has its own backend (daemon/shard/).
#pragma once

#include <functional>

#include "common/result.h"
#include "common/wire.h"
#include "daemon/service/cni_service.h"

namespace sublease {

class CniBackend {
 public:
  using ReplyCallback = std::function<void(Result<CniReply>)>;
  using DoneCallback = std::function<void(Result<void>)>;
  using GcCallback = std::function<void(Result<GcOutcome>)>;

  virtual ~CniBackend() = default;
  virtual void Add(const CniRequest& request, ReplyCallback done) = 0;
  virtual void Del(const CniRequest& request, DoneCallback done) = 0;
  virtual void Check(const CniRequest& request, ReplyCallback done) = 0;
  virtual void Gc(const GcRequest& request, GcCallback done) = 0;
  // Ready to serve ADD (subnets loaded; in cluster mode, informers synced).
  virtual bool Ready() const = 0;
};

// Standalone mode: the CniService answers synchronously.
class StandaloneBackend final : public CniBackend {
 public:
  explicit StandaloneBackend(CniService* service) : service_(service) {}
  void Add(const CniRequest& r, ReplyCallback done) override { done(service_->Add(r)); }
  void Del(const CniRequest& r, DoneCallback done) override { done(service_->Del(r)); }
  void Check(const CniRequest& r, ReplyCallback done) override { done(service_->Check(r)); }
  void Gc(const GcRequest& r, GcCallback done) override { done(service_->Gc(r)); }
  bool Ready() const override { return service_->Ready(); }

 private:
  CniService* service_;
};

}  // namespace sublease
