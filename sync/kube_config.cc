#include "sync/kube_config.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sublease {
namespace {

Result<std::string> ReadWholeFile(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    std::string m = std::string(what) + " " + path + ": " + std::strerror(err);
    if (err == ENOENT) return Fail(Error::NotFound(m));
    return Fail(Error::InvalidArgument(m));
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// kubectl resolves relative paths in a kubeconfig against the file's directory.
std::string ResolvePath(const std::filesystem::path& base_dir, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  if (path.is_absolute()) return p;
  return (base_dir / path).lexically_normal().string();
}

// Finds the entry named `name` in a kubeconfig list (clusters/users/contexts) and
// returns its inner map (`cluster:`, `user:`, `context:`).
Result<YAML::Node> FindNamed(const YAML::Node& root, const std::string& file, const char* list,
                             const char* inner, const std::string& name) {
  YAML::Node entries = root[list];
  if (entries && !entries.IsSequence()) {
    return Fail(Error::InvalidArgument(file + ": " + list + " must be a list"));
  }
  if (entries) {
    for (const YAML::Node& e : entries) {
      if (!e.IsMap() || !e["name"]) continue;
      if (e["name"].as<std::string>() != name) continue;
      YAML::Node body = e[inner];
      if (!body || !body.IsMap()) {
        return Fail(Error::InvalidArgument(file + ": " + list + "[" + name + "]." + inner +
                                           " is missing or not a map"));
      }
      return body;
    }
  }
  return Fail(Error::InvalidArgument(file + ": no entry named \"" + name + "\" in " + list));
}

std::string Scalar(const YAML::Node& map, const char* key) {
  YAML::Node n = map[key];
  if (!n || n.IsNull()) return "";
  return n.as<std::string>();
}

// Reads `<key>-data` (base64) into *data or `<key>` (a path) into *file.
Result<void> DataOrFile(const YAML::Node& map, const std::string& where, const std::string& key,
                        const std::filesystem::path& base_dir, std::string* data,
                        std::string* file) {
  std::string encoded = Scalar(map, (key + "-data").c_str());
  if (!encoded.empty()) {
    auto decoded = DecodeBase64(encoded);
    if (!decoded) return Fail(decoded.error().Wrap(where + "." + key + "-data"));
    *data = std::move(*decoded);
    return Ok();
  }
  *file = ResolvePath(base_dir, Scalar(map, key.c_str()));
  return Ok();
}

Result<KubeConfig> ParseKubeconfig(const YAML::Node& root, const std::string& path,
                                   std::string_view wanted_context) {
  if (!root.IsMap()) return Fail(Error::InvalidArgument(path + ": not a kubeconfig (not a map)"));
  const std::filesystem::path base_dir = std::filesystem::path(path).parent_path();

  std::string context_name(wanted_context);
  if (context_name.empty()) context_name = Scalar(root, "current-context");
  if (context_name.empty()) {
    return Fail(
        Error::InvalidArgument(path + ": current-context is not set and no context was given"));
  }
  auto context = FindNamed(root, path, "contexts", "context", context_name);
  if (!context) return Fail(context.error());
  const std::string where_ctx = "contexts[" + context_name + "].context";
  std::string cluster_name = Scalar(*context, "cluster");
  if (cluster_name.empty())
    return Fail(Error::InvalidArgument(path + ": " + where_ctx + ".cluster is missing"));
  std::string user_name = Scalar(*context, "user");

  KubeConfig config;
  config.namespace_name = Scalar(*context, "namespace");

  auto cluster = FindNamed(root, path, "clusters", "cluster", cluster_name);
  if (!cluster) return Fail(cluster.error());
  const std::string where_cluster = path + ": clusters[" + cluster_name + "].cluster";
  config.server = Scalar(*cluster, "server");
  if (config.server.empty())
    return Fail(Error::InvalidArgument(where_cluster + ".server is missing"));
  if (config.server.rfind("https://", 0) != 0 && config.server.rfind("http://", 0) != 0) {
    return Fail(Error::InvalidArgument(where_cluster + ".server \"" + config.server +
                                       "\" is not an http(s) URL"));
  }
  while (!config.server.empty() && config.server.back() == '/') config.server.pop_back();
  auto ca = DataOrFile(*cluster, where_cluster, "certificate-authority", base_dir, &config.ca_data,
                       &config.ca_file);
  if (!ca) return Fail(ca.error());
  if (YAML::Node insecure = (*cluster)["insecure-skip-tls-verify"];
      insecure && !insecure.IsNull()) {
    config.insecure_skip_tls_verify = insecure.as<bool>();
  }

  if (!user_name.empty()) {
    auto user = FindNamed(root, path, "users", "user", user_name);
    if (!user) return Fail(user.error());
    const std::string where_user = path + ": users[" + user_name + "].user";
    config.token = Scalar(*user, "token");
    config.token_file = ResolvePath(base_dir, Scalar(*user, "tokenFile"));
    auto cert = DataOrFile(*user, where_user, "client-certificate", base_dir,
                           &config.client_cert_data, &config.client_cert_file);
    if (!cert) return Fail(cert.error());
    auto key = DataOrFile(*user, where_user, "client-key", base_dir, &config.client_key_data,
                          &config.client_key_file);
    if (!key) return Fail(key.error());
    bool has_cert = !config.client_cert_data.empty() || !config.client_cert_file.empty();
    bool has_key = !config.client_key_data.empty() || !config.client_key_file.empty();
    if (has_cert != has_key) {
      return Fail(Error::InvalidArgument(
          where_user + ": client-certificate and client-key must be given together"));
    }
    bool has_auth = has_cert || !config.token.empty() || !config.token_file.empty();
    if (!has_auth && ((*user)["exec"] || (*user)["auth-provider"])) {
      return Fail(Error::InvalidArgument(where_user +
                                         ": exec and auth-provider plugins are not supported; "
                                         "give token, tokenFile or client-certificate/client-key"));
    }
  }
  return config;
}

}  // namespace

Result<std::string> DecodeBase64(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::array<int, 256> value;
  value.fill(-1);
  for (size_t i = 0; i < kAlphabet.size(); ++i)
    value[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int>(i);
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  bool padding = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    int v = value[static_cast<unsigned char>(c)];
    if (v < 0 || padding) return Fail(Error::InvalidArgument("invalid base64 data"));
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // A lone trailing sextet cannot encode a byte.
  if (bits >= 6) return Fail(Error::InvalidArgument("invalid base64 data (truncated)"));
  return out;
}

Result<KubeConfig> LoadKubeconfig(const std::string& path, std::string_view context) {
  auto text = ReadWholeFile(path, "kubeconfig");
  if (!text) return Fail(text.error());
  try {
    return ParseKubeconfig(YAML::Load(*text), path, context);
  } catch (const YAML::Exception& e) {
    return Fail(Error::InvalidArgument(path + ": not a valid kubeconfig: " + e.what()));
  }
}

Result<KubeConfig> InClusterConfig(const std::string& secrets_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return Fail(Error::NotFound(
        "not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set "
        "(give a kubeconfig instead)"));
  }
  KubeConfig config;
  std::string h(host);
  // An IPv6 service address needs brackets in a URL (client-go: net.JoinHostPort).
  if (h.find(':') != std::string::npos) h = "[" + h + "]";
  config.server = "https://" + h + ":" + port;

  const std::string dir = secrets_dir.empty() ? std::string(kServiceAccountDir) : secrets_dir;
  config.token_file = dir + "/token";
  auto token = ReadWholeFile(config.token_file, "service-account token");
  if (!token) return Fail(Error::InvalidArgument(token.error().message));
  if (token->find_first_not_of(" \r\n\t") == std::string::npos) {
    return Fail(Error::InvalidArgument("service-account token " + config.token_file + " is empty"));
  }
  config.ca_file = dir + "/ca.crt";
  auto ca = ReadWholeFile(config.ca_file, "service-account CA");
  if (!ca) return Fail(Error::InvalidArgument(ca.error().message));
  if (auto ns = ReadWholeFile(dir + "/namespace", "namespace")) {
    config.namespace_name = *ns;
    while (!config.namespace_name.empty() &&
           std::isspace(static_cast<unsigned char>(config.namespace_name.back()))) {
      config.namespace_name.pop_back();
    }
  }
  return config;
}

}  // namespace sublease
