// Small CUDA helpers shared by the sparse_move and sparse_adapt kernels: launch sizing,
// raw-byte chunks for width-generic moves, and the width / element-size dispatch.
// Include only from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::smove {

constexpr int kThreads = 256;

/// Blocks of kThreads for `items` one-per-thread work items, capped at what fills the GPU
/// (the kernels grid-stride over the rest).
inline unsigned grid_for(std::int64_t items, int device, int per_sm = 16) {
  const std::int64_t want = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(want, std::int64_t(cuda::multiprocessor_count(device)) * per_sm)));
}

/// An opaque, naturally aligned unit of `Bytes` bytes (1, 2, 4, 8 or 16).
template <int Bytes> struct ChunkT;
template <> struct ChunkT<1> { using type = std::uint8_t; };
template <> struct ChunkT<2> { using type = std::uint16_t; };
template <> struct ChunkT<4> { using type = std::uint32_t; };
template <> struct ChunkT<8> { using type = uint2; };
template <> struct ChunkT<16> { using type = uint4; };
template <int Bytes> using Chunk = typename ChunkT<Bytes>::type;

template <typename T>
__device__ __forceinline__ T zero_chunk() {
  if constexpr (std::is_same_v<T, uint2>) return make_uint2(0, 0);
  else if constexpr (std::is_same_v<T, uint4>) return make_uint4(0, 0, 0, 0);
  else return T(0);
}

/// The widest of 16, 8, 4, 2, 1 bytes that divides `bytes` and every address in `ptrs`.
inline int widest_unit(std::int64_t bytes, std::initializer_list<const void*> ptrs) {
  for (int w : {16, 8, 4, 2}) {
    bool ok = bytes % w == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(w) == 0;
    if (ok) return w;
  }
  return 1;
}

/// Calls f(std::integral_constant<int, W>) for a width W in {1, 2, 4, 8, 16}.
template <typename F>
void dispatch_width(int w, F&& f) {
  switch (w) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
  }
}

/// Calls f(E{}) with an unsigned integer type of the element size of `dt`.
template <typename F>
void dispatch_bytes(DType dt, F&& f) {
  switch (dtype_size(dt)) {
    case 1: f(std::uint8_t{}); break;
    case 2: f(std::uint16_t{}); break;
    case 4: f(std::uint32_t{}); break;
    default: f(std::uint64_t{}); break;
  }
}

inline int log2_exact(std::int64_t v) {
  int s = 0;
  while ((std::int64_t(1) << s) < v) ++s;
  return s;
}

}  // namespace tg::ops::smove
