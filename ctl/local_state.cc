#include "ctl/local_state.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <algorithm>
#include <tuple>

#include "common/ip.h"
#include "daemon/store/store.h"

namespace sublease::ctl {
namespace {

std::string Text(SQLite::Statement& q, int column) {
  const auto c = q.getColumn(column);
  return c.isNull() ? std::string() : c.getString();
}

// SQLiteCpp throws; this is the one place where its exceptions become Errors.
template <typename T, typename F>
Result<T> Guard(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return Fail(Error::Internal("reading " + what + ": " + e.what()));
  }
}

}  // namespace

LocalState::LocalState(std::unique_ptr<SQLite::Database> db) : db_(std::move(db)) {}
LocalState::~LocalState() = default;

Result<std::unique_ptr<LocalState>> LocalState::Open(const std::string& path) {
  // The store's own checks first: existence, schema version, with its messages.
  if (auto gate = Store::OpenReadOnly(path); !gate) return Fail(gate.error());
  return Guard<std::unique_ptr<LocalState>>(path, [&] {
    auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READONLY, 5000);
    auto state = std::unique_ptr<LocalState>(new LocalState(std::move(db)));
    state->path_ = path;
    return state;
  });
}

Result<std::vector<SubnetRow>> LocalState::Subnets() {
  return Guard<std::vector<SubnetRow>>(path_, [&] {
    SQLite::Statement q(*db_,
        "SELECT name, provider, protocol, cidr_v4, cidr_v6, gateway_v4, gateway_v6, "
        "spec_exclude_ips FROM subnets ORDER BY name");
    std::vector<SubnetRow> rows;
    while (q.executeStep()) {
      rows.push_back({Text(q, 0), Text(q, 1), Text(q, 2), Text(q, 3), Text(q, 4), Text(q, 5),
                      Text(q, 6), Text(q, 7)});
    }
    return rows;
  });
}

Result<std::vector<LeaseRow>> LocalState::Leases(const LeaseFilter& f) {
  std::string address = f.address;
  if (!address.empty()) {
    auto a = IpAddr::Parse(address);
    if (!a) return Fail(Error::InvalidArgument("--address " + address + ": not an IP address"));
    address = a->ToString();  // the view's text is canonical (lower case, :: compressed)
  }
  std::string ns, name = f.pod;
  if (auto slash = f.pod.find('/'); slash != std::string::npos) {
    ns = f.pod.substr(0, slash);
    name = f.pod.substr(slash + 1);
  }
  return Guard<std::vector<LeaseRow>>(path_, [&] {
    // Joined back to leases for the numeric address order (the view has only text).
    SQLite::Statement q(*db_,
        "SELECT v.subnet, v.address, v.family, v.state, v.pod, v.pod_namespace, v.pod_name, "
        "v.pod_uid, v.container, v.ifname, v.provider, v.sticky, v.mac, "
        "coalesce(v.created, ''), coalesce(v.committed, ''), coalesce(v.released, '') "
        "FROM leases_view v "
        "WHERE (?1 = '' OR v.subnet = ?1) AND (?2 = '' OR v.address = ?2) "
        "  AND (?3 = '' OR v.pod_name = ?3) AND (?4 = '' OR v.pod_namespace = ?4) "
        "  AND (?5 OR v.state <> 'released') "
        "ORDER BY v.subnet, v.family, v.created");
    q.bind(1, f.subnet);
    q.bind(2, address);
    q.bind(3, name);
    q.bind(4, ns);
    q.bind(5, f.include_released ? 1 : 0);
    std::vector<LeaseRow> rows;
    while (q.executeStep()) {
      LeaseRow r;
      r.subnet = Text(q, 0); r.address = Text(q, 1); r.family = Text(q, 2); r.state = Text(q, 3);
      r.pod = Text(q, 4); r.pod_namespace = Text(q, 5); r.pod_name = Text(q, 6);
      r.pod_uid = Text(q, 7); r.container = Text(q, 8); r.ifname = Text(q, 9);
      r.provider = Text(q, 10); r.sticky = Text(q, 11) == "yes"; r.mac = Text(q, 12);
      r.created = Text(q, 13); r.committed = Text(q, 14); r.released = Text(q, 15);
      rows.push_back(std::move(r));
    }
    // Numeric address order (text order would put 10.0.0.10 before 10.0.0.9).
    auto key = [](const LeaseRow& r) {
      auto a = IpAddr::Parse(r.address);
      return std::make_tuple(r.subnet, a ? *a : IpAddr(), r.created);
    };
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const LeaseRow& x, const LeaseRow& y) { return key(x) < key(y); });
    return rows;
  });
}

Result<std::vector<UsageRow>> LocalState::Usage(const std::string& subnet) {
  return Guard<std::vector<UsageRow>>(path_, [&] {
    SQLite::Statement q(*db_,
        "SELECT subnet, family, usable_exact, used, "
        "CASE WHEN typeof(free) = 'integer' THEN CAST(free AS TEXT) "
        "     ELSE printf('%.0f', free) END, percent "
        "FROM subnet_usage WHERE (?1 = '' OR subnet = ?1) ORDER BY subnet, family");
    q.bind(1, subnet);
    std::vector<UsageRow> rows;
    while (q.executeStep()) {
      rows.push_back({Text(q, 0), Text(q, 1), Text(q, 2), q.getColumn(3).getInt64(), Text(q, 4),
                      q.getColumn(5).getDouble()});
    }
    return rows;
  });
}

Result<std::vector<HistoryRow>> LocalState::History(const std::string& address, int64_t limit) {
  auto a = IpAddr::Parse(address);
  if (!a) return Fail(Error::InvalidArgument(address + ": not an IP address"));
  return Guard<std::vector<HistoryRow>>(path_, [&] {
    // address_blob is indexed (lease_history_by_address); the text column is not.
    SQLite::Statement q(*db_,
        "SELECT at, event, subnet, address, pod, pod_uid, container, ifname FROM history_view "
        "WHERE address_blob = ?1 ORDER BY at_ms DESC, id DESC LIMIT ?2");
    auto bytes = a->Bytes();
    q.bind(1, bytes.data(), static_cast<int>(a->ByteSize()));
    q.bind(2, limit);
    std::vector<HistoryRow> rows;
    while (q.executeStep()) {
      rows.push_back({Text(q, 0), Text(q, 1), Text(q, 2), Text(q, 3), Text(q, 4), Text(q, 5),
                      Text(q, 6), Text(q, 7)});
    }
    return rows;
  });
}

}  // namespace sublease::ctl
