#include "cni/env.h"

#include <algorithm>
#include <cctype>

#include "cni/config.h"

namespace sublease::cni {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

tl::unexpected<CniError> BadArgs(std::string msg, std::string details = "") {
  return FailCni(CniCode::kInvalidEnvironment, "CNI_ARGS: " + std::move(msg), std::move(details));
}

// CNI spec: a container id starts with an alphanumeric character, followed by
// alphanumerics, '_', '.' or '-'.
bool ValidContainerId(std::string_view id) {
  if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

// CNI spec: an interface name is not empty, not "." or "..", shorter than 16
// characters and free of '/', ':' and whitespace (Linux's own rules).
bool ValidIfname(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() >= 16) return false;
  return std::none_of(name.begin(), name.end(),
                      [](unsigned char c) { return c == '/' || c == ':' || std::isspace(c); });
}

std::vector<std::string> SplitComma(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

CniResult<CniArgs> ParseCniArgs(std::string_view text) {
  struct Pair {
    std::string_view key, value;
  };
  std::vector<Pair> pairs;
  bool ignore_unknown = false;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t semi = rest.find(';');
    std::string_view item = rest.substr(0, semi);
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return BadArgs("\"" + std::string(item) + "\" is not KEY=VALUE",
                     "CNI_ARGS is a ';'-separated list of KEY=VALUE pairs");
    }
    Pair p{item.substr(0, eq), item.substr(eq + 1)};
    // IgnoreUnknown applies to the whole list wherever it appears, so read it first.
    if (p.key == "IgnoreUnknown") {
      std::string v = Lower(p.value);
      if (v == "1" || v == "true") {
        ignore_unknown = true;
      } else if (v != "0" && v != "false" && !v.empty()) {
        return BadArgs("IgnoreUnknown=" + std::string(p.value) + " is not a boolean",
                       "use IgnoreUnknown=1 or IgnoreUnknown=true");
      }
      continue;
    }
    pairs.push_back(p);
  }

  CniArgs args;
  for (const Pair& p : pairs) {
    if (p.key == "K8S_POD_NAMESPACE") {
      args.pod_namespace = p.value;
    } else if (p.key == "K8S_POD_NAME") {
      args.pod_name = p.value;
    } else if (p.key == "K8S_POD_UID") {
      args.pod_uid = p.value;
    } else if (p.key == "K8S_POD_INFRA_CONTAINER_ID") {
      args.infra_container_id = p.value;
    } else if (p.key == "IP") {
      args.ips = SplitComma(p.value);
      for (const auto& ip : args.ips) {
        if (auto r = ValidateStaticAddress(ip); !r) {
          return BadArgs("IP=" + ip + " is not an address", r.error().message);
        }
      }
    } else if (p.key == "MAC") {
      args.mac = p.value;
    } else if (!ignore_unknown) {
      return BadArgs("unknown key " + std::string(p.key),
                     "sublease understands K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID, "
                     "K8S_POD_INFRA_CONTAINER_ID, IP and MAC; add IgnoreUnknown=1 to "
                     "pass other keys");
    }
  }
  return args;
}

CniResult<CniEnv> ReadEnv(const Getenv& getenv) {
  auto get = [&](std::string_view name) { return getenv(name).value_or(""); };
  CniEnv env;
  std::string command = get("CNI_COMMAND");
  if (command.empty()) {
    return FailCni(CniCode::kInvalidEnvironment, "CNI_COMMAND is not set",
                   "set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION");
  }
  auto parsed = ParseCommand(command);
  if (!parsed) {
    return FailCni(CniCode::kInvalidEnvironment, "CNI_COMMAND=" + command + " is not a CNI command",
                   "set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION");
  }
  env.command = *parsed;
  env.container_id = get("CNI_CONTAINERID");
  env.netns = get("CNI_NETNS");
  env.ifname = get("CNI_IFNAME");
  env.path = get("CNI_PATH");

  bool attachment = env.command == Command::kAdd || env.command == Command::kDel ||
                    env.command == Command::kCheck;
  std::vector<std::string_view> missing;
  if (attachment && env.container_id.empty()) missing.push_back("CNI_CONTAINERID");
  // CNI spec: DEL must work when the network namespace is already gone.
  if (attachment && env.command != Command::kDel && env.netns.empty())
    missing.push_back("CNI_NETNS");
  if (attachment && env.ifname.empty()) missing.push_back("CNI_IFNAME");
  if (env.command == Command::kGc && env.path.empty()) missing.push_back("CNI_PATH");
  if (!missing.empty()) {
    std::string names;
    for (auto m : missing) names += (names.empty() ? "" : ", ") + std::string(m);
    return FailCni(CniCode::kInvalidEnvironment, "required environment variables missing: " + names,
                   "CNI " + command + " needs " + names + "; the container runtime sets them");
  }
  if (attachment && !ValidContainerId(env.container_id)) {
    return FailCni(CniCode::kInvalidEnvironment, "CNI_CONTAINERID has invalid characters",
                   "CNI_CONTAINERID=\"" + env.container_id +
                       "\" must start with a letter or digit and contain only letters, digits, "
                       "'_', '.' and '-'");
  }
  if (attachment && !ValidIfname(env.ifname)) {
    return FailCni(CniCode::kInvalidEnvironment, "CNI_IFNAME is not a valid interface name",
                   "CNI_IFNAME=\"" + env.ifname +
                       "\" must be 1-15 characters, not '.' or '..', without '/', ':' or spaces");
  }
  if (attachment) {
    auto args = ParseCniArgs(get("CNI_ARGS"));
    if (!args) return tl::unexpected(args.error());
    env.args = std::move(*args);
  }
  return env;
}

}  // namespace sublease::cni
