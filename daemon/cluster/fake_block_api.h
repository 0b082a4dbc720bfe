// FakeBlockApi: an in-memory IPBlock store with the API server's concurrency rules, for
// tests and benchmarks that run many nodes' engines against one "cluster".
//
// Real compare-and-swap: a resourceVersion counter shared by all objects (as etcd's
// revision is); Create fails on an existing name, Update and Delete on a stale version.
// Nothing completes inside a call: each call is two scheduled steps, *arrive* (the
// server applies it) and *respond* (the caller's callback runs), and the test decides
// when each step runs (RunNext, RunRandom), so requests of many engines interleave in
// any order a seeded generator picks — including a write applied whose answer is still
// on its way. Watches (Watch) deliver changes of one node's blocks, as the daemon's
// informer on label sublease.io/node=<me> does, also as scheduled steps, in order.
//
// Fault injection: FailNext(n) makes the next n calls fail kUnavailable without
// touching the store; FailNextAfterApply(n) applies them and then answers kUnavailable
// (a timeout after the write happened); FailNextApplyLater(n) answers kUnavailable and
// applies them when the test says (ApplyHeld). Counters count every call by verb.
// Single-threaded. The fake must outlive every engine that uses it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "daemon/cluster/block_api.h"

namespace sublease {

struct BlockApiCounters {
  uint64_t gets = 0, lists = 0, creates = 0, updates = 0, deletes = 0;
  uint64_t conflicts = 0;    // answers kConflict (AlreadyExists, stale version)
  uint64_t unavailable = 0;  // injected failures
  uint64_t writes() const { return creates + updates + deletes; }
};

class FakeBlockApi final : public BlockApi {
 public:
  using UpsertFn = std::function<void(const IpBlock&)>;
  using DeletedFn = std::function<void(const std::string& name, const std::string& uid)>;

  void Get(const std::string& name, MaybeBlockDone done) override;
  void ListSubnet(const std::string& subnet, ListDone done) override;
  void Create(const IpBlock& block, BlockDone done) override;
  void Update(const IpBlock& block, BlockDone done) override;
  void Delete(const std::string& name, const std::string& resource_version, VoidDone done) override;

  // Delivers every later change to a block whose spec.node is `node` (and the blocks
  // that exist now, as an informer's initial list does), as scheduled steps.
  void Watch(const std::string& node, UpsertFn upsert, DeletedFn deleted);
  // While held, `node`'s watch delivers nothing (its events wait, in order); letting go
  // schedules them. For tests of what a node does before its watch shows a change.
  void HoldWatch(const std::string& node, bool hold);

  void FailNext(int n) { fail_next_ = n; }
  void FailNextAfterApply(int n) { fail_after_apply_ = n; }
  // The same for the next n writes (create, update) only; reads and lists pass.
  void FailNextWrite(int n) { fail_write_ = n; }
  void FailNextWriteAfterApply(int n) { fail_write_after_apply_ = n; }
  // The next n calls are answered kUnavailable without touching the store, and are
  // applied later, when the test calls ApplyHeld (etcd committing a write after the API
  // server gave up on it).
  void FailNextApplyLater(int n) { fail_apply_later_ = n; }
  // Applies the calls held by FailNextApplyLater, oldest first; returns how many.
  size_t ApplyHeld();

  // The scheduler. Steps added while a step runs are queued behind it.
  size_t pending() const { return steps_.size(); }
  // Runs the oldest step; false when none is pending.
  bool RunNext();
  // Runs a step chosen uniformly at random; false when none is pending.
  bool RunRandom(std::mt19937& rng);
  // Runs the step at `index` (0 = oldest); false when there is no such step.
  bool RunStep(size_t index);
  // Runs steps (oldest first, or random with `rng`) until none is left or `max_steps`
  // ran; returns how many ran.
  size_t RunAll(size_t max_steps, std::mt19937* rng = nullptr);

  // The stored objects, for assertions.
  const std::map<std::string, IpBlock>& objects() const { return objects_; }
  // Puts an object in place directly (another node's block, a test's setup); returns it
  // with a new resourceVersion. Watchers hear about it.
  IpBlock Put(IpBlock block);
  const BlockApiCounters& counters() const { return counters_; }

 private:
  struct Watcher {
    std::string node;
    UpsertFn upsert;
    DeletedFn deleted;
    // A watch delivers in order: each scheduled delivery step runs the oldest event.
    std::deque<std::function<void()>> events;
    bool held = false;
    size_t unscheduled = 0;  // events held back (HoldWatch) with no delivery step yet
  };
  void Deliver(size_t watcher, std::function<void()> event);
  void ScheduleDelivery(size_t watcher);  // one step that runs the watcher's oldest event
  // Schedules the arrive step (`apply`, or an injected failure) and, from it, the
  // respond step that hands the result to `done`.
  template <typename T>
  void Call(std::function<Result<T>()> apply, std::function<void(Result<T>)> done);
  std::string NextVersion() { return std::to_string(++revision_); }
  void Notify(const IpBlock& block, bool deleted);
  void RunAt(size_t index);
  void ArmWriteFault() {  // for the Call that follows
    if (fail_write_ > 0) {
      --fail_write_;
      ++fail_next_;
    } else if (fail_write_after_apply_ > 0) {
      --fail_write_after_apply_;
      ++fail_after_apply_;
    }
  }

  std::map<std::string, IpBlock> objects_;
  std::vector<Watcher> watchers_;
  std::deque<std::function<void()>> steps_;
  uint64_t revision_ = 1000;
  uint64_t next_uid_ = 1;
  int fail_next_ = 0;
  int fail_after_apply_ = 0;
  int fail_write_ = 0;
  int fail_write_after_apply_ = 0;
  int fail_apply_later_ = 0;
  std::deque<std::function<void()>> held_;
  BlockApiCounters counters_;
};

}  // namespace sublease
