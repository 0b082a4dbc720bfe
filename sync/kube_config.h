// KubeConfig: where the Kubernetes API server is and how to authenticate to it.
//
// Two sources, as client-go has them: a kubeconfig file (LoadKubeconfig, for running
// outside a cluster and for tests) and the pod's service account (InClusterConfig, the
// DaemonSet's normal case). Both only read files; nothing is cached and nothing
// speaks to the network. Pure values, any thread.
//
// Every file path in a KubeConfig is absolute once loaded (kubeconfig: relative paths
// resolve against the kubeconfig's directory, as kubectl does). The bearer token is
// re-read from token_file by KubeClient as the kubelet rotates it.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace sublease {

struct KubeConfig {
  std::string server;  // "https://10.96.0.1:443"; no trailing slash

  // Trust: PEM data wins over a file; neither = the system's CAs.
  std::string ca_data;
  std::string ca_file;
  // Test clusters only: do not verify the server's certificate.
  bool insecure_skip_tls_verify = false;

  // Bearer token. When token_file is set it wins and is re-read as it changes
  // (client-go: "the last successfully read value takes precedence over BearerToken").
  std::string token;
  std::string token_file;

  // Client certificate authentication (PEM data wins over files).
  std::string client_cert_data;
  std::string client_cert_file;
  std::string client_key_data;
  std::string client_key_file;

  // The context's namespace ("" when the context names none).
  std::string namespace_name;

  // The User-Agent header ("" = KubeClient::kUserAgent). The daemon names its node in
  // it, so the API server's audit log (and the fake's request log) tells which node
  // made a request, as the kubelet's "kubelet/v1.x (linux/amd64)" names its binary.
  std::string user_agent;
};

// Reads a kubeconfig (clusters, users, contexts, current-context). `context` "" means
// the file's current-context. Base64 *-data fields are decoded. kInvalidArgument for
// a malformed file or a missing/unknown context, cluster, user or field (the message
// names the file and the field); kNotFound when the file does not exist.
Result<KubeConfig> LoadKubeconfig(const std::string& path, std::string_view context = "");

// The pod's own service account: KUBERNETES_SERVICE_HOST/_PORT from the environment,
// token and ca.crt under `secrets_dir` (the standard mount by default). kNotFound
// when not running in a pod (variables unset), kInvalidArgument for unreadable files.
inline constexpr std::string_view kServiceAccountDir =
    "/var/run/secrets/kubernetes.io/serviceaccount";
Result<KubeConfig> InClusterConfig(
    const std::string& secrets_dir = std::string(kServiceAccountDir));

// Base64 (RFC 4648, with or without padding; whitespace ignored) → bytes.
Result<std::string> DecodeBase64(std::string_view text);

}  // namespace sublease
