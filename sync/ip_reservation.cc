#include "sync/ip_reservation.h"

#include "common/ip.h"
#include "common/json_reader.h"
#include "common/json_writer.h"

namespace sublease {

bool IsReservation(const KubeObject& object) {
  auto it = object.labels.find(std::string(kIpReservedLabel));
  return it == object.labels.end() || it->second == "true";
}

std::vector<std::string> IpReservation::addresses() const {
  std::vector<std::string> out;
  if (!v4.empty()) out.push_back(v4);
  if (!v6.empty()) out.push_back(v6);
  return out;
}

namespace {

Result<std::string> ReservationString(const JsonValue* o, std::string_view key,
                                      const std::string& path) {
  const JsonValue* v = o == nullptr ? nullptr : o->Find(key);
  if (v == nullptr) return std::string();
  std::string_view s;
  if (!v->Get(&s)) {
    return Fail(Error::InvalidArgument("IP object: " + path + " must be a string, not " +
                                       std::string(JsonTypeName(v->type()))));
  }
  return std::string(s);
}

// `text` must be an address of `family` ("" passes).
Result<void> CheckAddress(const std::string& name, const char* field, const std::string& text,
                          Family family) {
  if (text.empty()) return Ok();
  auto a = IpAddr::Parse(text);
  if (!a || a->family() != family) {
    return Fail(Error::InvalidArgument("IP object " + name + ": spec." + field + " \"" + text +
                                       "\" is not an " + (family == Family::kV4 ? "IPv4" : "IPv6") +
                                       " address"));
  }
  return Ok();
}

}  // namespace

Result<IpReservation> DecodeIpReservation(std::string_view json) {
  auto object = ParseKubeObject(json);
  if (!object) return Fail(object.error().Wrap("IP object"));
  auto root = ParseJson(json);
  if (!root) return Fail(root.error().Wrap("IP object"));
  IpReservation r;
  r.name = object->name;
  r.resource_version = object->resource_version;
  auto label = object->labels.find(std::string(kIpReservedLabel));
  r.labelled = label != object->labels.end() && label->second == "true";
  const JsonValue* spec = root->Find("spec");
  std::string both;
  struct Field {
    std::string_view key;
    std::string* out;
  };
  for (const Field& f : {Field{"subnet", &r.subnet}, Field{"podName", &r.pod_name},
                         Field{"namespace", &r.namespace_name}, Field{"v4IpAddress", &r.v4},
                         Field{"v6IpAddress", &r.v6}, Field{"ipAddress", &both},
                         Field{"nodeName", &r.node_name}}) {
    auto v = ReservationString(spec, f.key, "spec." + std::string(f.key));
    if (!v) return Fail(v.error());
    *f.out = std::move(*v);
  }
  if (r.v4.empty() && r.v6.empty() && !both.empty()) {
    // The older single field, "v4", "v6" or "v4,v6".
    size_t start = 0;
    while (start <= both.size()) {
      size_t comma = both.find(',', start);
      std::string part =
          both.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      auto a = IpAddr::Parse(part);
      if (!a) {
        return Fail(Error::InvalidArgument("IP object " + r.name + ": spec.ipAddress \"" + both +
                                           "\" is not an address or \"v4,v6\""));
      }
      (a->family() == Family::kV4 ? r.v4 : r.v6) = a->ToString();
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  for (auto [field, value] : {std::pair<const char*, const std::string*>{"subnet", &r.subnet},
                              {"podName", &r.pod_name},
                              {"namespace", &r.namespace_name}}) {
    if (value->empty()) {
      return Fail(Error::InvalidArgument("IP object " + r.name +
                                         " reserves an address but has no spec." + field +
                                         "; set spec.subnet, spec.podName and spec.namespace"));
    }
  }
  if (auto ok = CheckAddress(r.name, "v4IpAddress", r.v4, Family::kV4); !ok)
    return Fail(ok.error());
  if (auto ok = CheckAddress(r.name, "v6IpAddress", r.v6, Family::kV6); !ok)
    return Fail(ok.error());
  // One spelling of each address (v6 in lower case, as Kube-OVN's webhook insists).
  if (!r.v4.empty()) r.v4 = IpAddr::Parse(r.v4)->ToString();
  if (!r.v6.empty()) r.v6 = IpAddr::Parse(r.v6)->ToString();
  return r;
}

std::string EncodeReservationFill(const IpReservation& r, const std::string& v4,
                                  const std::string& v6) {
  std::string both = v4.empty() ? v6 : (v6.empty() ? v4 : v4 + "," + v6);
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject();
  if (!r.resource_version.empty()) w.Field("resourceVersion", r.resource_version);
  w.Key("labels")
      .BeginObject()
      .Field(kIpReservedLabel, "true")
      .Field("ovn.kubernetes.io/subnet", r.subnet)
      .Field(r.subnet, "")
      .EndObject();
  w.EndObject();
  w.Key("spec")
      .BeginObject()
      .Field("ipAddress", both)
      .Field("v4IpAddress", v4)
      .Field("v6IpAddress", v6)
      .EndObject();
  w.EndObject();
  return w.Take();
}

}  // namespace sublease
