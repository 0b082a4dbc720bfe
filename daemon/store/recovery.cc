#include "daemon/store/recovery.h"

#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <system_error>
#include <utility>

namespace sublease {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kPending = "pending";
constexpr std::string_view kDone = "done";
// Bounds the ".N" suffixes tried for the aside name.
constexpr int kMaxAsideSuffix = 100;

bool Exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// Moves `from` to `to` when `from` exists; records it in `moved`.
Result<void> MoveAside(const std::string& from, const std::string& to,
                       std::vector<std::string>* moved) {
  if (!Exists(from)) return Ok();
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) {
    return Fail(Error::Internal("cannot move the corrupt database file " + from + " aside to " +
                                to + ": " + ec.message() +
                                "; move it away by hand and restart subleased"));
  }
  moved->push_back(from + " -> " + to);
  return Ok();
}

}  // namespace

std::string CorruptAsideName(const std::string& path, int64_t now_ms) {
  const std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  const std::string base = path + ".corrupt-" + stamp;
  if (!Exists(base)) return base;
  for (int i = 1; i < kMaxAsideSuffix; ++i) {
    std::string candidate = base + "." + std::to_string(i);
    if (!Exists(candidate)) return candidate;
  }
  return base + "." + std::to_string(now_ms);
}

Result<OpenedStore> OpenOrRecover(const std::string& path, int64_t now_ms,
                                  const StoreOptions& options) {
  OpenedStore out;
  const bool in_memory = path == ":memory:" || path.empty();
  out.created = !in_memory && !Exists(path);
  auto opened = Store::Open(path, options);
  if (opened) {
    out.store = std::move(*opened);
    if (out.created) {
      if (auto r = MarkRebuildPending(out.store.get(), now_ms); !r) return Fail(r.error());
    }
    return out;
  }
  // Only a file that is not a sound database is moved: a newer schema, a read-only or
  // locked file, an I/O error are someone's data and stay exactly where they are.
  if (in_memory || !Store::IsCorruption(opened.error())) return Fail(opened.error());

  out.recovered = true;
  out.corrupt_error = opened.error().message;
  out.moved_to = CorruptAsideName(path, now_ms);
  // The -wal and -shm files belong to the corrupt database: a fresh database must not
  // replay its WAL. They keep their suffixes next to the moved file.
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    if (auto r = MoveAside(path + suffix, out.moved_to + suffix, &out.moved); !r) {
      return Fail(r.error());
    }
  }
  auto fresh = Store::Open(path, options);
  if (!fresh) {
    return Fail(fresh.error().Wrap("creating a fresh database after moving the corrupt one to " +
                                   out.moved_to));
  }
  out.store = std::move(*fresh);
  if (auto r = MarkRebuildPending(out.store.get(), now_ms); !r) return Fail(r.error());
  return out;
}

Result<bool> RebuildPending(Store* store) {
  auto v = store->GetSyncState(std::string(kRebuildPendingKey));
  if (!v) return Fail(v.error());
  return v->has_value() && **v == kPending;
}

Result<void> MarkRebuildPending(Store* store, int64_t now_ms) {
  return store->PutSyncState(std::string(kRebuildPendingKey), std::string(kPending), now_ms);
}

Result<void> ClearRebuildPending(Store* store, int64_t now_ms) {
  return store->PutSyncState(std::string(kRebuildPendingKey), std::string(kDone), now_ms);
}

}  // namespace sublease
