// Shared-memory tiles of the Hopper attention kernels (wg_fwd.cuh, wg_bwd.cuh) in the
// 128-byte-swizzled layout that wgmma descriptors describe: lines of 64 16-bit elements,
// 8 lines to a 1024-byte atom, chunk c of line r stored at chunk c ^ (r % 8); a row of 128
// elements is two 64-element columns, the second after all lines of the first. Also the
// warpgroup-wide vote and barrier those kernels use, the release count of their stages,
// the accumulator -> A operand repacking they chain their products with, and the two
// product shapes they issue.
#pragma once

#include <cstdint>

#include "ops/attention/cuda/ptx.cuh"
#include "ops/cuda_wgmma.cuh"

namespace tg::ops::attn {

/// Byte offset of 16-byte chunk c (elements 8c .. 8c+7 of the row) of row r in a swizzled
/// tile of R rows.
template <int R>
__device__ __forceinline__ std::uint32_t sw128_offset(int r, int c) {
  return static_cast<std::uint32_t>((c >> 3) * (R * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

/// Starts copying rows [0, R) of a global tile of C elements per row (rows >= valid become
/// zeros) into the swizzled shared tile at shared address dst, spread over NT threads.
template <int R, int C, int NT, typename T>
__device__ __forceinline__ void load_sw128(std::uint32_t dst, const T* src, int valid, int tid) {
  constexpr int kChunks = C / 8, kTotal = R * kChunks;
  static_assert(kTotal % NT == 0, "whole chunks per thread");
#pragma unroll
  for (int it = 0; it < kTotal / NT; ++it) {
    const int idx = tid + it * NT;
    const int r = idx / kChunks, c = idx % kChunks;
    const bool ok = r < valid;
    const T* s = ok ? src + static_cast<std::int64_t>(r) * C + c * 8 : src;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst + sw128_offset<R>(r, c)), "l"(s),
                 "r"(ok ? 16 : 0));
  }
}

/// Whether `pred` holds for any of the 128 threads of warpgroup `group` (all of them call).
__device__ __forceinline__ bool group_any(bool pred, int group) {
  std::uint32_t r;
  asm volatile(
      "{\n.reg .pred pi, po;\nsetp.ne.u32 pi, %1, 0;\nbar.red.or.pred po, %2, 128, pi;\nselp.u32 %0, 1, 0, po;\n}\n"
      : "=r"(r)
      : "r"(static_cast<std::uint32_t>(pred)), "r"(group + 1));
  return r != 0;
}

/// Barrier among the first `count` threads of the CTA on named barrier `id` (ids 1 .. 1 + NG
/// are the warpgroups' own).
__device__ __forceinline__ void sync_named(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/// Barrier among the 128 threads of warpgroup `group` (named barrier 1 + group).
__device__ __forceinline__ void sync_group(int group) { asm volatile("bar.sync %0, 128;\n" ::"r"(group + 1) : "memory"); }

/// sync_group and group_any for kernels of NG warpgroups a CTA: with one warpgroup, the
/// CTA's barrier 0 by an immediate id. (A barrier id in a register makes ptxas reserve all
/// 16 named barriers for the CTA, which caps the CTAs an SM at four.)
template <int NG>
__device__ __forceinline__ void sync_wg(int group) {
  if constexpr (NG == 1) {
    asm volatile("bar.sync 0;\n" ::: "memory");
  } else {
    sync_group(group);
  }
}
template <int NG>
__device__ __forceinline__ bool any_wg(bool pred, int group) {
  if constexpr (NG == 1) {
    return __syncthreads_or(pred ? 1 : 0) != 0;
  } else {
    return group_any(pred, group);
  }
}

/// Counts one warpgroup's release of a pipeline stage in *count (shared memory) and says
/// whether it was the last of `groups`, then resetting the count for the stage's next
/// round: that caller refills the stage. Acquire-release, so the refill is ordered after
/// every releasing warpgroup's reads of the stage.
__device__ __forceinline__ bool last_release(unsigned* count, int groups) {
  unsigned old;
  asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;\n"
               : "=r"(old)
               : "r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(count)))
               : "memory");
  if (old != static_cast<unsigned>(groups - 1)) return false;
  *count = 0;
  return true;
}

/// Reduces the N values of v (a multiple of 8) with op: each run of 8 by halving (N / 8 · 7
/// operations in chains of 3), then the runs' results in order. v is overwritten.
template <int N, typename Op>
__device__ __forceinline__ float halving_tree(float (&v)[N], Op op) {
  static_assert(N % 8 == 0, "runs of 8");
#pragma unroll
  for (int r = 0; r < N; r += 8) {
#pragma unroll
    for (int w = 4; w >= 1; w /= 2) {
#pragma unroll
      for (int i = 0; i < w; ++i) v[r + i] = op(v[r + i], v[r + i + w]);
    }
    if (r > 0) v[0] = op(v[0], v[r]);
  }
  return v[0];
}

/// The A operand of a product whose k runs over the N = 8 KS columns of an m64nN accumulator
/// s (fragments: ops/cuda_wgmma.cuh): k-slice kk is columns 16kk .. 16kk + 15, each value
/// passed through f and packed in pairs.
template <typename T, int S, int KS, typename F>
__device__ __forceinline__ void acc_to_a(const float (&s)[S], std::uint32_t (&a)[KS][4], F f) {
  static_assert(S == 8 * KS, "an accumulator of 16 KS columns");
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) a[kk][r] = pack2<T>(f(s[8 * kk + 2 * r]), f(s[8 * kk + 2 * r + 1]));
  }
}

