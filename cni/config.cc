#include "cni/config.h"

#include <sys/un.h>

#include <charconv>

#include "cni/version.h"
#include "common/ip.h"
#include "common/json_reader.h"

namespace sublease::cni {
namespace {

constexpr std::string_view kFixHint =
    "fix the network config (for Multus: the NetworkAttachmentDefinition's spec.config)";

tl::unexpected<CniError> Invalid(std::string msg, std::string details = std::string(kFixHint)) {
  return FailCni(CniCode::kInvalidConfig, std::move(msg), std::move(details));
}

tl::unexpected<CniError> WrongType(std::string_view path, std::string_view want,
                                   const JsonValue& got) {
  return Invalid(std::string(path) + " must be " + std::string(want) + ", not " +
                 std::string(JsonTypeName(got.type())));
}

std::string Join(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : std::string(parent) + "." + std::string(key);
}

std::string Index(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

// Absent and null both read as "not given" (JsonValue::Find).
CniResult<std::string> String(const JsonValue& o, std::string_view key, std::string_view parent) {
  const JsonValue* e = o.Find(key);
  if (e == nullptr) return std::string();
  std::string_view s;
  if (!e->Get(&s)) return WrongType(Join(parent, key), "a string", *e);
  return std::string(s);
}

// The member `key` if it is an object, nullptr if not given.
CniResult<const JsonValue*> Object(const JsonValue& o, std::string_view key,
                                   std::string_view parent) {
  const JsonValue* e = o.Find(key);
  if (e == nullptr) return e;
  if (e->type() != JsonType::kObject) return WrongType(Join(parent, key), "an object", *e);
  return e;
}

// The elements of member `key` if it is an array, nullptr if not given.
CniResult<const std::vector<JsonValue>*> Array(const JsonValue& o, std::string_view key,
                                               std::string_view parent, std::string_view want) {
  const JsonValue* e = o.Find(key);
  if (e == nullptr) return nullptr;
  if (e->type() != JsonType::kArray) return WrongType(Join(parent, key), want, *e);
  return &e->items();
}

// A list of static addresses (runtimeConfig.ips, args.cni.ips), each validated.
CniResult<std::vector<std::string>> StaticIps(const JsonValue& o, std::string_view key,
                                              std::string_view parent) {
  std::vector<std::string> out;
  auto arr = Array(o, key, parent, "an array of strings");
  if (!arr) return tl::unexpected(arr.error());
  if (!*arr) return out;
  std::string path = Join(parent, key);
  size_t i = 0;
  for (const JsonValue& item : **arr) {
    std::string_view s;
    if (!item.Get(&s)) return WrongType(Index(path, i), "a string", item);
    if (auto v = ValidateStaticAddress(s); !v) {
      return Invalid(Index(path, i) + " is not an IP address: \"" + std::string(s) + "\"",
                     v.error().message);
    }
    out.emplace_back(s);
    ++i;
  }
  return out;
}

CniResult<std::vector<WireRoute>> Routes(const JsonValue& ipam) {
  std::vector<WireRoute> routes;
  auto arr = Array(ipam, "routes", "ipam", "an array of objects");
  if (!arr) return tl::unexpected(arr.error());
  if (!*arr) return routes;
  size_t i = 0;
  for (const JsonValue& route : **arr) {
    std::string path = Index("ipam.routes", i++);
    if (route.type() != JsonType::kObject) return WrongType(path, "an object", route);
    auto dst = String(route, "dst", path);
    if (!dst) return tl::unexpected(dst.error());
    auto gw = String(route, "gw", path);
    if (!gw) return tl::unexpected(gw.error());
    std::optional<Family> dst_family, gw_family;
    if (!dst->empty()) {
      auto net = IpNet::Parse(*dst);
      if (!net) return Invalid(path + ".dst is not a CIDR: \"" + *dst + "\"", net.error().message);
      dst_family = net->family();
    }
    if (!gw->empty()) {
      auto addr = IpAddr::Parse(*gw);
      if (!addr)
        return Invalid(path + ".gw is not an IP address: \"" + *gw + "\"", addr.error().message);
      gw_family = addr->family();
    }
    if (dst_family && gw_family && dst_family != gw_family) {
      return Invalid(path + " mixes address families: dst " + *dst + ", gw " + *gw);
    }
    // CNI spec leaves dst required; Kube-OVN reads a missing dst as the default
    // route, and so do we: dst "" goes to the daemon, which picks 0.0.0.0/0 or ::/0.
    routes.push_back({std::move(*dst), std::move(*gw)});
  }
  return routes;
}

CniResult<double> Timeout(const JsonValue& ipam) {
  const JsonValue* e = ipam.Find("timeout_seconds");
  if (e == nullptr) return kDefaultTimeoutSeconds;
  double seconds = 0;
  if (!e->Get(&seconds)) {
    return WrongType("ipam.timeout_seconds", "a number", *e);
  }
  if (!(seconds > 0 && seconds <= kMaxTimeoutSeconds)) {
    return Invalid("ipam.timeout_seconds must be more than 0 and at most 300",
                   "it is the time the plugin waits for the daemon; the default is 10");
  }
  return seconds;
}

CniResult<std::vector<std::string>> PrevResultIps(const JsonValue& prev) {
  std::vector<std::string> out;
  auto arr = Array(prev, "ips", "prevResult", "an array of objects");
  if (!arr) return tl::unexpected(arr.error());
  if (!*arr) return out;
  size_t i = 0;
  for (const JsonValue& ip : **arr) {
    std::string path = Index("prevResult.ips", i++);
    if (ip.type() != JsonType::kObject) return WrongType(path, "an object", ip);
    auto address = String(ip, "address", path);
    if (!address) return tl::unexpected(address.error());
    out.push_back(std::move(*address));
  }
  return out;
}

CniResult<std::optional<std::vector<WireAttachment>>> ValidAttachments(const JsonValue& root) {
  // libcni also writes the list under cni.dev/attachments, the key an earlier
  // draft of the spec used; accept either.
  std::string_view key = "cni.dev/valid-attachments";
  if (root.Find(key) == nullptr) key = "cni.dev/attachments";
  auto arr = Array(root, key, "", "an array of objects");
  if (!arr) return tl::unexpected(arr.error());
  if (!*arr) return std::optional<std::vector<WireAttachment>>();
  std::vector<WireAttachment> out;
  size_t i = 0;
  for (const JsonValue& att : **arr) {
    std::string path = Index(key, i++);
    if (att.type() != JsonType::kObject) return WrongType(path, "an object", att);
    auto id = String(att, "containerID", path);
    if (!id) return tl::unexpected(id.error());
    auto ifname = String(att, "ifname", path);
    if (!ifname) return tl::unexpected(ifname.error());
    out.push_back({std::move(*id), std::move(*ifname)});
  }
  return std::optional<std::vector<WireAttachment>>(std::move(out));
}

std::string SupportedList() {
  std::string s;
  for (auto v : kSupportedVersions) s += (s.empty() ? "" : ", ") + std::string(v);
  return s;
}

}  // namespace

Result<void> ValidateStaticAddress(std::string_view text) {
  size_t slash = text.find('/');
  auto addr = IpAddr::Parse(text.substr(0, slash));
  if (!addr) return Fail(addr.error());
  if (slash == std::string_view::npos) return Ok();
  std::string_view len_text = text.substr(slash + 1);
  int len = -1;
  auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (ec != std::errc() || end != len_text.data() + len_text.size() || len < 0 ||
      len > FamilyBits(addr->family())) {
    return Fail(Error::InvalidArgument("prefix length \"" + std::string(len_text) +
                                       "\" is not 0.." +
                                       std::to_string(FamilyBits(addr->family()))));
  }
  return Ok();
}

CniResult<NetConf> ParseNetConf(std::string_view json, std::string* version) {
  auto parsed = ParseJson(json);
  if (!parsed) {
    return FailCni(CniCode::kDecodeFailure, "network config on stdin is not valid JSON",
                   "JSON parser: " + parsed.error().message);
  }
  const JsonValue& root = *parsed;
  if (root.type() != JsonType::kObject) {
    return FailCni(CniCode::kDecodeFailure, "network config on stdin is not a JSON object",
                   "got " + std::string(JsonTypeName(root.type())));
  }

  NetConf conf;
  auto cni_version = String(root, "cniVersion", "");
  if (!cni_version) return tl::unexpected(cni_version.error());
  if (cni_version->empty()) {
    return FailCni(CniCode::kIncompatibleVersion, "network config has no cniVersion",
                   "set cniVersion to one of " + SupportedList());
  }
  if (!IsSupportedVersion(*cni_version)) {
    return FailCni(CniCode::kIncompatibleVersion,
                   "cniVersion " + *cni_version + " is not supported",
                   "sublease supports " + SupportedList());
  }
  conf.cni_version = *cni_version;
  if (version != nullptr) *version = conf.cni_version;

  auto name = String(root, "name", "");
  if (!name) return tl::unexpected(name.error());
  conf.name = std::move(*name);
  if (const JsonValue* persistent = root.Find("allowPersistentIPs"); persistent != nullptr) {
    if (!persistent->Get(&conf.allow_persistent_ips)) {
      return Invalid("allowPersistentIPs must be a boolean, not " +
                         std::string(JsonTypeName(persistent->type())),
                     "write \"allowPersistentIPs\": true to let pods take their address from "
                     "an IPAMClaim");
    }
  }

  auto ipam = Object(root, "ipam", "");
  if (!ipam) return tl::unexpected(ipam.error());
  if (!*ipam) return Invalid("ipam is missing");
  const JsonValue& ipam_obj = **ipam;
  auto type = String(ipam_obj, "type", "ipam");
  if (!type) return tl::unexpected(type.error());
  conf.ipam_type = std::move(*type);

  auto socket = String(ipam_obj, "server_socket", "ipam");
  if (!socket) return tl::unexpected(socket.error());
  if (socket->empty()) {
    return Invalid("ipam.server_socket is required",
                   "set it to the sublease daemon's socket, e.g. /run/sublease/sublease.sock");
  }
  if ((*socket)[0] != '/')
    return Invalid("ipam.server_socket must be an absolute path: " + *socket);
  if (socket->size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Invalid("ipam.server_socket is too long for a Unix socket path",
                   "at most " + std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
  }
  conf.server_socket = std::move(*socket);

  auto provider = String(ipam_obj, "provider", "ipam");
  if (!provider) return tl::unexpected(provider.error());
  if (provider->empty()) {
    return Invalid("ipam.provider is required",
                   "set it to \"<nad name>.<nad namespace>\", the spec.provider of the Subnet "
                   "to allocate from");
  }
  conf.provider = std::move(*provider);

  auto routes = Routes(ipam_obj);
  if (!routes) return tl::unexpected(routes.error());
  conf.routes = std::move(*routes);
  auto timeout = Timeout(ipam_obj);
  if (!timeout) return tl::unexpected(timeout.error());
  conf.timeout_seconds = *timeout;

  auto runtime = Object(root, "runtimeConfig", "");
  if (!runtime) return tl::unexpected(runtime.error());
  if (*runtime) {
    auto ips = StaticIps(**runtime, "ips", "runtimeConfig");
    if (!ips) return tl::unexpected(ips.error());
    conf.runtime_ips = std::move(*ips);
    auto mac = String(**runtime, "mac", "runtimeConfig");
    if (!mac) return tl::unexpected(mac.error());
    conf.runtime_mac = std::move(*mac);
  }

  auto args = Object(root, "args", "");
  if (!args) return tl::unexpected(args.error());
  if (*args) {
    auto cni = Object(**args, "cni", "args");
    if (!cni) return tl::unexpected(cni.error());
    if (*cni) {
      auto ips = StaticIps(**cni, "ips", "args.cni");
      if (!ips) return tl::unexpected(ips.error());
      conf.args_ips = std::move(*ips);
    }
  }

  auto prev = Object(root, "prevResult", "");
  if (!prev) return tl::unexpected(prev.error());
  if (*prev) {
    conf.has_prev_result = true;
    auto ips = PrevResultIps(**prev);
    if (!ips) return tl::unexpected(ips.error());
    conf.prev_result_ips = std::move(*ips);
  }

  auto attachments = ValidAttachments(root);
  if (!attachments) return tl::unexpected(attachments.error());
  conf.valid_attachments = std::move(*attachments);
  return conf;
}

}  // namespace sublease::cni
