#include "daemon/server/http_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "daemon/server/test_client.h"

namespace sublease {
namespace {

using Clock = std::chrono::steady_clock;
using testing::After;
using testing::ClientResponse;
using testing::ConnectTcp;
using testing::ConnectUnix;
using testing::MakeRequest;
using testing::ReadResponse;
using testing::ReadsEof;
using testing::SendAll;

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Answers at once with "<METHOD> <path>?<query> <body>".
Handler Echo() {
  return [](const HttpRequest& r, Respond respond) {
    respond({200, "text/plain", r.method + " " + r.path + "?" + r.query + " " + r.body});
  };
}

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() { uv_loop_init(&loop_); }
  ~HttpServerTest() override {
    // Proof that nothing leaked: every handle the server opened is closed.
    EXPECT_EQ(testing::CloseLoop(&loop_), 0);
  }

  std::string SocketPath(const std::string& name = "api.sock") const {
    return dir_.path() + "/" + name;
  }
  ListenerConfig Unix(Handler handler, const std::string& path) const {
    ListenerConfig c;
    c.address = "unix:" + path;
    c.handler = std::move(handler);
    return c;
  }
  // Runs the loop while `client` runs on a thread; then stops `server`.
  void RunAndStop(HttpServer& server, const std::function<void()>& client) {
    testing::RunLoopWithClient(
        &loop_, client, [&](std::function<void()> finish) { server.Stop(std::move(finish)); });
  }

  uv_loop_t loop_;
  testing::TempDir dir_;
};

TEST_F(HttpServerTest, AnswersRequestOverUnixSocketWithPeerCredentials) {
  HttpServer server(&loop_, {});
  HttpRequest seen;
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest& r, Respond respond) {
        seen = r;
        respond({201, "application/json", "{\"ok\":true}"});
      },
      SocketPath())));
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("POST", "/v1/cni/add?debug=1", "{\"a\":1}")));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 201);
  EXPECT_EQ(response->headers["reason"], "Created");
  EXPECT_EQ(response->headers["content-type"], "application/json");
  EXPECT_EQ(response->headers["content-length"], "11");
  EXPECT_EQ(response->headers["connection"], "keep-alive");
  EXPECT_EQ(response->body, "{\"ok\":true}");
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.path, "/v1/cni/add");
  EXPECT_EQ(seen.query, "debug=1");
  EXPECT_EQ(seen.body, "{\"a\":1}");
  EXPECT_EQ(seen.peer_uid, geteuid());
  EXPECT_EQ(seen.peer_gid, getegid());
  EXPECT_EQ(seen.peer_pid, getpid());
}

TEST_F(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> first, second;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/one", "")));
    first = ReadResponse(fd, carry);
    ASSERT_TRUE(SendAll(fd, MakeRequest("POST", "/two", "x")));
    second = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "GET /one? ");
  EXPECT_EQ(second->body, "POST /two? x");
  EXPECT_EQ(server.Stats().connections_accepted, 1u);
  EXPECT_EQ(server.Stats().requests, 2u);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  HttpServer server(&loop_, {});
  std::vector<std::string> handled;
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest& r, Respond respond) {
        handled.push_back(r.path);
        // The first answer comes later than the second would: order must still hold.
        if (r.path == "/slow") {
          After(&loop_, 100, [respond] { respond({200, "text/plain", "slow"}); });
        } else {
          respond({200, "text/plain", "fast"});
        }
      },
      SocketPath())));
  std::optional<ClientResponse> first, second;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/slow", "") + MakeRequest("GET", "/fast", "")));
    first = ReadResponse(fd, carry);
    second = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "slow");
  EXPECT_EQ(second->body, "fast");
  EXPECT_EQ(handled, (std::vector<std::string>{"/slow", "/fast"}));
}

TEST_F(HttpServerTest, AnswersAsynchronouslyAfterTimer) {
  HttpServer server(&loop_, {});
  Clock::time_point handled_at;
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest&, Respond respond) {
        handled_at = Clock::now();
        After(&loop_, 150, [respond] { respond({200, "text/plain", "later"}); });
      },
      SocketPath())));
  std::optional<ClientResponse> response;
  Clock::time_point answered_at;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/", "")));
    response = ReadResponse(fd, carry);
    answered_at = Clock::now();
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "later");
  EXPECT_GE(answered_at - handled_at, std::chrono::milliseconds(140));
}

