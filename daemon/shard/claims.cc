// NodeShard's IPAMClaim path (docs/kubevirt.md, docs/cluster-protocol.md "IPAMClaims"):
// a CNI ADD for an attachment whose networks element names an `ipam-claim-reference`,
// on a network whose config says `allowPersistentIPs: true`, takes its address from the
// claim. The claim is always read (a consistent GET), never taken from a cache: it is
// what decides the address, and it may have been written by another node a moment ago.
#include <ctime>

#include "common/log.h"
#include "daemon/shard/node_shard.h"
#include "sync/ipamclaim.h"

namespace sublease {
namespace {

std::string NowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The claim's addresses that belong to `subnet` (a dual-stack claim may list both).
std::vector<std::string> AddressesIn(const Subnet& subnet, const std::vector<std::string>& ips) {
  std::vector<std::string> out;
  for (const std::string& ip : ips) {
    auto a = IpAddr::Parse(std::string_view(ip).substr(0, ip.find('/')));
    if (a && subnet.family(a->family()) != nullptr) out.push_back(a->ToString());
  }
  return out;
}

}  // namespace

std::string NodeShard::ClaimFor(const CniRequest& cni, const PodInfo& pod) const {
  for (const auto& a : AttachmentsWanted(pod)) {
    if (a.provider != cni.provider || a.ifname != cni.ifname || a.ipam_claim.empty()) continue;
    if (!cni.allow_persistent_ips) {
      // As OVN-Kubernetes does: the network did not opt in, the reference is ignored.
      LogInfo("pod " + pod.Key() + " references IPAMClaim " + a.ipam_claim + " on " + cni.provider +
              ", but network config " + cni.network +
              " lacks \"allowPersistentIPs\": true; allocating as for any pod");
      return "";
    }
    return a.ipam_claim;
  }
  return "";
}

void NodeShard::AddWithClaim(const Subnet& subnet, const CniRequest& cni, const PodInfo& pod,
                             const std::string& claim_name, ReplyCallback done) {
  const std::string claim_key = pod.namespace_name + "/" + claim_name;
  ++stats_.claim_reads;
  client_->Get(IpamClaimPath(pod.namespace_name, claim_name), [this, subnet_name = subnet.name, cni,
                                                               pod, claim_name, claim_key,
                                                               done = std::move(done)](
                                                                  KubeResult<KubeResponse>
                                                                      r) mutable {
    if (!r && r.error().code == Code::kNotFound) {
      return done(Fail(Error::NotFound(
          "IPAMClaim " + claim_key + ", which pod " + pod.Key() + " references for " +
          cni.provider +
          " (ipam-claim-reference), does not exist; create it (kubevirt/ipam-extensions does, for "
          "VMs) or drop the reference; nothing was allocated")));
    }
    if (!r) {
      return done(Fail(Error::Unavailable("reading IPAMClaim " + claim_key + ": " +
                                          r.error().message + "; try again")));
    }
    auto claim = DecodeIpamClaim(r->body);
    if (!claim) {
      return done(
          Fail(Error::InvalidArgument(claim.error().message + "; fix the IPAMClaim " + claim_key)));
    }
    if (claim->network != cni.network) {
      return done(Fail(Error::InvalidArgument(
          "IPAMClaim " + claim_key + " is for network \"" + claim->network +
          "\" (spec.network), but " + cni.provider + "'s network config is named \"" + cni.network +
          "\"; reference a claim of this network; nothing was allocated")));
    }
    const Subnet* current = allocator_->FindSubnet(subnet_name);
    if (!current) return done(Fail(Error::NotFound("Subnet " + subnet_name + " was deleted")));
    AllocateRequest request = RequestFor(*current, cni, pod);
    request.ipam_claim = claim_key;
    request.virtual_machine.clear();  // the claim keeps it, not the VM's name
    const bool recorded = !claim->ips.empty();
    if (recorded) {
      // Every pod of the claim gets exactly its addresses (a restarted or migrating VM).
      request.static_ips = AddressesIn(*current, claim->ips);
      request.pool.clear();
      request.family.reset();
      if (request.static_ips.empty()) {
        return done(
            Fail(Error::InvalidArgument("IPAMClaim " + claim_key + " holds " + claim->ips.front() +
                                        ", which is not in Subnet " + current->name + " of " +
                                        cni.provider + "; nothing was allocated")));
      }
    }
    AttachmentKey key = AttachmentKey::For(current->name, request.owner);
    ReplyCallback finish = [this, key, claim = *claim, recorded, pod_name = pod.name,
                            done = std::move(done)](Result<CniReply> reply) mutable {
      if (recorded) {
        claims_unrecorded_.erase(key);
        return done(std::move(reply));
      }
      if (!reply) {
        const Code code = reply.error().code;
        if (code == Code::kExhausted || code == Code::kConflict) {
          // The claim says why before the ADD fails (the error stays the allocation's).
          std::string message = reply.error().message;
          return WriteClaimStatus(
              claim, {}, pod_name,
              code == Code::kExhausted ? "SubnetExhausted" : "IPAddressConflict", message,
              [reply = std::move(reply), done = std::move(done)](Result<void>) mutable {
                done(std::move(reply));
              });
        }
        return done(std::move(reply));
      }
      std::vector<std::string> ips;
      for (const WireIp& ip : reply->ips) ips.push_back(ip.address);
      claims_unrecorded_[key] = claim.Key();
      WriteClaimStatus(
          claim, ips, pod_name, "SuccessfulAllocation", "IP addresses successfully allocated",
          [this, key, reply = *reply, done = std::move(done)](Result<void> written) mutable {
            if (!written) return done(Fail(written.error()));
            claims_unrecorded_.erase(key);
            done(std::move(reply));
          });
    };
    ++stats_.on_demand;
    AllocateFor(std::move(request), cni.routes, std::move(finish));
  });
}

void NodeShard::WriteClaimStatus(const IpamClaim& claim, const std::vector<std::string>& ips,
                                 const std::string& owner_pod, const std::string& reason,
                                 const std::string& message,
                                 std::function<void(Result<void>)> done) {
  std::string path = IpamClaimPath(claim.namespace_name, claim.name) + "/status";
  client_->Update(
      path, EncodeIpamClaimStatus(claim, ips, owner_pod, reason, message, NowRfc3339()),
      [this, claim, ips, done = std::move(done)](KubeResult<KubeResponse> r) {
        if (r) return done ? done(Ok()) : void();
        LogWarn("writing the status of IPAMClaim " + claim.Key() + ": " + r.error().message);
        if (!done) return;
        if (r.error().http_status == 409) {
          // Another pod of the claim recorded its addresses first (its VM started twice at
          // once): this allocation is not the claim's. The lease ends here; the garbage
          // collection frees its allocation (the claim lists other addresses).
          return done(Fail(
              Error::Unavailable("IPAMClaim " + claim.Key() +
                                 " was given its addresses by another pod meanwhile; try again")));
        }
        done(Fail(Error::Unavailable("recording the address in IPAMClaim " + claim.Key() + ": " +
                                     r.error().message + "; try again")));
      });
}

}  // namespace sublease
