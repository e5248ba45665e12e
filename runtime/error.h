// Errors thrown by every public tilegrad function.
//
// Messages name the op, the argument, what was expected and what was given, e.g.
//   "matmul: layout of x has 4 block-columns but layout of y has 3 block-rows".
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tg {

/// Base class of every error tilegrad throws on bad input or failed device calls.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

/// Wrong rank, extent or broadcast.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// Block-sparse layout problems: counts, block sizes, differing layouts.
class LayoutError : public Error {
 public:
  using Error::Error;
};

/// Unsupported or mismatched dtypes.
class DTypeError : public Error {
 public:
  using Error::Error;
};

/// Mismatched devices, a device that does not exist, or a failed CUDA call.
class DeviceError : public Error {
 public:
  using Error::Error;
};

/// Invalid values: out-of-range indices, bad options, misuse of the autograd graph.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// The device ran out of memory even after the pool released its cached segments.
class OutOfMemory : public Error {
 public:
  OutOfMemory(const std::string& msg, std::size_t requested) : Error(msg), requested_(requested) {}
  /// Bytes of the request that failed.
  std::size_t requested() const { return requested_; }

 private:
  std::size_t requested_;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

}  // namespace tg

/// Throws `ErrType` with the streamed message when `cond` is false:
///   TG_CHECK(x.dim() == 2, ShapeError, "matmul: x must be 2-D, got ", x.shape());
#define TG_CHECK(cond, ErrType, ...)                             \
  do {                                                           \
    if (!(cond)) throw ::tg::ErrType(::tg::detail::concat(__VA_ARGS__)); \
  } while (0)

/// Throws `ErrType` with the streamed message unconditionally.
#define TG_THROW(ErrType, ...) throw ::tg::ErrType(::tg::detail::concat(__VA_ARGS__))
