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

Api::Api(CniService* service, const Allocator* allocator, MetricsRegistry* metrics)
    : service_(service), allocator_(allocator), metrics_(metrics) {
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

HttpResponse Api::Dispatch(const HttpRequest& request, std::string* op) {
  const std::string& path = request.path;
  if (path == "/v1/cni/status") {
    *op = "status";
    if (request.method != "GET") return ErrorResponse(Error::InvalidArgument("use GET for " + path));
    if (!service_->Ready()) return ErrorResponse(Error::Unavailable("subleased is starting"));
    return JsonOk(R"({"ready":true})");
  }
  if (path.rfind("/v1/cni/", 0) != 0) {
    *op = "unknown";
    return ErrorResponse(Error::NotFound("no endpoint " + path + "; see docs/protocol.md"));
  }
  *op = path.substr(8);
  if (request.method != "POST") return ErrorResponse(Error::InvalidArgument("use POST for " + path));
  if (*op == "gc") {
    auto gc = DecodeGcRequest(request.body);
    if (!gc) return ErrorResponse(gc.error());
    auto outcome = service_->Gc(*gc);
    if (!outcome) return ErrorResponse(outcome.error());
    JsonWriter w;
    w.BeginObject().Key("released").Uint(outcome->released).Key("kept").Uint(outcome->kept).EndObject();
    return JsonOk(w.Take());
  }
  if (*op != "add" && *op != "del" && *op != "check") {
    return ErrorResponse(Error::NotFound("no endpoint " + path + "; see docs/protocol.md"));
  }
  auto cni = DecodeCniRequest(request.body);
  if (!cni) return ErrorResponse(cni.error());
  if (*op == "del") {
    auto r = service_->Del(*cni);
    return r ? JsonOk("{}") : ErrorResponse(r.error());
  }
  auto reply = *op == "add" ? service_->Add(*cni) : service_->Check(*cni);
  if (!reply) {
    if (*op == "add" && LogEnabled(LogLevel::kInfo)) {
      LogInfo("add " + cni->container_id + "/" + cni->ifname + " (" + cni->provider + ") failed: " + reply.error().message);
    }
    return ErrorResponse(reply.error());
  }
  return JsonOk(EncodeCniReply(*reply));
}

void Api::ServeCni(const HttpRequest& request, Respond respond) {
  auto start = std::chrono::steady_clock::now();
  std::string op;
  HttpResponse response = Dispatch(request, &op);
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
}

void Api::ServeOps(const HttpRequest& request, Respond respond) {
  if (request.path == "/healthz") {
    respond({200, "text/plain", "ok\n"});
  } else if (request.path == "/readyz") {
    if (service_->Ready()) respond({200, "text/plain", "ready\n"});
    else respond({503, "text/plain", "starting\n"});
  } else if (request.path == "/metrics") {
    respond({200, std::string(MetricsRegistry::kContentType), metrics_->Render()});
  } else {
    respond({404, "text/plain", "not found; try /healthz, /readyz or /metrics\n"});
  }
}

}  // namespace sublease
