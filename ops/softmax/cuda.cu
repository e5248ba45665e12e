// CUDA kernels of the softmax family.
//
// Rows that fit in registers are read once and written once:
//   cols <= 1024:   one warp per row, each lane holding P <= 32 elements;
//   16-bit forward, aligned rows of <= 4096: one warp per row, data kept packed;
//   cols <= 16384:  one block per row, each thread holding P <= 16 elements (f64: 8192, 8).
// Longer rows take two passes over global memory (the second mostly hits L2): an online
// (max, sum of exp) pass, then the output pass. Math is in f32 (f64 for f64); loads and
// stores are 16-byte vectors when every row stays 16-byte aligned.
#include <type_traits>

#include "core/half.h"
#include "ops/reduce/cuda_math.cuh"
#include "ops/softmax/kernels.h"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using gpu::MaxSum;
using gpu::MaxSumOp;
using gpu::SumOp;

constexpr float kLog2e = 1.4426950408889634f;

using gpu::ex2_approx;

/// exp(a) in the log_softmax backward: ex2 for 16-bit results (expf's accurate range
/// reduction made the bf16 backward compute-bound at 81% of the copy rate), expf else.
template <typename T, typename Acc>
__device__ __forceinline__ Acc exp_for(Acc a) {
  if constexpr (sizeof(T) == 2) {
    return ex2_approx(a * kLog2e);
  } else {
    return gpu::acc_exp(a);
  }
}

constexpr int kWarpRows = 4;             // rows (warps) per block on the warp path
constexpr std::int64_t kWarpMaxCols = 1024;
constexpr std::int64_t kWarp16MaxCols = 4096;  // 16-bit forward: warp rows up to here
// Elements per thread on the block path: 16 (8 for f64, whose registers count double
// under the 64-register cap of a 1024-thread block); longer rows go online.
template <typename T>
constexpr int block_max_p() {
  return sizeof(T) >= 8 ? 8 : 16;
}
template <typename T>
constexpr std::int64_t block_max_cols() {
  return static_cast<std::int64_t>(block_max_p<T>()) * 1024;
}
constexpr int kOnlineThreads = 512;

using gpu::row_allreduce;
using gpu::row_range;

// ---- register-resident rows -------------------------------------------------------------
// Thread `tid` of the row's nt threads owns the VEC-wide chunks starting at
// (c * nt + tid) * VEC for c < P / VEC; chunks past the row end are padding.

template <typename T, int VEC, int P, bool WARP>
__device__ __forceinline__ void softmax_fwd_reg(const T* __restrict__ x, T* __restrict__ y, std::int64_t rows,
                                                int cols, typename acc_type<T>::type scale, bool log) {
  using Acc = typename acc_type<T>::type;
  constexpr int CH = P / VEC;
  static_assert(P % VEC == 0, "P must be a multiple of VEC");
  __shared__ MaxSum<Acc> smem[32];
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : static_cast<int>(blockDim.x);
  const Acc ninf = gpu::neg_inf<Acc>();
  std::int64_t row, step;
  row_range<WARP>(row, step);
  for (; row < rows; row += step) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    Acc v[P];
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = (c * nt + tid) * VEC;
      if (e < cols) {
        gpu::load_pack<VEC>(xr + e, v + c * VEC);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[c * VEC + k] *= scale;
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[c * VEC + k] = ninf;  // padding: exp gives 0
      }
    }
    // One all-reduce of (max, sum of exp) pairs: each thread sums exp(v - its own max),
    // and rescales by exp(its max - row max) once the row max is known.
    Acc mt = ninf;
#pragma unroll
    for (int i = 0; i < P; ++i) mt = gpu::nan_max(mt, v[i]);
    Acc st = 0;
    if (log) {
#pragma unroll
      for (int i = 0; i < P; ++i) st += gpu::exp_sub(v[i], mt);
    } else {
#pragma unroll
      for (int i = 0; i < P; ++i) {
        v[i] = sizeof(T) == 2 ? gpu::exp_sub_fast(v[i], mt) : gpu::exp_sub(v[i], mt);
        st += v[i];
      }
    }
    const MaxSum<Acc> ms = row_allreduce<WARP>(MaxSum<Acc>{mt, st}, MaxSumOp{}, smem);
    const Acc m = ms.m;
    if (log) {
      const Acc ls = gpu::acc_log(ms.s);
#pragma unroll
      for (int i = 0; i < P; ++i) v[i] = m == ninf ? ninf : v[i] - m - ls;
    } else {
      // all -inf row: zeros; a nan anywhere in the row makes s nan and so every output
      const Acc f = m == ninf ? Acc(0) : gpu::exp_sub(mt, m) / ms.s;
#pragma unroll
      for (int i = 0; i < P; ++i) v[i] *= f;
    }
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = (c * nt + tid) * VEC;
      if (e < cols) gpu::store_pack<VEC>(yr + e, v + c * VEC);
    }
  }
}

