// Scalar conversion between the seven element types, shared by the CPU and CUDA cast
// kernels (and the fill kernels) so that both backends convert identically.
//
// Rules: to bool is `v != 0` (NaN is true); floating to integer truncates toward zero and
// saturates at the integer range, NaN gives 0 (what the CUDA cvt.rzi instructions do, so
// the CPU matches the GPU instead of hitting undefined behaviour); integer to integer wraps
// (two's complement); anything to bf16/f16 goes through f32.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "runtime/macros.h"

namespace tg::ops {

template <typename T>
inline constexpr bool is_half_like_v = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

/// `v` as a double (exact for every source type except i64 beyond 2^53).
template <typename From>
TG_HOST_DEVICE TG_INLINE double widen_to_double(From v) {
  if constexpr (std::is_same_v<From, bool>) {
    return v ? 1.0 : 0.0;
  } else if constexpr (is_half_like_v<From>) {
    return static_cast<double>(static_cast<float>(v));
  } else {
    return static_cast<double>(v);
  }
}

/// Truncating, saturating floating -> integer conversion (NaN -> 0).
template <typename To>
TG_HOST_DEVICE TG_INLINE To saturating_trunc(double d) {
  if (d != d) return To(0);
  if constexpr (std::is_same_v<To, std::int32_t>) {
    if (d >= 2147483648.0) return INT32_MAX;
    if (d <= -2147483649.0) return INT32_MIN;
  } else {
    if (d >= 9223372036854775808.0) return INT64_MAX;
    if (d < -9223372036854775808.0) return INT64_MIN;
  }
  return static_cast<To>(d);
}

/// `v` converted to `To` by the rules above.
template <typename To, typename From>
TG_HOST_DEVICE TG_INLINE To cast_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    if constexpr (is_half_like_v<From>) {
      return static_cast<float>(v) != 0.0f;
    } else {
      return v != From(0);
    }
  } else if constexpr (std::is_same_v<From, bool>) {
    if constexpr (is_half_like_v<To>) {
      return To(v ? 1.0f : 0.0f);
    } else {
      return v ? To(1) : To(0);
    }
  } else if constexpr (std::is_integral_v<To>) {
    if constexpr (std::is_integral_v<From>) {
      return static_cast<To>(v);
    } else {
      return saturating_trunc<To>(widen_to_double(v));
    }
  } else if constexpr (std::is_same_v<To, double>) {
    return widen_to_double(v);
  } else if constexpr (std::is_same_v<To, float>) {
    return static_cast<float>(v);
  } else {  // bf16 / f16: f64 sources round twice (via f32), like the f32 -> 16-bit path everywhere
    return To(static_cast<float>(v));
  }
}

}  // namespace tg::ops
