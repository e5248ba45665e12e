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
#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <cstdint>

#include "ops/layer_norm/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr std::int64_t kWarpMaxD = 1024;  // rows up to this long: one warp per row
constexpr int kFwdWarps = 4;              // rows (warps) per block, forward
constexpr int kBwdWarps = 4;              // rows (warps) per block, backward
constexpr unsigned kMaxGrid = 1u << 24;   // grid-stride loops cover any number of rows

// ---- small device helpers ----------------------------------------------------------------

/// VEC elements of T moved as one aligned access (16 bytes for the vector paths).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void load_pack(const T* p, Acc (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = static_cast<Acc>(pk.v[k]);
}

template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void store_pack(T* p, const Acc (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int k = 0; k < VEC; ++k) pk.v[k] = static_cast<T>(in[k]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

__device__ __forceinline__ float acc_rsqrt(float v) { return rsqrtf(v); }
__device__ __forceinline__ double acc_rsqrt(double v) { return rsqrt(v); }

/// Butterfly sum: IEEE addition is commutative, so every lane ends with the same value.
template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
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
template <typename T, int VEC, int NV>
__global__ void __launch_bounds__(kWarp* kFwdWarps)
    ln_fwd_warp(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta, std::int64_t rows,
                int D, typename acc_type<T>::type eps, T* __restrict__ y, typename acc_type<T>::type* __restrict__ mean,
                typename acc_type<T>::type* __restrict__ rstd) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += step) {
    const T* xr = x + row * D;
    Acc v[NV][VEC];
    Acc s = 0;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
        load_pack<T, VEC>(xr + c, v[j]);
#pragma unroll
        for (int k = 0; k < VEC; ++k) s += v[j][k];
      }
    }
    const Acc mu = warp_sum(s) * inv_d;
    Acc q = 0;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const Acc d = v[j][k] - mu;
          q += d * d;
        }
      }
    }
    const Acc rs = acc_rsqrt(warp_sum(q) * inv_d + eps);
    T* yr = y + row * D;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
        Acc o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] = (v[j][k] - mu) * rs;
        if (gamma) {
          Acc g[VEC];
          load_pack<T, VEC>(gamma + c, g);
#pragma unroll
          for (int k = 0; k < VEC; ++k) o[k] *= g[k];
        }
        if (beta) {
          Acc b[VEC];
          load_pack<T, VEC>(beta + c, b);
#pragma unroll
          for (int k = 0; k < VEC; ++k) o[k] += b[k];
        }
        store_pack<T, VEC>(yr + c, o);
      }
    }
    if (lane == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

// One block per row (1-d block, a multiple of 32): Welford over the row, then a second
// pass that writes y.
template <typename T, int VEC>
__global__ void ln_fwd_block(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                             std::int64_t rows, std::int64_t D, typename acc_type<T>::type eps, T* __restrict__ y,
                             typename acc_type<T>::type* __restrict__ mean,
                             typename acc_type<T>::type* __restrict__ rstd) {
  using Acc = typename acc_type<T>::type;
  __shared__ Welford<Acc> sh[kWarp];
  const std::int64_t nvec = D / VEC;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * D;
    Welford<Acc> w{0, 0, 0};
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc v[VEC];
      load_pack<T, VEC>(xr + j * VEC, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        w.n += Acc(1);
        const Acc d = v[k] - w.mean;
        w.mean += d / w.n;
        w.m2 += d * (v[k] - w.mean);
      }
    }
    const Welford<Acc> t = block_welford(w, sh);
    const Acc mu = t.mean;
    const Acc rs = acc_rsqrt(t.m2 / static_cast<Acc>(D) + eps);
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
      mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

// ---- backward ----------------------------------------------------------------------------

// One warp per row (block = (32, kBwdWarps)), grid-stride over rows; the same chunk
// ownership as ln_fwd_warp. With COLS, each lane also sums dy * xhat and dy for its
// columns over all rows it visits, and the block writes its partial sums as row
// blockIdx.x of part_g / part_b ([gridDim.x, D]). Dynamic shared memory: 2 * D Acc.
template <typename T, int VEC, int NV, bool COLS>
__global__ void __launch_bounds__(kWarp* kBwdWarps)
    ln_bwd_warp(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                const typename acc_type<T>::type* __restrict__ mean,
                const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows, int D, T* __restrict__ dx,
                typename acc_type<T>::type* __restrict__ part_g, typename acc_type<T>::type* __restrict__ part_b) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  Acc ag[COLS ? NV : 1][VEC], ab[COLS ? NV : 1][VEC];
  if constexpr (COLS) {
#pragma unroll
    for (int j = 0; j < NV; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) ag[j][k] = ab[j][k] = 0;
  }
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * blockDim.y;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += step) {
    const T* dyr = dy + row * D;
    const T* xr = x + row * D;
    const Acc mu = mean[row], rs = rstd[row];
    Acc dv[NV][VEC], xh[NV][VEC];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
        load_pack<T, VEC>(dyr + c, dv[j]);
        load_pack<T, VEC>(xr + c, xh[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          xh[j][k] = (xh[j][k] - mu) * rs;
          if constexpr (COLS) {
            ag[j][k] += dv[j][k] * xh[j][k];
            ab[j][k] += dv[j][k];
          }
        }
      }
    }
    if (!dx) continue;
    Acc s1 = 0, s2 = 0;  // sum(g), sum(g * xhat) with g = dy * gamma
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
        if (gamma) {
          Acc g[VEC];
          load_pack<T, VEC>(gamma + c, g);
#pragma unroll
          for (int k = 0; k < VEC; ++k) dv[j][k] *= g[k];
        }
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          s1 += dv[j][k];
          s2 += dv[j][k] * xh[j][k];
        }
      }
    }
    const Acc m1 = warp_sum(s1) * inv_d, m2 = warp_sum(s2) * inv_d;
    T* dxr = dx + row * D;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int c = (j * kWarp + lane) * VEC;
      if (c < D) {
        Acc o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] = rs * (dv[j][k] - m1 - xh[j][k] * m2);
        store_pack<T, VEC>(dxr + c, o);
      }
    }
  }
  if constexpr (COLS) {
    extern __shared__ __align__(16) unsigned char ln_smem[];
    Acc* sg = reinterpret_cast<Acc*>(ln_smem);
    Acc* sb = sg + D;
    // Warps add their sums one after another: a fixed order, so the result is deterministic.
    for (int w = 0; w < static_cast<int>(blockDim.y); ++w) {
      if (static_cast<int>(threadIdx.y) == w) {
#pragma unroll
        for (int j = 0; j < NV; ++j) {
          const int c = (j * kWarp + lane) * VEC;
          if (c < D) {
#pragma unroll
            for (int k = 0; k < VEC; ++k) {
              sg[c + k] = (w == 0 ? Acc(0) : sg[c + k]) + ag[j][k];
              sb[c + k] = (w == 0 ? Acc(0) : sb[c + k]) + ab[j][k];
            }
          }
        }
      }
      __syncthreads();
    }
    const int tid = threadIdx.y * kWarp + threadIdx.x, nt = blockDim.y * kWarp;
    for (int c = tid; c < D; c += nt) {
      part_g[static_cast<std::int64_t>(blockIdx.x) * D + c] = sg[c];
      part_b[static_cast<std::int64_t>(blockIdx.x) * D + c] = sb[c];
    }
  }
}

