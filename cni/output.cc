#include "cni/output.h"

#include "cni/config.h"
#include "cni/version.h"
#include "common/ip.h"
#include "common/json_writer.h"

namespace sublease::cni {
namespace {

tl::unexpected<CniError> BadReply(std::string what) {
  return FailCni(CniCode::kDaemonInternal, "sublease daemon sent an unusable result",
                 std::move(what) + "; this is a bug in subleased, please report it");
}

}  // namespace

CniResult<std::string> FormatIpamResult(const CniReply& reply, std::string_view cni_version) {
  if (reply.ips.empty()) return BadReply("the reply has no ips");
  bool with_version = ResultHasIpVersion(cni_version);
  JsonWriter w;
  w.BeginObject().Field("cniVersion", cni_version).Key("ips").BeginArray();
  for (const auto& ip : reply.ips) {
    size_t slash = ip.address.find('/');
    if (slash == std::string::npos || !ValidateStaticAddress(ip.address)) {
      return BadReply("address \"" + ip.address + "\" is not ip/prefix-length");
    }
    auto addr = IpAddr::Parse(std::string_view(ip.address).substr(0, slash));
    w.BeginObject();
    if (with_version) w.Field("version", addr->is_v4() ? "4" : "6");
    w.Field("address", ip.address);
    if (!ip.gateway.empty()) w.Field("gateway", ip.gateway);
    w.EndObject();
  }
  w.EndArray().Key("routes").BeginArray();
  for (const auto& r : reply.routes) {
    if (r.dst.empty()) return BadReply("a route has no dst");
    w.BeginObject().Field("dst", r.dst);
    if (!r.gw.empty()) w.Field("gw", r.gw);
    w.EndObject();
  }
  w.EndArray().Key("dns").BeginObject().EndObject().EndObject();
  return w.Take();
}

std::string FormatError(const CniError& e, std::string_view cni_version) {
  JsonWriter w;
  w.BeginObject()
      .Field("cniVersion", cni_version)
      .Key("code")
      .Uint(static_cast<uint32_t>(e.code))
      .Field("msg", e.msg);
  if (!e.details.empty()) w.Field("details", e.details);
  w.EndObject();
  return w.Take();
}

}  // namespace sublease::cni
