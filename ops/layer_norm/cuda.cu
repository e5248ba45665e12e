// CUDA kernels of the layer_norm family.
//
// Rows of up to 1024 elements: one warp per row, the row held in registers, two passes
// over the registers (mean, then the sum of squared deviations): one read of x and one
// write of y in the forward, one read of dy and x and one write of dx in the backward.
// Longer rows: one block per row with Welford statistics (two reads of x).
//
// dgamma / dbeta are column sums over rows. The warp-per-row backward accumulates them in
// registers while it computes dx (each lane always owns the same columns), adds the warps
// of a block in a fixed order in shared memory and writes one partial row per block; the
// block-per-row path gets its partials from a separate column kernel. A second small
// kernel adds the partial rows in a fixed order: deterministic, no atomics.
//
// rms_norm runs the same kernels with the template flag RMS: the mean is 0 (not computed,
// loaded or stored), there is no beta / dbeta, the statistic is the root mean square (one
// pass over the registers; the block path sums squares instead of merging Welford states)
// and the backward drops the mean of g from dx. One set of kernels keeps the tuning shared.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "ops/cuda_fast_math.cuh"
#include "ops/cuda_pdl.cuh"
#include "ops/layer_norm/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr std::int64_t kWarpMaxD = 1024;  // rows up to this long: one warp per row
constexpr int kFwdWarps = 4;              // warps per block, forward (each on its own rows)
constexpr int kFwdMinBlocks = 1;          // forward: no register cap (a cap of 96 spills)
constexpr int kBwdMinWarps = 4;           // backward: no register cap beyond 255 (one block)
constexpr unsigned kMaxGrid = 1u << 24;   // grid-stride loops cover any number of rows

// ---- small device helpers ----------------------------------------------------------------

/// VEC elements of T moved as one aligned access (16 bytes for the vector paths).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T>
constexpr bool kIs16Bit = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

/// Storage -> f32/f64. bf16 is a shift; f16 uses the hardware conversion (the portable
/// operator float of tg::half is a branchy software decode).
template <typename T>
__device__ __forceinline__ typename acc_type<T>::type to_acc(T v) {
  return static_cast<typename acc_type<T>::type>(v);
}
template <>
__device__ __forceinline__ float to_acc<half>(half v) {
  return gpu::to_f32<half>(v.bits);
}

/// N 32-bit words: how rows of a 16-bit type are held between their load and their use.
template <int N>
struct alignas(4 * N) Words {
  std::uint32_t w[N];
};

/// The form VEC loaded elements of T are kept in: packed words for 16-bit types (two
/// elements per register, where f32 values would take two), the elements otherwise.
template <typename T, int VEC>
using Raw = std::conditional_t<kIs16Bit<T>, Words<(VEC + 1) / 2>, Pack<T, VEC>>;

template <typename T, int VEC>
__device__ __forceinline__ Raw<T, VEC> load_raw(const T* p) {
  if constexpr (kIs16Bit<T> && VEC == 1) {
    return Words<1>{{static_cast<std::uint32_t>(*reinterpret_cast<const std::uint16_t*>(p))}};
  } else {
    return *reinterpret_cast<const Raw<T, VEC>*>(p);
  }
}

/// Element k of a Raw pack in the accumulation type (bf16: a shift or a mask).
template <typename T, int VEC>
__device__ __forceinline__ typename acc_type<T>::type elem(const Raw<T, VEC>& r, int k) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return __uint_as_float(k % 2 == 0 ? r.w[k / 2] << 16 : r.w[k / 2] & 0xffff0000u);
  } else if constexpr (std::is_same_v<T, half>) {
    float f;
    if (k % 2 == 0) asm("{ .reg .f16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, lo; }" : "=f"(f) : "r"(r.w[k / 2]));
    else asm("{ .reg .f16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, hi; }" : "=f"(f) : "r"(r.w[k / 2]));
    return f;
  } else {
    return static_cast<typename acc_type<T>::type>(r.v[k]);
  }
}

