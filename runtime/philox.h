// Philox-4x32-10 counter-based random numbers (Salmon et al., SC'11), identical on host
// and device: element i of a draw with (seed, offset) depends only on (seed, offset, i),
// so the CPU and CUDA backends produce the same tensors and kernels need no state.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/macros.h"
#include "runtime/rng_replay.h"

namespace tg::philox {

struct U32x4 {
  std::uint32_t x, y, z, w;
};

TG_HOST_DEVICE TG_INLINE void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

/// Philox-4x32's round multipliers (M0, M1) and the key's increments a round (W0, W1).
inline constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

/// Ten rounds of Philox-4x32 on `ctr` with key (k0, k1).
TG_HOST_DEVICE TG_INLINE U32x4 philox4x32_10(U32x4 ctr, std::uint32_t k0, std::uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo(M0, ctr.x, hi0, lo0);
    mulhilo(M1, ctr.z, hi1, lo1);
    ctr = {hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

/// The four 32-bit words of block `block` (= element index / 4) of stream (seed, offset).
TG_HOST_DEVICE TG_INLINE U32x4 block(std::uint64_t seed, std::uint64_t offset, std::uint64_t blk) {
  U32x4 ctr{static_cast<std::uint32_t>(blk), static_cast<std::uint32_t>(blk >> 32),
            static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(offset >> 32)};
  return philox4x32_10(ctr, static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

TG_HOST_DEVICE TG_INLINE std::uint32_t word(const U32x4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/// The 32 random bits of element `i`.
TG_HOST_DEVICE TG_INLINE std::uint32_t bits(std::uint64_t seed, std::uint64_t offset, std::uint64_t i) {
  return word(block(seed, offset, i >> 2), static_cast<int>(i & 3));
}

/// The threshold T of probability p in [0, 1) for `bits`-bit draws k (bits <= 31): k >= T
/// exactly when k / 2^bits >= p (T = ceil(p · 2^bits), exact in double). Integer compares
/// against T decide identically on every backend.
inline std::uint32_t threshold(double p, int bits) {
  const double t = std::ldexp(p, bits);
  auto k = static_cast<std::uint32_t>(t);
  if (static_cast<double>(k) < t) ++k;  // ceil
  return k;
}

/// 24-bit uniform in [0, 1) from 32 random bits (exact in f32).
TG_HOST_DEVICE TG_INLINE float to_uniform(std::uint32_t b) { return static_cast<float>(b >> 8) * (1.0f / 16777216.0f); }

/// Uniform [0, 1) of element `i`.
TG_HOST_DEVICE TG_INLINE float uniform(std::uint64_t seed, std::uint64_t offset, std::uint64_t i) {
  return to_uniform(bits(seed, offset, i));
}

/// Standard normal of element `i` (Box-Muller on the word pair of i's block; computed in
/// f64 so host and device results agree to rounding of the final f32).
TG_HOST_DEVICE TG_INLINE double normal(std::uint64_t seed, std::uint64_t offset, std::uint64_t i) {
  U32x4 v = block(seed, offset, i >> 2);
  int pair = static_cast<int>((i & 3) >> 1);
  std::uint32_t a = pair ? v.z : v.x;
  std::uint32_t b = pair ? v.w : v.y;
  double u1 = (static_cast<double>(a) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
  double u2 = static_cast<double>(b) * (1.0 / 4294967296.0);          // [0, 1)
  double r = ::sqrt(-2.0 * ::log(u1));
  double t = 6.283185307179586476925286766559 * u2;
  return (i & 1) ? r * ::sin(t) : r * ::cos(t);
}

}  // namespace tg::philox

namespace tg {

/// A Philox stream: a seed and an offset that advances with every draw, so successive
/// draws are independent. Not thread-safe; one per thread or guarded by the caller.
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0x5eed) : seed_(seed) {}
  std::uint64_t seed() const { return seed_; }
  std::uint64_t offset() const { return offset_; }
  void manual_seed(std::uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  /// Reserves one offset for a draw and returns it (a recorded one while an activation
  /// checkpoint recomputes its forward: runtime/rng_replay.h).
  std::uint64_t next_offset() { return next_rng_offset(offset_); }

 private:
  std::uint64_t seed_;
  std::uint64_t offset_ = 0;
};

/// The process-wide default generator (used by rand/randn without a seed).
Generator& default_generator();

}  // namespace tg
