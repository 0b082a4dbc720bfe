// RunPlugin: one CNI invocation, from environment and stdin to stdout and exit code.
//
// Like containernetworking's pkg/skel, the process is injected (environment,
// stdin, stdout), so tests run the whole plugin in-process against a fake daemon.
// Order of checks: CNI_COMMAND and its variables (4), stdin (5), JSON (6),
// cniVersion and command-per-version (1), config (7), then one daemon call whose
// failure maps through CniErrorFromDaemon. STATUS failures are all 50.
#pragma once

#include <functional>
#include <string>

#include "cni/env.h"
#include "common/result.h"

namespace sublease::cni {

struct PluginIo {
  Getenv getenv;
  // Reads all of stdin; called at most once and never for VERSION, which needs
  // no config (so running VERSION by hand does not wait on a terminal).
  std::function<Result<std::string>()> read_stdin;
  std::string* out = nullptr;  // stdout: the result, the version info or the CNI error
};

// Returns the exit code: 0 on success (ADD and VERSION print JSON, the others
// print nothing), 1 with CNI error JSON on *io.out otherwise.
int RunPlugin(const PluginIo& io);

}  // namespace sublease::cni