template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void load_pack(const T* p, Acc (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = to_acc(pk.v[k]);
}

template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void store_pack(T* p, const Acc (&in)[VEC]) {
  if constexpr (kIs16Bit<T> && VEC % 2 == 0) {
    struct alignas(sizeof(T) * VEC) Words {
      std::uint32_t w[VEC / 2];
    } pk;
#pragma unroll
    for (int k = 0; k < VEC / 2; ++k) pk.w[k] = gpu::pack2<T>(in[2 * k], in[2 * k + 1]);
    *reinterpret_cast<Words*>(p) = pk;
  } else if constexpr (kIs16Bit<T>) {
    static_assert(VEC == 1);
    const std::uint32_t w = gpu::pack2<T>(in[0], 0.0f);
    *reinterpret_cast<std::uint16_t*>(p) = static_cast<std::uint16_t>(w & 0xffffu);
  } else {
    Pack<T, VEC> pk;
#pragma unroll
    for (int k = 0; k < VEC; ++k) pk.v[k] = static_cast<T>(in[k]);
    *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
  }
}

__device__ __forceinline__ float acc_rsqrt(float v) { return rsqrtf(v); }
__device__ __forceinline__ double acc_rsqrt(double v) { return rsqrt(v); }

// Programmatic dependent launch (ops/cuda_pdl.cuh): every kernel here is launched with
// programmatic stream serialisation and calls gpu::pdl_wait() before its first global memory
// access, so that its launch and block dispatch overlap the previous kernel's tail while the
// stream order holds; gpu::pdl_allow() lets the next kernel be dispatched early in turn.

/// Butterfly sum: IEEE addition is commutative, so every lane ends with the same value.
template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

/// warp_sum of N independent values, interleaved so that the shuffles overlap.
template <int N, typename Acc>
__device__ __forceinline__ void warp_sum_n(Acc (&v)[N]) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] += __shfl_xor_sync(kFullMask, v[i], o);
}

/// Sums a and b over a 1-d block (blockDim.x a multiple of 32, at most 1024); every
/// thread gets the same totals (each adds the warp totals in the same order).
template <typename Acc>
__device__ __forceinline__ void block_sum2(Acc& a, Acc& b, Acc (*sh)[kWarp]) {
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) {
    sh[0][warp] = a;
    sh[1][warp] = b;
  }
  __syncthreads();
  a = 0;
  b = 0;
  for (int w = 0; w < nw; ++w) {
    a += sh[0][w];
    b += sh[1][w];
  }
}

/// Welford state: count, mean and the sum of squared deviations from the mean.
template <typename Acc>
struct Welford {
  Acc n, mean, m2;
};

template <typename Acc>
__device__ __forceinline__ Welford<Acc> welford_merge(const Welford<Acc>& a, const Welford<Acc>& b) {
  if (b.n == Acc(0)) return a;
  if (a.n == Acc(0)) return b;
  const Acc n = a.n + b.n;
  const Acc fb = b.n / n;
  const Acc d = b.mean - a.mean;
  return {n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

/// Merges the Welford states of a 1-d block; every thread gets the same result.
template <typename Acc>
__device__ __forceinline__ Welford<Acc> block_welford(Welford<Acc> w, Welford<Acc>* sh) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    Welford<Acc> other{__shfl_down_sync(kFullMask, w.n, o), __shfl_down_sync(kFullMask, w.mean, o),
                       __shfl_down_sync(kFullMask, w.m2, o)};
    w = welford_merge(w, other);  // lanes >= 32 - o merge garbage, but only lane 0 is used
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
  __syncthreads();
  if (lane == 0) sh[warp] = w;
  __syncthreads();
  Welford<Acc> r = sh[0];
  for (int i = 1; i < nw; ++i) r = welford_merge(r, sh[i]);
  return r;
}

// ---- forward -----------------------------------------------------------------------------

// One warp per row; block = (32, kFwdWarps). Lane `lane` owns the VEC-element chunks
// starting at (j * 32 + lane) * VEC for j < NV; VEC > 1 only when D % VEC == 0 and every
// pointer is 16-byte aligned, so a chunk is either wholly inside the row or wholly out.
// Each warp takes R consecutive rows at a time and issues all their loads before the first
// reduction: a bf16 row of 1024 is only 64 bytes per lane, too little in flight to cover
// the memory latency on its own. The loaded values stay in their storage type (half the
// registers for bf16) and are converted where they are used.
template <typename T, int VEC, int NV, int R, bool RMS>
__global__ void __launch_bounds__(kWarp* kFwdWarps, kFwdMinBlocks)
    ln_fwd_warp(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta, std::int64_t rows,
                int D, typename acc_type<T>::type eps, T* __restrict__ y, typename acc_type<T>::type* __restrict__ mean,
                typename acc_type<T>::type* __restrict__ rstd) {
  using Acc = typename acc_type<T>::type;
  gpu::pdl_wait();
  gpu::pdl_allow();
  const int lane = threadIdx.x;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.y * R;
  for (std::int64_t r0 = (static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y) * R; r0 < rows;
       r0 += step) {
    Raw<T, VEC> v[R][NV];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = (j * kWarp + lane) * VEC;
        if (r0 + r < rows && c < D) v[r][j] = load_raw<T, VEC>(x + (r0 + r) * D + c);
        else v[r][j] = Raw<T, VEC>{};  // zeros: rows past the end only feed unused sums
      }
    Acc mu[R], rs[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      mu[r] = 0;
      if constexpr (!RMS) {
#pragma unroll
        for (int j = 0; j < NV; ++j)
#pragma unroll
          for (int k = 0; k < VEC; ++k) mu[r] += elem<T, VEC>(v[r][j], k);  // chunks past D hold zeros
      }
    }
    if constexpr (!RMS) warp_sum_n(mu);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      mu[r] *= inv_d;
      rs[r] = 0;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = (j * kWarp + lane) * VEC;
        if (c < D) {
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            const Acc d = elem<T, VEC>(v[r][j], k) - mu[r];
            rs[r] += d * d;
          }
        }
      }
    }
    warp_sum_n(rs);
