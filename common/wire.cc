#include "common/wire.h"

#include <algorithm>

#include "common/json_reader.h"
#include "common/json_writer.h"

namespace sublease {
namespace {

// Decodes one message kind; `what` names it in every error ("CniRequest").
class Decoder {
 public:
  explicit Decoder(std::string_view what) : what_(what) {}

  // The document's root object; it stays owned by the Decoder.
  Result<const JsonValue*> Parse(std::string_view json) {
    auto root = ParseJson(json);
    if (!root) {
      return Fail(Error::InvalidArgument(std::string(what_) +
                                         " is not valid JSON: " + root.error().message));
    }
    root_ = std::move(*root);
    if (root_.type() != JsonType::kObject) {
      return Fail(Error::InvalidArgument(std::string(what_) + " must be a JSON object, not " +
                                         std::string(JsonTypeName(root_.type()))));
    }
    return &root_;
  }

  Error WrongType(std::string_view field, std::string_view want, const JsonValue& got) const {
    return Error::InvalidArgument(std::string(what_) + ": field \"" + std::string(field) +
                                  "\" must be " + std::string(want) + ", not " +
                                  std::string(JsonTypeName(got.type())));
  }

  Result<std::string> String(const JsonValue& o, std::string_view key,
                             std::string_view path) const {
    const JsonValue* e = o.Find(key);
    if (e == nullptr) return std::string();
    std::string_view s;
    if (!e->Get(&s)) return Fail(WrongType(path, "a string", *e));
    return std::string(s);
  }

  Result<std::vector<std::string>> StringArray(const JsonValue& o, std::string_view key) const {
    std::vector<std::string> out;
    const JsonValue* e = o.Find(key);
    if (e == nullptr) return out;
    if (e->type() != JsonType::kArray) return Fail(WrongType(key, "an array of strings", *e));
    size_t i = 0;
    for (const JsonValue& item : e->items()) {
      std::string_view s;
      if (!item.Get(&s)) {
        return Fail(WrongType(std::string(key) + "[" + std::to_string(i) + "]", "a string", item));
      }
      out.emplace_back(s);
      ++i;
    }
    return out;
  }

  // Calls each(obj, "key[i]") for every element of an array of objects.
  template <typename Fn>
  Result<void> ObjectArray(const JsonValue& o, std::string_view key, Fn each) const {
    const JsonValue* e = o.Find(key);
    if (e == nullptr) return Ok();
    if (e->type() != JsonType::kArray) return Fail(WrongType(key, "an array of objects", *e));
    size_t i = 0;
    for (const JsonValue& item : e->items()) {
      std::string path = std::string(key) + "[" + std::to_string(i++) + "]";
      if (item.type() != JsonType::kObject) return Fail(WrongType(path, "an object", item));
      if (auto r = each(item, path); !r) return r;
    }
    return Ok();
  }

  Result<std::vector<WireRoute>> Routes(const JsonValue& o) const {
    std::vector<WireRoute> routes;
    auto r = ObjectArray(o, "routes",
                         [&](const JsonValue& item, const std::string& path) -> Result<void> {
                           WireRoute route;
                           auto dst = String(item, "dst", path + ".dst");
                           if (!dst) return Fail(dst.error());
                           auto gw = String(item, "gw", path + ".gw");
                           if (!gw) return Fail(gw.error());
                           route.dst = std::move(*dst);
                           route.gw = std::move(*gw);
                           routes.push_back(std::move(route));
                           return Ok();
                         });
    if (!r) return Fail(r.error());
    return routes;
  }

