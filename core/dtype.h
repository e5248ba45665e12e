// Element types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>

#include "core/half.h"

namespace tg {

enum class DType : std::uint8_t { f32, f64, bf16, f16, i32, i64, boolean };

/// Bytes per element.
std::size_t dtype_size(DType t);
/// "f32", "bf16", ... (also the names `parse_dtype` accepts).
const char* dtype_name(DType t);
/// Parses a dtype name; throws tg::DTypeError for unknown names.
DType parse_dtype(const std::string& s);
bool is_floating(DType t);
std::ostream& operator<<(std::ostream& os, DType t);

/// The C++ type stored for each dtype.
template <DType T> struct dtype_traits;
template <> struct dtype_traits<DType::f32> { using type = float; };
template <> struct dtype_traits<DType::f64> { using type = double; };
template <> struct dtype_traits<DType::bf16> { using type = bfloat16; };
template <> struct dtype_traits<DType::f16> { using type = half; };
template <> struct dtype_traits<DType::i32> { using type = std::int32_t; };
template <> struct dtype_traits<DType::i64> { using type = std::int64_t; };
template <> struct dtype_traits<DType::boolean> { using type = bool; };

/// The dtype of a C++ element type.
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::bf16; }
template <> constexpr DType dtype_of<half>() { return DType::f16; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<bool>() { return DType::boolean; }

/// The type arithmetic on `T` is done in: f64 for f64, f32 for f32/bf16/f16.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };

}  // namespace tg

/// Calls `__VA_ARGS__` (a generic lambda body) with `scalar_t` bound to the C++ type of
/// the floating dtype `dt`; throws tg::DTypeError naming `op` for other dtypes.
#define TG_DISPATCH_FLOATING(dt, op, ...)                                                     \
  [&] {                                                                                       \
    switch (dt) {                                                                             \
      case ::tg::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }                \
      case ::tg::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }               \
      case ::tg::DType::bf16: { using scalar_t = ::tg::bfloat16; return __VA_ARGS__(); }      \
      case ::tg::DType::f16: { using scalar_t = ::tg::half; return __VA_ARGS__(); }           \
      default:                                                                                \
        throw ::tg::DTypeError(std::string(op) + ": expected a floating dtype (f32, f64, bf16, f16), got " + \
                               ::tg::dtype_name(dt));                                         \
    }                                                                                         \
  }()

/// Like TG_DISPATCH_FLOATING but over every dtype.
#define TG_DISPATCH_ALL(dt, op, ...)                                                          \
  [&] {                                                                                       \
    switch (dt) {                                                                             \
      case ::tg::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }                \
      case ::tg::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }               \
      case ::tg::DType::bf16: { using scalar_t = ::tg::bfloat16; return __VA_ARGS__(); }      \
      case ::tg::DType::f16: { using scalar_t = ::tg::half; return __VA_ARGS__(); }           \
      case ::tg::DType::i32: { using scalar_t = std::int32_t; return __VA_ARGS__(); }         \
      case ::tg::DType::i64: { using scalar_t = std::int64_t; return __VA_ARGS__(); }         \
      case ::tg::DType::boolean: { using scalar_t = bool; return __VA_ARGS__(); }             \
    }                                                                                         \
    throw ::tg::DTypeError(std::string(op) + ": unknown dtype");                              \
  }()
