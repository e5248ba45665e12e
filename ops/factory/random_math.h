// Per-element random values shared by the CPU and CUDA factory kernels. Element i of a
// draw depends only on (seed, offset, i) and is computed with the same operations on both
// backends: device arithmetic uses explicit round-to-nearest intrinsics so that nvcc
// cannot fuse a multiply-add that the host would round twice.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "ops/copy/cast.h"
#include "runtime/macros.h"
#include "runtime/philox.h"

namespace tg::ops {

TG_HOST_DEVICE TG_INLINE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

TG_HOST_DEVICE TG_INLINE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

/// The next representable value of `v` toward -inf.
template <typename T>
TG_HOST_DEVICE TG_INLINE T next_down(T v) {
  if constexpr (std::is_same_v<T, double>) {
    return ::nextafter(v, -INFINITY);
  } else if constexpr (std::is_same_v<T, float>) {
    return ::nextafterf(v, -INFINITY);
  } else {  // bf16 / f16: sign-magnitude 16-bit patterns
    std::uint16_t b = v.bits;
    if (b == 0x0000u || b == 0x8000u) return T::from_bits(0x8001u);
    return T::from_bits(static_cast<std::uint16_t>((b & 0x8000u) ? b + 1u : b - 1u));
  }
}

/// Uniform in [lo, hi): philox::uniform as f32, then lo + (hi - lo) * u in f64, rounded to
/// T; a value that rounds up to hi is moved to the largest T below it.
template <typename T>
TG_HOST_DEVICE TG_INLINE T uniform_value(std::uint64_t seed, std::uint64_t offset, std::uint64_t i, double lo,
                                         double hi) {
  const float u = philox::uniform(seed, offset, i);
  const double v = add_rn(lo, mul_rn(hi - lo, static_cast<double>(u)));
  T r = cast_value<T>(v);
  for (int k = 0; k < 4 && widen_to_double(r) >= hi; ++k) r = next_down(r);
  return r;
}

/// mean + std * philox::normal in f64, rounded to T.
template <typename T>
TG_HOST_DEVICE TG_INLINE T normal_value(std::uint64_t seed, std::uint64_t offset, std::uint64_t i, double mean,
                                        double std) {
  return cast_value<T>(add_rn(mean, mul_rn(std, philox::normal(seed, offset, i))));
}

/// Integer uniform in [lo, hi) from 64 random bits (words 2i and 2i+1 of the stream), so
/// the modulo bias is at most (hi - lo) / 2^64.
template <typename T>
TG_HOST_DEVICE TG_INLINE T randint_value(std::uint64_t seed, std::uint64_t offset, std::uint64_t i, std::int64_t lo,
                                         std::int64_t hi) {
  const std::uint64_t range = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
  const std::uint64_t bits = (static_cast<std::uint64_t>(philox::bits(seed, offset, 2 * i)) << 32) |
                             philox::bits(seed, offset, 2 * i + 1);
  const std::int64_t v = static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + bits % range);
  return cast_value<T>(v);
}

}  // namespace tg::ops
