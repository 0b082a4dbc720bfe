#include "sync/pod_networks.h"

#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "common/json_writer.h"
#include "common/json_types.h"

namespace sublease {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// Linux IFNAMSIZ (16) less the terminating NUL.
constexpr size_t kMaxIfnameLength = 15;

// Field reader for one JSON document; `what` opens every error. Absent and null
// fields both mean "not given".
class Reader {
 public:
  explicit Reader(std::string what) : what_(std::move(what)) {}

  Result<element> Parse(std::string_view json) {
    simdjson::padded_string padded(json);
    element root;
    if (auto err = parser_.parse(padded).get(root); err) {
      return Fail(
          Error::InvalidArgument(what_ + " is not valid JSON: " + simdjson::error_message(err)));
    }
    return root;
  }

  Error WrongType(std::string_view path, std::string_view want, const element& got) const {
    return Error::InvalidArgument(what_ + ": " + std::string(path) + " must be " +
                                  std::string(want) + ", not " +
                                  std::string(JsonTypeName(got.type())));
  }

  static bool Lookup(const object& o, std::string_view key, element& out) {
    return JsonMember(o, key, out);
  }

  Result<std::optional<object>> Object(const object& o, std::string_view key,
                                       std::string_view path) const {
    element e;
    if (!Lookup(o, key, e)) return std::optional<object>();
    object obj;
    if (e.get(obj) != simdjson::SUCCESS) return Fail(WrongType(path, "an object", e));
    return std::optional<object>(obj);
  }

  Result<std::optional<array>> Array(const object& o, std::string_view key,
                                     std::string_view path) const {
    element e;
    if (!Lookup(o, key, e)) return std::optional<array>();
    array arr;
    if (e.get(arr) != simdjson::SUCCESS) return Fail(WrongType(path, "an array", e));
    return std::optional<array>(arr);
  }

  Result<std::string> String(const object& o, std::string_view key, std::string_view path) const {
    element e;
    if (!Lookup(o, key, e)) return std::string();
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) return Fail(WrongType(path, "a string", e));
    return std::string(s);
  }

  Result<bool> Bool(const object& o, std::string_view key, std::string_view path) const {
    element e;
    if (!Lookup(o, key, e)) return false;
    bool b = false;
    if (e.get(b) != simdjson::SUCCESS) return Fail(WrongType(path, "a boolean", e));
    return b;
  }

  Result<std::vector<std::string>> StringArray(const object& o, std::string_view key,
                                               const std::string& path) const {
    std::vector<std::string> out;
    auto arr = Array(o, key, path);
    if (!arr) return Fail(arr.error());
    if (!*arr) return out;
    size_t i = 0;
    for (element item : **arr) {
      std::string_view s;
      if (item.get(s) != simdjson::SUCCESS) {
        return Fail(WrongType(path + "[" + std::to_string(i) + "]", "a string", item));
      }
      out.emplace_back(s);
      ++i;
    }
    return out;
  }

  const std::string& what() const { return what_; }

 private:
  std::string what_;
  simdjson::dom::parser parser_;
};

