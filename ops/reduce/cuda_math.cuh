// Device-side helpers shared by the CUDA kernels of the reduce, softmax and loss
// families (with the scalar math of ops/cuda_fast_math.cuh): nan-aware argmax, the online (max, sum-of-exp) pair, warp and block
// all-reductions, 16-byte vector loads/stores, and a CUB device-wide reduction whose
// temporary storage comes from the caching pool. Include only from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cub/cub.cuh>
#include <initializer_list>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/cuda_fast_math.cuh"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::gpu {

constexpr unsigned kFullMask = 0xffffffffu;

// ---- scalar math in the accumulation type (float or double) ------------------------------
template <typename Acc>
__host__ __device__ __forceinline__ Acc neg_inf() {
  return -static_cast<Acc>(INFINITY);
}
__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

/// exp(a - m), with exp(-inf - m) = 0 even when m is -inf too (an all -inf row).
template <typename Acc>
__device__ __forceinline__ Acc exp_sub(Acc a, Acc m) {
  return a == neg_inf<Acc>() ? Acc(0) : acc_exp(a - m);
}

/// exp(a - m) through exp2f (a couple of ulp of f32), for results rounded to 16-bit storage
/// anyway: expf's accurate range reduction made the bf16 softmax forward compute-bound.
/// Same -inf handling as exp_sub.
__device__ __forceinline__ float exp_sub_fast(float a, float m) {
  return a == neg_inf<float>() ? 0.0f : exp2f((a - m) * 1.4426950408889634f);
}
__device__ __forceinline__ double exp_sub_fast(double a, double m) { return exp_sub(a, m); }

// ---- reduction operators -----------------------------------------------------------------
struct SumOp {
  template <typename A>
  __host__ __device__ __forceinline__ A operator()(const A& a, const A& b) const {
    return a + b;
  }
};

struct NanMaxOp {
  template <typename A>
  __host__ __device__ __forceinline__ A operator()(const A& a, const A& b) const {
    return nan_max(a, b);
  }
};

/// Running max `m` and sum of exp(z - m) over the elements seen so far (online softmax).
/// No default member initialisers: it lives in __shared__ memory.
template <typename Acc>
struct MaxSum {
  Acc m;
  Acc s;
};

struct MaxSumOp {
  template <typename Acc>
  __device__ __forceinline__ MaxSum<Acc> operator()(const MaxSum<Acc>& a, const MaxSum<Acc>& b) const {
    const Acc m = nan_max(a.m, b.m);
    // exp_sub keeps an empty side (m = -inf, s = 0) from turning into nan.
    return {m, a.s * exp_sub(a.m, m) + b.s * exp_sub(b.m, m)};
  }
};

/// A candidate for argmax: value and flat index.
template <typename Acc>
struct ArgMax {
  Acc v;
  std::int64_t i;
};

/// Keeps the element that comes first in the argmax order: larger value, nan above
/// everything, lower index among equals. A total order, so the result (the first maximal
/// element) does not depend on the reduction order.
struct ArgMaxOp {
  template <typename Acc>
  __host__ __device__ __forceinline__ ArgMax<Acc> operator()(const ArgMax<Acc>& a, const ArgMax<Acc>& b) const {
    const bool na = a.v != a.v, nb = b.v != b.v;
    bool a_first;
    if (na != nb) a_first = na;
    else if (!na && a.v != b.v) a_first = a.v > b.v;
    else a_first = a.i < b.i;
    return a_first ? a : b;
  }
};

// ---- warp / block all-reduce -------------------------------------------------------------
__device__ __forceinline__ float shfl_xor(float v, int m) { return __shfl_xor_sync(kFullMask, v, m); }
__device__ __forceinline__ double shfl_xor(double v, int m) { return __shfl_xor_sync(kFullMask, v, m); }
__device__ __forceinline__ std::int64_t shfl_xor(std::int64_t v, int m) {
  return static_cast<std::int64_t>(__shfl_xor_sync(kFullMask, static_cast<long long>(v), m));
}
template <typename Acc>
__device__ __forceinline__ MaxSum<Acc> shfl_xor(const MaxSum<Acc>& v, int m) {
  return {shfl_xor(v.m, m), shfl_xor(v.s, m)};
}
template <typename Acc>
__device__ __forceinline__ ArgMax<Acc> shfl_xor(const ArgMax<Acc>& v, int m) {
  return {shfl_xor(v.v, m), shfl_xor(v.i, m)};
}