template <typename T, int VEC, int P, bool WARP>
__device__ __forceinline__ void softmax_bwd_reg(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                                std::int64_t rows, int cols, typename acc_type<T>::type scale,
                                                bool log) {
  using Acc = typename acc_type<T>::type;
  constexpr int CH = P / VEC;
  static_assert(P % VEC == 0, "P must be a multiple of VEC");
  __shared__ Acc smem[32];
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : static_cast<int>(blockDim.x);
  std::int64_t row, step;
  row_range<WARP>(row, step);
  for (; row < rows; row += step) {
    const std::int64_t off = row * cols;
    Acc a[P], b[P];  // y, dy
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = (c * nt + tid) * VEC;
      if (e < cols) {
        gpu::load_pack<VEC>(y + off + e, a + c * VEC);
        gpu::load_pack<VEC>(dy + off + e, b + c * VEC);
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) a[c * VEC + k] = b[c * VEC + k] = Acc(0);
      }
    }
    Acc s = 0;
    if (log) {
#pragma unroll
      for (int i = 0; i < P; ++i) s += b[i];
    } else {
#pragma unroll
      for (int i = 0; i < P; ++i) s += a[i] * b[i];
    }
    s = row_allreduce<WARP>(s, SumOp{}, smem);
    if (log) {
#pragma unroll
      for (int i = 0; i < P; ++i) a[i] = scale * (b[i] - exp_for<T>(a[i]) * s);
    } else {
#pragma unroll
      for (int i = 0; i < P; ++i) a[i] = scale * a[i] * (b[i] - s);
    }
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = (c * nt + tid) * VEC;
      if (e < cols) gpu::store_pack<VEC>(dx + off + e, a + c * VEC);
    }
  }
}

template <typename T, int VEC, int P>
__global__ void __launch_bounds__(32 * kWarpRows)
    softmax_fwd_warp(const T* x, T* y, std::int64_t rows, int cols, typename acc_type<T>::type scale, bool log) {
  softmax_fwd_reg<T, VEC, P, true>(x, y, rows, cols, scale, log);
}
template <typename T, int VEC, int P>
__global__ void __launch_bounds__(1024)
    softmax_fwd_block(const T* x, T* y, std::int64_t rows, int cols, typename acc_type<T>::type scale, bool log) {
  softmax_fwd_reg<T, VEC, P, false>(x, y, rows, cols, scale, log);
}
template <typename T, int VEC, int P>
__global__ void __launch_bounds__(32 * kWarpRows) softmax_bwd_warp(const T* y, const T* dy, T* dx, std::int64_t rows,
                                                                   int cols, typename acc_type<T>::type scale,
                                                                   bool log) {
  softmax_bwd_reg<T, VEC, P, true>(y, dy, dx, rows, cols, scale, log);
}
template <typename T, int VEC, int P>
__global__ void __launch_bounds__(1024) softmax_bwd_block(const T* y, const T* dy, T* dx, std::int64_t rows, int cols,
                                                          typename acc_type<T>::type scale, bool log) {
  softmax_bwd_reg<T, VEC, P, false>(y, dy, dx, rows, cols, scale, log);
}

// ---- 16-bit rows of 1025..4096 elements: one warp per row, kept packed ----------------
// The block path (one 128-thread block per 4 KB bf16 row) took as long as f32 for the same
// elements (40% of the copy rate): latency-bound, its load, all-reduce and store phases
// serialised within each block. Here a warp owns a row: each lane issues all of its CH
// 16-byte loads at once, keeps them packed (4 registers per 8 elements), and makes three
// register passes: the max, the sum of exp (ex2 of pre-scaled exponents), the output. No
// shared memory, no barrier. The exponentials are recomputed in the last pass rather than
// kept (64 more registers per lane at 2048 elements): MUFU has room for two per element.
// Results are rounded to 16 bits, so ex2.approx (~2 ulp of f32) costs no accuracy.
// Element k (0..7) of a 16-byte chunk of T as f32 (exact; f16 through the hardware convert).
template <typename T>
__device__ __forceinline__ float chunk_elem(const uint4& c, int k) {
  return gpu::to_f32<T>(reinterpret_cast<const unsigned short*>(&c)[k]);
}