std::string_view Trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    parts.push_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return parts;
}

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Multus' rule for each part of the text form: [a-z0-9]([-a-z0-9]*[a-z0-9])?
bool IsDns1123Label(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool IsHex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

// The forms Go's net.ParseMAC (Multus' check) accepts: 6, 8 or 20 octets as hex pairs
// separated by ':' or '-', or groups of four hex digits separated by '.'.
bool IsMac(std::string_view s) {
  if (s.find('.') != std::string_view::npos) {
    auto groups = Split(s, '.');
    if (groups.size() != 3 && groups.size() != 4 && groups.size() != 10) return false;
    return std::all_of(groups.begin(), groups.end(),
                       [](std::string_view g) { return g.size() == 4 && IsHex(g); });
  }
  if (s.size() < 3 || (s[2] != ':' && s[2] != '-')) return false;
  auto octets = Split(s, s[2]);
  if (octets.size() != 6 && octets.size() != 8 && octets.size() != 20) return false;
  return std::all_of(octets.begin(), octets.end(),
                     [](std::string_view o) { return o.size() == 2 && IsHex(o); });
}

// "a" or "a/len"; returns the family.
std::optional<Family> AddressFamily(std::string_view s) {
  if (s.find('/') != std::string_view::npos) {
    auto net = IpNet::Parse(s);
    if (!net) return std::nullopt;
    return net->family();
  }
  auto a = IpAddr::Parse(s);
  if (!a) return std::nullopt;
  return a->family();
}

Result<NetworkSelection> ParseTextEntry(std::string_view item, const std::string& where) {
  NetworkSelection sel;
  auto slash = Split(item, '/');
  if (slash.size() > 2) {
    return Fail(Error::InvalidArgument(where + " has more than one '/': write ns/name"));
  }
  std::string_view rest = slash.back();
  if (slash.size() == 2) sel.namespace_name = std::string(Trim(slash[0]));
  auto at = Split(rest, '@');
  if (at.size() > 2) {
    return Fail(Error::InvalidArgument(where + " has more than one '@': write name@ifname"));
  }
  sel.name = std::string(Trim(at[0]));
  if (at.size() == 2) sel.ifname = std::string(Trim(at[1]));
  struct Part {
    std::string_view what;
    const std::string* value;
    bool given;
  };
  for (const Part& part :
       {Part{"namespace", &sel.namespace_name, slash.size() == 2}, Part{"name", &sel.name, true},
        Part{"interface", &sel.ifname, at.size() == 2}}) {
    if (part.given && !IsDns1123Label(*part.value)) {
      return Fail(Error::InvalidArgument(
          where + ": " + std::string(part.what) + " " + Quote(*part.value) +
          " must be lowercase letters, digits and '-', starting and ending with a letter or "
          "digit (a DNS-1123 label)"));
    }
  }
  return sel;
}

Result<NetworkSelection> ParseJsonEntry(const Reader& r, const element& e,
                                        const std::string& path) {
  NetworkSelection sel;
  object o;
  if (e.get(o) != simdjson::SUCCESS) return Fail(r.WrongType(path, "an object", e));
  struct StringField {
    std::string_view key;
    std::string* out;
  };
  std::string deprecated_interface;
  for (auto [key, out] :
       {StringField{"name", &sel.name}, StringField{"namespace", &sel.namespace_name},
        StringField{"interface", &sel.ifname}, StringField{"mac", &sel.mac},
        StringField{"interfaceRequest", &deprecated_interface},
        StringField{"ipam-claim-reference", &sel.ipam_claim}}) {
    auto v = r.String(o, key, path + "." + std::string(key));
    if (!v) return Fail(v.error());
    *out = std::move(*v);
  }
  // Multus reads the pre-v3.2 key when the current one is absent.
  if (sel.ifname.empty()) sel.ifname = std::move(deprecated_interface);
  auto ips = r.StringArray(o, "ips", path + ".ips");
  if (!ips) return Fail(ips.error());
  sel.ips = std::move(*ips);
  auto gws = r.StringArray(o, "default-route", path + ".default-route");
  if (!gws) return Fail(gws.error());
  sel.default_route = std::move(*gws);

  const std::string where = r.what() + ": " + path;
  if (sel.name.empty()) return Fail(Error::InvalidArgument(where + " has no \"name\""));
  for (size_t i = 0; i < sel.ips.size(); ++i) {
    if (!AddressFamily(sel.ips[i])) {
      return Fail(Error::InvalidArgument(where + ".ips[" + std::to_string(i) + "] " +
                                         Quote(sel.ips[i]) +
                                         " is not an IP address or address/prefix"));
    }
  }
  for (size_t i = 0; i < sel.default_route.size(); ++i) {
    if (!IpAddr::Parse(sel.default_route[i])) {
      return Fail(Error::InvalidArgument(where + ".default-route[" + std::to_string(i) + "] " +
                                         Quote(sel.default_route[i]) +
                                         " is not a gateway IP address"));
    }
  }
  if (!sel.mac.empty() && !IsMac(sel.mac)) {
    return Fail(Error::InvalidArgument(where + ".mac " + Quote(sel.mac) +
                                       " is not a MAC address such as 02:00:00:00:00:01"));
  }
  return sel;
}

// Multus' ifname defaults, then the checks that hold for both forms.
Result<void> ApplyDefaults(std::vector<NetworkSelection>& selections,
                           std::string_view pod_namespace) {
  std::set<std::string> seen;
  for (size_t i = 0; i < selections.size(); ++i) {
    NetworkSelection& sel = selections[i];
    if (sel.namespace_name.empty()) sel.namespace_name = std::string(pod_namespace);
    if (sel.ifname.empty()) sel.ifname = "net" + std::to_string(i + 1);
    const std::string where = std::string(kNetworksAnnotation) + ": entry " +
                              std::to_string(i + 1) + " (" + sel.namespace_name + "/" + sel.name +
                              ")";
    if (sel.ifname.size() > kMaxIfnameLength) {
      return Fail(Error::InvalidArgument(where + ": interface name " + Quote(sel.ifname) +
                                         " is longer than 15 characters"));
    }
    if (!seen.insert(sel.ifname).second) {
      return Fail(Error::InvalidArgument(
          where + ": interface " + Quote(sel.ifname) +
          " is already used by an earlier entry; give each attachment its own interface name"));
    }
  }
  return Ok();
}

// "web-2" of StatefulSet "web" -> 2; nothing when the name has another shape.
std::optional<uint32_t> StatefulSetOrdinal(const std::string& pod_name,
                                           const std::string& stateful_set) {
  size_t dash = pod_name.rfind('-');
  if (dash == std::string::npos || pod_name.compare(0, dash, stateful_set) != 0 ||
      dash != stateful_set.size()) {
    return std::nullopt;
  }
  std::string_view digits = std::string_view(pod_name).substr(dash + 1);
  uint32_t ordinal = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ordinal);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size()) {
    return std::nullopt;
  }
  return ordinal;
}