 private:
  std::string_view what_;
  JsonValue root_;
};

// At most `max` bytes of a body for an error message, valid UTF-8 whatever the body
// was: the message ends up in the plugin's JSON output. A byte that starts no
// well-formed sequence becomes '?'; the cut never splits a sequence.
std::string QuoteBody(std::string_view body, size_t max) {
  std::string out;
  for (size_t i = 0; i < body.size();) {
    size_t n = Utf8SequenceLength(body.substr(i));
    if (out.size() + std::max<size_t>(n, 1) > max) break;
    if (n == 0) {
      out += '?';
      ++i;
    } else {
      out.append(body.substr(i, n));
      i += n;
    }
  }
  return out;
}

void WriteRoutes(JsonWriter& w, const std::vector<WireRoute>& routes) {
  w.Key("routes").BeginArray();
  for (const auto& r : routes) w.BeginObject().Field("dst", r.dst).Field("gw", r.gw).EndObject();
  w.EndArray();
}

void WriteStrings(JsonWriter& w, std::string_view key, const std::vector<std::string>& v) {
  w.Key(key).BeginArray();
  for (const auto& s : v) w.String(s);
  w.EndArray();
}

}  // namespace

std::string EncodeCniRequest(const CniRequest& r) {
  JsonWriter w;
  w.BeginObject()
      .Field("containerID", r.container_id)
      .Field("ifname", r.ifname)
      .Field("netns", r.netns)
      .Field("provider", r.provider)
      .Field("podNamespace", r.pod_namespace)
      .Field("podName", r.pod_name)
      .Field("podUID", r.pod_uid);
  WriteStrings(w, "ips", r.ips);
  w.Field("mac", r.mac);
  WriteRoutes(w, r.routes);
  w.Field("network", r.network).Field("allowPersistentIPs", r.allow_persistent_ips);
  w.EndObject();
  return w.Take();
}

Result<CniRequest> DecodeCniRequest(std::string_view json) {
  Decoder d("CniRequest");
  auto obj = d.Parse(json);
  if (!obj) return Fail(obj.error());
  CniRequest r;
  struct StringField {
    std::string_view key;
    std::string* out;
  };
  for (auto [key, out] :
       {StringField{"containerID", &r.container_id}, StringField{"ifname", &r.ifname},
        StringField{"netns", &r.netns}, StringField{"provider", &r.provider},
        StringField{"podNamespace", &r.pod_namespace}, StringField{"podName", &r.pod_name},
        StringField{"podUID", &r.pod_uid}, StringField{"mac", &r.mac},
        StringField{"network", &r.network}}) {
    auto v = d.String(**obj, key, key);
    if (!v) return Fail(v.error());
    *out = std::move(*v);
  }
  auto ips = d.StringArray(**obj, "ips");
  if (!ips) return Fail(ips.error());
  r.ips = std::move(*ips);
  auto routes = d.Routes(**obj);
  if (!routes) return Fail(routes.error());
  r.routes = std::move(*routes);
  if (const JsonValue* v = (*obj)->Find("allowPersistentIPs"); v != nullptr) {
    if (!v->Get(&r.allow_persistent_ips)) {
      return Fail(Error::InvalidArgument(
          "CniRequest: field \"allowPersistentIPs\" must be a boolean, not " +
          std::string(JsonTypeName(v->type()))));
    }
  }
  if (r.provider.empty()) {
    return Fail(Error::InvalidArgument("CniRequest: field \"provider\" is required"));
  }
  return r;
}

std::string EncodeCniReply(const CniReply& r) {
  JsonWriter w;
  w.BeginObject().Key("ips").BeginArray();
  for (const auto& ip : r.ips) {
    w.BeginObject().Field("address", ip.address).Field("gateway", ip.gateway).EndObject();
  }
  w.EndArray();
  WriteRoutes(w, r.routes);
  w.Field("mac", r.mac).EndObject();
  return w.Take();
}

Result<CniReply> DecodeCniReply(std::string_view json) {
  Decoder d("CniReply");
  auto obj = d.Parse(json);
  if (!obj) return Fail(obj.error());
  CniReply r;
  auto ips = d.ObjectArray(**obj, "ips",
                           [&](const JsonValue& item, const std::string& path) -> Result<void> {
                             auto address = d.String(item, "address", path + ".address");
                             if (!address) return Fail(address.error());
                             auto gateway = d.String(item, "gateway", path + ".gateway");
                             if (!gateway) return Fail(gateway.error());
                             r.ips.push_back({std::move(*address), std::move(*gateway)});
                             return Ok();
                           });
  if (!ips) return Fail(ips.error());
  auto routes = d.Routes(**obj);
  if (!routes) return Fail(routes.error());
  r.routes = std::move(*routes);
  auto mac = d.String(**obj, "mac", "mac");
  if (!mac) return Fail(mac.error());
  r.mac = std::move(*mac);
  return r;
}

std::string EncodeGcRequest(const GcRequest& r) {
  JsonWriter w;
  w.BeginObject().Field("provider", r.provider).Key("validAttachments").BeginArray();
  for (const auto& a : r.valid_attachments) {
    w.BeginObject().Field("containerID", a.container_id).Field("ifname", a.ifname).EndObject();
  }
  w.EndArray().EndObject();
  return w.Take();
}

Result<GcRequest> DecodeGcRequest(std::string_view json) {
  Decoder d("GcRequest");
  auto obj = d.Parse(json);
  if (!obj) return Fail(obj.error());
  GcRequest r;
  auto provider = d.String(**obj, "provider", "provider");
  if (!provider) return Fail(provider.error());
  r.provider = std::move(*provider);
  if (r.provider.empty()) {
    return Fail(Error::InvalidArgument("GcRequest: field \"provider\" is required"));
  }
  // An absent list would mean "nothing is valid" and release every lease of the
  // provider; make the sender say so explicitly.
  if ((*obj)->Find("validAttachments") == nullptr) {
    return Fail(Error::InvalidArgument("GcRequest: field \"validAttachments\" is required"));
  }
  auto atts = d.ObjectArray(**obj, "validAttachments",
                            [&](const JsonValue& item, const std::string& path) -> Result<void> {
                              auto id = d.String(item, "containerID", path + ".containerID");
                              if (!id) return Fail(id.error());
                              auto ifname = d.String(item, "ifname", path + ".ifname");
                              if (!ifname) return Fail(ifname.error());
                              r.valid_attachments.push_back({std::move(*id), std::move(*ifname)});
                              return Ok();
                            });
  if (!atts) return Fail(atts.error());
  return r;
}

std::string EncodeWireError(const Error& e) {
  JsonWriter w;
  w.BeginObject().Field("code", CodeName(e.code)).Field("message", e.message).EndObject();
  return w.Take();
}

Error DecodeWireError(int http_status, std::string_view body) {
  // Whatever the body says, the status line is authoritative enough to pick a
  // code: a proxy or a crashing daemon may answer 503 with a text body.
  Code fallback = CodeForHttpStatus(http_status);
  std::string status_text = "HTTP " + std::to_string(http_status);
  Decoder d("error body");
  auto obj = d.Parse(body);
  if (obj) {
    auto code = d.String(**obj, "code", "code");
    auto message = d.String(**obj, "message", "message");
    if (code && message && !message->empty()) {
      auto parsed = CodeFromName(*code);
      return {parsed.value_or(fallback), std::move(*message)};
    }
  }
  constexpr size_t kMaxQuoted = 200;
  std::string text = QuoteBody(body, kMaxQuoted);
  return {fallback, status_text + " with an unreadable error body" +
                        (text.empty() ? std::string() : ": " + text)};
}

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return 400;
    case Code::kNotFound: return 404;
    case Code::kConflict: return 409;
    case Code::kExhausted: return 507;
    case Code::kUnavailable: return 503;
    case Code::kInternal: return 500;
  }
  return 500;
}

Code CodeForHttpStatus(int status) {
  switch (status) {
    case 400: return Code::kInvalidArgument;
    case 404: return Code::kNotFound;
    case 409: return Code::kConflict;
    case 507: return Code::kExhausted;
    // Transient by HTTP's own definition: retrying later may succeed.
    case 429:
    case 502:
    case 503:
    case 504: return Code::kUnavailable;
    default: break;
  }
  if (status >= 400 && status < 500) return Code::kInvalidArgument;
  return Code::kInternal;
}

std::optional<Code> CodeFromName(std::string_view name) {
  for (Code c : {Code::kInvalidArgument, Code::kNotFound, Code::kConflict, Code::kExhausted,
                 Code::kUnavailable, Code::kInternal}) {
    if (CodeName(c) == name) return c;
  }
  return std::nullopt;
}

}  // namespace sublease
