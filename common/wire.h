// The plugin <-> daemon wire format: HTTP/1.1 with JSON bodies over a Unix socket.
//
// docs/protocol.md is the reference (paths, fields, status codes); this header is its
// C++ face. Both the plugin (cni/) and the daemon (daemon/server, daemon/service) use
// these structs, so the two sides cannot drift. Decoding (common/json_reader.h) rejects
// wrong types with a message naming the field. Pure values; no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sublease {

struct WireRoute {
  std::string dst;  // CIDR; "" only in a CniRequest (= default route, see CniRequest::routes)
  std::string gw;   // "" = none
  friend bool operator==(const WireRoute&, const WireRoute&) = default;
};

// POST /v1/cni/add, /v1/cni/del, /v1/cni/check.
struct CniRequest {
  std::string container_id;   // "containerID"
  std::string ifname;         // "ifname"
  std::string netns;          // "netns"
  std::string provider;       // "provider" (required)
  std::string pod_namespace;  // "podNamespace"
  std::string pod_name;       // "podName"
  std::string pod_uid;        // "podUID"
  std::vector<std::string> ips;  // "ips": requested static addresses, "a" or "a/len"
  std::string mac;               // "mac"
  // "routes": the NAD's ipam routes. A route whose dst the NAD left out arrives with
  // dst "" and means "default route" (the daemon picks 0.0.0.0/0 or ::/0 by gw family).
  std::vector<WireRoute> routes;
  // "network": the network config's top-level `name` (an IPAMClaim's spec.network).
  std::string network;
  // "allowPersistentIPs": the network config's top-level flag of that name: an
  // attachment whose networks element carries `ipam-claim-reference` takes its address
  // from that IPAMClaim only when it is true (docs/kubevirt.md).
  bool allow_persistent_ips = false;
  friend bool operator==(const CniRequest&, const CniRequest&) = default;
};

struct WireIp {
  std::string address;  // "172.17.0.11/16"
  std::string gateway;  // "" = none
  friend bool operator==(const WireIp&, const WireIp&) = default;
};

// The answer to add and check: what the plugin turns into a CNI IPAM result.
struct CniReply {
  std::vector<WireIp> ips;
  std::vector<WireRoute> routes;
  std::string mac;
  friend bool operator==(const CniReply&, const CniReply&) = default;
};

struct WireAttachment {
  std::string container_id;  // "containerID"
  std::string ifname;        // "ifname"
  friend bool operator==(const WireAttachment&, const WireAttachment&) = default;
};

// POST /v1/cni/gc: release this provider's leases whose attachment is not listed.
struct GcRequest {
  std::string provider;
  std::vector<WireAttachment> valid_attachments;  // "validAttachments": required, may be []
  friend bool operator==(const GcRequest&, const GcRequest&) = default;
};

// Any non-2xx answer carries {"code": "<CodeName>", "message": "..."}.
struct WireError {
  Code code = Code::kInternal;
  std::string message;
};

// Encoders write every field. Decoders treat absent and null fields alike, ignore
// unknown fields, and fail with kInvalidArgument naming the field on a wrong type.
std::string EncodeCniRequest(const CniRequest& r);
Result<CniRequest> DecodeCniRequest(std::string_view json);
std::string EncodeCniReply(const CniReply& r);
Result<CniReply> DecodeCniReply(std::string_view json);
std::string EncodeGcRequest(const GcRequest& r);
Result<GcRequest> DecodeGcRequest(std::string_view json);
std::string EncodeWireError(const Error& e);
// Turns an error body back into an Error. An unreadable body (or unknown code name)
// takes its code from CodeForHttpStatus, with the HTTP status in the message.
Error DecodeWireError(int http_status, std::string_view body);
// The HTTP status the daemon answers for a code, and the reverse: invalid_argument 400,
// not_found 404, conflict 409, exhausted 507, unavailable 503, internal 500. The
// reverse also reads 429/502/504 as unavailable, other 4xx as invalid_argument and
// anything else as internal.
int HttpStatusFor(Code code);
Code CodeForHttpStatus(int status);
// Parses "invalid_argument" etc.; nullopt for anything else.
std::optional<Code> CodeFromName(std::string_view name);

}  // namespace sublease
