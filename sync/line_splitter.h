// LineSplitter: turns the chunks of a watch stream back into lines.
//
// A Kubernetes watch answers one JSON event per line ("\n"-terminated) over a chunked
// HTTP/1.1 or an HTTP/2 stream; transport chunks bear no relation to lines: a line may
// span many chunks and a chunk may hold many lines. Feed each chunk as it arrives;
// complete lines (without "\n" or a trailing "\r"; empty lines skipped) go to the
// callback. Pure value, no I/O, any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace sublease {

class LineSplitter {
 public:
  // on_line returns false to stop: Feed then returns false and drops the rest.
  using LineFn = std::function<bool(std::string_view line)>;

  explicit LineSplitter(size_t max_line_bytes = kDefaultMaxLineBytes) : max_line_(max_line_bytes) {}

  // Splits `chunk`, prefixing what is left over from earlier chunks. False when
  // on_line asked to stop or a line grew beyond max_line_bytes (overflowed() says which).
  bool Feed(std::string_view chunk, const LineFn& on_line);

  // The incomplete tail (what would become a line if the stream ended now).
  std::string_view pending() const { return pending_; }
  bool overflowed() const { return overflowed_; }
  void Reset() {
    pending_.clear();
    overflowed_ = false;
  }

  // A watch event carries one whole object; 64 MiB is far beyond any etcd object.
  static constexpr size_t kDefaultMaxLineBytes = 64u << 20;

 private:
  std::string pending_;
  size_t max_line_;
  bool overflowed_ = false;
};

}  // namespace sublease