// The value of `key`, "" when absent.
std::string_view Annotation(const PodInfo& pod, const std::string& key) {
  auto it = pod.annotations.find(key);
  return it == pod.annotations.end() ? std::string_view() : std::string_view(it->second);
}

// "v4,v6" (ip_address) -> its addresses; at most one per family.
Result<std::vector<std::string>> ParseStaticIps(std::string_view text, const std::string& key) {
  std::vector<std::string> ips;
  bool have[2] = {false, false};
  for (std::string_view part : Split(text, ',')) {
    part = Trim(part);
    auto family = AddressFamily(part);
    if (!family) {
      return Fail(Error::InvalidArgument("annotation " + key + ": " + Quote(part) +
                                         " is not an IP address; write \"v4\", \"v6\" or "
                                         "\"v4,v6\""));
    }
    bool& seen = have[*family == Family::kV4 ? 0 : 1];
    if (seen) {
      return Fail(Error::InvalidArgument("annotation " + key + ": " + Quote(text) + " has two " +
                                         std::string(FamilyName(*family)) +
                                         " addresses; give at most one per family"));
    }
    seen = true;
    ips.emplace_back(part);
  }
  return ips;
}

// Kube-OVN's routes annotation: [{"dst": "cidr", "gw": "ip"}]; no dst = default route.
Result<std::vector<WireRoute>> ParseRoutes(std::string_view text, const std::string& key) {
  std::vector<WireRoute> routes;
  if (Trim(text).empty()) return routes;
  Reader r("annotation " + key);
  auto root = r.Parse(text);
  if (!root) return Fail(root.error());
  array arr;
  if (root->get(arr) != simdjson::SUCCESS) {
    return Fail(r.WrongType("the value", "a JSON list of {\"dst\", \"gw\"} objects", *root));
  }
  size_t i = 0;
  for (element item : arr) {
    const std::string path = "route " + std::to_string(i);
    object o;
    if (item.get(o) != simdjson::SUCCESS) return Fail(r.WrongType(path, "an object", item));
    auto dst = r.String(o, "dst", path + " dst");
    if (!dst) return Fail(dst.error());
    auto gw = r.String(o, "gw", path + " gw");
    if (!gw) return Fail(gw.error());
    const std::string where = r.what() + ": " + path;
    if (dst->empty() && gw->empty()) {
      return Fail(Error::InvalidArgument(where + " has neither \"dst\" nor \"gw\""));
    }
    std::optional<Family> dst_family, gw_family;
    if (!dst->empty()) {
      auto net = IpNet::Parse(*dst);
      if (!net) {
        return Fail(Error::InvalidArgument(where + ": dst " + Quote(*dst) +
                                           " is not a CIDR such as 10.0.0.0/8"));
      }
      dst_family = net->family();
    }
    if (!gw->empty()) {
      auto a = IpAddr::Parse(*gw);
      if (!a) {
        return Fail(Error::InvalidArgument(where + ": gw " + Quote(*gw) + " is not an IP address"));
      }
      gw_family = a->family();
    }
    if (dst_family && gw_family && *dst_family != *gw_family) {
      return Fail(Error::InvalidArgument(where + ": dst " + Quote(*dst) + " and gw " + Quote(*gw) +
                                         " are of different families"));
    }
    routes.push_back(WireRoute{std::move(*dst), std::move(*gw)});
    ++i;
  }
  return routes;
}

