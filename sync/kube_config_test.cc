#include "sync/kube_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace sublease {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sync_test.XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content) const {
    fs::path p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
    return p.string();
  }

 private:
  fs::path path_;
};

// base64("CA PEM").
constexpr char kCaData[] = "Q0EgUEVN";

std::string Kubeconfig(const std::string& cluster_extra, const std::string& user_extra) {
  return "apiVersion: v1\n"
         "kind: Config\n"
         "current-context: main\n"
         "clusters:\n"
         "- name: c1\n"
         "  cluster:\n"
         "    server: https://127.0.0.1:6443/\n" +
         cluster_extra +
         "contexts:\n"
         "- name: main\n"
         "  context: {cluster: c1, user: u1, namespace: kube-system}\n"
         "- name: other\n"
         "  context: {cluster: c1, user: u2}\n"
         "users:\n"
         "- name: u1\n"
         "  user:\n" +
         user_extra +
         "- name: u2\n"
         "  user:\n"
         "    token: second\n";
}

TEST(KubeconfigTest, DecodesDataFieldsAndTrimsServerSlash) {
  TempDir dir;
  std::string path = dir.Write(
      "config", Kubeconfig(std::string("    certificate-authority-data: ") + kCaData + "\n",
                           "    token: abc\n"
                           "    client-certificate-data: Q0VSVA==\n"
                           "    client-key-data: S0VZ\n"));
  auto config = LoadKubeconfig(path);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->server, "https://127.0.0.1:6443");
  EXPECT_EQ(config->ca_data, "CA PEM");
  EXPECT_EQ(config->ca_file, "");
  EXPECT_EQ(config->token, "abc");
  EXPECT_EQ(config->client_cert_data, "CERT");
  EXPECT_EQ(config->client_key_data, "KEY");
  EXPECT_EQ(config->namespace_name, "kube-system");
  EXPECT_FALSE(config->insecure_skip_tls_verify);
}

TEST(KubeconfigTest, ResolvesRelativeFilesAgainstTheKubeconfigDirectory) {
  TempDir dir;
  std::string path = dir.Write("kube/config", Kubeconfig("    certificate-authority: certs/ca.crt\n"
                                                         "    insecure-skip-tls-verify: true\n",
                                                         "    tokenFile: ../tokens/t\n"
                                                         "    client-certificate: /abs/cert.pem\n"
                                                         "    client-key: key.pem\n"));
  auto config = LoadKubeconfig(path);
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->ca_file, (dir.path() / "kube/certs/ca.crt").string());
  EXPECT_EQ(config->token_file, (dir.path() / "tokens/t").string());
  EXPECT_EQ(config->client_cert_file, "/abs/cert.pem");
  EXPECT_EQ(config->client_key_file, (dir.path() / "kube/key.pem").string());
  EXPECT_TRUE(config->insecure_skip_tls_verify);
}

TEST(KubeconfigTest, ExplicitContextOverridesCurrentContext) {
  TempDir dir;
  std::string path = dir.Write("config", Kubeconfig("", "    token: first\n"));
  auto config = LoadKubeconfig(path, "other");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->token, "second");
  EXPECT_EQ(config->namespace_name, "");
}

TEST(KubeconfigTest, ErrorsNameTheFileAndTheField) {
  TempDir dir;
  struct Case {
    std::string yaml;
    std::string context;
    std::string expected;  // substring of the message
  };
  const Case cases[] = {
      {Kubeconfig("", "    token: a\n"), "nosuch", "no entry named \"nosuch\" in contexts"},
      {"current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n", "",
       "no entry named \"c\" in clusters"},
      {"current-context: x\ncontexts:\n- name: x\n  context: {user: u}\n", "",
       "contexts[x].context.cluster is missing"},
      {"current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\nclusters:\n- name: c\n  "
       "cluster: {}\n",
       "", "clusters[c].cluster.server is missing"},
      {Kubeconfig("    certificate-authority-data: '!!notbase64'\n", "    token: a\n"), "",
       "certificate-authority-data"},
      {Kubeconfig("", "    client-certificate-data: Q0VSVA==\n"), "",
       "client-certificate and client-key must be given together"},
      {Kubeconfig("", "    exec: {command: aws}\n"), "",
       "exec and auth-provider plugins are not supported"},
      {"clusters: [", "", "not a valid kubeconfig"},
      {"apiVersion: v1\n", "", "current-context is not set"},
  };
  for (const Case& c : cases) {
    std::string path = dir.Write("config", c.yaml);
    auto config = LoadKubeconfig(path, c.context);
    ASSERT_FALSE(config) << c.yaml;
    EXPECT_EQ(config.error().code, Code::kInvalidArgument) << c.yaml;
    EXPECT_NE(config.error().message.find(path), std::string::npos) << config.error().message;
    EXPECT_NE(config.error().message.find(c.expected), std::string::npos)
        << "message: " << config.error().message << "\nexpected: " << c.expected;
  }
}

