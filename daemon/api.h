// Api: the daemon's HTTP endpoints, mapping requests to the CNI backend.
//
// Two handlers, for two listeners: the CNI API on the Unix sockets (docs/protocol.md:
// POST /v1/cni/{add,del,check,gc}, GET /v1/cni/status) and the operations endpoints
// on TCP (/healthz, /readyz, /metrics). Every request is counted and timed in the
// metrics registry; errors are counted by kind. Runs on the loop thread.
#pragma once

#include "common/clock.h"
#include "daemon/server/http_server.h"
#include "daemon/server/metrics.h"
#include "daemon/service/cni_backend.h"

namespace sublease {

class Api {
 public:
  // Borrows everything; all must outlive the Api.
  Api(CniBackend* backend, const Allocator* allocator, MetricsRegistry* metrics);

  void ServeCni(const HttpRequest& request, Respond respond);
  void ServeOps(const HttpRequest& request, Respond respond);

 private:
  // Calls `done` exactly once with the response (possibly later, in cluster mode).
  void Dispatch(const HttpRequest& request, const std::string& op,
                std::function<void(HttpResponse)> done);

  CniBackend* backend_;
  const Allocator* allocator_;
  MetricsRegistry* metrics_;
};

}  // namespace sublease
