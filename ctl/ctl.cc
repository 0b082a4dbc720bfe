#include "ctl/ctl.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <tuple>

#include "cni/unix_http.h"
#include "common/ip.h"
#include "common/wire.h"
#include "ctl/local_state.h"
#include "ctl/records.h"
#include "ctl/verify.h"

namespace sublease::ctl {
namespace {

struct Options {
  std::string db = "/var/lib/sublease/sublease.db";
  std::string output;
  std::string socket = "/run/sublease/sublease.sock";
  std::string kubeconfig;
  std::string node_name;
  std::string subnet, pod, node, address, ifname;
  bool all = false;
  int64_t limit = 50;
};

struct Io {
  std::string* out;
  std::string* err;
  int Error(const sublease::Error& e) {
    *err += "subleasectl: " + e.message + "\n";
    return kExitError;
  }
};

Result<std::unique_ptr<LocalState>> OpenDb(const Options& o) { return LocalState::Open(o.db); }

Record LeaseRecord(const LeaseRow& l) {
  return {{"subnet", l.subnet},
          {"address", l.address},
          {"state", l.state},
          {"pod", l.pod},
          {"ifname", l.ifname},
          {"container", l.container.substr(0, 12)},
          {"since", l.committed.empty() ? l.created : l.committed},
          {"container_id", l.container, false},
          {"family", l.family, false},
          {"pod_uid", l.pod_uid, false},
          {"provider", l.provider, false},
          {"sticky", l.sticky, false},
          {"mac", l.mac, false},
          {"created", l.created, false},
          {"committed", l.committed, false},
          {"released", l.released, false}};
}

int Subnets(const Options& o, OutputFormat fmt, Io io) {
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto rows = (*db)->Subnets();
  if (!rows) return io.Error(rows.error());
  RecordList list{"Subnet", {}};
  for (const auto& s : *rows) {
    std::string cidr = s.cidr_v4, gw = s.gateway_v4;
    if (!s.cidr_v6.empty()) cidr += (cidr.empty() ? "" : ",") + s.cidr_v6;
    if (!s.gateway_v6.empty()) gw += (gw.empty() ? "" : ",") + s.gateway_v6;
    list.items.push_back({{"name", s.name}, {"provider", s.provider}, {"protocol", s.protocol},
                          {"cidr", cidr}, {"gateway", gw}, {"exclude_ips", s.exclude_ips}});
  }
  *io.out += Render(list, fmt, "no subnets in " + o.db);
  return kExitOk;
}

int LeasesFromApi(const Options& o, OutputFormat fmt, Io io) {
  auto api = FetchAllocations(o.kubeconfig);
  if (!api) return io.Error(api.error());
  std::string address;
  if (!o.address.empty()) {
    auto a = IpAddr::Parse(o.address);
    if (!a) return io.Error(Error::InvalidArgument("--address " + o.address + ": not an IP address"));
    address = a->ToString();
  }
  RecordList list{"Allocation", {}};
  for (const auto& a : *api) {
    std::string pod = a.pod_namespace + "/" + a.pod_name;
    bool pod_ok = o.pod.empty() || o.pod == pod || (o.pod.find('/') == std::string::npos && o.pod == a.pod_name);
    if ((!o.subnet.empty() && a.subnet != o.subnet) || (!o.node.empty() && a.node != o.node) ||
        (!address.empty() && a.address != address) || !pod_ok) {
      continue;
    }
    list.items.push_back({{"subnet", a.subnet}, {"address", a.address}, {"node", a.node}, {"pod", pod},
                          {"ifname", a.ifname}, {"block", a.block}, {"pod_uid", a.pod_uid, false},
                          {"container_id", a.container_id, false}, {"provider", a.provider, false},
                          {"sticky", a.sticky, false}});
  }
  *io.out += Render(list, fmt, "no allocations match in the API server");
  return kExitOk;
}

int Leases(const Options& o, OutputFormat fmt, Io io) {
  if (!o.kubeconfig.empty()) return LeasesFromApi(o, fmt, io);
  if (!o.node.empty()) {
    return io.Error(Error::InvalidArgument(
        "--node needs --kubeconfig: a node's database holds only its own leases; the "
        "API server's IPBlocks say which node holds what"));
  }
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto rows = (*db)->Leases({o.subnet, o.pod, o.address, o.all});
  if (!rows) return io.Error(rows.error());
  RecordList list{"Lease", {}};
  for (const auto& l : *rows) list.items.push_back(LeaseRecord(l));
  *io.out += Render(list, fmt, o.all ? "no leases match" : "no live leases match (--all shows released ones)");
  return kExitOk;
}

int Usage(const Options& o, OutputFormat fmt, Io io) {
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto rows = (*db)->Usage(o.subnet);
  if (!rows) return io.Error(rows.error());
  RecordList list{"SubnetUsage", {}};
  for (const auto& u : *rows) {
    char pct[16];
    std::snprintf(pct, sizeof(pct), "%.1f%%", u.percent);
    list.items.push_back({{"subnet", u.subnet}, {"family", u.family}, {"used", u.used},
                          {"free", u.free}, {"usable", u.usable},
                          {"usage", UsageBar(u.percent) + " " + pct, true},
                          {"percent", u.percent, false}});
  }
  // The bar is for people: JSON and YAML carry the number instead.
  if (fmt != OutputFormat::kTable) {
    for (auto& r : list.items) std::erase_if(r, [](const Field& f) { return f.key == "usage"; });
  }
  *io.out += Render(list, fmt, o.subnet.empty() ? "no subnets in " + o.db : "no subnet " + o.subnet);
  return kExitOk;
}

int History(const Options& o, OutputFormat fmt, Io io) {
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto rows = (*db)->History(o.address, o.limit);
  if (!rows) return io.Error(rows.error());
  RecordList list{"HistoryEntry", {}};
  for (const auto& h : *rows) {
    list.items.push_back({{"at", h.at}, {"event", h.event}, {"subnet", h.subnet}, {"address", h.address},
                          {"pod", h.pod}, {"ifname", h.ifname}, {"container", h.container.substr(0, 12)},
                          {"container_id", h.container, false}, {"pod_uid", h.pod_uid, false}});
  }
  *io.out += Render(list, fmt, "nobody has held " + o.address + " (per this node's history)");
  return kExitOk;
}

int Verify(const Options& o, OutputFormat fmt, Io io) {
  if (o.node_name.empty()) {
    return io.Error(Error::InvalidArgument("verify needs --node-name (or $NODE_NAME): the node whose database this is"));
  }
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto local = (*db)->Leases({});
  if (!local) return io.Error(local.error());
  auto api = FetchAllocations(o.kubeconfig);
  if (!api) return io.Error(api.error());
  auto diffs = Compare(*local, *api, o.node_name);
  RecordList list{"Difference", {}};
  for (const auto& d : diffs) {
    list.items.push_back({{"kind", d.kind}, {"subnet", d.subnet}, {"address", d.address},
                          {"database", d.local}, {"api_server", d.api}});
  }
  *io.out += Render(list, fmt, "clean: the database and the API server agree on node " + o.node_name);
  if (!diffs.empty() && fmt == OutputFormat::kTable) {
    *io.err += std::to_string(diffs.size()) + " difference(s); see docs/debugging.md (\"verify\")\n";
  }
  return diffs.empty() ? kExitOk : kExitDifferences;
}

// One attachment's CNI DEL, as the runtime would have sent it.
Result<void> SendDel(const std::string& socket, const LeaseRow& l) {
  CniRequest req;
  req.container_id = l.container;
  req.ifname = l.ifname;
  req.provider = l.provider;
  req.pod_namespace = l.pod_namespace;
  req.pod_name = l.pod_name;
  req.pod_uid = l.pod_uid;
  auto r = cni::UnixHttpExchange(socket, {"POST", "/v1/cni/del", EncodeCniRequest(req)},
                                 std::chrono::seconds(10));
  if (!r) return Fail(r.error());
  if (r->status != 200) return Fail(DecodeWireError(r->status, r->body));
  return Ok();
}

int Release(const Options& o, Io io) {
  if (o.address.empty() && o.pod.empty()) {
    return io.Error(Error::InvalidArgument("release needs --address or --pod (it never releases everything)"));
  }
  auto db = OpenDb(o);
  if (!db) return io.Error(db.error());
  auto rows = (*db)->Leases({o.subnet, o.pod, o.address, false});
  if (!rows) return io.Error(rows.error());
  // One DEL per attachment (a dual-stack lease is two rows).
  std::map<std::tuple<std::string, std::string, std::string, std::string>, LeaseRow> attachments;
  for (const auto& l : *rows) {
    if (!o.ifname.empty() && l.ifname != o.ifname) continue;
    attachments.emplace(std::make_tuple(l.subnet, l.pod, l.container, l.ifname), l);
  }
  if (attachments.empty()) {
    *io.err += "subleasectl: no live lease matches\n";
    return kExitDifferences;
  }
  if (attachments.size() > 1 && !o.all) {
    *io.err += "subleasectl: " + std::to_string(attachments.size()) +
               " attachments match; narrow with --subnet/--ifname or pass --all:\n";
    for (const auto& [k, l] : attachments) *io.err += "  " + l.subnet + " " + l.address + " " + l.pod + " " + l.ifname + "\n";
    return kExitError;
  }
  for (const auto& [k, l] : attachments) {
    if (auto r = SendDel(o.socket, l); !r) return io.Error(r.error().Wrap("release through " + o.socket));
  }
  // What the daemon did, read back from its database.
  auto after = LocalState::Open(o.db);
  if (!after) return io.Error(after.error());
  int kept = 0;
  for (const auto& [k, l] : attachments) {
    auto still = (*after)->Leases({l.subnet, l.pod_namespace.empty() ? "" : l.pod_namespace + "/" + l.pod_name, l.address, false});
    if (!still) return io.Error(still.error());
    bool live = std::any_of(still->begin(), still->end(), [&](const LeaseRow& s) { return s.ifname == l.ifname; });
    std::string who = l.pod.empty() ? "container " + l.container.substr(0, 12) : l.pod;
    if (live) {
      ++kept;
      *io.err += "kept " + l.address + " (" + who + " " + l.ifname + "): the daemon keeps a lease while its pod " +
                 "exists (cluster mode) or a StatefulSet pod's while its StatefulSet wants it; delete the pod\n";
    } else {
      *io.out += "released " + l.address + " (" + who + " " + l.ifname + ", subnet " + l.subnet + ")\n";
    }
  }
  return kept == 0 ? kExitOk : kExitDifferences;
}

}  // namespace

int RunCtl(int argc, const char* const* argv, std::string* out, std::string* err) {
  Options o;
  if (const char* env = std::getenv("NODE_NAME")) o.node_name = env;
  CLI::App app{"subleasectl: what sublease holds on this node, read from its database.\n"
               "Exit codes: 0 ok, 1 differences (verify) or nothing released, 2 error.",
               "subleasectl"};
  app.set_version_flag("--version", "subleasectl 0.1.0");
  app.require_subcommand(1);
  app.add_option("--db", o.db, "the node's database (read-only)")->default_str(o.db);
  app.add_option("-o,--output", o.output, "table (default), json or yaml");
  auto* subnets = app.add_subcommand("subnets", "Subnets this node knows");
  auto* leases = app.add_subcommand("leases", "Live leases (filters combine)");
  leases->add_option("--subnet", o.subnet, "only this Subnet");
  leases->add_option("--pod", o.pod, "only this pod: NAMESPACE/NAME, or NAME in any namespace");
  leases->add_option("--address", o.address, "only this address");
  leases->add_option("--node", o.node, "only this node's allocations (needs --kubeconfig)");
  leases->add_option("--kubeconfig", o.kubeconfig, "list the API server's allocations (IPBlocks) instead");
  leases->add_flag("--all", o.all, "released leases too");
  auto* usage = app.add_subcommand("usage", "Used and free addresses per subnet and family");
  usage->add_option("--subnet", o.subnet, "only this Subnet");
  auto* history = app.add_subcommand("history", "Who held an address, newest first");
  history->add_option("ADDRESS", o.address, "the address")->required();
  history->add_option("--limit", o.limit, "at most this many events")->default_str("50");
  auto* verify = app.add_subcommand("verify", "Compare the database with the API server's IPBlocks");
  verify->add_option("--kubeconfig", o.kubeconfig, "kubeconfig (default: in-cluster service account)");
  verify->add_option("--node-name", o.node_name, "this node's name (default $NODE_NAME)");
  auto* release = app.add_subcommand("release", "Release a lease through the daemon (a CNI DEL)");
  release->add_option("--address", o.address, "the lease holding this address");
  release->add_option("--pod", o.pod, "the leases of this pod: NAMESPACE/NAME");
  release->add_option("--subnet", o.subnet, "only in this Subnet");
  release->add_option("--ifname", o.ifname, "only this interface");
  release->add_option("--socket", o.socket, "the daemon's socket")->default_str(o.socket);
  release->add_flag("--all", o.all, "release every matching attachment");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    *out += e.get_name() == "CallForVersion" ? "subleasectl 0.1.0\n" : app.help();
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    *err += std::string("subleasectl: ") + e.what() + "; see subleasectl --help\n";
    return kExitError;
  }
  Io io{out, err};
  auto fmt = ParseOutputFormat(o.output);
  if (!fmt) return io.Error(fmt.error());
  if (*subnets) return Subnets(o, *fmt, io);
  if (*leases) return Leases(o, *fmt, io);
  if (*usage) return Usage(o, *fmt, io);
  if (*history) return History(o, *fmt, io);
  if (*verify) return Verify(o, *fmt, io);
  if (*release) return Release(o, io);
  return io.Error(Error::InvalidArgument("no command; see subleasectl --help"));
}

}  // namespace sublease::ctl