/// Reduces v over the 32 lanes of the (fully active) warp; every lane gets the result.
/// Butterfly order: each lane combines the same pairs, so all lanes agree bit for bit.
template <typename V, typename Op>
__device__ __forceinline__ V warp_allreduce(V v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  return v;
}

/// Reduces v over a 1-d block whose size is a multiple of 32 (at most 1024); every thread
/// gets the result. `smem` holds >= 32 values; safe to call repeatedly with the same smem.
template <typename V, typename Op>
__device__ __forceinline__ V block_allreduce(V v, Op op, V* smem) {
  v = warp_allreduce(v, op);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();  // a previous call may still be reading smem
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  V r = smem[0];
  for (int w = 1; w < nwarps; ++w) r = op(r, smem[w]);
  return r;
}

/// Reduces v over the row's threads: a warp (WARP) or the whole 1-d block (see
/// block_allreduce for smem).
template <bool WARP, typename V, typename Op>
__device__ __forceinline__ V row_allreduce(V v, Op op, V* smem) {
  if constexpr (WARP) return warp_allreduce(v, op);
  else return block_allreduce(v, op, smem);
}

/// First row and row step of this warp (WARP: block = 32 x blockDim.y warps, a row each)
/// or of this block (1-d block, a row per block), over a grid-stride loop of rows.
template <bool WARP>
__device__ __forceinline__ void row_range(std::int64_t& row, std::int64_t& step) {
  if constexpr (WARP) {
    row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
    step = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  } else {
    row = blockIdx.x;
    step = gridDim.x;
  }
}

// ---- vector memory access ----------------------------------------------------------------
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// Loads N consecutive elements (p aligned to N * sizeof(T)) converted to Acc.
template <int N, typename T, typename Acc>
__device__ __forceinline__ void load_pack(const T* p, Acc* out) {
  if constexpr (N == 1) {
    out[0] = static_cast<Acc>(p[0]);
  } else {
    const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = static_cast<Acc>(pk.v[k]);
  }
}

/// Stores N values converted to T at p (aligned to N * sizeof(T)).
template <int N, typename T, typename Acc>
__device__ __forceinline__ void store_pack(T* p, const Acc* in) {
  if constexpr (N == 1) {
    p[0] = static_cast<T>(in[0]);
  } else {
    Pack<T, N> pk;
#pragma unroll
    for (int k = 0; k < N; ++k) pk.v[k] = static_cast<T>(in[k]);
    *reinterpret_cast<Pack<T, N>*>(p) = pk;
  }
}

/// Elements of T per 16-byte vector.
template <typename T>
constexpr int max_vec() {
  return static_cast<int>(16 / sizeof(T)) > 0 ? static_cast<int>(16 / sizeof(T)) : 1;
}

/// True when every pointer is aligned to `bytes` and rows of `cols` elements of
/// `elem_size` bytes keep that alignment row after row.
inline bool vec_ok(std::size_t bytes, std::int64_t cols, std::size_t elem_size,
                   std::initializer_list<const void*> ptrs) {
  if ((static_cast<std::size_t>(cols) * elem_size) % bytes != 0) return false;
  for (const void* p : ptrs) {
    if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0) return false;
  }
  return true;
}

/// Blocks for a grid-stride loop over `work` items of `per_block` each, capped so that the
/// grid is always a legal size (the loop covers the rest). Never 0 for work > 0.
inline unsigned grid_for(std::int64_t work, std::int64_t per_block, std::int64_t cap = 1 << 20) {
  const std::int64_t b = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(b, cap)));
}

/// out[0] = op-reduction of in[0, n) with `init`, through cub::DeviceReduce on `stream`;
/// CUB's temporary storage is a tensor from the caching pool of `device` (released in
/// stream order). n may exceed 2^31.
template <typename InIt, typename OutIt, typename Op, typename V>
void device_reduce(InIt in, OutIt out, std::int64_t n, Op op, V init, Device device, cudaStream_t stream) {
  std::size_t bytes = 0;
  TG_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, bytes, in, out, n, op, init, stream));
  const std::int64_t words = std::max<std::int64_t>(1, static_cast<std::int64_t>((bytes + 7) / 8));
  Tensor tmp = tg::empty(Shape{words}, {.dtype = DType::i64, .device = device});
  TG_CUDA_CHECK(cub::DeviceReduce::Reduce(tmp.data_ptr(), bytes, in, out, n, op, init, stream));
}

}  // namespace tg::ops::gpu