#pragma unroll
    for (int r = 0; r < R; ++r) rs[r] = acc_rsqrt(rs[r] * inv_d + eps);
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c >= D) continue;
      Acc g[VEC], b[VEC];  // gamma / beta chunk: loaded once for the R rows
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        g[k] = 1;
        b[k] = 0;
      }
      if (gamma) load_pack<T, VEC>(gamma + c, g);
      if (!RMS && beta) load_pack<T, VEC>(beta + c, b);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r0 + r >= rows) continue;
        Acc o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          if constexpr (RMS) o[k] = elem<T, VEC>(v[r][j], k) * rs[r] * g[k];
          else o[k] = (elem<T, VEC>(v[r][j], k) - mu[r]) * rs[r] * g[k] + b[k];
        }
        store_pack<T, VEC>(y + (r0 + r) * D + c, o);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r0 + r < rows) {
          if constexpr (!RMS) mean[r0 + r] = mu[r];
          rstd[r0 + r] = rs[r];
        }
      }
    }
  }
}

// One block per row (1-d block, a multiple of 32): Welford over the row (RMS: the sum of
// squares), then a second pass that writes y.
template <typename T, int VEC, bool RMS>
__global__ void ln_fwd_block(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                             std::int64_t rows, std::int64_t D, typename acc_type<T>::type eps, T* __restrict__ y,
                             typename acc_type<T>::type* __restrict__ mean,
                             typename acc_type<T>::type* __restrict__ rstd) {
  using Acc = typename acc_type<T>::type;
  __shared__ Welford<Acc> sh[kWarp];
  __shared__ Acc sq[2][kWarp];  // RMS only
  gpu::pdl_wait();
  gpu::pdl_allow();
  const std::int64_t nvec = D / VEC;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * D;
    Welford<Acc> w{0, 0, 0};
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc v[VEC];
      load_pack<T, VEC>(xr + j * VEC, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        if constexpr (RMS) {
          w.m2 += v[k] * v[k];  // no mean: a plain sum of squares cannot cancel
        } else {
          w.n += Acc(1);
          const Acc d = v[k] - w.mean;
          w.mean += d / w.n;
          w.m2 += d * (v[k] - w.mean);
        }
      }
    }
    Acc mu = 0, ss = w.m2;
    if constexpr (RMS) {
      Acc none = 0;
      block_sum2(ss, none, sq);
    } else {
      const Welford<Acc> t = block_welford(w, sh);
      mu = t.mean;
      ss = t.m2;
    }
    const Acc rs = acc_rsqrt(ss / static_cast<Acc>(D) + eps);
    T* yr = y + row * D;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc v[VEC];
      load_pack<T, VEC>(xr + j * VEC, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = (v[k] - mu) * rs;
      if (gamma) {
        Acc g[VEC];
        load_pack<T, VEC>(gamma + j * VEC, g);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] *= g[k];
      }
      if (beta) {
        Acc b[VEC];
        load_pack<T, VEC>(beta + j * VEC, b);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] += b[k];
      }
      store_pack<T, VEC>(yr + j * VEC, v);
    }
    if (threadIdx.x == 0) {
      if constexpr (!RMS) mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

// ---- backward ----------------------------------------------------------------------------

// Rows of up to kWarpMaxD elements, one 1-d block of NW warps per row: thread t owns the
// VEC-element chunks starting at (j * NW * 32 + t) * VEC for j < NV (the same columns for
// every row, so gamma is loaded once and the column sums stay in registers). A block takes
// R consecutive rows at a time, issues all their loads, then reduces the 2 * R row sums
// together: one warp butterfly and one barrier per R rows. Spreading a row over NW warps
// keeps the per-thread share of the column sums small (2 * NV * VEC values), which leaves
// the registers to the rows in flight.
//
// The row sums go through red[buf]; buf alternates between batches so that a fast
// thread writing batch k + 1 cannot overwrite sums that a slow one still reads for batch
// k (a thread reaches batch k + 2's writes only after the barrier of batch k + 1, which
// every thread passes after its reads of batch k).
//
// With COLS, each thread also sums dy * xhat and dy over all rows it visits and the block
// writes them as row blockIdx.x of part_g / part_b ([gridDim.x, D]); every column has
// exactly one owner thread per block. dx may be null (only the column sums wanted).
// With RMS there is one row sum (of g * xhat) instead of two and no dbeta partials.
template <typename T, int VEC, int NV, int R, int NW, bool COLS, bool RMS>
__global__ void __launch_bounds__(kWarp* NW, kBwdMinWarps / NW)
    ln_bwd_rows(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                const typename acc_type<T>::type* __restrict__ mean,
                const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows, int D, T* __restrict__ dx,
                typename acc_type<T>::type* __restrict__ part_g, typename acc_type<T>::type* __restrict__ part_b) {
  using Acc = typename acc_type<T>::type;
  constexpr int kThreads = NW * kWarp;
  constexpr int kSums = RMS ? 1 : 2;  // row sums: [sum g,] sum g * xhat (the last)
  constexpr int kGx = kSums - 1;      // index of sum g * xhat
  __shared__ Acc red[2][R][kSums][NW];  // [buf][row][sum][warp]
  gpu::pdl_wait();
  gpu::pdl_allow();
  const int t = threadIdx.x, lane = t % kWarp, warp = t / kWarp;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  Acc gm[NV][VEC];
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int c = (j * kThreads + t) * VEC;
#pragma unroll
    for (int k = 0; k < VEC; ++k) gm[j][k] = 1;
    if (gamma && c < D) load_pack<T, VEC>(gamma + c, gm[j]);
  }
  Acc ag[COLS ? NV : 1][VEC], ab[COLS ? NV : 1][VEC];
#pragma unroll
  for (int j = 0; j < (COLS ? NV : 1); ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) ag[j][k] = ab[j][k] = 0;
  int buf = 0;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * R;
  for (std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * R; r0 < rows; r0 += step) {
    Raw<T, VEC> dv[R][NV], xv[R][NV];
    Acc mu[R], rs[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool valid = r0 + r < rows;
      mu[r] = !RMS && valid ? mean[r0 + r] : Acc(0);
      rs[r] = valid ? rstd[r0 + r] : Acc(0);
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = (j * kThreads + t) * VEC;
        if (valid && c < D) {
          dv[r][j] = load_raw<T, VEC>(dy + (r0 + r) * D + c);
          xv[r][j] = load_raw<T, VEC>(x + (r0 + r) * D + c);
        } else {
          dv[r][j] = Raw<T, VEC>{};  // zeros: add nothing to any sum
          xv[r][j] = Raw<T, VEC>{};
        }
      }
    }
    Acc s[kSums * R];  // s[kSums r]: sum(g) (not RMS), s[kSums r + kGx]: sum(g * xhat); g = dy * gamma
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int i = 0; i < kSums; ++i) s[kSums * r + i] = 0;
#pragma unroll
      for (int j = 0; j < NV; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const Acc d = elem<T, VEC>(dv[r][j], k);
          const Acc xh = (elem<T, VEC>(xv[r][j], k) - mu[r]) * rs[r];  // 0 where dv / xv are padding
          const Acc g = d * gm[j][k];
          if constexpr (!RMS) s[kSums * r] += g;
          s[kSums * r + kGx] += g * xh;
          if constexpr (COLS) {
            ag[j][k] += d * xh;
            if constexpr (!RMS) ab[j][k] += d;
          }
        }
    }
    if (!dx) continue;  // uniform over the grid: no thread skips a barrier another one takes
    warp_sum_n(s);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int i = 0; i < kSums; ++i) red[buf][r][i][warp] = s[kSums * r + i];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r0 + r >= rows) continue;
      Acc m1 = 0, m2 = 0;
