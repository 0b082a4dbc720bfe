#include "sync/ipblock.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <limits>

#include "common/json_writer.h"
#include "common/json_types.h"

namespace sublease {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

// Reads fields of one API object; `what` ("IPBlock", "Subnet macvlan") opens every
// error. Absent and null fields both mean "not given" (Go encoders write nil as null).
class Reader {
 public:
  explicit Reader(std::string what) : what_(std::move(what)) {}

  void Rename(std::string what) { what_ = std::move(what); }

  Result<object> Parse(simdjson::dom::parser& parser, std::string_view json) const {
    simdjson::padded_string padded(json);
    element root;
    if (auto err = parser.parse(padded).get(root); err) {
      return Fail(
          Error::InvalidArgument(what_ + " is not valid JSON: " + simdjson::error_message(err)));
    }
    object obj;
    if (root.get(obj) != simdjson::SUCCESS) {
      return Fail(Error::InvalidArgument(what_ + " must be a JSON object, not " +
                                         std::string(JsonTypeName(root.type()))));
    }
    return obj;
  }

  Error WrongType(std::string_view path, std::string_view want, const element& got) const {
    return Error::InvalidArgument(what_ + ": field \"" + std::string(path) + "\" must be " +
                                  std::string(want) + ", not " +
                                  std::string(JsonTypeName(got.type())));
  }

  static bool Lookup(const object& o, std::string_view key, element& out) {
    return JsonMember(o, key, out);
  }

  // The object at `key`; an empty optional when absent or null.
  Result<std::optional<object>> Object(const object& o, std::string_view key,
                                       std::string_view path) const {
    element e;
    if (!Lookup(o, key, e)) return std::optional<object>();
    object obj;
    if (e.get(obj) != simdjson::SUCCESS) return Fail(WrongType(path, "an object", e));
    return std::optional<object>(obj);
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
                                               std::string_view path) const {
    std::vector<std::string> out;
    element e;
    if (!Lookup(o, key, e)) return out;
    array arr;
    if (e.get(arr) != simdjson::SUCCESS) return Fail(WrongType(path, "an array of strings", e));
    size_t i = 0;
    for (element item : arr) {
      std::string_view s;
      if (item.get(s) != simdjson::SUCCESS) {
        return Fail(WrongType(std::string(path) + "[" + std::to_string(i) + "]", "a string", item));
      }
      out.emplace_back(s);
      ++i;
    }
    return out;
  }

  const std::string& what() const { return what_; }

