// Scalar device math shared by the CUDA kernels of several op families, light enough to
// include anywhere (no CUB, no tensors): the NaN-propagating max, 2^x, tanh, and the 16-bit
// <-> f32 conversions, each in one or a few instructions. Include only from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/dtype.h"

namespace tg::ops::gpu {

/// max(a, b) where a nan wins (nan propagates through max).
template <typename Acc>
__host__ __device__ __forceinline__ Acc nan_max(Acc a, Acc b) {
  return (a != a || a > b) ? a : b;
}

/// nan_max in one instruction for f32 (max.NaN, sm_80+; a NaN result may differ from a's
/// payload bits); plain nan_max for f64 and in host passes.
__device__ __forceinline__ float nan_max_fast(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return nan_max(a, b);
#endif
}
__device__ __forceinline__ double nan_max_fast(double a, double b) { return nan_max(a, b); }

/// 2^x in one instruction (~2 ulp; -inf gives 0, denormal results are flushed to 0): for
/// exponentials whose results are rounded to 16-bit storage, where expf's accurate range
/// reduction made kernels instruction-bound.
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// tanh x as 1 - 2 / (2^(2x log2 e) + 1): absolute error ~1e-7 everywhere (±1 exactly for
/// large |x|, NaN for NaN; tiny |x| lose relative, not absolute, accuracy), five
/// instructions where tanhf's range split and polynomial take ~30. For logit soft caps,
/// whose scores are later rounded through 16-bit probabilities.
__device__ __forceinline__ float tanh_approx(float x) {
  const float e = ex2_approx(x * 2.8853900817779268f);  // e^(2x)
  return 1.f - __fdividef(2.f, e + 1.f);
}

/// The f32 value of a T (bfloat16 or half) given by its bits, exactly: bf16 is a shift,
/// f16 the hardware convert (tg::half's portable conversion is a branchy software decode).
template <typename T>
__device__ __forceinline__ float to_f32(std::uint16_t bits) {
  static_assert(std::is_same_v<T, bfloat16> || std::is_same_v<T, half>, "to_f32: bfloat16 or half");
  if constexpr (std::is_same_v<T, half>) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
    return f;
  } else {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
  }
}

/// The two T (bfloat16 or half) of a 32-bit word as f32, `lo` the one at the lower
/// address: for bf16 one instruction each (a shift, a mask), where going through two
/// 16-bit values made the compiler move the high half down and back up (three).
template <typename T>
__device__ __forceinline__ void unpack2(std::uint32_t w, float& lo, float& hi) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  } else {
    lo = to_f32<T>(static_cast<std::uint16_t>(w & 0xffffu));
    hi = to_f32<T>(static_cast<std::uint16_t>(w >> 16));
  }
}

/// Two f32 as two T (bfloat16 or half; round to nearest even) in one 32-bit word, `lo` at
/// the lower address: one instruction instead of tg::bfloat16's software rounding.
template <typename T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  static_assert(std::is_same_v<T, bfloat16> || std::is_same_v<T, half>, "pack2: bfloat16 or half");
  std::uint32_t r;
  if constexpr (std::is_same_v<T, half>) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    r = static_cast<std::uint32_t>(bfloat16(lo).bits) | (static_cast<std::uint32_t>(bfloat16(hi).bits) << 16);
#else
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  }
  return r;
}

}  // namespace tg::ops::gpu
