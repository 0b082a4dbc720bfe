#include "daemon/service/background_checkpoint.h"

#include <utility>

namespace sublease {

BackgroundCheckpoint::BackgroundCheckpoint(uv_loop_t* loop, const Store* store,
                                           std::unique_ptr<Checkpointer> checkpointer,
                                           BackgroundCheckpointOptions options)
    : loop_(loop), store_(store), checkpointer_(std::move(checkpointer)), options_(options) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  work_.data = this;
}

BackgroundCheckpoint::~BackgroundCheckpoint() = default;

void BackgroundCheckpoint::Start() {
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<BackgroundCheckpoint*>(t->data)->Poll(); },
                 options_.period_ms, options_.period_ms);
}

void BackgroundCheckpoint::Poll() {
  if (running_ || closing_) return;
  if (store_->Commits() == commits_at_last_run_ || store_->WalPages() < options_.min_pages) return;
  if (options_.max_pages > 0 && store_->WalPages() >= options_.max_pages) return;  // the Store's turn
  commits_at_last_run_ = store_->Commits();
  running_ = true;
  uv_queue_work(loop_, &work_, &BackgroundCheckpoint::OnWork, &BackgroundCheckpoint::OnAfterWork);
}

// On a pool thread: only the Checkpointer's own connection and outcome_ are touched, and
// the loop thread reads outcome_ only after this returns (OnAfterWork).
void BackgroundCheckpoint::OnWork(uv_work_t* req) {
  auto* self = static_cast<BackgroundCheckpoint*>(req->data);
  self->outcome_ = self->checkpointer_->Run();
}

void BackgroundCheckpoint::OnAfterWork(uv_work_t* req, int /*status*/) {
  auto* self = static_cast<BackgroundCheckpoint*>(req->data);
  self->running_ = false;
  self->stats_.runs++;
  if (self->outcome_) {
    self->stats_.copied_pages += static_cast<uint64_t>(self->outcome_->copied_pages);
  } else {
    self->stats_.failures++;
    self->commits_at_last_run_ = 0;  // due again at the next look
  }
  self->MaybeFinishClose();
}

void BackgroundCheckpoint::Close(std::function<void()> done) {
  closing_ = true;
  on_closed_ = std::move(done);
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<BackgroundCheckpoint*>(h->data);
    self->timer_closed_ = true;
    self->MaybeFinishClose();
  });
}

void BackgroundCheckpoint::MaybeFinishClose() {
  if (!closing_ || running_ || !timer_closed_ || !on_closed_) return;
  auto done = std::move(on_closed_);
  on_closed_ = nullptr;
  done();
}

}  // namespace sublease
