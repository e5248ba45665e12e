// The angle of a rotary pair, shared by the CPU and CUDA kernels so that both turn by the
// same angle: formed in f64 (p up to 2^53 keeps its digits, and θ = p · f is exact to f64
// rounding where an f32 product would be off by ~p · 6e-8 radians) and reduced to
// [−π, π] before the f32 sine and cosine take it.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TG_ROPE_HD __host__ __device__ __forceinline__
#else
#define TG_ROPE_HD inline
#endif

namespace tg::ops::rope_math {

/// Frequency of pair i of rotary_dim: base^(−2i / rotary_dim), from log2(base).
TG_ROPE_HD double frequency(std::int64_t i, std::int64_t rotary_dim, double log2_base) {
  return exp2(-static_cast<double>(2 * i) / static_cast<double>(rotary_dim) * log2_base);
}

/// p · f reduced to about [−π, π] (f64; a turn more or less where a · (1/2π) rounds across
/// a half-integer, the same on every backend).
TG_ROPE_HD double reduced_angle(std::int64_t p, double f) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  constexpr double kInvTwoPi = 0.15915494309189533576888376337251;  // a product, not an f64 division
  const double a = static_cast<double>(p) * f;
  return fma(-rint(a * kInvTwoPi), kTwoPi, a);
}

}  // namespace tg::ops::rope_math

#undef TG_ROPE_HD
