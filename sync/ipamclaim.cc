#include "sync/ipamclaim.h"

#include "common/ip.h"
#include "common/json_reader.h"
#include "common/json_writer.h"

namespace sublease {
namespace {

Result<std::string> StringAt(const JsonValue* o, std::string_view key, const std::string& path) {
  const JsonValue* v = o == nullptr ? nullptr : o->Find(key);
  if (v == nullptr) return std::string();
  std::string_view s;
  if (!v->Get(&s)) {
    return Fail(Error::InvalidArgument("IPAMClaim: " + path + " must be a string, not " +
                                       std::string(JsonTypeName(v->type()))));
  }
  return std::string(s);
}

}  // namespace

std::string IpamClaimPath(std::string_view namespace_name, std::string_view name) {
  return "/apis/k8s.cni.cncf.io/v1alpha1/namespaces/" + std::string(namespace_name) +
         "/ipamclaims/" + std::string(name);
}

Result<IpamClaim> DecodeIpamClaim(std::string_view json) {
  auto root = ParseJson(json);
  if (!root) return Fail(root.error().Wrap("IPAMClaim"));
  if (root->type() != JsonType::kObject) {
    return Fail(Error::InvalidArgument("IPAMClaim: not a JSON object"));
  }
  IpamClaim c;
  const JsonValue* meta = root->Find("metadata");
  const JsonValue* spec = root->Find("spec");
  const JsonValue* status = root->Find("status");
  struct Field {
    const JsonValue* in;
    std::string_view key;
    const char* path;
    std::string* out;
  };
  for (const Field& f :
       {Field{meta, "name", "metadata.name", &c.name},
        Field{meta, "namespace", "metadata.namespace", &c.namespace_name},
        Field{meta, "uid", "metadata.uid", &c.uid},
        Field{meta, "resourceVersion", "metadata.resourceVersion", &c.resource_version},
        Field{spec, "network", "spec.network", &c.network},
        Field{spec, "interface", "spec.interface", &c.interface_name}}) {
    auto v = StringAt(f.in, f.key, f.path);
    if (!v) return Fail(v.error());
    *f.out = std::move(*v);
  }
  if (c.name.empty()) return Fail(Error::InvalidArgument("IPAMClaim: metadata.name is missing"));
  if (status != nullptr) {
    if (const JsonValue* ips = status->Find("ips"); ips != nullptr) {
      if (ips->type() != JsonType::kArray) {
        return Fail(
            Error::InvalidArgument("IPAMClaim " + c.name + ": status.ips must be an array"));
      }
      for (size_t i = 0; i < ips->items().size(); ++i) {
        std::string_view s;
        std::string path = "status.ips[" + std::to_string(i) + "]";
        if (!ips->items()[i].Get(&s)) {
          return Fail(
              Error::InvalidArgument("IPAMClaim " + c.name + ": " + path + " must be a string"));
        }
        if (!IpAddr::Parse(std::string(s.substr(0, s.find('/'))))) {
          return Fail(Error::InvalidArgument("IPAMClaim " + c.name + ": " + path + " \"" +
                                             std::string(s) +
                                             "\" is not an address such as 10.0.0.5/24"));
        }
        c.ips.emplace_back(s);
      }
    }
    auto owner = StringAt(status->Find("ownerPod"), "name", "status.ownerPod.name");
    if (!owner) return Fail(owner.error());
    c.owner_pod = std::move(*owner);
  }
  return c;
}

std::string EncodeIpamClaimStatus(const IpamClaim& claim, const std::vector<std::string>& ips,
                                  const std::string& owner_pod, const std::string& reason,
                                  const std::string& message, const std::string& now) {
  const bool ok = reason == "SuccessfulAllocation";
  JsonWriter w;
  w.BeginObject()
      .Field("apiVersion", kIpamClaimApiVersion)
      .Field("kind", "IPAMClaim")
      .Key("metadata")
      .BeginObject()
      .Field("name", claim.name)
      .Field("namespace", claim.namespace_name);
  if (!claim.resource_version.empty()) w.Field("resourceVersion", claim.resource_version);
  w.EndObject();
  w.Key("spec")
      .BeginObject()
      .Field("network", claim.network)
      .Field("interface", claim.interface_name)
      .EndObject();
  w.Key("status").BeginObject().Key("ips").BeginArray();
  for (const std::string& ip : ips) w.String(ip);
  w.EndArray();
  if (!owner_pod.empty()) w.Key("ownerPod").BeginObject().Field("name", owner_pod).EndObject();
  w.Key("conditions")
      .BeginArray()
      .BeginObject()
      .Field("type", kIpsAllocated)
      .Field("status", ok ? "True" : "False")
      .Field("reason", reason)
      .Field("message", message)
      .Field("lastTransitionTime", now)
      .EndObject()
      .EndArray();
  w.EndObject().EndObject();
  return w.Take();
}

}  // namespace sublease
