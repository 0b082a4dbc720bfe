#include "daemon/cluster/kube_block_api.h"

#include <utility>

#include "sync/kube_object.h"

namespace sublease {
namespace {

std::string ObjectPath(const std::string& name) {
  return std::string(kIpBlockCollection) + "/" + name;
}

// A 2xx answer carrying one IPBlock.
Result<IpBlock> DecodeAnswer(KubeResult<KubeResponse> r) {
  if (!r) return Fail(static_cast<Error>(r.error()));
  auto block = DecodeIpBlock(r->body);
  if (!block) return Fail(block.error().Wrap("the API server's IPBlock"));
  return block;
}

}  // namespace

void KubeBlockApi::Get(const std::string& name, MaybeBlockDone done) {
  client_->Get(ObjectPath(name), [done = std::move(done)](KubeResult<KubeResponse> r) {
    if (!r && r.error().http_status == 404) return done(std::optional<IpBlock>());
    auto block = DecodeAnswer(std::move(r));
    if (!block) return done(Fail(block.error()));
    done(std::optional<IpBlock>(std::move(*block)));
  });
}

void KubeBlockApi::ListSubnet(const std::string& subnet, ListDone done) {
  ListOptions options;
  options.label_selector = std::string(kSubnetLabel) + "=" + subnet;
  client_->List(kIpBlockCollection, options, [done = std::move(done)](KubeResult<KubeResponse> r) {
    if (!r) return done(Fail(static_cast<Error>(r.error())));
    auto page = ParseListPage(r->body);
    if (!page) return done(Fail(page.error().Wrap("the API server's IPBlock list")));
    std::vector<IpBlock> out;
    for (const KubeObject& item : page->items) {
      auto block = DecodeIpBlock(item.raw);
      if (!block) return done(Fail(block.error().Wrap("IPBlock " + item.name)));
      out.push_back(std::move(*block));
    }
    done(std::move(out));
  });
}

void KubeBlockApi::Create(const IpBlock& block, BlockDone done) {
  IpBlock fresh = block;
  fresh.resource_version.clear();  // a create carries no resourceVersion
  client_->Create(
      kIpBlockCollection, EncodeIpBlock(fresh),
      [done = std::move(done)](KubeResult<KubeResponse> r) { done(DecodeAnswer(std::move(r))); });
}

void KubeBlockApi::Update(const IpBlock& block, BlockDone done) {
  client_->Update(
      ObjectPath(block.name), EncodeIpBlock(block),
      [done = std::move(done)](KubeResult<KubeResponse> r) { done(DecodeAnswer(std::move(r))); });
}

void KubeBlockApi::Delete(const std::string& name, const std::string& resource_version,
                          VoidDone done) {
  DeleteOptions options;
  options.precondition_resource_version = resource_version;
  client_->Delete(ObjectPath(name), options, [done = std::move(done)](KubeResult<KubeResponse> r) {
    if (!r) return done(Fail(static_cast<Error>(r.error())));
    done(Ok());
  });
}

}  // namespace sublease