Result<std::optional<Family>> ParseFamily(std::string_view text, const std::string& key) {
  std::string lower(Trim(text));
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower.empty()) return std::optional<Family>();
  if (lower == "ipv4") return std::optional<Family>(Family::kV4);
  if (lower == "ipv6") return std::optional<Family>(Family::kV6);
  return Fail(Error::InvalidArgument("annotation " + key + ": " + Quote(text) +
                                     " is not a family; write \"ipv4\" or \"ipv6\""));
}

Result<bool> ParseDefaultRoute(std::string_view text, const std::string& key) {
  std::string_view v = Trim(text);
  if (v.empty() || v == "false") return false;
  if (v == "true") return true;
  return Fail(Error::InvalidArgument("annotation " + key + ": " + Quote(text) +
                                     " must be \"true\" or \"false\""));
}

// An annotation value and the key it came from.
struct Keyed {
  std::string key;
  std::string value;  // "" = neither key set
};

// The per-interface key `<flat_key>.<ifname>` when set, else the flat one. A flat
// value cannot serve two interfaces of one provider (they would share the address or MAC).
Result<Keyed> PerInterfaceOrFlat(const PodInfo& pod, const std::string& flat_key,
                                 const AttachmentRequest& req) {
  const std::string per_if_key = flat_key + "." + req.ifname;
  std::string_view v = Trim(Annotation(pod, per_if_key));
  if (!v.empty()) return Keyed{per_if_key, std::string(v)};
  v = Trim(Annotation(pod, flat_key));
  if (!v.empty() && req.per_interface) {
    return Fail(Error::InvalidArgument(
        "annotation " + flat_key + " would apply to every interface of provider " + req.provider +
        ", which the pod attaches more than once; use " + per_if_key +
        " (one per interface) instead"));
  }
  return Keyed{flat_key, std::string(v)};
}

Result<AttachmentRequest> AttachmentOf(const PodInfo& pod, const NetworkSelection& sel,
                                       bool per_interface) {
  AttachmentRequest req;
  req.provider = sel.name + "." + sel.namespace_name;
  req.ifname = sel.ifname;
  req.per_interface = per_interface;
  req.ipam_claim = sel.ipam_claim;
  const std::string prefix = req.provider + ".kubernetes.io/";

  // Precedence (DESIGN §1.3): ip_address, then Multus ips, then the pool.
  auto ip = PerInterfaceOrFlat(pod, prefix + "ip_address", req);
  if (!ip) return Fail(ip.error());
  if (!ip->value.empty()) {
    auto ips = ParseStaticIps(ip->value, ip->key);
    if (!ips) return Fail(ips.error());
    req.static_ips = std::move(*ips);
  } else {
    req.static_ips = sel.ips;
  }

  auto mac = PerInterfaceOrFlat(pod, prefix + "mac_address", req);
  if (!mac) return Fail(mac.error());
  if (!mac->value.empty()) {
    if (!IsMac(mac->value)) {
      return Fail(Error::InvalidArgument("annotation " + mac->key + ": " + Quote(mac->value) +
                                         " is not a MAC address such as 02:00:00:00:00:01"));
    }
    req.mac = std::move(mac->value);
    req.mac_annotation = mac->key;
  } else {
    req.mac = sel.mac;  // validated by ParseNetworksAnnotation
  }

  req.pool = std::string(Trim(Annotation(pod, prefix + "ip_pool")));
  req.ordinal = pod.ordinal;
  req.sticky = pod.IsStatefulSetMember();

  auto family = ParseFamily(Annotation(pod, prefix + "ip_family"), prefix + "ip_family");
  if (!family) return Fail(family.error());
  req.family = *family;
  auto routes = ParseRoutes(Annotation(pod, prefix + "routes"), prefix + "routes");
  if (!routes) return Fail(routes.error());
  req.routes = std::move(*routes);
  auto default_route =
      ParseDefaultRoute(Annotation(pod, prefix + "default_route"), prefix + "default_route");
  if (!default_route) return Fail(default_route.error());
  req.default_route = *default_route;
  req.default_route_gateways = sel.default_route;
  return req;
}