 private:
  std::string what_;
};

// One parser per thread: parsing reuses its buffers (the daemon has one thread).
simdjson::dom::parser& Parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// Lowercase hex of `v`, zero-padded to `digits`.
std::string Hex(U128 v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(static_cast<size_t>(digits), '0');
  for (int i = digits - 1; i >= 0 && v != 0; --i) {
    out[static_cast<size_t>(i)] = kDigits[static_cast<unsigned>(v & 0xf)];
    v >>= 4;
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "11" -> 11. Decimal digits only (no sign, no spaces), as EncodeIpBlock writes them.
std::optional<uint64_t> ParseOffset(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return v;
}

Result<BlockAllocation> DecodeAllocation(const Reader& r, const object& o,
                                         const std::string& path) {
  BlockAllocation a;
  struct StringField {
    std::string_view key;
    std::string* out;
  };
  for (auto [key, out] :
       {StringField{"namespace", &a.pod_namespace}, StringField{"pod", &a.pod_name},
        StringField{"podUID", &a.pod_uid}, StringField{"interface", &a.ifname},
        StringField{"containerID", &a.container_id}, StringField{"node", &a.node},
        StringField{"provider", &a.provider}, StringField{"ownerUID", &a.owner_uid},
        StringField{"ipamClaim", &a.ipam_claim},
        StringField{"virtualMachine", &a.virtual_machine},
        StringField{"reservedIp", &a.reserved_ip}}) {
    auto v = r.String(o, key, path + "." + std::string(key));
    if (!v) return Fail(v.error());
    *out = std::move(*v);
  }
  auto sticky = r.Bool(o, "sticky", path + ".sticky");
  if (!sticky) return Fail(sticky.error());
  a.sticky = *sticky;
  auto spare = r.Bool(o, "spare", path + ".spare");
  if (!spare) return Fail(spare.error());
  a.spare = *spare;
  return a;
}

}  // namespace

std::optional<uint64_t> IpBlock::OffsetOf(const IpAddr& a) const {
  if (!cidr.Contains(a)) return std::nullopt;
  U128 offset = a.value() - cidr.first().value();
  if (offset > std::numeric_limits<uint64_t>::max()) return std::nullopt;
  return static_cast<uint64_t>(offset);
}

size_t UsedCount(const IpBlock& block) {
  size_t n = 0;
  for (const auto& [offset, a] : block.allocations) n += a.spare ? 0 : 1;
  return n;
}

bool OnlySpares(const IpBlock& block) { return UsedCount(block) == 0; }

std::string KeptFor(const BlockAllocation& a) {
  if (!a.ipam_claim.empty()) return "claim " + a.ipam_claim;
  if (!a.virtual_machine.empty()) return "vm " + a.virtual_machine + " " + a.ifname;
  if (!a.reserved_ip.empty()) return "reserved IP " + a.reserved_ip;
  return "";
}

std::string BlockName(const std::string& subnet, const IpNet& block_cidr) {
  const int digits = block_cidr.family() == Family::kV4 ? 8 : 32;
  return subnet + "." + Hex(block_cidr.first().value(), digits) + "-" +
         std::to_string(block_cidr.prefix_len());
}

int DefaultBlockPrefix(const IpNet& subnet_cidr) {
  // At least 32 blocks per subnet where the subnet allows, but never blocks smaller than
  // 8 or larger than 64 addresses (nor larger than the subnet itself).
  const int bits = FamilyBits(subnet_cidr.family());
  const int prefix = subnet_cidr.prefix_len();
  return std::max(prefix, std::min(bits - 3, std::max(prefix + 5, bits - 6)));
}

Result<int> BlockPrefixFor(const IpNet& subnet_cidr, const std::string& override) {
  std::string_view text = Trim(override);
  if (text.empty()) return DefaultBlockPrefix(subnet_cidr);
  std::string_view digits = text.front() == '/' ? text.substr(1) : text;
  int v4_prefix = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v4_prefix);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size() ||
      v4_prefix < 1 || v4_prefix > 32) {
    return Fail(Error::InvalidArgument(
        "block size \"" + override +
        "\" is not a prefix length from 1 to 32: write it as an IPv4 prefix such as \"/26\" "
        "(64 addresses per block)"));
  }
  const int bits = FamilyBits(subnet_cidr.family());
  // The same number of addresses in either family: /26 (2^6) is /122 for IPv6.
  const int prefix = bits - (32 - v4_prefix);
  return std::max(prefix, subnet_cidr.prefix_len());
}

IpNet BlockOf(const IpAddr& a, int block_prefix) { return IpNet(a, block_prefix); }