// Applies f to the 8 elements of chunk c and packs the results.
template <typename T, typename F>
__device__ __forceinline__ uint4 map_chunk(const uint4& c, F f) {
  uint4 r;
  r.x = gpu::pack2<T>(f(chunk_elem<T>(c, 0)), f(chunk_elem<T>(c, 1)));
  r.y = gpu::pack2<T>(f(chunk_elem<T>(c, 2)), f(chunk_elem<T>(c, 3)));
  r.z = gpu::pack2<T>(f(chunk_elem<T>(c, 4)), f(chunk_elem<T>(c, 5)));
  r.w = gpu::pack2<T>(f(chunk_elem<T>(c, 6)), f(chunk_elem<T>(c, 7)));
  return r;
}

// Rows of cols <= CH * 256 elements, cols % 8 == 0, x and y 16-byte aligned. Lane l owns
// chunks c * 32 + l (c < CH) of 8 elements; chunks past the row end are skipped.
template <typename T, int CH>
__global__ void __launch_bounds__(32 * kWarpRows)
    softmax_fwd_warp16(const T* __restrict__ x, T* __restrict__ y, std::int64_t rows, int cols, float scale,
                       bool log) {
  constexpr int V = 8;
  const int lane = threadIdx.x;
  const int nvec = cols / V;
  const float ninf = gpu::neg_inf<float>();
  std::int64_t row, step;
  row_range<true>(row, step);
  for (; row < rows; row += step) {
    const uint4* xr = reinterpret_cast<const uint4*>(x + row * cols);
    uint4* yr = reinterpret_cast<uint4*>(y + row * cols);
    uint4 raw[CH];
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (c * 32 + lane < nvec) raw[c] = xr[c * 32 + lane];
    }
    // Pass 1: the row max of z = scale * x (a nan wins, as everywhere).
    float mt = ninf;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (c * 32 + lane < nvec) {
#pragma unroll
        for (int k = 0; k < V; ++k) mt = gpu::nan_max(mt, chunk_elem<T>(raw[c], k) * scale);
      }
    }
    const float m = gpu::warp_allreduce(mt, gpu::NanMaxOp{});  // equal in every lane
    if (m == ninf) {  // every z is -inf: softmax 0, log_softmax -inf (the CPU's convention)
      const float fill = log ? ninf : 0.0f;
      const unsigned w = gpu::pack2<T>(fill, fill);
#pragma unroll
      for (int c = 0; c < CH; ++c) {
        if (c * 32 + lane < nvec) yr[c * 32 + lane] = make_uint4(w, w, w, w);
      }
      continue;
    }
    // exp(z - m) = 2^((z - m) log2 e); z = -inf gives 0, m = +inf or nan gives nan.
    const auto ex = [&](float v) { return ex2_approx((v * scale - m) * kLog2e); };
    // Pass 2: the sum of exp(z - m).
    float st = 0;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (c * 32 + lane < nvec) {
#pragma unroll
        for (int k = 0; k < V; ++k) st += ex(chunk_elem<T>(raw[c], k));
      }
    }
    const float s = gpu::warp_allreduce(st, SumOp{});
    // Pass 3: the output.
    if (log) {
      const float ls = logf(s);
      const auto out = [&](float v) { return v * scale - m - ls; };
#pragma unroll
      for (int c = 0; c < CH; ++c) {
        if (c * 32 + lane < nvec) yr[c * 32 + lane] = map_chunk<T>(raw[c], out);
      }
    } else {
      const float inv = 1.0f / s;
      const auto out = [&](float v) { return ex(v) * inv; };
#pragma unroll
      for (int c = 0; c < CH; ++c) {
        if (c * 32 + lane < nvec) yr[c * 32 + lane] = map_chunk<T>(raw[c], out);
      }
    }
  }
}

// ---- long rows: one block per row, two passes over global memory ------------------------

template <typename T, int VEC>
__global__ void __launch_bounds__(kOnlineThreads)
    softmax_fwd_online(const T* __restrict__ x, T* __restrict__ y, std::int64_t rows, std::int64_t cols,
                       typename acc_type<T>::type scale, bool log) {
  using Acc = typename acc_type<T>::type;
  __shared__ MaxSum<Acc> smem[32];
  const Acc ninf = gpu::neg_inf<Acc>();
  const std::int64_t nvec = cols / VEC;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    MaxSum<Acc> ms{ninf, Acc(0)};
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc v[VEC];
      gpu::load_pack<VEC>(xr + j * VEC, v);
      Acc lm = ninf;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        v[k] *= scale;
        lm = gpu::nan_max(lm, v[k]);
      }
      const Acc nm = gpu::nan_max(ms.m, lm);
      Acc ls = 0;
