// The one error idiom of ringflow: typed exceptions raised through check
// macros that record file:line. Messages name the op, node, file, flag or rank
// involved and say what to do about it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ringflow {

// Base of every error ringflow raises. what() is the user-facing message;
// file()/line() say where in ringflow it was raised (for bug reports).
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file, int line)
      : std::runtime_error(message), file_(file), line_(line) {}
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }
  // "message (at src/graph/graph.cpp:42)"
  std::string describe() const;

 private:
  const char* file_;
  int line_;
};

// A caller passed something invalid: a flag, an argument, a feed.
class InvalidArgument : public Error {
  using Error::Error;
};
// Two shapes (or dtypes) that cannot go together.
class ShapeError : public Error {
  using Error::Error;
};
// A name (node, variable, data set, file) that does not exist.
class NotFound : public Error {
  using Error::Error;
};
// Reading or writing a file failed, or its contents are invalid.
class IoError : public Error {
  using Error::Error;
};
// An MPI call failed, or ranks disagree about a collective.
class CommError : public Error {
  using Error::Error;
};
// A broken internal invariant: a bug in ringflow.
class InternalError : public Error {
  using Error::Error;
};

namespace detail {

template <class... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

template <class E, class... Parts>
[[noreturn]] void raise(const char* file, int line, Parts&&... parts) {
  throw E(str_cat(std::forward<Parts>(parts)...), file, line);
}

}  // namespace detail
}  // namespace ringflow

// RF_CHECK(cond, "op MatMul: ", a, " vs ", b) raises InvalidArgument.
#define RF_CHECK(cond, ...)                                                                    \
  do {                                                                                         \
    if (!(cond))                                                                               \
      ::ringflow::detail::raise<::ringflow::InvalidArgument>(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

// RF_CHECK_AS(ShapeError, cond, ...) raises the given ringflow error type.
#define RF_CHECK_AS(Type, cond, ...)                                                           \
  do {                                                                                         \
    if (!(cond)) ::ringflow::detail::raise<::ringflow::Type>(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

// RF_THROW(NotFound, "no node named ", name) raises unconditionally.
#define RF_THROW(Type, ...) \
  ::ringflow::detail::raise<::ringflow::Type>(__FILE__, __LINE__, __VA_ARGS__)