// Sets the pod's controlling StatefulSet (kind StatefulSet, apiVersion apps/v1,
// controller true) from metadata.ownerReferences.
Result<void> ReadStatefulSetOwner(const Reader& r, const array& owners, PodInfo* info) {
  size_t i = 0;
  for (element e : owners) {
    const std::string path = "metadata.ownerReferences[" + std::to_string(i++) + "]";
    object o;
    if (e.get(o) != simdjson::SUCCESS) return Fail(r.WrongType(path, "an object", e));
    auto kind = r.String(o, "kind", path + ".kind");
    if (!kind) return Fail(kind.error());
    auto api_version = r.String(o, "apiVersion", path + ".apiVersion");
    if (!api_version) return Fail(api_version.error());
    auto name = r.String(o, "name", path + ".name");
    if (!name) return Fail(name.error());
    auto uid = r.String(o, "uid", path + ".uid");
    if (!uid) return Fail(uid.error());
    auto controller = r.Bool(o, "controller", path + ".controller");
    if (!controller) return Fail(controller.error());
    if (*kind == "VirtualMachineInstance" && api_version->rfind("kubevirt.io/", 0) == 0) {
      info->virtual_machine = *name;  // Kube-OVN's isVMPod: the VMI's name is the VM's
    }
    if (*kind == "StatefulSet" && *api_version == "apps/v1" && *controller) {
      info->stateful_set = std::move(*name);
      info->stateful_set_uid = std::move(*uid);
    }
  }
  return Ok();
}

}  // namespace

Result<std::vector<NetworkSelection>> ParseNetworksAnnotation(std::string_view value,
                                                              std::string_view pod_namespace) {
  std::vector<NetworkSelection> selections;
  std::string_view text = Trim(value);
  if (text.empty()) return selections;

  // Multus' test: any of these characters means the JSON form.
  if (text.find_first_of("[{\"") != std::string_view::npos) {
    Reader r("annotation " + std::string(kNetworksAnnotation));
    auto root = r.Parse(text);
    if (!root) return Fail(root.error());
    array arr;
    if (root->get(arr) != simdjson::SUCCESS) {
      return Fail(r.WrongType("the value", "a JSON list of network selection objects", *root));
    }
    size_t i = 0;
    for (element item : arr) {
      auto sel = ParseJsonEntry(r, item, "entry " + std::to_string(i + 1));
      if (!sel) return Fail(sel.error());
      selections.push_back(std::move(*sel));
      ++i;
    }
  } else {
    size_t i = 0;
    for (std::string_view item : Split(text, ',')) {
      item = Trim(item);
      const std::string where = "annotation " + std::string(kNetworksAnnotation) + ": entry " +
                                std::to_string(++i) + " " + Quote(item);
      if (item.empty()) {
        return Fail(Error::InvalidArgument("annotation " + std::string(kNetworksAnnotation) +
                                           ": entry " + std::to_string(i) +
                                           " is empty; remove the extra ','"));
      }
      auto sel = ParseTextEntry(item, where);
      if (!sel) return Fail(sel.error());
      selections.push_back(std::move(*sel));
    }
  }
  if (auto r = ApplyDefaults(selections, pod_namespace); !r) return Fail(r.error());
  return selections;
}