#pragma unroll
      for (int w = 0; w < NW; ++w) {  // a fixed order: every thread gets the same values
        if constexpr (!RMS) m1 += red[buf][r][0][w];
        m2 += red[buf][r][kGx][w];
      }
      m1 *= inv_d;
      m2 *= inv_d;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        const int c = (j * kThreads + t) * VEC;
        if (c >= D) continue;
        Acc o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const Acc xh = (elem<T, VEC>(xv[r][j], k) - mu[r]) * rs[r];
          o[k] = rs[r] * (elem<T, VEC>(dv[r][j], k) * gm[j][k] - m1 - xh * m2);
        }
        store_pack<T, VEC>(dx + (r0 + r) * D + c, o);
      }
    }
    buf ^= 1;
  }
  if constexpr (COLS) {
    Acc* pg = part_g + static_cast<std::int64_t>(blockIdx.x) * D;
    Acc* pb = RMS ? nullptr : part_b + static_cast<std::int64_t>(blockIdx.x) * D;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kThreads + t) * VEC;
      if (c >= D) continue;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        pg[c + k] = ag[j][k];
        if constexpr (!RMS) pb[c + k] = ab[j][k];
      }
    }
  }
}

// dx for long rows: one block per row, two passes (the row sums, then dx).
template <typename T, int VEC, bool RMS>
__global__ void ln_bwd_block_dx(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                                const typename acc_type<T>::type* __restrict__ mean,
                                const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows,
                                std::int64_t D, T* __restrict__ dx) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sh[2][kWarp];
  gpu::pdl_wait();
  gpu::pdl_allow();
  const std::int64_t nvec = D / VEC;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* dyr = dy + row * D;
    const T* xr = x + row * D;
    const Acc mu = RMS ? Acc(0) : mean[row], rs = rstd[row];
    // d = dy * gamma and v = x at vector j (both passes read them again from L1 / L2)
    auto load = [&](std::int64_t j, Acc(&d)[VEC], Acc(&v)[VEC]) {
      load_pack<T, VEC>(dyr + j * VEC, d);
      load_pack<T, VEC>(xr + j * VEC, v);
      if (gamma) {
        Acc g[VEC];
        load_pack<T, VEC>(gamma + j * VEC, g);
#pragma unroll
        for (int k = 0; k < VEC; ++k) d[k] *= g[k];
      }
    };
    Acc s1 = 0, s2 = 0;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc d[VEC], v[VEC];
      load(j, d, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        if constexpr (!RMS) s1 += d[k];  // stays 0 with RMS: dx subtracts no mean of g
        s2 += d[k] * (v[k] - mu) * rs;
      }
    }
    block_sum2(s1, s2, sh);
    const Acc m1 = s1 * inv_d, m2 = s2 * inv_d;
    T* dxr = dx + row * D;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc d[VEC], v[VEC];
      load(j, d, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = rs * (d[k] - m1 - (v[k] - mu) * rs * m2);
      store_pack<T, VEC>(dxr + j * VEC, v);
    }
  }
}

