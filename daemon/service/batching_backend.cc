#include "daemon/service/batching_backend.h"

#include <optional>
#include <utility>
#include <variant>
#include <vector>

namespace sublease {

BatchingBackend::BatchingBackend(uv_loop_t* loop, CniService* service) : loop_(loop), service_(service) {
  uv_check_init(loop_, &check_);
  uv_idle_init(loop_, &idle_);
  check_.data = this;
  idle_.data = this;
}

BatchingBackend::~BatchingBackend() = default;

void BatchingBackend::Enqueue(Pending p) {
  if (closed_) {  // no loop turn is coming for us any more: answer at once
    queue_.push_back(std::move(p));
    Flush();
    return;
  }
  queue_.push_back(std::move(p));
  if (!started_) {
    started_ = true;
    uv_check_start(&check_, [](uv_check_t* h) { static_cast<BatchingBackend*>(h->data)->Flush(); });
    // An active idle handle makes the loop poll without blocking, so a request queued
    // outside the I/O phase is still run in this turn's check phase.
    uv_idle_start(&idle_, [](uv_idle_t*) {});
  }
}

void BatchingBackend::Add(const CniRequest& r, ReplyCallback done) {
  Enqueue(Pending{Pending::Op::kAdd, r, std::move(done), nullptr});
}

void BatchingBackend::Del(const CniRequest& r, DoneCallback done) {
  Enqueue(Pending{Pending::Op::kDel, r, nullptr, std::move(done)});
}

void BatchingBackend::Check(const CniRequest& r, ReplyCallback done) {
  Enqueue(Pending{Pending::Op::kCheck, r, std::move(done), nullptr});
}

void BatchingBackend::Gc(const GcRequest& r, GcCallback done) {
  Flush();  // GC sees every earlier request's effect, and runs in its own transaction.
  done(service_->Gc(r));
}

void BatchingBackend::Flush() {
  if (started_) {
    started_ = false;
    uv_check_stop(&check_);
    uv_idle_stop(&idle_);
  }
  if (queue_.empty()) return;
  std::deque<Pending> batch;
  batch.swap(queue_);
  // Answers are held until the COMMIT; a callback may queue new requests (they wait
  // for the next turn).
  using Outcome = std::variant<Result<CniReply>, Result<void>>;
  std::vector<Outcome> outcomes;
  outcomes.reserve(batch.size());
  auto begun = service_->BeginBatch();
  for (auto& p : batch) {
    if (!begun) {
      outcomes.emplace_back(Result<void>(Fail(begun.error())));
    } else if (p.op == Pending::Op::kAdd) {
      outcomes.emplace_back(service_->Add(p.request));
    } else if (p.op == Pending::Op::kCheck) {
      outcomes.emplace_back(service_->Check(p.request));
    } else {
      outcomes.emplace_back(service_->Del(p.request));
    }
  }
  Result<void> committed = begun ? service_->EndBatch() : Result<void>(Fail(begun.error()));
  stats_.batches++;
  stats_.requests += batch.size();
  if (batch.size() > stats_.largest) stats_.largest = batch.size();
  for (size_t i = 0; i < batch.size(); ++i) {
    Pending& p = batch[i];
    // A failed COMMIT (or BEGIN) fails every write of the batch; reads keep their answer.
    std::optional<Error> failed;
    if (!committed && (p.op != Pending::Op::kCheck || !begun)) failed = committed.error().Wrap("committing the batch");
    if (p.op == Pending::Op::kDel) {
      p.done(failed ? Result<void>(Fail(*failed)) : std::get<Result<void>>(std::move(outcomes[i])));
    } else if (failed) {
      p.reply(Fail(*failed));
    } else {
      p.reply(std::get<Result<CniReply>>(std::move(outcomes[i])));
    }
  }
}

void BatchingBackend::Close(std::function<void()> done) {
  Flush();
  closed_ = true;
  on_closed_ = std::move(done);
  closing_ = 2;
  auto closed = [](uv_handle_t* h) {
    auto* self = static_cast<BatchingBackend*>(h->data);
    if (--self->closing_ == 0 && self->on_closed_) {
      auto cb = std::move(self->on_closed_);
      cb();
    }
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), closed);
}

}  // namespace sublease