#pragma unroll
      for (int k = 0; k < VEC; ++k) ls += gpu::exp_sub(v[k], nm);
      ms.s = ms.s * gpu::exp_sub(ms.m, nm) + ls;
      ms.m = nm;
    }
    ms = gpu::block_allreduce(ms, MaxSumOp{}, smem);
    const Acc m = ms.m;
    const Acc ls = gpu::acc_log(ms.s);
    const Acc inv = m == ninf ? Acc(0) : Acc(1) / ms.s;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc v[VEC];
      gpu::load_pack<VEC>(xr + j * VEC, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const Acc z = v[k] * scale;
        v[k] = log ? (m == ninf ? ninf : z - m - ls) : gpu::exp_sub(z, m) * inv;
      }
      gpu::store_pack<VEC>(yr + j * VEC, v);
    }
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kOnlineThreads)
    softmax_bwd_online(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, std::int64_t rows,
                       std::int64_t cols, typename acc_type<T>::type scale, bool log) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc smem[32];
  const std::int64_t nvec = cols / VEC;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const std::int64_t off = row * cols;
    Acc s = 0;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc a[VEC], b[VEC];
      gpu::load_pack<VEC>(y + off + j * VEC, a);
      gpu::load_pack<VEC>(dy + off + j * VEC, b);
#pragma unroll
      for (int k = 0; k < VEC; ++k) s += log ? b[k] : a[k] * b[k];
    }
    s = gpu::block_allreduce(s, SumOp{}, smem);
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc a[VEC], b[VEC];
      gpu::load_pack<VEC>(y + off + j * VEC, a);
      gpu::load_pack<VEC>(dy + off + j * VEC, b);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        a[k] = log ? scale * (b[k] - exp_for<T>(a[k]) * s) : scale * a[k] * (b[k] - s);
      }
      gpu::store_pack<VEC>(dx + off + j * VEC, a);
    }
  }
}

// ---- launch ------------------------------------------------------------------------------

/// Elements per thread P and threads per row for a row of `cols` elements.
struct RegPlan {
  bool warp;
  int p;
  int threads;
};

RegPlan plan_for(std::int64_t cols, int max_p, int target_threads) {
  if (cols <= kWarpMaxCols) {
    int p = 1;
    while (p * 32 < cols) p *= 2;
    return {true, p, 32};
  }
  // Fewest elements per thread that keep a block at <= target_threads, else max_p per
  // thread with up to 1024 threads. The forward wants more bytes in flight per thread than
  // the backward (which loads two arrays): its load, all-reduce and store phases do not
  // overlap within a block, so each thread must keep enough loads outstanding.
  int p = 4;
  while (p < max_p && (cols + p - 1) / p > target_threads) p *= 2;
  const int threads = static_cast<int>(((cols + p - 1) / p + 31) / 32 * 32);
  return {false, p, threads};
}

// Calls f(std::integral_constant<int, P>) for the runtime p.
template <typename F>
void with_p(int p, F&& f) {
  switch (p) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: return f(std::integral_constant<int, 32>{});
  }
}

