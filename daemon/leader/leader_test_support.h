// Test support for daemon/leader/: the project's fake API server
// (tests/fakeapi/fake_apiserver.py) as a child process, and a fixture with a loop, a
// control client, clients authenticated as distinct users (so one can be cut off with a
// deny rule) and bounded waits. Tests only.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "sync/kube_client.h"
#include "sync/test_support.h"

namespace sublease::testing {

class FakeApiProcess {
 public:
  ~FakeApiProcess() { Stop(); }
  // Starts the server; "" on success, else what went wrong. Bounded (30 s).
  std::string Start(const std::vector<std::string>& extra_args);
  void Stop();
  const std::string& url() const { return url_; }
  const std::string& control_url() const { return control_url_; }
  const std::string& ca_file() const { return ca_file_; }
  const std::string& token() const { return token_; }

 private:
  pid_t pid_ = 0;
  std::string state_dir_, url_, control_url_, ca_file_, token_;
};

class FakeApiTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A client that authenticates as `user` (a token added through the control API).
  KubeClient* ClientAs(const std::string& user);
  // Sends a request through the default client and waits (15 s) for the answer.
  KubeResult<KubeResponse> Call(const std::string& method, const std::string& path,
                                const std::string& body = "",
                                const std::string& content_type = "application/json");
  // Like Call, but fails the test unless the answer is 2xx; returns the body.
  std::string MustCall(const std::string& method, const std::string& path,
                       const std::string& body = "",
                       const std::string& content_type = "application/json");
  // The fake server's control API (/_fake/...).
  std::string Control(const std::string& method, const std::string& path,
                      const std::string& body = "");
  // Runs the loop until done() or timeout.
  bool Wait(const std::function<bool()>& done, int64_t timeout_ms) {
    return RunUntil(&loop_, done, timeout_ms);
  }
  // Runs the loop for `ms` (bounded).
  void Pump(int64_t ms) {
    RunUntil(&loop_, [] { return false; }, ms);
  }
  // Closes things with a Close(done) before the clients: tests push them here.
  std::vector<std::function<void(std::function<void()>)>> closers_;

  uv_loop_t loop_;
  SystemClock clock_;
  FakeApiProcess server_;
  std::unique_ptr<KubeClient> control_;
  std::unique_ptr<KubeClient> client_;  // as the server's default user
  std::vector<std::unique_ptr<KubeClient>> user_clients_;
  virtual std::vector<std::string> ServerArgs() { return {"--bookmark-interval", "0.3"}; }
};

// JSON helpers for tests.
std::string PodJson(const std::string& name, const std::string& node,
                    const std::string& extra_metadata = "");
std::string SubnetJson(const std::string& name, const std::string& provider,
                       const std::string& cidr, const std::string& extra_spec = "");
// A field of a JSON object by path ("status", "v4usingIPs"); "" when absent. Strings come
// back bare, other values as their JSON text.
std::string JsonField(const std::string& json, const std::vector<std::string>& path);

}  // namespace sublease::testing