std::string EncodeIpBlock(const IpBlock& block) {
  JsonWriter w;
  w.BeginObject().Field("apiVersion", kIpBlockApiVersion).Field("kind", "IPBlock");
  w.Key("metadata").BeginObject().Field("name", block.name);
  w.Key("labels").BeginObject();
  w.Field(kSubnetLabel, block.subnet).Field(kNodeLabel, block.node);
  w.EndObject();
  if (!block.resource_version.empty()) w.Field("resourceVersion", block.resource_version);
  w.EndObject();

  w.Key("spec").BeginObject();
  w.Field("subnet", block.subnet).Field("cidr", block.cidr.ToString()).Field("node", block.node);
  if (block.return_spares) w.Field("returnSpares", true);
  w.Key("allocations").BeginObject();
  for (const auto& [offset, a] : block.allocations) {
    w.Key(std::to_string(offset)).BeginObject();
    w.Field("namespace", a.pod_namespace)
        .Field("pod", a.pod_name)
        .Field("podUID", a.pod_uid)
        .Field("interface", a.ifname)
        .Field("containerID", a.container_id)
        .Field("node", a.node)
        .Field("provider", a.provider)
        .Field("sticky", a.sticky);
    if (!a.owner_uid.empty()) w.Field("ownerUID", a.owner_uid);
    if (!a.ipam_claim.empty()) w.Field("ipamClaim", a.ipam_claim);
    if (!a.virtual_machine.empty()) w.Field("virtualMachine", a.virtual_machine);
    if (!a.reserved_ip.empty()) w.Field("reservedIp", a.reserved_ip);
    if (a.spare) w.Field("spare", true);
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();

  // The CRD has no status subresource, so this travels in the same write as spec: the
  // `Used` printer column stays exact without a second API call per allocation.
  w.Key("status").BeginObject();
  w.Key("used").Uint(UsedCount(block));
  w.EndObject();
  w.EndObject();
  return w.Take();
}

Result<IpBlock> DecodeIpBlock(std::string_view json) {
  Reader r("IPBlock");
  auto root = r.Parse(Parser(), json);
  if (!root) return Fail(root.error());

  IpBlock block;
  auto meta = r.Object(*root, "metadata", "metadata");
  if (!meta) return Fail(meta.error());
  if (*meta) {
    auto name = r.String(**meta, "name", "metadata.name");
    if (!name) return Fail(name.error());
    block.name = std::move(*name);
    auto rv = r.String(**meta, "resourceVersion", "metadata.resourceVersion");
    if (!rv) return Fail(rv.error());
    block.resource_version = std::move(*rv);
    auto uid = r.String(**meta, "uid", "metadata.uid");
    if (!uid) return Fail(uid.error());
    block.uid = std::move(*uid);
  }
  if (block.name.empty()) {
    return Fail(Error::InvalidArgument("IPBlock has no metadata.name"));
  }
  r.Rename("IPBlock " + block.name);

  auto spec = r.Object(*root, "spec", "spec");
  if (!spec) return Fail(spec.error());
  if (!*spec) return Fail(Error::InvalidArgument(r.what() + " has no spec"));
  const object& s = **spec;

  auto subnet = r.String(s, "subnet", "spec.subnet");
  if (!subnet) return Fail(subnet.error());
  block.subnet = std::move(*subnet);
  auto node = r.String(s, "node", "spec.node");
  if (!node) return Fail(node.error());
  block.node = std::move(*node);

  auto cidr_text = r.String(s, "cidr", "spec.cidr");
  if (!cidr_text) return Fail(cidr_text.error());
  if (cidr_text->empty()) return Fail(Error::InvalidArgument(r.what() + ": spec.cidr is required"));
  auto cidr = IpNet::Parse(*cidr_text);
  if (!cidr) return Fail(cidr.error().Wrap(r.what() + ": spec.cidr \"" + *cidr_text + "\""));
  block.cidr = *cidr;
  auto return_spares = r.Bool(s, "returnSpares", "spec.returnSpares");
  if (!return_spares) return Fail(return_spares.error());
  block.return_spares = *return_spares;

  auto allocations = r.Object(s, "allocations", "spec.allocations");
  if (!allocations) return Fail(allocations.error());
  if (*allocations) {
    for (auto [key, value] : **allocations) {
      const std::string path = "spec.allocations[\"" + std::string(key) + "\"]";
      auto offset = ParseOffset(key);
      if (!offset || U128(*offset) > block.cidr.SizeMinusOne()) {
        return Fail(Error::InvalidArgument(
            r.what() + ": key of " + path + " must be a decimal offset below the block's " +
            U128ToString(block.cidr.SizeMinusOne() + 1) + " addresses"));
      }
      object item;
      if (value.get(item) != simdjson::SUCCESS) return Fail(r.WrongType(path, "an object", value));
      auto a = DecodeAllocation(r, item, path);
      if (!a) return Fail(a.error());
      // The affine node's entry with no pod and no keeper is a spare whose flag was lost:
      // rewritten by a version that does not know spares (rolling upgrades), or pruned
      // by an IPBlock CRD older than the flag. Nothing else writes such an entry.
      if (!a->spare && !block.node.empty() && a->node == block.node && a->pod_name.empty() &&
          a->pod_namespace.empty() && KeptFor(*a).empty()) {
        a->spare = true;
      }
      block.allocations[*offset] = std::move(*a);
    }
  }
  return block;
}

Result<SubnetSpec> DecodeSubnet(std::string_view json) {
  Reader r("Subnet");
  auto root = r.Parse(Parser(), json);
  if (!root) return Fail(root.error());

  SubnetSpec spec;
  auto meta = r.Object(*root, "metadata", "metadata");
  if (!meta) return Fail(meta.error());
  if (*meta) {
    auto name = r.String(**meta, "name", "metadata.name");
    if (!name) return Fail(name.error());
    spec.name = std::move(*name);
    auto annotations = r.Object(**meta, "annotations", "metadata.annotations");
    if (!annotations) return Fail(annotations.error());
    if (*annotations) {
      auto size = r.String(**annotations, "sublease.io/block-size",
                           "metadata.annotations[\"sublease.io/block-size\"]");
      if (!size) return Fail(size.error());
      spec.block_size = std::move(*size);
    }
  }
  if (spec.name.empty()) return Fail(Error::InvalidArgument("Subnet has no metadata.name"));
  r.Rename("Subnet " + spec.name);

  auto s = r.Object(*root, "spec", "spec");
  if (!s) return Fail(s.error());
  if (!*s) return spec;  // NormalizeSubnet reports the missing cidrBlock.
  struct StringField {
    std::string_view key;
    std::string* out;
  };
  for (auto [key, out] :
       {StringField{"provider", &spec.provider}, StringField{"cidrBlock", &spec.cidr_block},
        StringField{"gateway", &spec.gateway}, StringField{"protocol", &spec.protocol}}) {
    auto v = r.String(**s, key, "spec." + std::string(key));
    if (!v) return Fail(v.error());
    *out = std::move(*v);
  }
  auto exclude = r.StringArray(**s, "excludeIps", "spec.excludeIps");
  if (!exclude) return Fail(exclude.error());
  spec.exclude_ips = std::move(*exclude);
  return spec;
}

Result<IpPoolSpec> DecodeIpPool(std::string_view json) {
  Reader r("IPPool");
  auto root = r.Parse(Parser(), json);
  if (!root) return Fail(root.error());
  IpPoolSpec spec;
  auto meta = r.Object(*root, "metadata", "metadata");
  if (!meta) return Fail(meta.error());
  if (*meta) {
    auto name = r.String(**meta, "name", "metadata.name");
    if (!name) return Fail(name.error());
    spec.name = std::move(*name);
    auto created = r.String(**meta, "creationTimestamp", "metadata.creationTimestamp");
    if (!created) return Fail(created.error());
    spec.creation_timestamp = std::move(*created);
  }
  if (spec.name.empty()) return Fail(Error::InvalidArgument("IPPool has no metadata.name"));
  r.Rename("IPPool " + spec.name);
  auto s = r.Object(*root, "spec", "spec");
  if (!s) return Fail(s.error());
  if (!*s) return spec;  // ResolvePools reports the missing subnet.
  auto subnet = r.String(**s, "subnet", "spec.subnet");
  if (!subnet) return Fail(subnet.error());
  spec.subnet = std::move(*subnet);
  auto ips = r.StringArray(**s, "ips", "spec.ips");
  if (!ips) return Fail(ips.error());
  spec.ips = std::move(*ips);
  auto namespaces = r.StringArray(**s, "namespaces", "spec.namespaces");
  if (!namespaces) return Fail(namespaces.error());
  spec.namespaces = std::move(*namespaces);
  return spec;
}

}  // namespace sublease
