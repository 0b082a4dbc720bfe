#include "daemon/service/background_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace sublease {
namespace {

Lease MakeLease(int i) {
  Lease l;
  l.subnet = "bench";
  l.owner = Owner{"", "", "", "ctr-" + std::to_string(i), "net1"};
  l.v4 = *IpAddr::Parse("10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1));
  l.state = LeaseState::kCommitted;
  return l;
}

// No timer runs in these tests: Poll() is called by hand and the loop runs until the
// queued checkpoint has come back, so nothing depends on timing.
class BackgroundCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "checkpoint_test.XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    StoreOptions options;
    options.wal_checkpoint_pages = 0;  // only the background checkpoint copies the WAL
    auto s = Store::Open(dir_ + "/sublease.db", options);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(*s);
    auto subnet = NormalizeSubnet(SubnetSpec{"bench", "bench.default", "10.0.0.0/16", "", {}, "", ""});
    ASSERT_TRUE(subnet);
    ASSERT_TRUE(store_->UpsertSubnet(*subnet, 1));
    uv_loop_init(&loop_);
    auto c = Checkpointer::Open(dir_ + "/sublease.db");
    ASSERT_TRUE(c) << c.error().message;
    checkpoint_ = std::make_unique<BackgroundCheckpoint>(&loop_, store_.get(), std::move(*c),
                                                         BackgroundCheckpointOptions{.min_pages = 10});
  }
  void TearDown() override {
    bool closed = false;
    checkpoint_->Close([&closed] { closed = true; });
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(closed);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "handles left open";
    checkpoint_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Commit(int first, int count) {
    auto tx = store_->Begin();
    ASSERT_TRUE(tx);
    for (int i = first; i < first + count; ++i) ASSERT_TRUE(store_->InsertLease(MakeLease(i), 2));
    ASSERT_TRUE(tx->Commit());
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
  uv_loop_t loop_;
  std::unique_ptr<BackgroundCheckpoint> checkpoint_;
};

TEST_F(BackgroundCheckpointTest, NothingIsDueBelowTheThresholdOrWithoutNewCommits) {
  checkpoint_->Poll();  // the schema and the subnet are in the WAL
  uv_run(&loop_, UV_RUN_DEFAULT);
  checkpoint_->Poll();  // no commit since: not due again
  EXPECT_FALSE(checkpoint_->Running());
  Commit(0, 1);  // the WAL starts over: a few pages
  ASSERT_LT(store_->WalPages(), 10);
  checkpoint_->Poll();
  EXPECT_FALSE(checkpoint_->Running());
  for (int i = 0; i < 20; ++i) Commit(1 + i * 50, 50);
  ASSERT_GE(store_->WalPages(), 10);
  checkpoint_->Poll();
  EXPECT_TRUE(checkpoint_->Running());
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(checkpoint_->stats().runs, 2u);
  EXPECT_EQ(checkpoint_->stats().failures, 0u);
}

TEST_F(BackgroundCheckpointTest, CopiesTheWalAndTheWriterStartsItOver) {
  for (int i = 0; i < 20; ++i) Commit(i * 50, 50);
  const int pages = store_->WalPages();
  ASSERT_GE(pages, 10);
  checkpoint_->Poll();
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(checkpoint_->stats().runs, 1u);
  EXPECT_EQ(checkpoint_->stats().failures, 0u);
  EXPECT_EQ(checkpoint_->stats().copied_pages, static_cast<uint64_t>(pages));
  // Everything was copied: the next commit writes at the start of the WAL again.
  Commit(5000, 1);
  EXPECT_LT(store_->WalPages(), pages);
  EXPECT_EQ(store_->LoadLiveLeases()->size(), 1001u);
}

TEST_F(BackgroundCheckpointTest, CloseWaitsForARunningCheckpoint) {
  for (int i = 0; i < 20; ++i) Commit(i * 50, 50);
  checkpoint_->Poll();
  ASSERT_TRUE(checkpoint_->Running());
  bool closed = false;
  checkpoint_->Close([&] {
    EXPECT_FALSE(checkpoint_->Running());
    closed = true;
  });
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(closed);
  EXPECT_EQ(checkpoint_->stats().runs, 1u);
  checkpoint_ = std::make_unique<BackgroundCheckpoint>(&loop_, store_.get(),
                                                       std::move(*Checkpointer::Open(dir_ + "/sublease.db")));
}

TEST(StoreWalBoundTest, ACommitPastTheBoundCheckpointsByItself) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "checkpoint_test.XXXXXX").string();
  const std::string dir = mkdtemp(tmpl.data());
  {
    StoreOptions options;
    options.wal_checkpoint_pages = 10;
    auto store = Store::Open(dir + "/sublease.db", options);
    ASSERT_TRUE(store);
    auto subnet = NormalizeSubnet(SubnetSpec{"bench", "bench.default", "10.0.0.0/16", "", {}, "", ""});
    ASSERT_TRUE((*store)->UpsertSubnet(*subnet, 1));
    int most = 0;
    for (int i = 0; i < 40; ++i) {
      auto tx = (*store)->Begin();
      for (int j = i * 50; j < i * 50 + 50; ++j) ASSERT_TRUE((*store)->InsertLease(MakeLease(j), 2));
      ASSERT_TRUE(tx->Commit());
      most = std::max(most, (*store)->WalPages());
    }
    // Each commit adds well under 10 pages... plus what the bound lets through: the WAL
    // restarts instead of growing with every commit.
    EXPECT_LT(most, 40);
    EXPECT_EQ((*store)->Commits(), 41u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sublease
