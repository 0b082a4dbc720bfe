// DaemonClient: the plugin's side of docs/protocol.md, one HTTP exchange per call.
//
// Each call opens a fresh connection to the daemon's Unix socket, sends one
// request and reads one answer within the timeout. Non-2xx answers become the
// daemon's Error (common/wire.h); transport failures are kUnavailable with a
// message naming the socket. Single-threaded, no state between calls.
#pragma once

#include <chrono>
#include <string>

#include "common/result.h"
#include "common/wire.h"

namespace sublease::cni {

class DaemonClient {
 public:
  DaemonClient(std::string socket_path, std::chrono::milliseconds timeout)
      : socket_path_(std::move(socket_path)), timeout_(timeout) {}

  // POST /v1/cni/add: the lease for the attachment, allocated if it had none.
  Result<CniReply> Add(const CniRequest& r) const;
  // POST /v1/cni/del: releases the attachment's lease; Ok when there was none.
  Result<void> Del(const CniRequest& r) const;
  // POST /v1/cni/check: the lease the daemon holds for the attachment.
  Result<CniReply> Check(const CniRequest& r) const;
  // POST /v1/cni/gc: releases the provider's leases not in the valid list.
  Result<void> Gc(const GcRequest& r) const;
  // GET /v1/cni/status: Ok when the daemon can serve ADD now; kUnavailable otherwise.
  Result<void> Status() const;

 private:
  Result<std::string> Call(std::string_view method, std::string_view path, std::string body) const;

  std::string socket_path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace sublease::cni