template <typename T>
void softmax_fwd_typed(const T* x, T* y, std::int64_t rows, std::int64_t cols, double scale, bool log,
                       cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  constexpr int MV = gpu::max_vec<T>();
  const bool vec = gpu::vec_ok(16, cols, sizeof(T), {x, y});
  const Acc sc = static_cast<Acc>(scale);
  if (cols > block_max_cols<T>()) {
    const unsigned grid = gpu::grid_for(rows, 1);
    if (vec) softmax_fwd_online<T, MV><<<grid, kOnlineThreads, 0, stream>>>(x, y, rows, cols, sc, log);
    else softmax_fwd_online<T, 1><<<grid, kOnlineThreads, 0, stream>>>(x, y, rows, cols, sc, log);
    TG_CUDA_CHECK_LAST();
    return;
  }
  if constexpr (sizeof(T) == 2) {
    if (vec && cols > kWarpMaxCols && cols <= kWarp16MaxCols) {
      const dim3 block(32, kWarpRows);
      const unsigned grid = gpu::grid_for(rows, kWarpRows);
      const int c = static_cast<int>(cols);
      if (cols <= 2048) softmax_fwd_warp16<T, 8><<<grid, block, 0, stream>>>(x, y, rows, c, sc, log);
      else softmax_fwd_warp16<T, 16><<<grid, block, 0, stream>>>(x, y, rows, c, sc, log);
      TG_CUDA_CHECK_LAST();
      return;
    }
  }
  const RegPlan plan = plan_for(cols, block_max_p<T>(), 128);
  const int c = static_cast<int>(cols);
  with_p(plan.p, [&](auto pc) {
    constexpr int P = decltype(pc)::value;
    constexpr int V = P < MV ? P : MV;
    if (plan.warp) {
      const dim3 block(32, kWarpRows);
      const unsigned grid = gpu::grid_for(rows, kWarpRows);
      if (vec) softmax_fwd_warp<T, V, P><<<grid, block, 0, stream>>>(x, y, rows, c, sc, log);
      else softmax_fwd_warp<T, 1, P><<<grid, block, 0, stream>>>(x, y, rows, c, sc, log);
    } else if constexpr (P >= 4 && P <= block_max_p<T>()) {
      const unsigned grid = gpu::grid_for(rows, 1);
      if (vec) softmax_fwd_block<T, V, P><<<grid, plan.threads, 0, stream>>>(x, y, rows, c, sc, log);
      else softmax_fwd_block<T, 1, P><<<grid, plan.threads, 0, stream>>>(x, y, rows, c, sc, log);
    }
  });
  TG_CUDA_CHECK_LAST();
}

template <typename T>
void softmax_bwd_typed(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t cols, double scale, bool log,
                       cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  constexpr int MV = gpu::max_vec<T>();
  const bool vec = gpu::vec_ok(16, cols, sizeof(T), {y, dy, dx});
  const Acc sc = static_cast<Acc>(scale);
  if (cols > block_max_cols<T>()) {
    const unsigned grid = gpu::grid_for(rows, 1);
    if (vec) softmax_bwd_online<T, MV><<<grid, kOnlineThreads, 0, stream>>>(y, dy, dx, rows, cols, sc, log);
    else softmax_bwd_online<T, 1><<<grid, kOnlineThreads, 0, stream>>>(y, dy, dx, rows, cols, sc, log);
    TG_CUDA_CHECK_LAST();
    return;
  }
  const RegPlan plan = plan_for(cols, block_max_p<T>(), 256);
  const int c = static_cast<int>(cols);
  with_p(plan.p, [&](auto pc) {
    constexpr int P = decltype(pc)::value;
    constexpr int V = P < MV ? P : MV;
    if (plan.warp) {
      const dim3 block(32, kWarpRows);
      const unsigned grid = gpu::grid_for(rows, kWarpRows);
      if (vec) softmax_bwd_warp<T, V, P><<<grid, block, 0, stream>>>(y, dy, dx, rows, c, sc, log);
      else softmax_bwd_warp<T, 1, P><<<grid, block, 0, stream>>>(y, dy, dx, rows, c, sc, log);
    } else if constexpr (P >= 4 && P <= block_max_p<T>()) {
      const unsigned grid = gpu::grid_for(rows, 1);
      if (vec) softmax_bwd_block<T, V, P><<<grid, plan.threads, 0, stream>>>(y, dy, dx, rows, c, sc, log);
      else softmax_bwd_block<T, 1, P><<<grid, plan.threads, 0, stream>>>(y, dy, dx, rows, c, sc, log);
    }
  });
  TG_CUDA_CHECK_LAST();
}

void softmax_fwd_cuda(const Tensor& x, std::int64_t cols, double scale, bool log, const Tensor& y) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), log ? "log_softmax" : "softmax", [&] {
    softmax_fwd_typed<scalar_t>(x.data<scalar_t>(), y.data<scalar_t>(), x.numel() / cols, cols, scale, log, stream);
  });
}

void softmax_bwd_cuda(const Tensor& y, const Tensor& dy, std::int64_t cols, double scale, bool log,
                      const Tensor& dx) {
  const Device dev = y.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&] {
    softmax_bwd_typed<scalar_t>(y.data<scalar_t>(), dy.data<scalar_t>(), dx.data<scalar_t>(), y.numel() / cols, cols,
                                scale, log, stream);
  });
}

}  // namespace

TG_REGISTER_KERNEL(softmax_fwd_kernel, CUDA, &softmax_fwd_cuda);
TG_REGISTER_KERNEL(softmax_bwd_kernel, CUDA, &softmax_bwd_cuda);

}  // namespace tg::ops