TEST_F(HttpServerTest, SecondRespondIsIgnored) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest&, Respond respond) {
        respond({200, "text/plain", "first"});
        respond({500, "text/plain", "second"});
      },
      SocketPath())));
  std::optional<ClientResponse> first, second;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/a", "")));
    first = ReadResponse(fd, carry);
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/b", "")));
    second = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "first");
  EXPECT_EQ(second->body, "first");  // the stray "second" never reached the wire
}

TEST_F(HttpServerTest, ClientHangingUpBeforeTheAnswerDoesNotHurtTheServer) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest& r, Respond respond) {
        if (r.path != "/gone") return respond({200, "text/plain", "still here"});
        // Answer well after the client is gone: the write fails (EPIPE), nothing else.
        After(&loop_, 100, [respond] {
          respond({200, "text/plain", std::string(256 * 1024, 'x')});
        });
      },
      SocketPath())));
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int gone = ConnectUnix(SocketPath());
    ASSERT_GE(gone, 0);
    ASSERT_TRUE(SendAll(gone, MakeRequest("GET", "/gone", "")));
    close(gone);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/", "")));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "still here");
}

TEST_F(HttpServerTest, OversizedBodyGets413AndClose) {
  HttpServer server(&loop_, {.max_request_bytes = 1024});
  int handled = 0;
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest&, Respond respond) {
        ++handled;
        respond({});
      },
      SocketPath())));
  std::optional<ClientResponse> response;
  bool closed = false;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    // Only the headers go out: the announced length alone is refused.
    std::string request = MakeRequest("POST", "/", std::string(4096, 'x'));
    ASSERT_TRUE(SendAll(fd, request.substr(0, request.find("\r\n\r\n") + 4)));
    response = ReadResponse(fd, carry);
    closed = ReadsEof(fd);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(response->headers["connection"], "close");
  EXPECT_NE(response->body.find("larger than 1024 bytes"), std::string::npos) << response->body;
  EXPECT_TRUE(closed);
  EXPECT_EQ(handled, 0);
  EXPECT_EQ(server.Stats().requests_rejected, 1u);
}

TEST_F(HttpServerTest, OversizedHeadersGet413) {
  HttpServer server(&loop_, {.max_request_bytes = 1024});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    SendAll(fd, MakeRequest("GET", "/", "", "X-Big: " + std::string(2000, 'h') + "\r\n"));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
}

TEST_F(HttpServerTest, MalformedRequestGets400AndClose) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> response;
  bool closed = false;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, "HELLO WORLD\r\n\r\n"));
    response = ReadResponse(fd, carry);
    closed = ReadsEof(fd);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(response->headers["connection"], "close");
  EXPECT_NE(response->body.find("\"code\""), std::string::npos) << response->body;
  EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, ChunkedRequestBodyIsRefusedWith411) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd,
                        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "1\r\na\r\n0\r\n\r\n"));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 411);
}

TEST_F(HttpServerTest, ConnectionCloseFromClientIsHonoured) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> response;
  bool closed = false;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/", "", "Connection: close\r\n")));
    response = ReadResponse(fd, carry);
    closed = ReadsEof(fd);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->headers["connection"], "close");
  EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, StalledHalfRequestIsClosedAfterIdleTimeoutWhileOthersAreServed) {
  HttpServer server(&loop_, {.idle_timeout_ms = 300});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  std::optional<ClientResponse> other;
  int64_t other_ms = -1, stalled_closed_ms = -1;
  bool stalled_closed = false;
  RunAndStop(server, [&] {
    auto start = Clock::now();
    int stalled = ConnectUnix(SocketPath());
    ASSERT_GE(stalled, 0);
    ASSERT_TRUE(SendAll(stalled, "POST /v1/cni/add HTTP/1.1\r\nContent-Le"));
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/other", "")));
    other = ReadResponse(fd, carry);
    other_ms = MsSince(start);
    close(fd);
    stalled_closed = ReadsEof(stalled);
    stalled_closed_ms = MsSince(start);
    close(stalled);
  });
  ASSERT_TRUE(other);
  EXPECT_EQ(other->body, "GET /other? ");
  EXPECT_LT(other_ms, 250);  // served while the stalled one still held its connection
  EXPECT_TRUE(stalled_closed);
  EXPECT_GE(stalled_closed_ms, 250);
  EXPECT_LT(stalled_closed_ms, 2000);
  EXPECT_EQ(server.Stats().connections_timed_out, 1u);
}

