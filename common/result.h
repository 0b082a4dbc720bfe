// Result<T> and Error: the one way sublease reports failure.
//
// Every fallible function returns Result<T> (tl::expected<T, Error>). An Error
// carries a Code a caller can branch on and a message a person can act on: say
// what was wrong and what to do. Exceptions (SQLiteCpp, yaml-cpp) are caught at
// one boundary per library and turned into Errors there.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace sublease {

enum class Code {
  kInvalidArgument,  // the request or config is wrong; retrying will not help
  kNotFound,         // the named thing does not exist
  kConflict,         // someone else holds it (address in use, stale version)
  kExhausted,        // no free address left in the subnet or pool
  kUnavailable,      // try again later (daemon or API server unreachable)
  kInternal,         // a bug or a broken environment (disk, database)
};

std::string_view CodeName(Code code);

struct Error {
  Code code;
  std::string message;

  static Error InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Error NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Error Conflict(std::string m) { return {Code::kConflict, std::move(m)}; }
  static Error Exhausted(std::string m) { return {Code::kExhausted, std::move(m)}; }
  static Error Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Error Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  // Returns a copy whose message is "<context>: <message>".
  Error Wrap(std::string_view context) const;
};

template <typename T>
using Result = tl::expected<T, Error>;

// Result<void> success value: `return Ok();`.
inline Result<void> Ok() { return {}; }

// Shorthand for returning an error from a function returning any Result<T>.
inline tl::unexpected<Error> Fail(Error e) { return tl::unexpected<Error>(std::move(e)); }

}  // namespace sublease