// dx for long rows: one block per row, two passes (the row sums, then dx).
template <typename T, int VEC>
__global__ void ln_bwd_block_dx(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                                const typename acc_type<T>::type* __restrict__ mean,
                                const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows,
                                std::int64_t D, T* __restrict__ dx) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sh[2][kWarp];
  const std::int64_t nvec = D / VEC;
  const Acc inv_d = Acc(1) / static_cast<Acc>(D);
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* dyr = dy + row * D;
    const T* xr = x + row * D;
    const Acc mu = mean[row], rs = rstd[row];
    Acc s1 = 0, s2 = 0;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc d[VEC], v[VEC];
      load_pack<T, VEC>(dyr + j * VEC, d);
      load_pack<T, VEC>(xr + j * VEC, v);
      if (gamma) {
        Acc g[VEC];
        load_pack<T, VEC>(gamma + j * VEC, g);
#pragma unroll
        for (int k = 0; k < VEC; ++k) d[k] *= g[k];
      }
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        s1 += d[k];
        s2 += d[k] * (v[k] - mu) * rs;
      }
    }
    block_sum2(s1, s2, sh);
    const Acc m1 = s1 * inv_d, m2 = s2 * inv_d;
    T* dxr = dx + row * D;
    for (std::int64_t j = threadIdx.x; j < nvec; j += blockDim.x) {
      Acc d[VEC], v[VEC];
      load_pack<T, VEC>(dyr + j * VEC, d);
      load_pack<T, VEC>(xr + j * VEC, v);
      if (gamma) {
        Acc g[VEC];
        load_pack<T, VEC>(gamma + j * VEC, g);
#pragma unroll
        for (int k = 0; k < VEC; ++k) d[k] *= g[k];
      }
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
// row blockIdx.y of part_g / part_b ([gridDim.y, D]).
template <typename T>
__global__ void ln_bwd_cols(const T* __restrict__ dy, const T* __restrict__ x,
                            const typename acc_type<T>::type* __restrict__ mean,
                            const typename acc_type<T>::type* __restrict__ rstd, std::int64_t rows, std::int64_t D,
                            std::int64_t rows_per_chunk, typename acc_type<T>::type* __restrict__ part_g,
                            typename acc_type<T>::type* __restrict__ part_b) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sg[kColRows][kColTile + 1], sb[kColRows][kColTile + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = std::min(rows, r0 + rows_per_chunk);
  Acc g = 0, b = 0;
  if (c < D) {
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) {
      const Acc d = static_cast<Acc>(dy[r * D + c]);
      g += d * (static_cast<Acc>(x[r * D + c]) - mean[r]) * rstd[r];
      b += d;
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
    part_b[static_cast<std::int64_t>(blockIdx.y) * D + c] = b;
  }
}

// dgamma[c] = sum_p part_g[p, c] (and dbeta likewise); either output may be null. A block
// (kFinCols, kFinRows) covers kFinCols columns: its threads take partial rows
// ty, ty + kFinRows, ..., then a shared-memory tree adds the kFinRows sums: a fixed order.
// Narrow column tiles (one 32-byte sector per row) give D / 8 blocks, enough to spread
// the read of the partials over the SMs.
template <typename T>
__global__ void __launch_bounds__(kFinCols* kFinRows)
    ln_col_finalize(const typename acc_type<T>::type* __restrict__ part_g,
                    const typename acc_type<T>::type* __restrict__ part_b, std::int64_t nparts, std::int64_t D,
                    T* __restrict__ dgamma, T* __restrict__ dbeta) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc sg[kFinRows][kFinCols], sb[kFinRows][kFinCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kFinCols + tx;
  Acc g = 0, b = 0;
  if (c < D) {
#pragma unroll 4
    for (std::int64_t p = ty; p < nparts; p += kFinRows) {
      g += part_g[p * D + c];
      b += part_b[p * D + c];
    }
  }
  sg[ty][tx] = g;
  sb[ty][tx] = b;
  __syncthreads();
#pragma unroll
  for (int s = kFinRows / 2; s > 0; s >>= 1) {
    if (ty < s) {
      sg[ty][tx] += sg[ty + s][tx];
      sb[ty][tx] += sb[ty + s][tx];
    }
    __syncthreads();
  }
  if (ty == 0 && c < D) {
    if (dgamma) dgamma[c] = static_cast<T>(sg[0][tx]);
    if (dbeta) dbeta[c] = static_cast<T>(sb[0][tx]);
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

int sm_count(int device) {
  static std::atomic<int> cache[64];
  if (device < 0 || device >= 64) device = 0;
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

unsigned grid_rows(std::int64_t rows, int rows_per_block) {
  return static_cast<unsigned>(std::min<std::int64_t>((rows + rows_per_block - 1) / rows_per_block, kMaxGrid));
}

int block_threads(std::int64_t D, int vec) { return D / vec <= 1024 ? 256 : 512; }

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

template <typename T, int VEC>
void fwd_launch(const T* x, const T* g, const T* b, std::int64_t rows, std::int64_t D, double eps, T* y,
                typename acc_type<T>::type* mean, typename acc_type<T>::type* rstd, cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  const Acc e = static_cast<Acc>(eps);
  if (D <= kWarpMaxD) {
    with_nv<VEC>(D, [&]<int NV>() {
      ln_fwd_warp<T, VEC, NV><<<grid_rows(rows, kFwdWarps), dim3(kWarp, kFwdWarps), 0, stream>>>(
          x, g, b, rows, static_cast<int>(D), e, y, mean, rstd);
    });
  } else {
    ln_fwd_block<T, VEC><<<grid_rows(rows, 1), block_threads(D, VEC), 0, stream>>>(x, g, b, rows, D, e, y, mean, rstd);
  }
  TG_CUDA_CHECK_LAST();
}

void layer_norm_fwd_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows, std::int64_t D,
                         double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    constexpr int V = static_cast<int>(16 / sizeof(T));
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const T* pb = beta.defined() ? beta.data<T>() : nullptr;
    T* py = y.data<T>();
    Acc* pm = mean.data<Acc>();
    Acc* pr = rstd.data<Acc>();
    if (use_vec(D, V, {px, pg, pb, py})) fwd_launch<T, V>(px, pg, pb, rows, D, eps, py, pm, pr, stream);
    else fwd_launch<T, 1>(px, pg, pb, rows, D, eps, py, pm, pr, stream);
  });
}

/// Most co-resident blocks of `kernel` on the device (at least one per SM).
template <typename K>
int resident_blocks(K kernel, int threads, std::size_t smem, int device) {
  int per_sm = 0;
  TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(1, per_sm) * sm_count(device);
}

template <typename T, int VEC>
void bwd_launch(const T* dy, const T* x, const T* g, const typename acc_type<T>::type* mean,
                const typename acc_type<T>::type* rstd, std::int64_t rows, std::int64_t D, T* dx, T* dgamma, T* dbeta,
                int device, cudaStream_t stream) {
  using Acc = typename acc_type<T>::type;
  const bool cols = dgamma || dbeta;
  Tensor part_g, part_b;  // [nparts, D] partial column sums from the caching pool
  std::int64_t nparts = 0;
  auto alloc_parts = [&](std::int64_t n) {
    nparts = n;
    part_g = tg::empty(Shape{n, D}, {.dtype = dtype_of<Acc>(), .device = Device::cuda(device)});
    part_b = tg::empty(Shape{n, D}, {.dtype = dtype_of<Acc>(), .device = Device::cuda(device)});
  };
  if (D <= kWarpMaxD) {
    with_nv<VEC>(D, [&]<int NV>() {
      const dim3 block(kWarp, kBwdWarps);
      const unsigned want = grid_rows(rows, kBwdWarps);
      if (cols) {
        // Partial rows cost D values per block: use no more blocks than can run at once.
        const std::size_t smem = 2 * static_cast<std::size_t>(D) * sizeof(Acc);
        auto* kernel = &ln_bwd_warp<T, VEC, NV, true>;
        const unsigned grid =
            std::min<unsigned>(want, static_cast<unsigned>(resident_blocks(kernel, kWarp * kBwdWarps, smem, device)));
        alloc_parts(grid);
        kernel<<<grid, block, smem, stream>>>(dy, x, g, mean, rstd, rows, static_cast<int>(D), dx,
                                              part_g.data<Acc>(), part_b.data<Acc>());
      } else {
        ln_bwd_warp<T, VEC, NV, false>
            <<<want, block, 0, stream>>>(dy, x, g, mean, rstd, rows, static_cast<int>(D), dx, nullptr, nullptr);
      }
    });
    TG_CUDA_CHECK_LAST();
  } else {
    if (dx) {
      ln_bwd_block_dx<T, VEC><<<grid_rows(rows, 1), block_threads(D, VEC), 0, stream>>>(dy, x, g, mean, rstd, rows,
                                                                                          D, dx);
      TG_CUDA_CHECK_LAST();
    }
    if (cols) {
      const std::int64_t col_blocks = (D + kColTile - 1) / kColTile;
      const std::int64_t rows_per_chunk = std::max<std::int64_t>(32, (rows + 255) / 256);
      alloc_parts((rows + rows_per_chunk - 1) / rows_per_chunk);
      ln_bwd_cols<T><<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(nparts)), dim3(kColTile, kColRows),
                       0, stream>>>(dy, x, mean, rstd, rows, D, rows_per_chunk, part_g.data<Acc>(),
                                    part_b.data<Acc>());
      TG_CUDA_CHECK_LAST();
    }
  }
  if (cols) {
    const std::int64_t fin_blocks = (D + kFinCols - 1) / kFinCols;
    ln_col_finalize<T><<<static_cast<unsigned>(fin_blocks), dim3(kFinCols, kFinRows), 0, stream>>>(
        part_g.data<Acc>(), part_b.data<Acc>(), nparts, D, dgamma, dbeta);
    TG_CUDA_CHECK_LAST();
  }
}

void layer_norm_bwd_cuda(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                         const Tensor& rstd, std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma,
                         const Tensor& dbeta) {
  if (!dx.defined() && !dgamma.defined() && !dbeta.defined()) return;
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    constexpr int V = static_cast<int>(16 / sizeof(T));
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const Acc* pm = mean.data<Acc>();
    const Acc* pr = rstd.data<Acc>();
    T* pdx = dx.defined() ? dx.data<T>() : nullptr;
    T* pdg = dgamma.defined() ? dgamma.data<T>() : nullptr;
    T* pdb = dbeta.defined() ? dbeta.data<T>() : nullptr;
    if (use_vec(D, V, {pdy, px, pg, pdx})) bwd_launch<T, V>(pdy, px, pg, pm, pr, rows, D, pdx, pdg, pdb, dev.index, stream);
    else bwd_launch<T, 1>(pdy, px, pg, pm, pr, rows, D, pdx, pdg, pdb, dev.index, stream);
  });
}

}  // namespace

TG_REGISTER_KERNEL(layer_norm_fwd_kernel, CUDA, &layer_norm_fwd_cuda);
TG_REGISTER_KERNEL(layer_norm_bwd_kernel, CUDA, &layer_norm_bwd_cuda);

}  // namespace tg::ops