TEST_F(HttpServerTest, ConnectionsBeyondCapAreClosedAndCounted) {
  HttpServer server(&loop_, {.max_connections = 2});
  size_t active_at_cap = 0;
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest& r, Respond respond) {
        if (r.path == "/b") active_at_cap = server.ActiveConnections();
        respond({});
      },
      SocketPath())));
  bool a_ok = false, b_ok = false, c_closed = false, d_ok = false;
  RunAndStop(server, [&] {
    std::string carry_a, carry_b, carry_c, carry_d;
    int a = ConnectUnix(SocketPath());
    int b = ConnectUnix(SocketPath());
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    // A request on each proves both were accepted before the third arrives.
    a_ok = SendAll(a, MakeRequest("GET", "/a", "")) && ReadResponse(a, carry_a).has_value();
    b_ok = SendAll(b, MakeRequest("GET", "/b", "")) && ReadResponse(b, carry_b).has_value();
    int c = ConnectUnix(SocketPath());
    ASSERT_GE(c, 0);
    c_closed = ReadsEof(c);
    close(c);
    close(a);
    // Once the server has seen `a` go, there is room again (bounded retries).
    for (int attempt = 0; attempt < 40 && !d_ok; ++attempt) {
      int d = ConnectUnix(SocketPath());
      carry_d.clear();
      d_ok = d >= 0 && SendAll(d, MakeRequest("GET", "/d", "")) && ReadResponse(d, carry_d);
      if (d >= 0) close(d);
      if (!d_ok) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    close(b);
  });
  EXPECT_TRUE(a_ok);
  EXPECT_TRUE(b_ok);
  EXPECT_EQ(active_at_cap, 2u);
  EXPECT_TRUE(c_closed);
  EXPECT_TRUE(d_ok);
  EXPECT_GE(server.Stats().connections_refused_capacity, 1u);
}