constexpr int kColTile = 32;  // columns per block of the column kernels
constexpr int kColRows = 8;   // threadIdx.y extent of ln_bwd_cols
constexpr int kFinCols = 8;    // columns per block of ln_col_finalize
constexpr int kFinRows = 128;  // threadIdx.y extent of ln_col_finalize (a power of two)

// Partial column sums for long rows: block (32, kColRows) covers columns
// [blockIdx.x * 32, +32) of rows [blockIdx.y * rows_per_chunk, +rows_per_chunk) and writes
// row blockIdx.y of part_g / part_b ([gridDim.y, D]; RMS: no mean, no part_b).
template <typename T, bool RMS>
__global__ void ln_bwd_cols(const T* __restrict__ dy, const T* __restrict__ x,
                            const typename acc_type<T>::type* __restrict__ mean,
                            const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows, std::int64_t D,
                            std::int64_t rows_per_chunk, typename acc_type<T>::type* __restrict__ part_g,
                            typename acc_type<T>::type* __restrict__ part_b) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sg[kColRows][kColTile + 1], sb[kColRows][kColTile + 1];
  gpu::pdl_wait();
  gpu::pdl_allow();
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = std::min(rows, r0 + rows_per_chunk);
  Acc g = 0, b = 0;
  if (c < D) {
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) {
      const Acc d = static_cast<Acc>(dy[r * D + c]);
      g += d * (static_cast<Acc>(x[r * D + c]) - (RMS ? Acc(0) : mean[r])) * rstd[r];
      if constexpr (!RMS) b += d;
    }
  }
  sg[threadIdx.y][threadIdx.x] = g;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < D) {
    for (int i = 1; i < kColRows; ++i) {
      g += sg[i][threadIdx.x];
      b += sb[i][threadIdx.x];
    }
    part_g[static_cast<std::int64_t>(blockIdx.y) * D + c] = g;
    if constexpr (!RMS) part_b[static_cast<std::int64_t>(blockIdx.y) * D + c] = b;
  }
}

