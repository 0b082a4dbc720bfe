#include "daemon/service/batching_backend.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

namespace sublease {
namespace {

CniRequest Req(const std::string& container) {
  CniRequest r;
  r.container_id = container;
  r.ifname = "net1";
  r.netns = "/var/run/netns/" + container;
  r.provider = "bench.default";
  return r;
}

class BatchingBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "batching_test.XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    auto s = Store::Open(dir_ + "/sublease.db");
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    service_ = std::make_unique<CniService>(&allocator_, store_.get(), &clock_);
    ASSERT_TRUE(service_->ApplySubnets({SubnetSpec{"bench", "bench.default", "10.0.0.0/24", "", {}, "", ""}}));
    uv_loop_init(&loop_);
    backend_ = std::make_unique<BatchingBackend>(&loop_, service_.get());
  }
  void TearDown() override {
    bool closed = false;
    backend_->Close([&closed] { closed = true; });
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(closed);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "handles left open";
    backend_.reset();
    service_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Live leases as a restarted daemon would read them from the file.
  size_t LeasesOnDisk() {
    auto ro = Store::OpenReadOnly(dir_ + "/sublease.db");
    EXPECT_TRUE(ro);
    auto leases = (*ro)->LoadLiveLeases();
    EXPECT_TRUE(leases);
    return leases ? leases->size() : 0;
  }

  std::string dir_;
  FakeClock clock_;
  Allocator allocator_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<CniService> service_;
  uv_loop_t loop_;
  std::unique_ptr<BatchingBackend> backend_;
};

TEST_F(BatchingBackendTest, RequestsOfOneTurnShareOneCommitAndAreAnsweredAfterIt) {
  std::set<std::string> addresses;
  int answered = 0;
  for (int i = 0; i < 10; ++i) {
    backend_->Add(Req("c" + std::to_string(i)), [&](Result<CniReply> r) {
      ASSERT_TRUE(r) << r.error().message;
      addresses.insert(r->ips.at(0).address);
      // Answered only after the COMMIT: the lease is already on disk.
      EXPECT_FALSE(service_->InBatch());
      ++answered;
    });
  }
  EXPECT_EQ(answered, 0) << "nothing is answered before the batch commits";
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(answered, 10);
  EXPECT_EQ(addresses.size(), 10u) << "distinct addresses";
  EXPECT_EQ(backend_->stats().batches, 1u);
  EXPECT_EQ(backend_->stats().largest, 10u);
  EXPECT_EQ(LeasesOnDisk(), 10u);
}

TEST_F(BatchingBackendTest, AddAndDelOfOneAttachmentInOneBatchRunInOrder) {
  bool added = false, deleted = false, checked = false;
  backend_->Add(Req("c1"), [&](Result<CniReply> r) { added = r.has_value(); });
  backend_->Check(Req("c1"), [&](Result<CniReply> r) { checked = r.has_value(); });
  backend_->Del(Req("c1"), [&](Result<void> r) { deleted = r.has_value(); });
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(added);
  EXPECT_TRUE(checked) << "CHECK sees the ADD queued before it";
  EXPECT_TRUE(deleted);
  EXPECT_EQ(allocator_.LeaseCount(), 0u);
  EXPECT_EQ(LeasesOnDisk(), 0u);
}

TEST_F(BatchingBackendTest, AFailedRequestDoesNotSpoilItsBatch) {
  int ok = 0, failed = 0;
  CniRequest bad = Req("bad");
  bad.provider = "nobody.default";
  backend_->Add(Req("c1"), [&](Result<CniReply> r) { r ? ++ok : ++failed; });
  backend_->Add(bad, [&](Result<CniReply> r) { r ? ++ok : ++failed; });
  backend_->Add(Req("c2"), [&](Result<CniReply> r) { r ? ++ok : ++failed; });
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(LeasesOnDisk(), 2u);
}

TEST_F(BatchingBackendTest, ExhaustionInsideABatchLeavesTheOthersCommitted) {
  // A /24 has 253 usable addresses (gateway excluded): the 254th ADD fails alone.
  int ok = 0, exhausted = 0;
  for (int i = 0; i < 254; ++i) {
    backend_->Add(Req("c" + std::to_string(i)), [&](Result<CniReply> r) {
      if (r) ++ok;
      else if (r.error().code == Code::kExhausted) ++exhausted;
    });
  }
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(ok, 253);
  EXPECT_EQ(exhausted, 1);
  EXPECT_EQ(LeasesOnDisk(), 253u);
}

TEST_F(BatchingBackendTest, CloseAnswersWhatIsQueued) {
  bool answered = false;
  backend_->Add(Req("c1"), [&](Result<CniReply> r) { answered = r.has_value(); });
  // TearDown closes without running a loop turn first.
  backend_->Flush();
  EXPECT_TRUE(answered);
}

TEST_F(BatchingBackendTest, BatchesDoNotNestAndKeepMemoryAndDiskInStep) {
  // (A failing COMMIT, whose undo path EndBatch runs, needs a fault seam in Store that
  // does not exist yet; this checks the bookkeeping around it.)
  ASSERT_TRUE(service_->BeginBatch());
  EXPECT_FALSE(service_->BeginBatch()) << "batches do not nest";
  ASSERT_TRUE(service_->Add(Req("a")));
  ASSERT_TRUE(service_->Add(Req("b")));
  ASSERT_TRUE(service_->Del(Req("a")));
  ASSERT_TRUE(service_->EndBatch());
  EXPECT_FALSE(service_->InBatch());
  EXPECT_EQ(allocator_.LeaseCount(), 1u);
  EXPECT_EQ(LeasesOnDisk(), 1u);
  EXPECT_FALSE(service_->EndBatch()) << "no batch is open";
}

}  // namespace
}  // namespace sublease
