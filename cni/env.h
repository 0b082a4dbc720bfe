// The CNI environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
// CNI_ARGS, CNI_PATH, read through an injected Getenv so tests need no process.
//
// Every failure is CNI error 4 and names the variable. Which variables a command
// requires follows the CNI spec: ADD and CHECK need CONTAINERID, NETNS, IFNAME;
// DEL needs CONTAINERID and IFNAME (the netns may be gone); GC needs CNI_PATH;
// VERSION and STATUS need only CNI_COMMAND.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cni/cni_error.h"
#include "cni/version.h"

namespace sublease::cni {

// Returns the variable's value, or nullopt when unset. An empty value counts as unset.
using Getenv = std::function<std::optional<std::string>(std::string_view name)>;

// CNI_ARGS: "K=V;K=V". Kubernetes runtimes send the K8S_POD_* keys.
struct CniArgs {
  std::string pod_namespace;       // K8S_POD_NAMESPACE
  std::string pod_name;            // K8S_POD_NAME
  std::string pod_uid;             // K8S_POD_UID
  std::string infra_container_id;  // K8S_POD_INFRA_CONTAINER_ID (informational)
  std::vector<std::string> ips;    // IP=a,b: legacy static addresses
  std::string mac;                 // MAC=
};

// Parses CNI_ARGS. Unknown keys fail unless IgnoreUnknown=1|true appears anywhere
// in the list (CNI convention). Values may contain '='; empty segments are skipped.
CniResult<CniArgs> ParseCniArgs(std::string_view text);

struct CniEnv {
  Command command = Command::kVersion;
  std::string container_id;
  std::string netns;
  std::string ifname;
  std::string path;  // CNI_PATH; unused by an IPAM plugin, checked where the spec requires it
  CniArgs args;
};

// Reads CNI_COMMAND and the variables that command requires, validating the
// container id and interface name as the spec defines them.
CniResult<CniEnv> ReadEnv(const Getenv& getenv);

}  // namespace sublease::cni