// dgamma[c] = sum_p part_g[p, c] (and dbeta likewise); either output may be null. A block
// (kFinCols, kFinRows) covers kFinCols columns: its threads take partial rows
// ty, ty + kFinRows, ..., then a shared-memory tree adds the kFinRows sums: a fixed order.
// Narrow column tiles (one 32-byte sector per row) give D / 8 blocks, enough to spread
// the read of the partials over the SMs. RMS: no part_b / dbeta.
template <typename T, bool RMS>
__global__ void __launch_bounds__(kFinCols* kFinRows)
    ln_col_finalize(const typename acc_type<T>::type* __restrict__ part_g,
                    const typename acc_type<T>::type* __restrict__ part_b, std::int64_t nparts, std::int64_t D,
                    T* __restrict__ dgamma, T* __restrict__ dbeta) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sg[kFinRows][kFinCols], sb[kFinRows][kFinCols];
  gpu::pdl_wait();
  gpu::pdl_allow();
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kFinCols + tx;
  Acc g = 0, b = 0;
  if (c < D) {
#pragma unroll 4
    for (std::int64_t p = ty; p < nparts; p += kFinRows) {
      g += part_g[p * D + c];
      if constexpr (!RMS) b += part_b[p * D + c];
    }
  }
  sg[ty][tx] = g;
  sb[ty][tx] = b;
  __syncthreads();
#pragma unroll
  for (int s = kFinRows / 2; s > 0; s >>= 1) {
    if (ty < s) {
      sg[ty][tx] += sg[ty + s][tx];
      if constexpr (!RMS) sb[ty][tx] += sb[ty + s][tx];
    }
    __syncthreads();
  }
  if (ty == 0 && c < D) {
    if (dgamma) dgamma[c] = static_cast<T>(sg[0][tx]);
    if (!RMS && dbeta) dbeta[c] = static_cast<T>(sb[0][tx]);
  }
}

// ---- host side ---------------------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

/// True when the 16-byte vector path applies: D a multiple of VEC and every given pointer
/// (null = absent) 16-byte aligned, so that every row and chunk starts aligned.
bool use_vec(std::int64_t D, int vec, std::initializer_list<const void*> ptrs) {
  if (D % vec != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}

/// Launches `kernel` programmatically where the device allows (every kernel here follows
/// gpu::pdl_wait()'s rule).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, int device,
            Args... args) {
  gpu::launch_pdl(true, kernel, grid, block, smem, stream, device, args...);
}

/// Most co-resident blocks of `kernel` on the device (at least one per SM).
template <typename K>
int resident_blocks(K kernel, int threads, std::size_t smem, int device) {
  int per_sm = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(1, per_sm) * cuda::multiprocessor_count(device);
}

/// Blocks for a kernel that loops over row batches: one per batch, but no more than can
/// run at once (the loop covers the rest; later blocks would only queue behind them).
template <typename K>
unsigned persistent_grid(K kernel, int threads, std::int64_t rows, int rows_per_block, int device) {
  const std::int64_t want = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned>(std::min<std::int64_t>(want, resident_blocks(kernel, threads, 0, device)));
}

unsigned grid_rows(std::int64_t rows, int rows_per_block) {
  return static_cast<unsigned>(std::min<std::int64_t>((rows + rows_per_block - 1) / rows_per_block, kMaxGrid));
}

int block_threads(std::int64_t D, int vec) { return D / vec <= 1024 ? 256 : 512; }

/// 32-bit registers that NV chunks of VEC elements take once converted to acc_type<T>
/// (the compiler keeps the converted values of a batch for all its uses, so this and not
/// the storage size is what a row costs in registers).
template <typename T, int VEC, int NV>
constexpr int acc_regs() {
  return NV * VEC * static_cast<int>(sizeof(typename acc_type<T>::type) / 4);
}

/// Rows per warp per batch of the forward: about 64 registers of row values per thread
/// (2 rows of f32[1024] or bf16[1024]), all loaded before the first reduction.
template <typename T, int VEC, int NV>
constexpr int fwd_rows() {
  return std::clamp(64 / acc_regs<T, VEC, NV>(), 1, 8);
}

/// Rows per block per batch of the backward: about 64 registers of dy and x values.
template <typename T, int VEC, int NV>
constexpr int bwd_rows() {
  return std::clamp(64 / (2 * acc_regs<T, VEC, NV>()), 1, 8);
}

/// Calls f.template operator()<NV>() with NV the smallest power of two such that
/// NV * 32 * VEC >= D (D <= kWarpMaxD), so that one warp covers the row.
template <int VEC, typename F>
void with_nv(std::int64_t D, F&& f) {
  const std::int64_t chunks = (D + kWarp * VEC - 1) / (kWarp * VEC);
  constexpr int kMaxNv = static_cast<int>(kWarpMaxD / (kWarp * VEC));
  static_assert(kMaxNv >= 1 && kMaxNv <= 32);
  if (chunks <= 1) return f.template operator()<1>();
  if constexpr (kMaxNv >= 2)
    if (chunks <= 2) return f.template operator()<2>();
  if constexpr (kMaxNv >= 4)
    if (chunks <= 4) return f.template operator()<4>();
  if constexpr (kMaxNv >= 8)
    if (chunks <= 8) return f.template operator()<8>();
  if constexpr (kMaxNv >= 16)
    if (chunks <= 16) return f.template operator()<16>();
  if constexpr (kMaxNv >= 32)
    if (chunks <= 32) return f.template operator()<32>();
}