Result<PodInfo> ParsePod(const KubeObject& pod) {
  PodInfo info;
  info.namespace_name = pod.namespace_name;
  info.name = pod.name;
  info.uid = pod.uid;
  info.deleting = pod.deleting;

  Reader r("pod " + pod.Key());
  auto root_el = r.Parse(pod.raw);
  if (!root_el) return Fail(root_el.error());
  object root;
  if (root_el->get(root) != simdjson::SUCCESS) {
    return Fail(r.WrongType("the object", "a JSON object", *root_el));
  }

  auto meta = r.Object(root, "metadata", "metadata");
  if (!meta) return Fail(meta.error());
  if (*meta) {
    auto annotations = r.Object(**meta, "annotations", "metadata.annotations");
    if (!annotations) return Fail(annotations.error());
    if (*annotations) {
      for (auto [key, value] : **annotations) {
        std::string_view v;
        if (value.is_null()) continue;
        if (value.get(v) != simdjson::SUCCESS) {
          return Fail(
              r.WrongType("metadata.annotations[\"" + std::string(key) + "\"]", "a string", value));
        }
        info.annotations.emplace(std::string(key), std::string(v));
      }
    }
    auto owners = r.Array(**meta, "ownerReferences", "metadata.ownerReferences");
    if (!owners) return Fail(owners.error());
    if (*owners) {
      auto found = ReadStatefulSetOwner(r, **owners, &info);
      if (!found) return Fail(found.error());
    }
  }

  auto spec = r.Object(root, "spec", "spec");
  if (!spec) return Fail(spec.error());
  if (*spec) {
    auto node = r.String(**spec, "nodeName", "spec.nodeName");
    if (!node) return Fail(node.error());
    info.node_name = std::move(*node);
  }
  auto status = r.Object(root, "status", "status");
  if (!status) return Fail(status.error());
  if (*status) {
    auto phase = r.String(**status, "phase", "status.phase");
    if (!phase) return Fail(phase.error());
    info.phase = std::move(*phase);
  }
  info.finished = info.phase == "Succeeded" || info.phase == "Failed";

  if (!info.stateful_set.empty()) info.ordinal = StatefulSetOrdinal(info.name, info.stateful_set);
  return info;
}

Result<std::vector<AttachmentRequest>> AttachmentsOf(
    const PodInfo& pod, const std::vector<NetworkSelection>& selections) {
  std::map<std::string, int> uses;
  for (const auto& sel : selections) ++uses[sel.name + "." + sel.namespace_name];
  std::vector<AttachmentRequest> out;
  out.reserve(selections.size());
  for (const auto& sel : selections) {
    auto req = AttachmentOf(pod, sel, uses[sel.name + "." + sel.namespace_name] > 1);
    if (!req) return Fail(req.error().Wrap("pod " + pod.Key()));
    out.push_back(std::move(*req));
  }
  return out;
}

std::string AllocatedAnnotationsPatch(const AllocatedAnnotations& a) {
  return AllocatedAnnotationsPatch(std::vector<AllocatedAnnotations>{a});
}

std::string AllocatedAnnotationsPatch(const std::vector<AllocatedAnnotations>& all,
                                      const std::string& pod_uid) {
  // Keys in first-written order, values last-written.
  std::vector<std::pair<std::string, std::string>> fields;
  auto put = [&fields](std::string key, const std::string& value) {
    for (auto& [k, v] : fields) {
      if (k == key) {
        v = value;
        return;
      }
    }
    fields.emplace_back(std::move(key), value);
  };
  for (const AllocatedAnnotations& a : all) {
    const std::string prefix = a.provider + ".kubernetes.io/";
    const std::string suffix = a.ifname.empty() ? "" : "." + a.ifname;
    put(prefix + "ip_address" + suffix, a.addresses);
    if (!a.mac.empty()) put(prefix + "mac_address" + suffix, a.mac);
    put(prefix + "cidr", a.cidr);
    if (!a.gateway.empty()) put(prefix + "gateway", a.gateway);
    put(prefix + "allocated" + suffix, "true");
    if (!a.virtual_machine.empty()) put(prefix + "virtualmachine", a.virtual_machine);
  }
  JsonWriter w;
  w.BeginObject().Key("metadata").BeginObject();
  if (!pod_uid.empty()) w.Field("uid", pod_uid);
  w.Key("annotations").BeginObject();
  for (const auto& [k, v] : fields) w.Field(k, v);
  w.EndObject().EndObject().EndObject();
  return w.Take();
}

bool IsAllocated(const PodInfo& pod, std::string_view provider, std::string_view ifname) {
  std::string key = std::string(provider) + ".kubernetes.io/allocated";
  if (!ifname.empty()) key += "." + std::string(ifname);
  return Annotation(pod, key) == "true";
}

}  // namespace sublease
