#include "cni/daemon_client.h"

#include "cni/unix_http.h"
#include "common/json_reader.h"

namespace sublease::cni {

Result<std::string> DaemonClient::Call(std::string_view method, std::string_view path,
                                       std::string body) const {
  HttpRequest req{std::string(method), std::string(path), std::move(body)};
  auto resp = UnixHttpExchange(socket_path_, req, timeout_);
  if (!resp) return Fail(resp.error());
  if (resp->status < 200 || resp->status > 299) {
    Error e = DecodeWireError(resp->status, resp->body);
    return Fail(std::move(e));
  }
  return std::move(resp->body);
}

Result<CniReply> DaemonClient::Add(const CniRequest& r) const {
  auto body = Call("POST", "/v1/cni/add", EncodeCniRequest(r));
  if (!body) return Fail(body.error());
  auto reply = DecodeCniReply(*body);
  if (!reply) return Fail(Error::Internal("unreadable answer to add: " + reply.error().message));
  return reply;
}

Result<void> DaemonClient::Del(const CniRequest& r) const {
  auto body = Call("POST", "/v1/cni/del", EncodeCniRequest(r));
  if (!body) return Fail(body.error());
  return Ok();
}

Result<CniReply> DaemonClient::Check(const CniRequest& r) const {
  auto body = Call("POST", "/v1/cni/check", EncodeCniRequest(r));
  if (!body) return Fail(body.error());
  auto reply = DecodeCniReply(*body);
  if (!reply) return Fail(Error::Internal("unreadable answer to check: " + reply.error().message));
  return reply;
}

Result<void> DaemonClient::Gc(const GcRequest& r) const {
  auto body = Call("POST", "/v1/cni/gc", EncodeGcRequest(r));
  if (!body) return Fail(body.error());
  return Ok();
}

Result<void> DaemonClient::Status() const {
  auto body = Call("GET", "/v1/cni/status", "");
  if (!body) return Fail(body.error());
  // A 200 must still say {"ready": true}: the answer is the daemon's judgement.
  auto doc = ParseJson(*body);
  const JsonValue* field = doc ? doc->Find("ready") : nullptr;
  bool ready = false;
  if (field == nullptr || !field->Get(&ready)) {
    return Fail(Error::Internal("unreadable answer to status: \"" + body->substr(0, 200) + "\""));
  }
  if (!ready) return Fail(Error::Unavailable("the sublease daemon says it is not ready"));
  return Ok();
}

}  // namespace sublease::cni