/// The backward plan for D <= kWarpMaxD: calls f.template operator()<NW, NV>() with NW
/// warps per row (1, 2 or 4: as many as the row has 32-chunk groups, at most 4) and NV
/// the smallest power of two with NV * NW * 32 * VEC >= D.
template <int VEC, typename F>
void with_bwd_plan(std::int64_t D, F&& f) {
  const std::int64_t chunks = (D + VEC - 1) / VEC;
  constexpr std::int64_t kMaxChunks = kWarpMaxD / VEC;
  static_assert(kMaxChunks >= 128 && kMaxChunks <= 1024);
  if (chunks <= 32) return f.template operator()<1, 1>();
  if (chunks <= 64) return f.template operator()<2, 1>();
  if (chunks <= 128) return f.template operator()<4, 1>();
  if constexpr (kMaxChunks >= 256)
    if (chunks <= 256) return f.template operator()<4, 2>();
  if constexpr (kMaxChunks >= 512)
    if (chunks <= 512) return f.template operator()<4, 4>();
  if constexpr (kMaxChunks >= 1024)
    if (chunks <= 1024) return f.template operator()<4, 8>();
}

template <typename T, int VEC, bool RMS>
void fwd_launch(const T* x, const T* g, const T* b, std::int64_t rows, std::int64_t D, double eps, T* y,
                typename acc_type<T>::type* mean, typename acc_type<T>::type* rstd, int device, cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  const Acc e = static_cast<Acc>(eps);
  if (D <= kWarpMaxD) {
    with_nv<VEC>(D, [&]<int NV>() {
      constexpr int R = fwd_rows<T, VEC, NV>();
      auto* kernel = &ln_fwd_warp<T, VEC, NV, R, RMS>;
      const unsigned grid = persistent_grid(kernel, kWarp * kFwdWarps, rows, kFwdWarps * R, device);
      launch(kernel, grid, dim3(kWarp, kFwdWarps), 0, stream, device, x, g, b, rows, static_cast<int>(D), e, y, mean,
             rstd);
    });
  } else {
    launch(&ln_fwd_block<T, VEC, RMS>, grid_rows(rows, 1), block_threads(D, VEC), 0, stream, device, x, g, b, rows, D,
           e, y, mean, rstd);
  }
}

/// The forward of layer_norm, or of rms_norm with RMS (beta and mean then undefined).
template <bool RMS>
void norm_fwd_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows, std::int64_t D,
                   double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), RMS ? "rms_norm" : "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    constexpr int V = static_cast<int>(16 / sizeof(T));
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const T* pb = beta.defined() ? beta.data<T>() : nullptr;
    T* py = y.data<T>();
    Acc* pm = mean.defined() ? mean.data<Acc>() : nullptr;
    Acc* pr = rstd.data<Acc>();
    if (use_vec(D, V, {px, pg, pb, py})) fwd_launch<T, V, RMS>(px, pg, pb, rows, D, eps, py, pm, pr, dev.index, stream);
    else fwd_launch<T, 1, RMS>(px, pg, pb, rows, D, eps, py, pm, pr, dev.index, stream);
  });
}