template <typename T, int S, int KS>
__device__ __forceinline__ void acc_to_a(const float (&s)[S], std::uint32_t (&a)[KS][4]) {
  acc_to_a<T>(s, a, [](float x) { return x; });
}

/// Issues acc[64 x N] += A Bᵀ over k = 0 .. K-1 (not committed), N = 2 NA (64 or 128): A and B
/// are 64- and N-row slices at shared addresses a and b of K-major swizzled tiles whose
/// 64-element columns lie a_col / b_col bytes apart (rows x 128 of their tiles). overwrite:
/// acc = A Bᵀ instead, acc's old values ignored (no instruction zeroes it first).
template <typename T, int K, int NA>
__device__ __forceinline__ void mma_abt(float (&acc)[NA], std::uint32_t a, std::uint32_t a_col, std::uint32_t b,
                                        std::uint32_t b_col, bool overwrite = false) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const std::uint32_t col = static_cast<std::uint32_t>(kk >> 2), off = static_cast<std::uint32_t>(kk & 3) * 32u;
    wg::mma_ss<T, 2 * NA, 0, 0>(acc, wg::make_desc(a + col * a_col + off, 16u, 1024u),
                                wg::make_desc(b + col * b_col + off, 16u, 1024u), overwrite && kk == 0 ? 0 : 1);
  }
}

/// Loads the A operand fragments (k-slices 0 .. KS - 1, KS <= 4) of the warp's 16 rows row0 ..
/// row0 + 15 of the K-major swizzled tile of R rows at shared address tile, as acc_to_a packs
/// them: lanes 0-15 point at the rows' first 8 elements of the slice, lanes 16-31 at the next 8.
template <int R, int KS>
__device__ __forceinline__ void load_a_sw128(std::uint32_t (&a)[KS][4], std::uint32_t tile, int row0, int lane) {
  static_assert(KS <= 4, "one 64-element column");
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) ldsm_x4_at(a[kk], tile + sw128_offset<R>(row0 + (lane & 15), 2 * kk + (lane >> 4)));
}

/// Issues acc[64 x N] += A Bᵀ over k = 0 .. 16 KS - 1 (not committed), as mma_abt with A from
/// registers (load_a_sw128) and B the N-row slice at shared address b of a K-major swizzled tile
/// (one 64-element column). overwrite: acc = A Bᵀ.
template <typename T, int NA, int KS>
__device__ __forceinline__ void mma_abt_rs(float (&acc)[NA], const std::uint32_t (&a)[KS][4], std::uint32_t b,
                                           bool overwrite = false) {
  static_assert(KS <= 4, "one 64-element column");
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    wg::mma_rs<T, 2 * NA, 0>(acc, a[kk], wg::make_desc(b + static_cast<std::uint32_t>(kk) * 32u, 16u, 1024u),
                             overwrite && kk == 0 ? 0 : 1);
  }
}

/// Issues acc[64 x N] += A B over k = 0 .. 16 KS - 1 (not committed): A from registers
/// (acc_to_a), B the 16 KS x N tile at shared address b stored with rows along k (N-major:
/// 16 k-rows = two atoms per slice, 64-wide columns b_col bytes apart, 128 x the tile's
/// rows).
template <typename T, int N, int KS>
__device__ __forceinline__ void mma_ab_nmajor(float (&acc)[N / 2], const std::uint32_t (&a)[KS][4], std::uint32_t b,
                                              std::uint32_t b_col = 64u * 128u) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk)
    wg::mma_rs<T, N, 1>(acc, a[kk], wg::make_desc(b + static_cast<std::uint32_t>(kk) * 2048u, b_col, 1024u));
}

}  // namespace tg::ops::attn
