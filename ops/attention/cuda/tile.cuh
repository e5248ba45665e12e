// Shared-memory tiles of 16-bit elements for the tensor-core kernels: a row-major tile of
// C elements per row, stored in 16-byte chunks whose column is XOR-permuted by the row, so
// that the 8 row addresses of one ldmatrix (8 consecutive rows, one chunk column) fall in 8
// different bank groups, and cp.async fills from global memory.
#pragma once

#include <cstdint>

#include "ops/attention/cuda/ptx.cuh"

namespace tg::ops::attn {

template <int C>
struct Swz {
  static_assert(C == 32 || C == 64 || C == 128, "tile rows of 32, 64 or 128 elements");
  static constexpr int kChunks = C / 8;
  /// Byte offset of 16-byte chunk `chunk` of row `row`.
  __device__ static __forceinline__ int at(int row, int chunk) {
    int phys;
    if constexpr (kChunks >= 8) {
      phys = chunk ^ (row & 7);
    } else {  // 4 chunks of 16 bytes: rows r and r + 1 already differ by 64 bytes
      phys = chunk ^ ((row >> 1) & 3);
    }
    return (row * kChunks + phys) * 16;
  }
};

/// Starts copying rows [0, R) of a global tile (row r at src + r · C elements; rows >= valid
/// become zeros) into the swizzled shared tile `dst`, spread over NT threads.
template <int R, int C, int NT, typename T>
__device__ __forceinline__ void load_tile(char* dst, const T* src, int valid, int tid) {
  constexpr int kChunks = C / 8;
  constexpr int kTotal = R * kChunks;
  constexpr int kIters = (kTotal + NT - 1) / NT;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int idx = tid + it * NT;
    if (kTotal % NT == 0 || idx < kTotal) {
      const int r = idx / kChunks, c = idx % kChunks;
      const bool ok = r < valid;
      const T* s = ok ? src + static_cast<std::int64_t>(r) * C + c * 8 : src;
      cp_async16(dst + Swz<C>::at(r, c), s, ok);
    }
  }
}

/// Starts copying n floats (rows >= valid become zeros) into shared memory.
template <int N, int NT>
__device__ __forceinline__ void load_floats(float* dst, const float* src, int valid, int tid) {
#pragma unroll
  for (int it = 0; it < (N + NT - 1) / NT; ++it) {
    const int r = tid + it * NT;
    if (N % NT == 0 || r < N) cp_async4(dst + r, r < valid ? src + r : src, r < valid);
  }
}

}  // namespace tg::ops::attn