template <typename T, int VEC, bool RMS>
void bwd_launch(const T* dy, const T* x, const T* g, const typename acc_type<T>::type* mean,
                const typename acc_type<T>::type* rstd, std::int64_t rows, std::int64_t D, T* dx, T* dgamma, T* dbeta,
                int device, cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  const bool cols = dgamma || dbeta;
  Tensor part_g, part_b;  // [nparts, D] partial column sums from the caching pool (no part_b with RMS)
  std::int64_t nparts = 0;
  auto alloc_parts = [&](std::int64_t n) {
    nparts = n;
    part_g = tg::empty(Shape{n, D}, {.dtype = dtype_of<Acc>(), .device = Device::cuda(device)});
    if (!RMS) part_b = tg::empty(Shape{n, D}, {.dtype = dtype_of<Acc>(), .device = Device::cuda(device)});
  };
  auto part = [](const Tensor& t) { return t.defined() ? t.data<Acc>() : static_cast<Acc*>(nullptr); };
  if (D <= kWarpMaxD) {
    with_bwd_plan<VEC>(D, [&]<int NW, int NV>() {
      constexpr int R = bwd_rows<T, VEC, NV>();
      const int threads = kWarp * NW;
      if (cols) {
        // One partial row per block (D values each): the grid is at most what runs at once.
        auto* kernel = &ln_bwd_rows<T, VEC, NV, R, NW, true, RMS>;
        const unsigned grid = persistent_grid(kernel, threads, rows, R, device);
        alloc_parts(grid);
        launch(kernel, grid, threads, 0, stream, device, dy, x, g, mean, rstd, rows, static_cast<int>(D), dx,
               part(part_g), part(part_b));
      } else {
        auto* kernel = &ln_bwd_rows<T, VEC, NV, R, NW, false, RMS>;
        const unsigned grid = persistent_grid(kernel, threads, rows, R, device);
        launch(kernel, grid, threads, 0, stream, device, dy, x, g, mean, rstd, rows, static_cast<int>(D), dx,
               static_cast<Acc*>(nullptr), static_cast<Acc*>(nullptr));
      }
    });
  } else {
    if (dx) {
      launch(&ln_bwd_block_dx<T, VEC, RMS>, grid_rows(rows, 1), block_threads(D, VEC), 0, stream, device, dy, x, g,
             mean, rstd, rows, D, dx);
    }
    if (cols) {
      const std::int64_t col_blocks = (D + kColTile - 1) / kColTile;
      const std::int64_t rows_per_chunk = std::max<std::int64_t>(32, (rows + 255) / 256);
      alloc_parts((rows + rows_per_chunk - 1) / rows_per_chunk);
      launch(&ln_bwd_cols<T, RMS>, dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(nparts)),
             dim3(kColTile, kColRows), 0, stream, device, dy, x, mean, rstd, rows, D, rows_per_chunk, part(part_g),
             part(part_b));
    }
  }
  if (cols) {
    const std::int64_t fin_blocks = (D + kFinCols - 1) / kFinCols;
    launch(&ln_col_finalize<T, RMS>, static_cast<unsigned>(fin_blocks), dim3(kFinCols, kFinRows), 0, stream, device,
           static_cast<const Acc*>(part(part_g)), static_cast<const Acc*>(part(part_b)), nparts, D, dgamma, dbeta);
  }
}

/// The backward of layer_norm, or of rms_norm with RMS (mean and dbeta then undefined).
template <bool RMS>
void norm_bwd_cuda(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                   std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta) {
  if (!dx.defined() && !dgamma.defined() && !dbeta.defined()) return;
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), RMS ? "rms_norm" : "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    constexpr int V = static_cast<int>(16 / sizeof(T));
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const Acc* pm = mean.defined() ? mean.data<Acc>() : nullptr;
    const Acc* pr = rstd.data<Acc>();
    T* pdx = dx.defined() ? dx.data<T>() : nullptr;
    T* pdg = dgamma.defined() ? dgamma.data<T>() : nullptr;
    T* pdb = dbeta.defined() ? dbeta.data<T>() : nullptr;
    if (use_vec(D, V, {pdy, px, pg, pdx})) {
      bwd_launch<T, V, RMS>(pdy, px, pg, pm, pr, rows, D, pdx, pdg, pdb, dev.index, stream);
    } else {
      bwd_launch<T, 1, RMS>(pdy, px, pg, pm, pr, rows, D, pdx, pdg, pdb, dev.index, stream);
    }
  });
}

void layer_norm_fwd_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows, std::int64_t D,
                         double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  norm_fwd_cuda<false>(x, gamma, beta, rows, D, eps, y, mean, rstd);
}

void layer_norm_bwd_cuda(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma,
                         const Tensor& dbeta) {
  norm_bwd_cuda<false>(dy, x, gamma, mean, rstd, rows, D, dx, dgamma, dbeta);
}

void rms_norm_fwd_cuda(const Tensor& x, const Tensor& gamma, std::int64_t rows, std::int64_t D, double eps,
                       const Tensor& y, const Tensor& rstd) {
  norm_fwd_cuda<true>(x, gamma, Tensor(), rows, D, eps, y, Tensor(), rstd);
}

void rms_norm_bwd_cuda(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, std::int64_t rows,
                       std::int64_t D, const Tensor& dx, const Tensor& dgamma) {
  norm_bwd_cuda<true>(dy, x, gamma, Tensor(), rstd, rows, D, dx, dgamma, Tensor());
}

}  // namespace

TG_REGISTER_KERNEL(layer_norm_fwd_kernel, CUDA, &layer_norm_fwd_cuda);
TG_REGISTER_KERNEL(layer_norm_bwd_kernel, CUDA, &layer_norm_bwd_cuda);
TG_REGISTER_KERNEL(rms_norm_fwd_kernel, CUDA, &rms_norm_fwd_cuda);
TG_REGISTER_KERNEL(rms_norm_bwd_kernel, CUDA, &rms_norm_bwd_cuda);

}  // namespace tg::ops
