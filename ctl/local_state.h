// LocalState: a node's database read the way a person asks about it. Read-only.
//
// Opens the file with Store::OpenReadOnly (which refuses a missing file or a schema
// this binary does not read, with a message saying what to do) and then reads the
// views that schema/README.md documents for people: leases_view, subnet_usage,
// history_view. docs/debugging.md runs the same queries with the sqlite3 CLI, so the
// two always agree. Never writes: the daemon is the only writer, and WAL lets this
// read while it writes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace SQLite { class Database; }

namespace sublease::ctl {

struct SubnetRow {
  std::string name, provider, protocol, cidr_v4, cidr_v6, gateway_v4, gateway_v6;
  std::string exclude_ips;  // the spec's excludeIps as JSON text
};

struct LeaseRow {
  std::string subnet, address, family, state, pod, pod_namespace, pod_name, pod_uid;
  std::string container, ifname, provider, mac, created, committed, released;
  bool sticky = false;
};

struct UsageRow {
  std::string subnet, family;
  std::string usable;  // exact decimal (an IPv6 /64 does not fit int64)
  int64_t used = 0;
  std::string free;    // exact decimal
  double percent = 0;
};

struct HistoryRow {
  std::string at, event, subnet, address, pod, pod_uid, container, ifname;
};

struct LeaseFilter {
  std::string subnet;   // exact name; "" = any
  std::string pod;      // "ns/name", or "name" in any namespace; "" = any
  std::string address;  // as printed (canonical text); "" = any
  bool include_released = false;
};

class LocalState {
 public:
  // kNotFound when the file does not exist; kInternal for a schema this binary does not
  // read, a corrupt file or one it may not open.
  static Result<std::unique_ptr<LocalState>> Open(const std::string& path);
  ~LocalState();

  Result<std::vector<SubnetRow>> Subnets();
  // Live leases (or all, with include_released) in subnet, family and address order.
  Result<std::vector<LeaseRow>> Leases(const LeaseFilter& filter);
  Result<std::vector<UsageRow>> Usage(const std::string& subnet);
  // Who held `address` (canonical text), newest first.
  Result<std::vector<HistoryRow>> History(const std::string& address, int64_t limit);

 private:
  explicit LocalState(std::unique_ptr<SQLite::Database> db);
  std::unique_ptr<SQLite::Database> db_;
  std::string path_;
};

}  // namespace sublease::ctl
