// Shared-memory tiles of the Hopper attention kernels (wg_fwd.cuh, wg_bwd.cuh) in the
// 128-byte-swizzled layout that wgmma descriptors describe: lines of 64 16-bit elements,
// 8 lines to a 1024-byte atom, chunk c of line r stored at chunk c ^ (r % 8); a row of 128
// elements is two 64-element columns, the second after all lines of the first. Also the
// warpgroup-wide vote and barrier those kernels use.
#pragma once

#include <cstdint>

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

/// Barrier among the 128 threads of warpgroup `group` (named barrier 1 + group).
__device__ __forceinline__ void sync_group(int group) { asm volatile("bar.sync %0, 128;\n" ::"r"(group + 1) : "memory"); }

}  // namespace tg::ops::attn