TEST(KubeconfigTest, MissingFileIsNotFound) {
  auto config = LoadKubeconfig("/nonexistent/kubeconfig");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Code::kNotFound);
  EXPECT_NE(config.error().message.find("/nonexistent/kubeconfig"), std::string::npos);
}

TEST(Base64Test, DecodesWithAndWithoutPadding) {
  EXPECT_EQ(*DecodeBase64("aGVsbG8="), "hello");
  EXPECT_EQ(*DecodeBase64("aGVsbG8"), "hello");
  EXPECT_EQ(*DecodeBase64("aGVs\nbG8h"), "hello!");
  EXPECT_EQ(*DecodeBase64(""), "");
  EXPECT_FALSE(DecodeBase64("a$b"));
  EXPECT_FALSE(DecodeBase64("a"));
}

class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old, had_ = true;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(InClusterConfigTest, ReadsServiceAccountFromRootDir) {
  TempDir dir;
  dir.Write("token", "tok\n");
  dir.Write("ca.crt", "PEM");
  dir.Write("namespace", "kube-system\n");
  EnvGuard host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
  EnvGuard port("KUBERNETES_SERVICE_PORT", "443");
  auto config = InClusterConfig(dir.path().string());
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->server, "https://10.96.0.1:443");
  EXPECT_EQ(config->token_file, (dir.path() / "token").string());
  EXPECT_EQ(config->ca_file, (dir.path() / "ca.crt").string());
  EXPECT_EQ(config->namespace_name, "kube-system");
}

TEST(InClusterConfigTest, BracketsAnIpv6ServiceHost) {
  TempDir dir;
  dir.Write("token", "tok");
  dir.Write("ca.crt", "PEM");
  EnvGuard host("KUBERNETES_SERVICE_HOST", "fd00::1");
  EnvGuard port("KUBERNETES_SERVICE_PORT", "6443");
  auto config = InClusterConfig(dir.path().string());
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->server, "https://[fd00::1]:6443");
}

TEST(InClusterConfigTest, OutsideAPodIsNotFound) {
  EnvGuard host("KUBERNETES_SERVICE_HOST", nullptr);
  EnvGuard port("KUBERNETES_SERVICE_PORT", "443");
  auto config = InClusterConfig("/nonexistent");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Code::kNotFound);
  EXPECT_NE(config.error().message.find("KUBERNETES_SERVICE_HOST"), std::string::npos);
}

TEST(InClusterConfigTest, MissingTokenOrCaIsNamed) {
  TempDir dir;
  EnvGuard host("KUBERNETES_SERVICE_HOST", "10.96.0.1");
  EnvGuard port("KUBERNETES_SERVICE_PORT", "443");
  auto no_token = InClusterConfig(dir.path().string());
  ASSERT_FALSE(no_token);
  EXPECT_EQ(no_token.error().code, Code::kInvalidArgument);
  EXPECT_NE(no_token.error().message.find((dir.path() / "token").string()), std::string::npos)
      << no_token.error().message;
  dir.Write("token", "tok");
  auto no_ca = InClusterConfig(dir.path().string());
  ASSERT_FALSE(no_ca);
  EXPECT_NE(no_ca.error().message.find("ca.crt"), std::string::npos) << no_ca.error().message;
}

}  // namespace
}  // namespace sublease
