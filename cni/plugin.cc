#include "cni/plugin.h"

#include <algorithm>
#include <chrono>

#include "cni/cni_error.h"
#include "cni/config.h"
#include "cni/daemon_client.h"
#include "cni/output.h"
#include "cni/version.h"
#include "common/ip.h"

namespace sublease::cni {
namespace {

// The daemon's request for this attachment. Static addresses come from the first
// non-empty source, most specific first: runtimeConfig.ips (Multus, from the pod's
// network selection), args.cni.ips, then CNI_ARGS IP=.
CniRequest BuildRequest(const CniEnv& env, const NetConf& conf) {
  CniRequest r;
  r.container_id = env.container_id;
  r.ifname = env.ifname;
  r.netns = env.netns;
  r.provider = conf.provider;
  r.network = conf.name;
  r.allow_persistent_ips = conf.allow_persistent_ips;
  r.pod_namespace = env.args.pod_namespace;
  r.pod_name = env.args.pod_name;
  r.pod_uid = env.args.pod_uid;
  if (!conf.runtime_ips.empty()) {
    r.ips = conf.runtime_ips;
  } else if (!conf.args_ips.empty()) {
    r.ips = conf.args_ips;
  } else {
    r.ips = env.args.ips;
  }
  r.mac = !conf.runtime_mac.empty() ? conf.runtime_mac : env.args.mac;
  r.routes = conf.routes;
  return r;
}

// "10.0.0.5/24" and "10.0.0.05/24"-like spellings compare equal; IPv6 too.
std::string CanonicalAddress(std::string_view text) {
  size_t slash = text.find('/');
  auto addr = IpAddr::Parse(text.substr(0, slash));
  if (!addr) return std::string(text);
  std::string out = addr->ToString();
  if (slash != std::string_view::npos) out += text.substr(slash);
  return out;
}

std::vector<std::string> Canonical(std::vector<std::string> v) {
  for (auto& s : v) s = CanonicalAddress(s);
  std::sort(v.begin(), v.end());
  return v;
}

std::string JoinList(const std::vector<std::string>& v) {
  if (v.empty()) return "none";
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// CNI spec: CHECK must consult prevResult; the daemon's lease is our "IP reservation".
CniResult<void> CompareWithPrevResult(const CniReply& lease, const NetConf& conf) {
  std::vector<std::string> held;
  for (const auto& ip : lease.ips) held.push_back(ip.address);
  held = Canonical(std::move(held));
  std::vector<std::string> expected = Canonical(conf.prev_result_ips);
  if (held == expected) return {};
  return FailCni(CniCode::kCheckMismatch, "sublease lease does not match prevResult",
                 "prevResult has " + JoinList(expected) + " but the sublease daemon holds " +
                     JoinList(held) + " for provider " + conf.provider +
                     "; delete and re-create the pod to get a consistent address");
}

CniResult<std::string> Dispatch(const CniEnv& env, const NetConf& conf) {
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(conf.timeout_seconds * 1000));
  DaemonClient client(conf.server_socket, std::max(timeout, std::chrono::milliseconds(1)));
  switch (env.command) {
    case Command::kAdd: {
      auto reply = client.Add(BuildRequest(env, conf));
      if (!reply) return tl::unexpected(CniErrorFromDaemon(reply.error()));
      return FormatIpamResult(*reply, conf.cni_version);
    }
    case Command::kDel: {
      auto done = client.Del(BuildRequest(env, conf));
      // CNI spec: DEL succeeds when there is nothing to release. The daemon answers
      // 200 then; not_found (e.g. the Subnet is gone) means the same here.
      if (!done && done.error().code != Code::kNotFound) {
        return tl::unexpected(CniErrorFromDaemon(done.error()));
      }
      return std::string();
    }
    case Command::kCheck: {
      if (!conf.has_prev_result) {
        return FailCni(CniCode::kInvalidConfig, "CHECK needs prevResult in the network config",
                       "the runtime passes the result of the last ADD as prevResult");
      }
      auto lease = client.Check(BuildRequest(env, conf));
      if (!lease) return tl::unexpected(CniErrorFromDaemon(lease.error()));
      if (auto same = CompareWithPrevResult(*lease, conf); !same)
        return tl::unexpected(same.error());
      return std::string();
    }
    case Command::kGc: {
      if (!conf.valid_attachments) {
        // Without the list, GC would release every lease of the provider.
        return FailCni(CniCode::kInvalidConfig, "GC needs cni.dev/valid-attachments",
                       "the runtime lists the attachments still in use; refusing to release "
                       "every lease of provider " +
                           conf.provider);
      }
      auto done = client.Gc(GcRequest{conf.provider, *conf.valid_attachments});
      if (!done) return tl::unexpected(CniErrorFromDaemon(done.error()));
      return std::string();
    }
    case Command::kStatus: {
      // CNI spec: STATUS reports 50 when the plugin cannot serve ADD now.
      if (auto ready = client.Status(); !ready) {
        return FailCni(CniCode::kNotAvailable, "sublease daemon is not ready to allocate",
                       ready.error().message);
      }
      return std::string();
    }
    case Command::kVersion: break;
  }
  return FormatVersionInfo();
}

CniResult<std::string> Run(const PluginIo& io, std::string* version) {
  auto env = ReadEnv(io.getenv);
  if (!env) return tl::unexpected(env.error());
  // CNI spec: VERSION takes no parameters.
  if (env->command == Command::kVersion) return FormatVersionInfo();
  auto input = io.read_stdin();
  if (!input) {
    return FailCni(CniCode::kIoFailure, "cannot read the network config from stdin",
                   input.error().message);
  }
  auto conf = ParseNetConf(*input, version);
  if (!conf) return tl::unexpected(conf.error());
  if (auto allowed = CheckCommandAllowed(env->command, conf->cni_version); !allowed) {
    return tl::unexpected(allowed.error());
  }
  return Dispatch(*env, *conf);
}

}  // namespace

int RunPlugin(const PluginIo& io) {
  std::string version(kLatestVersion);
  auto result = Run(io, &version);
  if (!result) {
    *io.out = FormatError(result.error(), version);
    return 1;
  }
  *io.out = std::move(*result);
  return 0;
}

}  // namespace sublease::cni
