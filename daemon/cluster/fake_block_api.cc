#include "daemon/cluster/fake_block_api.h"

#include <utility>

namespace sublease {
namespace {

Error Unreachable() {
  return Error::Unavailable("fake API server: connection refused (injected fault)");
}

}  // namespace

template <typename T>
void FakeBlockApi::Call(std::function<Result<T>()> apply, std::function<void(Result<T>)> done) {
  enum class Mode { kNormal, kFail, kApplyThenFail, kFailApplyLater } mode = Mode::kNormal;
  if (fail_next_ > 0) {
    --fail_next_;
    mode = Mode::kFail;
  } else if (fail_after_apply_ > 0) {
    --fail_after_apply_;
    mode = Mode::kApplyThenFail;
  } else if (fail_apply_later_ > 0) {
    --fail_apply_later_;
    mode = Mode::kFailApplyLater;
  }
  steps_.push_back([this, apply = std::move(apply), done = std::move(done), mode]() mutable {
    if (mode == Mode::kFailApplyLater) held_.push_back([apply] { (void)apply(); });
    Result<T> r = mode == Mode::kFail || mode == Mode::kFailApplyLater
                      ? Result<T>(Fail(Unreachable()))
                      : apply();
    if (mode != Mode::kNormal) {
      r = Fail(Unreachable());
      ++counters_.unavailable;
    }
    if (!r && r.error().code == Code::kConflict) ++counters_.conflicts;
    steps_.push_back([done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  });
}

size_t FakeBlockApi::ApplyHeld() {
  size_t n = 0;
  while (!held_.empty()) {
    auto apply = std::move(held_.front());
    held_.pop_front();
    apply();
    ++n;
  }
  return n;
}

void FakeBlockApi::Get(const std::string& name, MaybeBlockDone done) {
  ++counters_.gets;
  Call<std::optional<IpBlock>>(
      [this, name]() -> Result<std::optional<IpBlock>> {
        auto it = objects_.find(name);
        if (it == objects_.end()) return std::optional<IpBlock>();
        return std::optional<IpBlock>(it->second);
      },
      std::move(done));
}

void FakeBlockApi::ListSubnet(const std::string& subnet, ListDone done) {
  ++counters_.lists;
  Call<std::vector<IpBlock>>(
      [this, subnet]() -> Result<std::vector<IpBlock>> {
        std::vector<IpBlock> out;
        for (const auto& [name, b] : objects_) {
          if (b.subnet == subnet) out.push_back(b);
        }
        return out;
      },
      std::move(done));
}

void FakeBlockApi::Create(const IpBlock& block, BlockDone done) {
  ++counters_.creates;
  ArmWriteFault();
  Call<IpBlock>(
      [this, block = IpBlock(block)]() mutable -> Result<IpBlock> {
        if (objects_.count(block.name)) {
          return Fail(Error::Conflict("ipblocks \"" + block.name + "\" already exists"));
        }
        block.resource_version = NextVersion();
        block.uid = "uid-" + std::to_string(next_uid_++);
        objects_[block.name] = block;
        Notify(block, false);
        return block;
      },
      std::move(done));
}

void FakeBlockApi::Update(const IpBlock& block, BlockDone done) {
  ++counters_.updates;
  ArmWriteFault();
  Call<IpBlock>(
      [this, block = IpBlock(block)]() mutable -> Result<IpBlock> {
        auto it = objects_.find(block.name);
        if (it == objects_.end()) {
          return Fail(Error::NotFound("ipblocks \"" + block.name + "\" not found"));
        }
        if (it->second.resource_version != block.resource_version) {
          return Fail(Error::Conflict("Operation cannot be fulfilled on ipblocks \"" + block.name +
                                      "\": the object has been modified"));
        }
        block.resource_version = NextVersion();
        block.uid = it->second.uid;
        it->second = block;
        Notify(block, false);
        return block;
      },
      std::move(done));
}

void FakeBlockApi::Delete(const std::string& name, const std::string& resource_version,
                          VoidDone done) {
  ++counters_.deletes;
  Call<void>(
      [this, name, resource_version]() -> Result<void> {
        auto it = objects_.find(name);
        if (it == objects_.end())
          return Fail(Error::NotFound("ipblocks \"" + name + "\" not found"));
        if (it->second.resource_version != resource_version) {
          return Fail(Error::Conflict("Precondition failed for ipblocks \"" + name +
                                      "\": resourceVersion changed"));
        }
        IpBlock gone = std::move(it->second);
        objects_.erase(it);
        Notify(gone, true);
        return Ok();
      },
      std::move(done));
}

IpBlock FakeBlockApi::Put(IpBlock block) {
  block.resource_version = NextVersion();
  if (block.uid.empty()) block.uid = "uid-" + std::to_string(next_uid_++);
  objects_[block.name] = block;
  Notify(block, false);
  return block;
}

void FakeBlockApi::Watch(const std::string& node, UpsertFn upsert, DeletedFn deleted) {
  watchers_.push_back(Watcher{node, std::move(upsert), std::move(deleted), {}});
  size_t w = watchers_.size() - 1;
  for (const auto& [name, b] : objects_) {
    if (b.node == node) Deliver(w, [this, w, b = b] { watchers_[w].upsert(b); });
  }
}

void FakeBlockApi::HoldWatch(const std::string& node, bool hold) {
  for (size_t w = 0; w < watchers_.size(); ++w) {
    if (watchers_[w].node != node) continue;
    watchers_[w].held = hold;
    if (hold) continue;
    for (; watchers_[w].unscheduled > 0; --watchers_[w].unscheduled) ScheduleDelivery(w);
  }
}

void FakeBlockApi::Deliver(size_t watcher, std::function<void()> event) {
  watchers_[watcher].events.push_back(std::move(event));
  if (watchers_[watcher].held) {
    ++watchers_[watcher].unscheduled;
    return;
  }
  ScheduleDelivery(watcher);
}

void FakeBlockApi::ScheduleDelivery(size_t watcher) {
  steps_.push_back([this, watcher] {
    std::function<void()> next = std::move(watchers_[watcher].events.front());
    watchers_[watcher].events.pop_front();
    next();
  });
}

void FakeBlockApi::Notify(const IpBlock& block, bool deleted) {
  for (size_t w = 0; w < watchers_.size(); ++w) {
    if (watchers_[w].node != block.node) continue;
    if (deleted) {
      Deliver(w, [this, w, name = block.name, uid = block.uid] { watchers_[w].deleted(name, uid); });
    } else {
      Deliver(w, [this, w, block] { watchers_[w].upsert(block); });
    }
  }
}

void FakeBlockApi::RunAt(size_t index) {
  std::function<void()> step = std::move(steps_[index]);
  steps_.erase(steps_.begin() + static_cast<std::ptrdiff_t>(index));
  step();
}

bool FakeBlockApi::RunStep(size_t index) {
  if (index >= steps_.size()) return false;
  RunAt(index);
  return true;
}

bool FakeBlockApi::RunNext() {
  if (steps_.empty()) return false;
  RunAt(0);
  return true;
}

bool FakeBlockApi::RunRandom(std::mt19937& rng) {
  if (steps_.empty()) return false;
  RunAt(std::uniform_int_distribution<size_t>(0, steps_.size() - 1)(rng));
  return true;
}

size_t FakeBlockApi::RunAll(size_t max_steps, std::mt19937* rng) {
  size_t ran = 0;
  while (ran < max_steps && (rng ? RunRandom(*rng) : RunNext())) ++ran;
  return ran;
}

}  // namespace sublease