TEST_F(HttpServerTest, SocketFileHasMode0600ByDefault) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  struct stat st {};
  ASSERT_EQ(stat(SocketPath().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  RunAndStop(server, [] {});
  EXPECT_NE(access(SocketPath().c_str(), F_OK), 0) << "Stop() must remove the socket file";
}

TEST_F(HttpServerTest, SocketFileHasMode0660AndTheConfiguredGroup) {
  // Root may give the file any group; others only one of their own.
  gid_t group = geteuid() == 0 ? 4242 : getegid();
  HttpServer server(&loop_, {});
  ListenerConfig config = Unix(Echo(), SocketPath());
  config.mode = 0660;
  config.group = group;
  ASSERT_TRUE(server.Listen(config));
  struct stat st {};
  ASSERT_EQ(stat(SocketPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, group);
  RunAndStop(server, [] {});
}

TEST_F(HttpServerTest, CreatesMissingParentDirectoriesWith0755) {
  std::string path = dir_.path() + "/run/sublease/api.sock";
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), path)));
  struct stat st {};
  ASSERT_EQ(stat((dir_.path() + "/run/sublease").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  RunAndStop(server, [] {});
}

TEST_F(HttpServerTest, StaleSocketFileIsReplaced) {
  {  // A socket file nobody listens on, as a killed daemon leaves behind.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, SocketPath().c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  HttpServer server(&loop_, {});
  auto listened = server.Listen(Unix(Echo(), SocketPath()));
  ASSERT_TRUE(listened) << listened.error().message;
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/", "")));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, LiveSocketGivesAddressInUseAndKeepsServing) {
  HttpServer first(&loop_, {});
  ASSERT_TRUE(first.Listen(Unix(Echo(), SocketPath())));
  HttpServer second(&loop_, {});
  auto listened = second.Listen(Unix(Echo(), SocketPath()));
  ASSERT_FALSE(listened);
  EXPECT_EQ(listened.error().code, Code::kUnavailable);
  EXPECT_NE(listened.error().message.find("address in use"), std::string::npos);
  std::optional<ClientResponse> response;
  RunAndStop(first, [&] {
    int fd = ConnectUnix(SocketPath());
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/", "")));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  EXPECT_TRUE(response);
}

TEST_F(HttpServerTest, RegularFileAtSocketPathIsLeftAlone) {
  std::ofstream(SocketPath()) << "precious";
  HttpServer server(&loop_, {});
  auto listened = server.Listen(Unix(Echo(), SocketPath()));
  ASSERT_FALSE(listened);
  EXPECT_EQ(listened.error().code, Code::kInvalidArgument);
  std::ifstream in(SocketPath());
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(HttpServerTest, RejectsMalformedAddresses) {
  HttpServer server(&loop_, {});
  for (const std::string& address : std::vector<std::string>{
           "", "api.sock", "unix:", "unix:relative.sock", "unix:/" + std::string(120, 'p'),
           "tcp:", "tcp:127.0.0.1", "tcp:127.0.0.1:", "tcp:127.0.0.1:65536", "tcp:127.0.0.1:http",
           "tcp:localhost:80", "tcp:[::1:80", "tcp:[::1]80", "http://127.0.0.1:80"}) {
    ListenerConfig config;
    config.address = address;
    config.handler = Echo();
    auto listened = server.Listen(config);
    ASSERT_FALSE(listened) << address;
    EXPECT_EQ(listened.error().code, Code::kInvalidArgument) << address;
  }
}

TEST_F(HttpServerTest, ServesTcpOnLoopbackEphemeralPort) {
  HttpServer server(&loop_, {});
  std::optional<uid_t> peer_uid = 12345;
  ListenerConfig config;
  config.address = "tcp:127.0.0.1:0";
  config.handler = [&](const HttpRequest& r, Respond respond) {
    peer_uid = r.peer_uid;
    respond({200, "text/plain", "metrics"});
  };
  ASSERT_TRUE(server.Listen(config));
  auto port = server.BoundPort(0);
  ASSERT_TRUE(port);
  EXPECT_GT(*port, 0);
  std::optional<ClientResponse> response;
  RunAndStop(server, [&] {
    int fd = ConnectTcp("127.0.0.1", *port);
    ASSERT_GE(fd, 0);
    std::string carry;
    ASSERT_TRUE(SendAll(fd, MakeRequest("GET", "/metrics", "")));
    response = ReadResponse(fd, carry);
    close(fd);
  });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "metrics");
  EXPECT_FALSE(peer_uid.has_value());
  EXPECT_FALSE(server.BoundPort(1));
}

TEST_F(HttpServerTest, BoundPortOfUnixListenerIsNotFound) {
  HttpServer server(&loop_, {});
  ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  auto port = server.BoundPort(0);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().code, Code::kNotFound);
  RunAndStop(server, [] {});
}

TEST_F(HttpServerTest, StopWaitsForInFlightRequest) {
  HttpServer server(&loop_, {});
  bool responded = false, done = false, done_after_response = false;
  std::function<void()> finish;
  bool client_finished = false;
  auto maybe_finish = [&] {
    if (done && client_finished && finish) std::exchange(finish, nullptr)();
  };
  ASSERT_TRUE(server.Listen(Unix(
      [&](const HttpRequest&, Respond respond) {
        After(&loop_, 200, [&, respond] {
          responded = true;
          respond({200, "text/plain", "finished"});
        });
        server.Stop([&] {
          done = true;
          done_after_response = responded;
          maybe_finish();
        });
      },
      SocketPath())));
  std::optional<ClientResponse> response;
  bool closed = false;
  testing::RunLoopWithClient(
      &loop_,
      [&] {
        int fd = ConnectUnix(SocketPath());
        ASSERT_GE(fd, 0);
        std::string carry;
        ASSERT_TRUE(SendAll(fd, MakeRequest("POST", "/v1/cni/add", "{}")));
        response = ReadResponse(fd, carry);
        closed = ReadsEof(fd);
        close(fd);
      },
      [&](std::function<void()> f) {
        finish = std::move(f);
        client_finished = true;
        maybe_finish();
      });
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "finished");
  EXPECT_EQ(response->headers["connection"], "close");
  EXPECT_TRUE(closed);
  EXPECT_TRUE(done);
  EXPECT_TRUE(done_after_response);
  EXPECT_NE(access(SocketPath().c_str(), F_OK), 0);
  // The fixture's destructor checks uv_loop_close(&loop_) == 0.
}

TEST_F(HttpServerTest, StopCutsOffUnansweredRequestAfterGraceAndDropsLateRespond) {
  Respond kept;
  int64_t stop_ms = -1;
  bool closed = false;
  {
    HttpServer server(&loop_, {.stop_grace_ms = 200});
    Clock::time_point stop_at;
    bool done = false, client_finished = false;
    std::function<void()> finish;
    auto maybe_finish = [&] {
      if (done && client_finished && finish) std::exchange(finish, nullptr)();
    };
    ASSERT_TRUE(server.Listen(Unix(
        [&](const HttpRequest&, Respond respond) {
          kept = respond;  // never answered in time
          stop_at = Clock::now();
          server.Stop([&] {
            stop_ms = MsSince(stop_at);
            done = true;
            kept({200, "text/plain", "too late"});  // the connection is gone: dropped
            maybe_finish();
          });
        },
        SocketPath())));
    testing::RunLoopWithClient(
        &loop_,
        [&] {
          int fd = ConnectUnix(SocketPath());
          ASSERT_GE(fd, 0);
          ASSERT_TRUE(SendAll(fd, MakeRequest("POST", "/v1/cni/add", "{}")));
          closed = ReadsEof(fd);  // cut off when the grace ends
          close(fd);
        },
        [&](std::function<void()> f) {
          finish = std::move(f);
          client_finished = true;
          maybe_finish();
        });
  }
  ASSERT_TRUE(kept);
  kept({200, "text/plain", "server gone"});  // the server is destroyed: dropped too
  EXPECT_TRUE(closed);
  EXPECT_GE(stop_ms, 190);
  EXPECT_LT(stop_ms, 2000);
}

TEST_F(HttpServerTest, PeerOutsideAllowedUsersGets403) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  HttpServer server(&loop_, {});
  int handled = 0;
  ListenerConfig config = Unix(
      [&](const HttpRequest&, Respond respond) {
        ++handled;
        respond({});
      },
      SocketPath());
  config.mode = 0666;
  config.group = 4242;  // the client below is not in it
  ASSERT_TRUE(server.Listen(config));
  std::string raw;
  RunAndStop(server, [&] {
    std::string request = MakeRequest("POST", "/v1/cni/add", "{}");
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    pid_t pid = fork();
    if (pid == 0) {  // child: only async-signal-safe calls from here
      close(pipe_fds[0]);
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
      int fd = ConnectUnix(SocketPath());
      if (fd < 0) _exit(3);
      if (!SendAll(fd, request)) _exit(4);
      char buf[4096];
      for (int i = 0; i < 100; ++i) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        if (write(pipe_fds[1], buf, static_cast<size_t>(n)) != n) _exit(5);
      }
      _exit(0);
    }
    close(pipe_fds[1]);
    char buf[4096];
    for (int i = 0; i < 100; ++i) {
      ssize_t n = read(pipe_fds[0], buf, sizeof(buf));
      if (n <= 0) break;
      raw.append(buf, static_cast<size_t>(n));
    }
    close(pipe_fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  });
  EXPECT_TRUE(raw.starts_with("HTTP/1.1 403 Forbidden\r\n")) << raw;
  EXPECT_NE(raw.find("Connection: close"), std::string::npos);
  EXPECT_EQ(handled, 0);
  EXPECT_EQ(server.Stats().connections_refused_peer, 1u);
}

TEST_F(HttpServerTest, DestroyingAnUnstoppedServerStillClosesEveryHandle) {
  {
    HttpServer server(&loop_, {});
    ASSERT_TRUE(server.Listen(Unix(Echo(), SocketPath())));
  }
  // The close callbacks run on the loop; the fixture then checks uv_loop_close() == 0.
  for (int i = 0; i < 10 && uv_run(&loop_, UV_RUN_NOWAIT) != 0; ++i) {
  }
  EXPECT_NE(access(SocketPath().c_str(), F_OK), 0);
}

TEST_F(HttpServerTest, ListenAfterStopIsUnavailable) {
  HttpServer server(&loop_, {});
  RunAndStop(server, [] {});
  auto listened = server.Listen(Unix(Echo(), SocketPath()));
  ASSERT_FALSE(listened);
  EXPECT_EQ(listened.error().code, Code::kUnavailable);
}

}  // namespace
}  // namespace sublease
