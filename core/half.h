// 16-bit floating-point storage types usable on host and device. Arithmetic is done in
// f32: convert with `float(x)` and back with the constructor (round to nearest even).
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/macros.h"

namespace tg {

namespace detail {
TG_HOST_DEVICE TG_INLINE std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
TG_HOST_DEVICE TG_INLINE float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
}  // namespace detail

/// bfloat16: the top 16 bits of an IEEE f32.
struct alignas(2) bfloat16 {
  std::uint16_t bits = 0;
  bfloat16() = default;
  TG_HOST_DEVICE bfloat16(float f) {  // NOLINT: implicit like the builtin types
    std::uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN, keep sign
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
      bits = static_cast<std::uint16_t>(u >> 16);
    }
  }
  TG_HOST_DEVICE operator float() const { return detail::bits_float(static_cast<std::uint32_t>(bits) << 16); }
  static TG_HOST_DEVICE bfloat16 from_bits(std::uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
};

/// IEEE binary16.
struct alignas(2) half {
  std::uint16_t bits = 0;
  half() = default;
  TG_HOST_DEVICE half(float f) {  // NOLINT
    std::uint32_t u = detail::float_bits(f);
    std::uint32_t sign = (u >> 16) & 0x8000u;
    std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) {
      bits = static_cast<std::uint16_t>(sign | 0x7e00u);
    } else if (a >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
      bits = static_cast<std::uint16_t>(sign | 0x7c00u);
    } else if (a < 0x38800000u) {  // subnormal or zero in half
      // value = a_float; half subnormal unit = 2^-24. Scale exactly via float math.
      float af = detail::bits_float(a);
      float scaled = af * 16777216.0f;  // exact: multiply by 2^24
      // round to nearest even integer
      std::uint32_t q = static_cast<std::uint32_t>(scaled);
      float rem = scaled - static_cast<float>(q);
      if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
      bits = static_cast<std::uint16_t>(sign | q);
    } else {
      std::uint32_t e = ((a >> 23) - 112u) << 10;
      std::uint32_t m = (a >> 13) & 0x3ffu;
      std::uint32_t rest = a & 0x1fffu;
      std::uint32_t h = e | m;
      if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
      bits = static_cast<std::uint16_t>(sign | h);
    }
  }
  TG_HOST_DEVICE operator float() const {
    std::uint32_t sign = (static_cast<std::uint32_t>(bits) & 0x8000u) << 16;
    std::uint32_t e = (bits >> 10) & 0x1fu;
    std::uint32_t m = bits & 0x3ffu;
    if (e == 0) {
      float f = static_cast<float>(m) * (1.0f / 16777216.0f);
      return sign ? -f : f;
    }
    if (e == 31) return detail::bits_float(sign | 0x7f800000u | (m << 13));
    return detail::bits_float(sign | ((e + 112u) << 23) | (m << 13));
  }
  static TG_HOST_DEVICE half from_bits(std::uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }
};

}  // namespace tg
