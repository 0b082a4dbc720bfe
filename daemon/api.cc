#include "daemon/api.h"

#include <chrono>

#include "common/json_writer.h"
#include "common/log.h"
#include "common/wire.h"

namespace sublease {
namespace {

HttpResponse JsonOk(std::string body) { return {200, "application/json", std::move(body)}; }

HttpResponse ErrorResponse(const Error& e) {
  return {HttpStatusFor(e.code), "application/json", EncodeWireError(e)};
}

}  // namespace

Api::Api(CniBackend* backend, const Allocator* allocator, MetricsRegistry* metrics)
    : backend_(backend), allocator_(allocator), metrics_(metrics) {
  metrics_->SetGaugeCallback(
      "sublease_leases", "Live leases per subnet and family", [this] {
        MetricsRegistry::GaugeSamples samples;
        for (const auto& name : allocator_->SubnetNames()) {
          auto usage = allocator_->Usage(name);
          if (!usage) continue;
          const Subnet* subnet = allocator_->FindSubnet(name);
          if (subnet && subnet->v4) {
            samples.push_back({{{"subnet", name}, {"family", "ipv4"}}, static_cast<double>(usage->v4_using)});
          }
          if (subnet && subnet->v6) {
            samples.push_back({{{"subnet", name}, {"family", "ipv6"}}, static_cast<double>(usage->v6_using)});
          }
        }
        return samples;
      });
  metrics_->SetGaugeCallback(
      "sublease_available_addresses", "Free addresses per subnet and family", [this] {
        MetricsRegistry::GaugeSamples samples;
        for (const auto& name : allocator_->SubnetNames()) {
          auto usage = allocator_->Usage(name);
          const Subnet* subnet = allocator_->FindSubnet(name);
          if (!usage || !subnet) continue;
          if (subnet->v4) samples.push_back({{{"subnet", name}, {"family", "ipv4"}}, static_cast<double>(usage->v4_available)});
          if (subnet->v6) samples.push_back({{{"subnet", name}, {"family", "ipv6"}}, static_cast<double>(usage->v6_available)});
        }
        return samples;
      });
}

namespace {

// The operation name for metrics: "add", "del", "check", "gc", "status" or "unknown".
std::string OperationOf(const std::string& path) {
  static const char* const kOps[] = {"add", "del", "check", "gc", "status"};
  if (path.rfind("/v1/cni/", 0) == 0) {
    for (const char* op : kOps) {
      if (path.compare(8, std::string::npos, op) == 0) return op;
    }
  }
  return "unknown";
}

HttpResponse ReplyResponse(const Result<CniReply>& reply) {
  return reply ? JsonOk(EncodeCniReply(*reply)) : ErrorResponse(reply.error());
}

}  // namespace

void Api::Dispatch(const HttpRequest& request, const std::string& op,
                   std::function<void(HttpResponse)> done) {
  const std::string& path = request.path;
  if (op == "unknown") return done(ErrorResponse(Error::NotFound("no endpoint " + path + "; see docs/protocol.md")));
  if (op == "status") {
    if (request.method != "GET") return done(ErrorResponse(Error::InvalidArgument("use GET for " + path)));
    if (!backend_->Ready()) return done(ErrorResponse(Error::Unavailable("subleased is starting")));
    return done(JsonOk(R"({"ready":true})"));
  }
  if (request.method != "POST") return done(ErrorResponse(Error::InvalidArgument("use POST for " + path)));
  if (op == "gc") {
    auto gc = DecodeGcRequest(request.body);
    if (!gc) return done(ErrorResponse(gc.error()));
    return backend_->Gc(*gc, [done](Result<GcOutcome> outcome) {
      if (!outcome) return done(ErrorResponse(outcome.error()));
      JsonWriter w;
      w.BeginObject().Key("released").Uint(outcome->released).Key("kept").Uint(outcome->kept).EndObject();
      done(JsonOk(w.Take()));
    });
  }
  auto cni = DecodeCniRequest(request.body);
  if (!cni) return done(ErrorResponse(cni.error()));
  if (op == "del") {
    return backend_->Del(*cni, [done](Result<void> r) { done(r ? JsonOk("{}") : ErrorResponse(r.error())); });
  }
  if (op == "check") {
    return backend_->Check(*cni, [done](Result<CniReply> reply) { done(ReplyResponse(reply)); });
  }
  std::string who = cni->container_id + "/" + cni->ifname + " (" + cni->provider + ")";
  backend_->Add(*cni, [done, who](Result<CniReply> reply) {
    if (!reply) LogInfo("add " + who + " failed: " + reply.error().message);
    done(ReplyResponse(reply));
  });
}

void Api::ServeCni(const HttpRequest& request, Respond respond) {
  auto start = std::chrono::steady_clock::now();
  std::string op = OperationOf(request.path);
  Dispatch(request, op, [this, op, start, respond = std::move(respond)](HttpResponse response) {
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string code = response.status < 300 ? "ok" : std::to_string(response.status);
    metrics_->GetCounter("sublease_requests_total", "CNI API requests by operation and outcome",
                         {{"op", op}, {"code", code}}).Inc();
    metrics_->GetHistogram("sublease_request_duration_seconds", "CNI API request latency",
                           {{"op", op}}).Observe(seconds);
    if (response.status >= 300) {
      auto err = DecodeWireError(response.status, response.body);
      metrics_->GetCounter("sublease_errors_total", "CNI API errors by kind",
                           {{"op", op}, {"kind", std::string(CodeName(err.code))}}).Inc();
    }
    respond(std::move(response));
  });
}

void Api::ServeOps(const HttpRequest& request, Respond respond) {
  if (request.path == "/healthz") {
    respond({200, "text/plain", "ok\n"});
  } else if (request.path == "/readyz") {
    if (backend_->Ready()) respond({200, "text/plain", "ready\n"});
    else respond({503, "text/plain", "starting\n"});
  } else if (request.path == "/metrics") {
    respond({200, std::string(MetricsRegistry::kContentType), metrics_->Render()});
  } else {
    respond({404, "text/plain", "not found; try /healthz, /readyz or /metrics\n"});
  }
}

}  // namespace sublease
