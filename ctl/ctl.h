// subleasectl: for a person on a node. Subcommands subnets, leases, usage, history,
// verify and release (docs/subleasectl.md). Reads the node's database read-only
// (LocalState); asks the API server only for `verify` and `leases --kubeconfig`;
// changes state only through the daemon's socket (`release` sends the CNI DEL the
// runtime would have sent), never by writing the database behind the daemon's back.
#pragma once

#include <string>

namespace sublease::ctl {

// Exit codes, for scripts.
inline constexpr int kExitOk = 0;
inline constexpr int kExitDifferences = 1;  // verify found differences; release kept/none
inline constexpr int kExitError = 2;        // bad arguments, unreadable database, API down

// Runs one command line; what it prints goes to *out (stdout) and *err (stderr).
int RunCtl(int argc, const char* const* argv, std::string* out, std::string* err);

}  // namespace sublease::ctl
