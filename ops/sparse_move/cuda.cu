// CUDA kernels of the block-sparse data-movement family.
//
// Every kernel reads the index tables of the layouts on the device (built once per
// layout) and grid-strides over flat work: a work item is a naturally aligned unit of up
// to 16 bytes of one block (block sizes and element sizes are powers of two, so the
// block of a unit is a shift away). Consecutive threads take consecutive units of a block,
// so loads and stores are coalesced. transpose transposes 16-byte micro-tiles in
// registers and stages up to 64x64 tiles in (swizzled) shared memory so that both its
// reads and its writes are 16-byte row accesses. gather along dim 2 stages rows of the
// active source blocks of a block row in shared memory (gather_rows_k), as many rows at once
// as the densest source block row allows, so that scattered indices cost no more memory
// traffic than a copy and sparse sources are not latency-bound; gather along dim 1 stages
// the few whole source blocks an idx block reads where it reads few (gather_span_k), or,
// where that kernel does not apply, 32-byte strips of whole source block columns
// (gather_strips_k); other gathers read each element directly (gather_direct_k). The index
// range that the op checks is reduced per CTA in the kernel, written to reused pinned
// memory (RangeLease), and reduced and judged on the host once the kernel has run
// (runtime/deferred_checks.h), without waiting for it.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "ops/common.h"
#include "ops/index_check/range_report.cuh"
#include "ops/sparse_move/cuda_util.cuh"
#include "ops/sparse_move/gather_path.h"
#include "ops/sparse_move/span_history.h"
#include "ops/sparse_move/kernels.h"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using namespace smove;
using range::kMaxRangeCtas;
using range::publish_range;
using range::RangeLease;
using range::RangeSink;

/// V consecutive elements of type T, loaded and stored as one access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__device__ __forceinline__ std::int64_t thread_index() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::int64_t thread_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

bool fits_int(std::int64_t v) { return v < (std::int64_t(1) << 31); }

// ---- whole-block maps (repeat, repeat_interleave, split, merge) ---------------------------

// Unit g of source block k = g >> shift goes to the same unit of each active destination.
// A CUDA block moves kUnroll * kThreads consecutive units per step, issuing all its loads
// before any store so that enough bytes are in flight to keep HBM busy. The units' block
// coordinates are loaded before their data and the first destination looked up while the
// data is in flight: the stores wait for the slower of the two chains, not for both in
// turn.
constexpr int kUnroll = 4;

template <typename U, typename I>
__global__ void __launch_bounds__(kThreads) map_blocks_k(const U* __restrict__ src, U* __restrict__ out,
                                                         const std::int64_t* __restrict__ coords,
                                                         const std::int64_t* __restrict__ oidx, BlockMap m,
                                                         std::int64_t total, int shift, I copies) {
  const std::int64_t mask = (std::int64_t(1) << shift) - 1;
  constexpr std::int64_t kChunk = std::int64_t(kUnroll) * kThreads;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kChunk; base < total;
       base += static_cast<std::int64_t>(gridDim.x) * kChunk) {
    I b[kUnroll], R[kUnroll], C[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      const std::int64_t k = (g < total ? g : 0) >> shift;
      b[r] = static_cast<I>(coords[3 * k]);
      R[r] = static_cast<I>(coords[3 * k + 1]);
      C[r] = static_cast<I>(coords[3 * k + 2]);
    }
    U v[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) v[r] = src[g];
    }
    // The destination block of copy 0 (-1: none; the host launches only with copies > 0).
    std::int64_t first[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) first[r] = oidx[m.dest<I>(b[r], R[r], C[r], 0)];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g >= total) break;
      if (first[r] >= 0) out[(first[r] << shift) | (g & mask)] = v[r];
      for (I c = 1; c < copies; ++c) {
        const std::int64_t t = oidx[m.dest<I>(b[r], R[r], C[r], c)];
        if (t >= 0) out[(t << shift) | (g & mask)] = v[r];
      }
    }
  }
}

unsigned chunk_grid(std::int64_t total, int device) {
  const std::int64_t chunks = (total + std::int64_t(kUnroll) * kThreads - 1) / (std::int64_t(kUnroll) * kThreads);
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(chunks, std::int64_t(cuda::multiprocessor_count(device)) * 8)));
}

void map_blocks_cuda(const Tensor& src, const Layout& sl, const BlockMap& m, const Layout& ol, Tensor& out) {
  const std::int64_t n = sl.n_blocks(), bs = sl.block_size(), copies = m.copies();
  if (n == 0 || copies == 0 || ol.n_blocks() == 0) return;
  const std::int64_t block_bytes = bs * bs * static_cast<std::int64_t>(dtype_size(src.dtype()));
  const int w = widest_unit(block_bytes, {src.data_ptr(), out.data_ptr()});
  const int shift = log2_exact(block_bytes / w);
  const std::int64_t total = n << shift;
  const std::int64_t* coords = sl.tables(src.device()).block_coords.data<std::int64_t>();
  const std::int64_t* oidx = ol.tables(src.device()).block_index.data<std::int64_t>();
  const int dev = src.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const bool small = fits_int(m.oB * m.oMb * m.oNb) && fits_int(m.B * m.Mb * m.Nb) && fits_int(copies) &&
                     fits_int(m.oB) && fits_int(m.B * std::max<std::int64_t>(m.p0, 1));
  dispatch_width(w, [&](auto W) {
    using U = Chunk<decltype(W)::value>;
    const U* s = static_cast<const U*>(src.data_ptr());
    U* o = static_cast<U*>(out.data_ptr());
    if (small) {
      map_blocks_k<U, int><<<chunk_grid(total, dev), kThreads, 0, st>>>(s, o, coords, oidx, m, total, shift,
                                                                        static_cast<int>(copies));
    } else {
      map_blocks_k<U, std::int64_t><<<chunk_grid(total, dev), kThreads, 0, st>>>(s, o, coords, oidx, m, total, shift,
                                                                                 copies);
    }
    TG_CUDA_CHECK_LAST();
  });
}

// Unit g of source block k gets the sum over its active destinations (acc_type math).
template <typename T, int V>
__global__ void reduce_blocks_k(const T* __restrict__ grad, T* __restrict__ gs, const std::int64_t* __restrict__ coords,
                                const std::int64_t* __restrict__ oidx, BlockMap m, std::int64_t total, int shift,
                                std::int64_t copies) {
  using A = typename acc_type<T>::type;
  using P = Pack<T, V>;
  const P* g = reinterpret_cast<const P*>(grad);
  P* o = reinterpret_cast<P*>(gs);
  const std::int64_t mask = (std::int64_t(1) << shift) - 1;
  for (std::int64_t u = thread_index(); u < total; u += thread_stride()) {
    const std::int64_t k = u >> shift;
    const std::int64_t b = coords[3 * k], R = coords[3 * k + 1], C = coords[3 * k + 2];
    A acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = A(0);
    for (std::int64_t c = 0; c < copies; ++c) {
      const std::int64_t t = oidx[m.dest(b, R, C, c)];
      if (t < 0) continue;
      const P p = g[(t << shift) | (u & mask)];
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += static_cast<A>(p.v[e]);
    }
    P r;
#pragma unroll
    for (int e = 0; e < V; ++e) r.v[e] = static_cast<T>(acc[e]);
    o[u] = r;
  }
}

void reduce_blocks_cuda(const Tensor& grad, const Layout& ol, const BlockMap& m, const Layout& sl, Tensor& gs) {
  const std::int64_t n = sl.n_blocks(), bs = sl.block_size();
  if (n == 0) return;
  const std::int64_t* coords = sl.tables(grad.device()).block_coords.data<std::int64_t>();
  const std::int64_t* oidx = ol.tables(grad.device()).block_index.data<std::int64_t>();
  const int dev = grad.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  TG_DISPATCH_FLOATING(grad.dtype(), "repeat backward", [&] {
    const std::int64_t es = sizeof(scalar_t), block_bytes = bs * bs * es;
    const int w = widest_unit(block_bytes, {grad.data_ptr(), gs.data_ptr()});
    dispatch_width(std::max<int>(w, static_cast<int>(es)), [&](auto W) {
      constexpr int V = decltype(W)::value / sizeof(scalar_t) > 0 ? decltype(W)::value / sizeof(scalar_t) : 1;
      if constexpr (decltype(W)::value >= sizeof(scalar_t)) {
        const int shift = log2_exact(bs * bs / V);
        const std::int64_t total = n << shift;
        reduce_blocks_k<scalar_t, V><<<grid_for(total, dev), kThreads, 0, st>>>(
            grad.data<scalar_t>(), gs.data<scalar_t>(), coords, oidx, m, total, shift, m.copies());
        TG_CUDA_CHECK_LAST();
      }
    });
  });
}

// ---- transpose -----------------------------------------------------------------------------

// Small blocks: one thread per output element, reading the source column-wise.
template <typename E>
__global__ void transpose_flat_k(const E* __restrict__ src, E* __restrict__ out,
                                 const std::int64_t* __restrict__ col_blocks, std::int64_t total, int lbs) {
  const std::int64_t emask = (std::int64_t(1) << (2 * lbs)) - 1, bmask = (std::int64_t(1) << lbs) - 1;
  for (std::int64_t g = thread_index(); g < total; g += thread_stride()) {
    const std::int64_t t = g >> (2 * lbs), e = g & emask, i = e >> lbs, j = e & bmask;
    out[g] = src[(col_blocks[t] << (2 * lbs)) + (j << lbs) + i];
  }
}

// 1-byte elements (bool): a CUDA block moves TPI T x T sub-tiles (16 KiB) per step: 16-byte row reads of each
// source sub-tile into shared memory, then 16-byte row writes of its transpose. Sub-tile
// `it` is (output block t, tile row ti, tile column tj); it is the transpose of source
// sub-tile (tj, ti) of block col_blocks[t].
template <typename E, int T>
__global__ void __launch_bounds__(kThreads) transpose_tile_k(const E* __restrict__ src, E* __restrict__ out,
                                                             const std::int64_t* __restrict__ col_blocks,
                                                             std::int64_t items, int lbs, int ltiles) {
  constexpr int EPV = 16 / static_cast<int>(sizeof(E));  // elements per 16-byte vector
  constexpr int VPR = T / EPV;                          // vectors per tile row
  constexpr int PAD = sizeof(E) >= 4 ? 1 : 4 / static_cast<int>(sizeof(E));
  constexpr int TILE_BYTES = T * T * static_cast<int>(sizeof(E));
  constexpr int TPI = TILE_BYTES >= 16384 ? 1 : 16384 / TILE_BYTES;
  constexpr int VECS = TPI * T * VPR;  // vectors per step
  union Vec {
    uint4 u;
    E e[EPV];
  };
  __shared__ E tile[TPI][T][T + PAD];
  const std::int64_t tmask = (std::int64_t(1) << ltiles) - 1;
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * TPI; first < items;
       first += static_cast<std::int64_t>(gridDim.x) * TPI) {
    for (int v = threadIdx.x; v < VECS; v += kThreads) {
      const int q = v / (T * VPR), r = (v / VPR) % T, cv = v % VPR;
      const std::int64_t it = first + q;
      if (it >= items) break;
      const std::int64_t t = it >> (2 * ltiles), ti = (it >> ltiles) & tmask, tj = it & tmask;
      const E* sb = src + (col_blocks[t] << (2 * lbs)) + ((tj * T + r) << lbs) + ti * T + cv * EPV;
      Vec x;
      x.u = *reinterpret_cast<const uint4*>(sb);
#pragma unroll
      for (int e = 0; e < EPV; ++e) tile[q][r][cv * EPV + e] = x.e[e];
    }
    __syncthreads();
    for (int v = threadIdx.x; v < VECS; v += kThreads) {
      const int q = v / (T * VPR), i = (v / VPR) % T, jv = v % VPR;
      const std::int64_t it = first + q;
      if (it >= items) break;
      const std::int64_t t = it >> (2 * ltiles), ti = (it >> ltiles) & tmask, tj = it & tmask;
      Vec x;
#pragma unroll
      for (int e = 0; e < EPV; ++e) x.e[e] = tile[q][jv * EPV + e][i];
      *reinterpret_cast<uint4*>(out + (t << (2 * lbs)) + ((ti * T + i) << lbs) + tj * T + jv * EPV) = x.u;
    }
    __syncthreads();
  }
}

// Column f of an EPV x EPV micro-tile held as EPV rows of four 32-bit words (element size
// ES, EPV = 16 / ES), as one 16-byte vector: element e of the result is element f of row e.
// Every index is a compile-time constant once the callers' loops are unrolled, so the
// words stay in registers (a union of element arrays went through local memory).
template <int ES>
__device__ __forceinline__ uint4 column_vector(const unsigned (&w)[16 / ES][4], int f) {
  unsigned o[4];
  if constexpr (ES == 4) {
#pragma unroll
    for (int c = 0; c < 4; ++c) o[c] = w[c][f];
  } else if constexpr (ES == 8) {  // rows 0 and 1, element f = words 2f, 2f + 1
#pragma unroll
    for (int c = 0; c < 2; ++c) o[2 * c] = w[c][2 * f], o[2 * c + 1] = w[c][2 * f + 1];
  } else {  // ES == 2: element f of a row is half f % 2 of word f / 2 (little endian)
    static_assert(ES == 2, "2-, 4- or 8-byte elements");
#pragma unroll
    for (int c = 0; c < 4; ++c) o[c] = __byte_perm(w[2 * c][f / 2], w[2 * c + 1][f / 2], f % 2 ? 0x7632 : 0x5410);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}

// 2-, 4- and 8-byte elements: a thread owns an EPV x EPV micro-tile (EPV = 16 / es
// elements, one 16-byte vector per row): it loads the micro-tile's EPV source rows as
// 16-byte vectors (EPV independent loads in flight), transposes them in registers and
// stores the EPV transposed rows as 16-byte vectors into a shared tile of the output. After
// a barrier, every output row of the tile is written with coalesced 16-byte stores.
// A step covers S = kThreads / MPT sub-tiles of T x T (4096 * EPV bytes of shared memory),
// one micro-tile per thread. Sub-tile `it` is (output block t, tile row ti, tile column
// tj), the transpose of source sub-tile (tj, ti) of block col_blocks[t].
//
// Shared layout: tile[q][row][chunk], 16-byte chunks, chunk c of row i stored at
// c ^ ((i / EPV) & SWM). The 8 lanes of a quarter warp (one 128-bit shared access phase)
// store chunk mr of rows mc*EPV + f for 8 consecutive mc (phys chunks mr ^ mc: 8 distinct
// bank groups) and load 8 consecutive chunks of one row (jv ^ const: distinct), so neither
// side has bank conflicts when a row has >= 8 chunks (smaller tiles are merely slower).
template <typename E, int T>
__global__ void __launch_bounds__(kThreads) transpose_micro_k(const E* __restrict__ src, E* __restrict__ out,
                                                              const std::int64_t* __restrict__ col_blocks,
                                                              std::int64_t items, int lbs, int ltiles) {
  constexpr int EPV = 16 / static_cast<int>(sizeof(E));  // elements per 16-byte vector
  constexpr int MPC = T / EPV;                          // micro-tiles (16-byte chunks) per tile row
  constexpr int MPT = MPC * MPC;                        // micro-tiles per sub-tile
  static_assert(MPC >= 1 && MPT <= kThreads && kThreads % MPT == 0, "one micro-tile per thread");
  constexpr int S = kThreads / MPT;                     // sub-tiles per step
  constexpr int SWM = (MPC < 8 ? MPC : 8) - 1;          // swizzle mask, keeps chunks < MPC
  __shared__ uint4 tile[S][T][MPC];
  const std::int64_t tmask = (std::int64_t(1) << ltiles) - 1;
  // This thread's micro-tile: sub-tile q of the step, micro row mr, micro column mc.
  const int q = static_cast<int>(threadIdx.x) / MPT, mr = (static_cast<int>(threadIdx.x) % MPT) / MPC,
            mc = static_cast<int>(threadIdx.x) % MPC;
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * S; first < items;
       first += static_cast<std::int64_t>(gridDim.x) * S) {
    const std::int64_t it = first + q;
    if (it < items) {
      const std::int64_t t = it >> (2 * ltiles), ti = (it >> ltiles) & tmask, tj = it & tmask;
      // Source rows tj*T + mr*EPV + e, columns ti*T + mc*EPV + f.
      const E* sb = src + (col_blocks[t] << (2 * lbs)) + ((tj * T + mr * EPV) << lbs) + ti * T + mc * EPV;
      unsigned w[EPV][4];
#pragma unroll
      for (int e = 0; e < EPV; ++e) {
        const uint4 x = *reinterpret_cast<const uint4*>(sb + (std::int64_t(e) << lbs));
        w[e][0] = x.x, w[e][1] = x.y, w[e][2] = x.z, w[e][3] = x.w;
      }
      // Output row mc*EPV + f of the sub-tile, columns mr*EPV + e: its chunk mr.
#pragma unroll
      for (int f = 0; f < EPV; ++f) tile[q][mc * EPV + f][mr ^ (mc & SWM)] = column_vector<sizeof(E)>(w, f);
    }
    __syncthreads();
    // S * T * MPC = kThreads * EPV output chunks per step, EPV per thread.
#pragma unroll
    for (int k = 0; k < EPV; ++k) {
      const int v = k * kThreads + static_cast<int>(threadIdx.x);
      const int oq = v / (T * MPC), i = (v / MPC) % T, jv = v % MPC;
      const std::int64_t it2 = first + oq;
      if (it2 < items) {
        const std::int64_t t = it2 >> (2 * ltiles), ti = (it2 >> ltiles) & tmask, tj = it2 & tmask;
        *reinterpret_cast<uint4*>(out + (t << (2 * lbs)) + ((ti * T + i) << lbs) + tj * T + jv * EPV) =
            tile[oq][i][jv ^ ((i / EPV) & SWM)];
      }
    }
    __syncthreads();  // the tile is rewritten by the next step
  }
}

// Launches transpose_micro_k with sub-tiles of T x T (T = block size, at most 64, and at
// most 32 for 8-byte elements so that a sub-tile has <= kThreads micro-tiles).
template <typename E>
void launch_transpose_micro(const E* s, E* o, const std::int64_t* col_blocks, std::int64_t n, std::int64_t bs,
                            int dev, cudaStream_t st) {
  constexpr std::int64_t kMaxT = sizeof(E) == 8 ? 32 : 64;
  const std::int64_t T = std::min(bs, kMaxT);
  const int lbs = log2_exact(bs), ltiles = log2_exact(bs / T);
  const std::int64_t items = n << (2 * ltiles);
  const std::int64_t epv = 16 / static_cast<std::int64_t>(sizeof(E));
  const std::int64_t per_step = std::max<std::int64_t>(1, kThreads / ((T / epv) * (T / epv)));
  const unsigned grid = static_cast<unsigned>(
      std::min<std::int64_t>((items + per_step - 1) / per_step, std::int64_t(cuda::multiprocessor_count(dev)) * 16));
  if (T == 64) {
    if constexpr (kMaxT >= 64) transpose_micro_k<E, 64><<<grid, kThreads, 0, st>>>(s, o, col_blocks, items, lbs, ltiles);
  } else if (T == 32) {
    transpose_micro_k<E, 32><<<grid, kThreads, 0, st>>>(s, o, col_blocks, items, lbs, ltiles);
  } else {
    transpose_micro_k<E, 16><<<grid, kThreads, 0, st>>>(s, o, col_blocks, items, lbs, ltiles);
  }
}

void transpose_cuda(const Tensor& src, const Layout& l, Tensor& out) {
  const std::int64_t n = l.n_blocks(), bs = l.block_size();
  if (n == 0) return;
  const std::int64_t* col_blocks = l.tables(src.device()).col_blocks.data<std::int64_t>();
  const int dev = src.device().index, lbs = log2_exact(bs);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const bool aligned = widest_unit(16, {src.data_ptr(), out.data_ptr()}) == 16;
  dispatch_bytes(src.dtype(), [&](auto e) {
    using E = decltype(e);
    const E* s = static_cast<const E*>(src.data_ptr());
    E* o = static_cast<E*>(out.data_ptr());
    if constexpr (sizeof(E) >= 2) {
      // Block rows of >= 16 elements are >= 32 bytes, so every 16-byte vector of a block
      // is aligned when the pointers are.
      if (bs >= 16 && aligned) {
        launch_transpose_micro<E>(s, o, col_blocks, n, bs, dev, st);
        TG_CUDA_CHECK_LAST();
        return;
      }
    } else {
      if (bs >= 32 && aligned) {  // bytes: 16 per vector, shared tile with padded rows
        const int T = bs >= 64 ? 64 : 32, ltiles = log2_exact(bs / T);
        const std::int64_t items = n << (2 * ltiles);
        const std::int64_t tpi = std::max<std::int64_t>(1, 16384 / (T * T));
        const unsigned grid =
            static_cast<unsigned>(std::min<std::int64_t>((items + tpi - 1) / tpi, std::int64_t(cuda::multiprocessor_count(dev)) * 16));
        if (T == 64) transpose_tile_k<E, 64><<<grid, kThreads, 0, st>>>(s, o, col_blocks, items, lbs, ltiles);
        else transpose_tile_k<E, 32><<<grid, kThreads, 0, st>>>(s, o, col_blocks, items, lbs, ltiles);
        TG_CUDA_CHECK_LAST();
        return;
      }
    }
    // Small blocks or misaligned data: one element per thread.
    const std::int64_t total = n << (2 * lbs);
    transpose_flat_k<E><<<grid_for(total, dev), kThreads, 0, st>>>(s, o, col_blocks, total, lbs);
    TG_CUDA_CHECK_LAST();
  });
}

// ---- gather / scatter ----------------------------------------------------------------------



// Where index value v sends the element (b, R*bs + i, C*bs + j) of a block (R, C) along dim:
// the flat block of a [B, Mb, Nb] grid and the row/column inside it; -1 when v is outside
// [0, ext) (validated before, but never trusted for memory safety).
struct Target {
  std::int64_t cell, ri, ci;
};
__device__ __forceinline__ Target locate(int dim, std::int64_t v, std::int64_t ext, std::int64_t b, std::int64_t R,
                                         std::int64_t C, std::int64_t i, std::int64_t j, std::int64_t Mb,
                                         std::int64_t Nb, int lbs) {
  const std::int64_t bmask = (std::int64_t(1) << lbs) - 1;
  if (v < 0 || v >= ext) return {-1, 0, 0};
  if (dim == 2) return {(b * Mb + R) * Nb + (v >> lbs), i, v & bmask};
  if (dim == 1) return {(b * Mb + (v >> lbs)) * Nb + C, v & bmask, j};
  return {(v * Mb + R) * Nb + C, i, j};
}

// Sum: out is float/double (A) and src any floating T; None: T = A = the raw element type.
template <typename T, typename A, typename I, int V, bool Sum>
__global__ void scatter_k(const T* __restrict__ src, A* __restrict__ out, const I* __restrict__ idx,
                          const std::int64_t* __restrict__ coords, const std::int64_t* __restrict__ tidx,
                          std::int64_t tMb, std::int64_t tNb, std::int64_t ext, int dim, int lbs, std::int64_t total,
                          int shift) {
  using IP = Pack<I, V>;
  using TP = Pack<T, V>;
  const std::int64_t umask = (std::int64_t(1) << shift) - 1, bmask = (std::int64_t(1) << lbs) - 1;
  for (std::int64_t g = thread_index(); g < total; g += thread_stride()) {
    const std::int64_t k = g >> shift, e0 = (g & umask) * V, i = e0 >> lbs, j0 = e0 & bmask;
    const IP ip = reinterpret_cast<const IP*>(idx)[g];
    const TP sp = reinterpret_cast<const TP*>(src)[g];
    const std::int64_t b = coords[3 * k], R = coords[3 * k + 1], C = coords[3 * k + 2];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const Target t = locate(dim, static_cast<std::int64_t>(ip.v[e]), ext, b, R, C, i, j0 + e, tMb, tNb, lbs);
      const std::int64_t d = t.cell >= 0 ? tidx[t.cell] : -1;
      if (d < 0) continue;
      A* p = out + (d << (2 * lbs)) + (t.ri << lbs) + t.ci;
      if constexpr (Sum) atomicAdd(p, static_cast<A>(sp.v[e]));
      else *p = sp.v[e];
    }
  }
}

// Elements per unit: up to 16 bytes of indices, within one block row.
template <typename I>
int index_vector(std::int64_t bs, std::initializer_list<const void*> ptrs, std::int64_t es) {
  int v = static_cast<int>(
      std::min<std::int64_t>(bs, std::max<std::int64_t>(16 / static_cast<std::int64_t>(sizeof(I)), es <= 2 ? 8 : 1)));
  // Every pointer must be aligned for v elements of its own type; es is the data's size.
  while (v > 1) {
    bool ok = true;
    int k = 0;
    for (const void* p : ptrs) {
      const std::int64_t sz = k++ == 0 ? static_cast<std::int64_t>(sizeof(I)) : es;
      ok = ok && reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(sz * v) == 0;
    }
    if (ok) break;
    v /= 2;
  }
  return v;
}

template <typename F>
void dispatch_v(int v, F&& f) {
  switch (v) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{}); break;
  }
}

template <typename F>
void dispatch_index(DType dt, F&& f) {
  if (dt == DType::i32) f(std::int32_t{});
  else f(std::int64_t{});
}

std::int64_t extent_of(const Layout& l, int d) { return d == 0 ? l.batch() : d == 1 ? l.rows() : l.cols(); }
// ---- gather: row-staged and direct kernels ---------------------------------------------------

/// Whether index value v lies in [0, ext) (one unsigned compare, 32-bit for i32).
template <typename I>
__device__ __forceinline__ bool in_extent(I v, std::int64_t ext) {
  if constexpr (sizeof(I) == 4) {
    return static_cast<unsigned>(v) < static_cast<unsigned>(ext < 0x80000000ll ? ext : 0x80000000ll);
  } else {
    return static_cast<unsigned long long>(v) < static_cast<unsigned long long>(ext);
  }
}

// Shared memory of one staged work item (h rows of each active source block of a block
// row): at most 64 KiB, so that three CTAs share an SM and one stages while the others
// gather; where 32 KiB hold a row of the stage, six CTAs of half the threads do (more
// items' chains of latencies overlap: measured 1-3 points of a copy faster at block 64,
// bf16 and f32, every density).
constexpr std::int64_t kStageBytes = 64 * 1024;
constexpr int kStageCtas = 3;  // CTAs of gather_rows_k an SM holds (256 threads each)
constexpr std::int64_t kSmallStageBytes = 32 * 1024;
constexpr int kSmallStageCtas = 6;      // the same with stages of at most kSmallStageBytes
constexpr int kSmallStageThreads = 128;
// The slot table (a short per source block column) comes on top of the stage: three CTAs of
// 64 KiB + table + the 1 KiB reserved per CTA fit in an SM's 228 KiB up to an 8 KiB table
// (4096 block columns, 64 bytes at 32). Source rows of at most kStageBytes have at most
// 8192 block columns (a block row is >= 8 bytes), so the table stays <= 16 KiB; only byte
// data with i64 indices and blocks of 8 goes past 8 KiB (two CTAs an SM).
constexpr std::int64_t kTableBytes = 16 * 1024;

/// Elements per unit of the staged kernel: 16-byte output stores and at least 16-byte
/// index loads, but at most 64 bytes of indices (i64 with 1-byte data: 8-byte stores) so
/// that two batches of them stay in registers. (A thread's 32 bytes of i32 indices for
/// bf16 are two 16-byte loads each using half of every sector, 33% excess L2 sectors in
/// ncu; one 16-byte index load a unit instead, with 8-byte stores, measured 5-8% slower.)
template <typename E, typename I>
constexpr int rows_vector() {
  const int v = 16 / sizeof(I) > 16 / sizeof(E) ? static_cast<int>(16 / sizeof(I)) : static_cast<int>(16 / sizeof(E));
  return v * static_cast<int>(sizeof(I)) > 64 ? 64 / static_cast<int>(sizeof(I)) : v;
}

constexpr int log2_const(int v) { return v <= 1 ? 0 : 1 + log2_const(v / 2); }

/// 8 bytes from global to shared memory (cp.async, sm_80+; the L1-allocating form).
__device__ __forceinline__ void copy8_async(void* smem, const void* gmem) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(d), "l"(gmem) : "memory");
}

/// 16 bytes from global to shared memory without a register round trip (cp.async, sm_80+).
__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(gmem) : "memory");
}

/// Geometry of gather_rows_k.
struct RowsArgs {
  const std::int64_t* row_offsets;   // CSR offsets of idx's layout
  const std::int64_t* srow_offsets;  // CSR offsets of src's layout
  const std::int64_t* sidx;          // block_index of src's layout
  std::int64_t items;                // idx block rows * (bs / h)
  std::int64_t ext;                  // src extent along dim 2
  int iMb, sMb, sNb;
  int lbs, lh;  // log2 of the block size and of h
  int lvpc;     // log2 of the 16-byte vectors in h rows of a block
  int table;    // offset of the slot table in the dynamic shared memory, in 16-byte vectors
};

// Gather along dim 2, staged by rows. Output row (b, R*bs + i) reads only source row
// (b, R*bs + i), so work item (idx block row (b, R), rows i0 .. i0 + h - 1) first copies
// those h rows of every active source block of block row (b, R) into shared memory, then
// writes the same h rows of every idx block of (b, R): coalesced index loads and output
// stores, each element looked up in shared memory. The source is read from memory once and
// in whole sectors whatever the index pattern; a direct gather from random columns pays a
// 32-byte L2 sector per 2- or 4-byte element.
//
// Only active blocks are staged, layout [slot][row][column] with slot = the block's rank in
// its block row: those blocks are consecutive in src (compressed order), so the copies need
// no block lookup, only the row's CSR offset, and each block's h rows are one contiguous run
// of 16-byte cp.async copies. The host sizes h for the densest source block row the launch
// reads, so a sparser source gets taller items and fewer of them: an item costs a fixed
// chain of latencies (offsets, copies, barrier, gather, barrier) however few bytes it
// moves, and staging zeros for absent blocks made low densities latency-bound. A value v
// reads slot slot_of[v >> lbs] (-1 for an absent block: 0), a table built per item from the
// source block_index (L2 hits) while the copies land. A full source block row maps every
// column to itself: it skips the table and its lookup (a uniform branch per item), the
// dense case's path. The first batch of indices is loaded while the copies land, each later
// batch while the previous one is written.
template <typename E, typename I, int V, int NT = kThreads, int CTAS = kStageCtas>
__global__ void __launch_bounds__(NT, CTAS) gather_rows_k(const E* __restrict__ src, E* __restrict__ out,
                                                                      const I* __restrict__ idx, RowsArgs a,
                                                                      RangeSink rs) {
  using IP = Pack<I, V>;
  using EP = Pack<E, V>;
  constexpr int LV = log2_const(V);
  // Units per batch and thread: 64 bytes of indices in flight.
  constexpr int U = 64 / static_cast<int>(V * sizeof(I)) > 0 ? 64 / static_cast<int>(V * sizeof(I)) : 1;
  extern __shared__ uint4 stage_vec[];
  const E* stage = reinterpret_cast<const E*>(stage_vec);
  short* slot_of = reinterpret_cast<short*>(stage_vec + a.table);
  const int lbs = a.lbs, lh = a.lh, bmask = (1 << lbs) - 1, lgroups = lbs - lh;
  const int lupb = lh + lbs - LV;  // log2 of the units in h rows of a block
  const int lblock = 2 * lbs + log2_const(static_cast<int>(sizeof(E)));  // log2 of a block's bytes
  const int vmask = (1 << a.lvpc) - 1;
  const unsigned char* src_bytes = reinterpret_cast<const unsigned char*>(src);
  I lo = std::numeric_limits<I>::max(), hi = std::numeric_limits<I>::min();
  for (std::int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    const std::int64_t rho = item >> lgroups;
    const std::int64_t srho = rho / a.iMb * a.sMb + rho % a.iMb;  // the source block row
    const std::int64_t kbeg = __ldg(a.row_offsets + rho);
    const int nk = static_cast<int>(__ldg(a.row_offsets + rho + 1) - kbeg);
    const std::int64_t sbeg = __ldg(a.srow_offsets + srho);
    const int ns = static_cast<int>(__ldg(a.srow_offsets + srho + 1) - sbeg);
    if (nk == 0) continue;  // the same for the whole CTA
    const int i0 = static_cast<int>(item & ((1 << lgroups) - 1)) << lh;
    // Vector q: 16 bytes of rows i0.. of source block sbeg + (q >> lvpc).
    const unsigned char* first =
        src_bytes + ((sbeg << (2 * lbs)) + (static_cast<std::int64_t>(i0) << lbs)) * std::int64_t(sizeof(E));
    const int nvec = ns << a.lvpc;
#pragma unroll 4
    for (int q = threadIdx.x; q < nvec; q += NT) {
      const std::int64_t off = (static_cast<std::int64_t>(q >> a.lvpc) << lblock) + ((q & vmask) << 4);
      copy16_async(stage_vec + q, first + off);
    }
    const int nunits = nk << lupb;
    // Element offset of unit u in out and idx: block kbeg + u / upb, rows i0.., then the unit.
    const auto at = [&](int u) {
      return ((kbeg + (u >> lupb)) << (2 * lbs)) + (static_cast<std::int64_t>(i0) << lbs) +
             (static_cast<std::int64_t>(u & ((1 << lupb) - 1)) << LV);
    };
    IP cur[U];
#pragma unroll
    for (int r = 0; r < U; ++r) {
      const int u = r * NT + static_cast<int>(threadIdx.x);
      if (u < nunits) cur[r] = reinterpret_cast<const IP*>(idx)[at(u) >> LV];
    }
    const bool full = ns == a.sNb;  // the same for the whole CTA
    if (!full) {
      const std::int64_t* srow = a.sidx + srho * a.sNb;
      for (int c = threadIdx.x; c < a.sNb; c += NT) {
        const std::int64_t s = __ldg(srow + c);
        slot_of[c] = static_cast<short>(s >= 0 ? s - sbeg : -1);
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    // Writes the item's units; Identity: slot = block column (a full source block row).
    const auto write = [&](auto identity) {
      constexpr bool Identity = decltype(identity)::value;
      for (int base = 0; base < nunits; base += U * NT) {
        const bool more = base + U * NT < nunits;
        IP nxt[U];
        if (more) {
#pragma unroll
          for (int r = 0; r < U; ++r) {
            const int u = base + (U + r) * NT + static_cast<int>(threadIdx.x);
            if (u < nunits) nxt[r] = reinterpret_cast<const IP*>(idx)[at(u) >> LV];
          }
        }
#pragma unroll
        for (int r = 0; r < U; ++r) {
          const int u = base + r * NT + static_cast<int>(threadIdx.x);
          if (u < nunits) {
            const int row = ((u & ((1 << lupb) - 1)) << LV) >> lbs;  // row within the item's h rows
            EP p;
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const I v = cur[r].v[e];
              lo = v < lo ? v : lo;
              hi = v > hi ? v : hi;
              bool ok = in_extent(v, a.ext);
              const int c = ok ? static_cast<int>(v) : 0;  // < ext <= 64 Ki here
              int slot = c >> lbs;
              if constexpr (!Identity) {
                // An absent block reads slot 0 (every stage has one) and yields 0.
                const int t = slot_of[slot];
                ok = ok && t >= 0;
                slot = ok ? t : 0;
              }
              const E x = stage[(slot << (lh + lbs)) + (row << lbs) + (c & bmask)];
              p.v[e] = ok ? x : E(0);
            }
            reinterpret_cast<EP*>(out)[at(u) >> LV] = p;
          }
        }
        if (more) {
#pragma unroll
          for (int r = 0; r < U; ++r) cur[r] = nxt[r];
        }
      }
    };
    if (full) write(std::true_type{});
    else write(std::false_type{});
    __syncthreads();  // the next item restages and rebuilds the table
  }
  publish_range<NT>(static_cast<long long>(lo), static_cast<long long>(hi), rs);
}

/// The second half of a direct gather: loads the U x V source elements at off (-1: a zero),
/// all of them before any store, then stores pack u at out[slot(u)] where slot(u) >= 0.
template <typename E, int U, int V, typename X, typename Slot>
__device__ __forceinline__ void load_then_store(const E* __restrict__ src, const X (&off)[U][V], Pack<E, V>* out,
                                                Slot slot) {
  Pack<E, V> p[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
#pragma unroll
    for (int e = 0; e < V; ++e) p[u].v[e] = off[u][e] >= 0 ? src[off[u][e]] : E(0);
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const auto g = slot(u);
    if (g >= 0) out[g] = p[u];
  }
}

/// Geometry of gather_direct_k.
struct DirectArgs {
  std::int64_t units;  // n * bs * bs / V
  std::int64_t sMb, sNb, ext;
  int dim, lbs, shift;  // shift: log2 of the units of a block
};

/// Units per thread and step of gather_direct_k: 8 or 16 elements of loads in flight.
constexpr int direct_units(int v) { return v >= 8 ? 1 : 2; }

// Gather along any dim, one source element read per output element: the general path
// (dims 0 and 1, and dim 2 where staging does not fit or does not pay). Offsets are X = int
// where every count is below 2^30 (half the integer work of int64). Each thread takes U
// units of V elements and issues all index loads, then all block lookups, then all source
// loads, then the stores. Consecutive elements that land in the same source block (an
// in-block permutation, a run of nearby indices) reuse its looked-up index. Full: the source
// layout has every block, so a cell's compressed index is the cell itself (row-major order)
// and the lookup, one dependent load between the index and the source element, is skipped:
// with scattered rows every element needs its own.
template <typename E, typename I, int V, typename X, bool Full>
__global__ void __launch_bounds__(kThreads) gather_direct_k(const E* __restrict__ src, E* __restrict__ out,
                                                            const I* __restrict__ idx,
                                                            const std::int64_t* __restrict__ coords,
                                                            const std::int64_t* __restrict__ sidx, DirectArgs a,
                                                            RangeSink rs) {
  using IP = Pack<I, V>;
  using EP = Pack<E, V>;
  constexpr int U = direct_units(V);
  const X units = static_cast<X>(a.units), sMb = static_cast<X>(a.sMb), sNb = static_cast<X>(a.sNb);
  const int lbs = a.lbs, shift = a.shift, dim = a.dim;
  const X bmask = (X(1) << lbs) - 1, umask = (X(1) << shift) - 1;
  // cell = base + key * stride, key = v >> kshift: the source block along dim.
  const X stride = dim == 2 ? X(1) : dim == 1 ? sNb : sMb * sNb;
  const int kshift = dim == 0 ? 0 : lbs;
  I lo = std::numeric_limits<I>::max(), hi = std::numeric_limits<I>::min();
  for (X first = static_cast<X>(blockIdx.x) * (U * kThreads); first < units;
       first += static_cast<X>(gridDim.x) * (U * kThreads)) {
    IP ip[U];
    X cbase[U], i[U], j0[U];
#pragma unroll
    for (int r = 0; r < U; ++r) {
      const X g = first + r * kThreads + static_cast<X>(threadIdx.x);
      if (g >= units) continue;
      ip[r] = reinterpret_cast<const IP*>(idx)[g];
      const X k = g >> shift, e0 = (g & umask) * V;
      const X b = static_cast<X>(coords[3 * k]), R = static_cast<X>(coords[3 * k + 1]), C = static_cast<X>(coords[3 * k + 2]);
      cbase[r] = dim == 2 ? (b * sMb + R) * sNb : dim == 1 ? b * sMb * sNb + C : R * sNb + C;
      i[r] = e0 >> lbs;
      j0[r] = e0 & bmask;
    }
    X off[U][V];  // source element, -1 for a zero
#pragma unroll
    for (int r = 0; r < U; ++r) {
      [[maybe_unused]] X prev_cell = -1;
      X prev_s = -1;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        off[r][e] = -1;
        if (first + r * kThreads + static_cast<X>(threadIdx.x) >= units) continue;
        const I v = ip[r].v[e];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        const bool ok = in_extent(v, a.ext);
        const X key = ok ? static_cast<X>(v >> kshift) : X(0), low = ok ? static_cast<X>(v & static_cast<I>(bmask)) : X(0);
        const X cell = ok ? cbase[r] + key * stride : X(-1);
        if constexpr (Full) {
          prev_s = cell;
        } else if (cell != prev_cell) {
          prev_s = cell >= 0 ? static_cast<X>(sidx[cell]) : X(-1);
          prev_cell = cell;
        }
        const X inb = dim == 2 ? (i[r] << lbs) + low : dim == 1 ? (low << lbs) + j0[r] + e : (i[r] << lbs) + j0[r] + e;
        off[r][e] = prev_s >= 0 ? (prev_s << (2 * lbs)) + inb : X(-1);
      }
    }
    load_then_store(src, off, reinterpret_cast<EP*>(out), [&](int r) {
      const X g = first + r * kThreads + static_cast<X>(threadIdx.x);
      return g < units ? g : X(-1);
    });
  }
  publish_range<kThreads>(static_cast<long long>(lo), static_cast<long long>(hi), rs);
}

// ---- gather along dim 1, staged by source blocks ---------------------------------------

// A dim-1 gather reads src[b, v, j] for out[b, i, j]. With lanes on consecutive columns j,
// every lane reads another row: a direct gather pays an L1 wavefront and a 32-byte sector an
// element (72-80% of a copy even where the rows are those of one block). But an idx block
// (b, R, C) often reads few source blocks, all in block column C: a permutation inside its
// own block, a window of neighbouring block rows. A work item (one idx block) reduces the
// range of its indices (two instructions an element; where all lie in src, their block rows
// are [lo >> lbs, hi >> lbs]); where that span fits the stage (at most kSpanSlots blocks,
// kSpanStageBytes), the CTA copies those whole source blocks into shared memory (contiguous
// 16-byte cp.async copies) and gathers from there: lanes take consecutive 4-byte columns,
// so their reads hit distinct banks whatever rows they name, and an element costs a shared
// load and two integer instructions. Wider spans (and items with indices out of range)
// gather from global memory in the same kernel, their block lookups from a copy of the
// column's block_index entries in the buffer.
//
// An item's chain (indices, span, copies, gather) is long, so the CTA runs two items in
// turn on two buffers: while it gathers one, the next one's indices, lookup entries and own
// block (b, R, C) — the block an in-block permutation reads — are already being copied
// (cp.async), and that speculative copy is used where the span is exactly that block row.
// The CTA keeps speculating while its items read their own block row and stops (no wasted
// copies) once one does not. Coordinates and block lookups load an item ahead of their use.
// Measured (bench_block_sparse, block 64, in-block rows): 87-98% of a same-size copy against
// the direct kernel's 73-80%; scattered rows (the direct path here) reach 0.65-0.85x of the
// direct kernel, which keeps 2048 threads an SM in flight against 768-1024 here.
constexpr int kSpanSlots = 4;  // source blocks a stage holds at most (with 8 KiB stages and blocks of >= 4 KiB: 2)
constexpr std::int64_t kSpanStageBytes = 8 * 1024;    // a buffer's stage; larger blocks stage one
constexpr std::int64_t kSpanBufferBytes = 48 * 1024;  // indices + stage (+ table): two CTAs an SM
constexpr int kSpanThreads = 256;
constexpr std::int64_t kSpanTableRows = 512;  // the most source block rows a lookup table holds

/// Elements of a group (a lane's piece of a row): 4 bytes, or one wider element.
template <typename E>
constexpr int span_group() {
  return sizeof(E) >= 4 ? 1 : static_cast<int>(4 / sizeof(E));
}

/// CTAs of gather_span_k an SM at blocks of 64: four with 16-bit data (two buffers of 24
/// KiB), three with 32-bit (32 KiB, which leaves 85 registers a thread: at 64 the f32 kernel
/// spilled and ran 15% slower), two for wider elements.
template <typename E>
constexpr int span_ctas() {
  return sizeof(E) < 4 ? 4 : sizeof(E) == 4 ? 3 : 2;
}

/// Geometry of gather_span_k.
struct SpanArgs {
  const std::int64_t* coords;  // block_coords of idx's layout
  const std::int64_t* sidx;    // block_index of src's layout
  std::int64_t n;              // idx blocks (work items)
  std::int64_t ext;            // src rows
  std::int64_t sB, sMb, sNb;
  int lbs;
  int slots;       // source blocks a stage holds, 1..kSpanSlots
  int buffer;      // bytes of a buffer: the item's indices, its stage, its lookup table
  int table;       // offset of the table in a buffer, in 16-byte vectors
  int table_rows;  // entries of the table: src block rows, 0 where over kSpanTableRows
  int* direct;     // where CTA c writes how many items it gathered directly (null: nowhere)
};

// The dim-1 gather by source-block spans (section comment above); a CTA loops over idx
// blocks blockIdx.x, + gridDim.x, ..., two in flight on its two buffers.
template <typename E, typename I>
__global__ void __launch_bounds__(kSpanThreads, span_ctas<E>())
    gather_span_k(const E* __restrict__ src, E* __restrict__ out, const I* __restrict__ idx, SpanArgs a, RangeSink rs) {
  constexpr int P = span_group<E>();
  constexpr int NT = kSpanThreads;
  using IP = Pack<I, P>;
  using EP = Pack<E, P>;
  extern __shared__ uint4 span_smem[];
  // The span's bounds, double-buffered like the items: an item resets the other pair, which
  // the previous item read before its closing barrier and the next fills after this one's.
  __shared__ long long s_lo[2], s_hi[2];
  constexpr long long kNone = std::numeric_limits<long long>::max(), kNoneHi = std::numeric_limits<long long>::min();
  if (threadIdx.x < 2) s_lo[threadIdx.x] = kNone, s_hi[threadIdx.x] = kNoneHi;
  const int lbs = a.lbs, lblock = 2 * lbs, bmask = (1 << lbs) - 1;
  const int ngroups = (1 << lblock) / P;
  const int nvec = static_cast<int>((sizeof(E) << lblock) / 16), ivec = static_cast<int>((sizeof(I) << lblock) / 16);
  const auto idx_of = [&](int p) { return reinterpret_cast<const IP*>(span_smem + p * (a.buffer / 16)); };
  const auto stage_of = [&](int p) { return span_smem + p * (a.buffer / 16) + ivec; };
  const auto table_of = [&](int p) {
    return reinterpret_cast<const std::int64_t*>(span_smem + p * (a.buffer / 16) + a.table);
  };
  const auto cell = [&](std::int64_t b, std::int64_t r, std::int64_t c) { return (b * a.sMb + r) * a.sNb + c; };
  const auto copy_block = [&](uint4* to, const void* from, int vecs) {
    for (int q = threadIdx.x; q < vecs; q += NT) copy16_async(to + q, static_cast<const uint4*>(from) + q);
  };
  I lo = std::numeric_limits<I>::max(), hi = std::numeric_limits<I>::min();
  bool speculate = true;
  int direct_items = 0;  // the same in every thread
  // Copies item k's indices into buffer p and, where home >= 0, that block into its stage.
  // Every item commits one group (empty past the last item), so that waiting for all but
  // the newest group waits for the current item's.
  const auto issue = [&](std::int64_t k, int p, std::int64_t home, std::int64_t b, std::int64_t C) {
    if (k < a.n) copy_block(span_smem + p * (a.buffer / 16), idx + (k << lblock), ivec);
    if (k < a.n && home >= 0) copy_block(stage_of(p), src + (home << lblock), nvec);
    if (k < a.n) {  // block column C's lookup entries, for a direct gather
      std::int64_t* table = const_cast<std::int64_t*>(table_of(p));
      for (int r = threadIdx.x; r < a.table_rows; r += NT) copy8_async(table + r, a.sidx + cell(b, r, C));
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  // Gathers an item directly from global memory, its indices and its source block column's
  // lookup entries from buffer p: U groups (4 or 8 elements, as registers allow) a thread at
  // once, every lookup, then every load, then the stores, so that U loads are in flight.
  const auto direct_item = [&](const IP* ib, const std::int64_t* table, EP* ob, std::int64_t b, std::int64_t C) {
    constexpr int U = (span_ctas<E>() >= 4 ? 4 : 8) / P;  // P <= 4
    for (int q0 = threadIdx.x; q0 < ngroups; q0 += U * NT) {
      std::int64_t off[U][P];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int q = q0 + u * NT;
        const IP iv = q < ngroups ? ib[q] : IP{};
#pragma unroll
        for (int e = 0; e < P; ++e) {
          const I v = iv.v[e];
          const bool ok = q < ngroups && in_extent(v, a.ext);
          const std::int64_t key = ok ? static_cast<std::int64_t>(v >> lbs) : 0;
          const std::int64_t sb = !ok ? -1 : a.table_rows > 0 ? table[key] : __ldg(a.sidx + cell(b, key, C));
          off[u][e] = sb >= 0 ? (sb << lblock) + (static_cast<std::int64_t>(v & bmask) << lbs) + ((q * P) & bmask) + e
                              : std::int64_t(-1);
        }
      }
      load_then_store(src, off, ob, [&](int u) { return q0 + u * NT < ngroups ? q0 + u * NT : -1; });
    }
  };
  // The source block at an idx block's own coordinates (idx may have more batches or block
  // rows than src): -1 where there is none.
  const auto home_of = [&](std::int64_t b, std::int64_t r, std::int64_t c) {
    return b < a.sB && r < a.sMb && c < a.sNb ? __ldg(a.sidx + cell(b, r, c)) : std::int64_t(-1);
  };
  std::int64_t k = blockIdx.x;
  std::int64_t b = 0, R = 0, C = 0, spec = -1;  // item k's coordinates, its speculative block
  if (k < a.n) {
    b = __ldg(a.coords + 3 * k), R = __ldg(a.coords + 3 * k + 1), C = __ldg(a.coords + 3 * k + 2);
    spec = home_of(b, R, C);
    issue(k, 0, spec, b, C);
  }
  // The next item's coordinates and speculative block.
  std::int64_t kn = k + gridDim.x, nb = 0, nR = 0, nC = 0, nspec = -1;
  if (kn < a.n) {
    nb = __ldg(a.coords + 3 * kn), nR = __ldg(a.coords + 3 * kn + 1), nC = __ldg(a.coords + 3 * kn + 2);
    nspec = home_of(nb, nR, nC);
  }
  __syncthreads();
  for (int p = 0; k < a.n; p ^= 1) {
    // The next item's copies fly while this one is gathered (its buffer was freed by the
    // previous item's closing barrier).
    const std::int64_t next_spec = kn < a.n && speculate ? nspec : -1;
    issue(kn, p ^ 1, next_spec, nb, nC);
    const std::int64_t kk = kn + gridDim.x;
    std::int64_t kb2 = 0, kR2 = 0, kC2 = 0;
    if (kk < a.n) {
      kb2 = __ldg(a.coords + 3 * kk), kR2 = __ldg(a.coords + 3 * kk + 1), kC2 = __ldg(a.coords + 3 * kk + 2);
    }
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    const IP* ib = idx_of(p);
    uint4* stage_vec = stage_of(p);
    const E* stage = reinterpret_cast<const E*>(stage_vec);
    // The item's index range: two instructions an element. Where every index is in range
    // (the rule; the op raises otherwise), its source block rows are [lo >> lbs, hi >> lbs].
    I ilo = std::numeric_limits<I>::max(), ihi = std::numeric_limits<I>::min();
#pragma unroll 4
    for (int q = threadIdx.x; q < ngroups; q += NT) {
      const IP iv = ib[q];
#pragma unroll
      for (int e = 0; e < P; ++e) ilo = iv.v[e] < ilo ? iv.v[e] : ilo, ihi = iv.v[e] > ihi ? iv.v[e] : ihi;
    }
    lo = ilo < lo ? ilo : lo;
    hi = ihi > hi ? ihi : hi;
    long long wlo = ilo, whi = ihi;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, off));
      whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, off));
    }
    if ((threadIdx.x & 31) == 0) {
      atomicMin(&s_lo[p], wlo);
      atomicMax(&s_hi[p], whi);
    }
    __syncthreads();
    wlo = s_lo[p];
    whi = s_hi[p];
    if (threadIdx.x == 0) s_lo[p ^ 1] = kNone, s_hi[p ^ 1] = kNoneHi;
    // The same decisions for the whole CTA.
    const bool in_range = wlo >= 0 && whi < a.ext;
    const std::int64_t klo = in_range ? wlo >> lbs : 0, span = in_range ? (whi >> lbs) - klo + 1 : 0;
    const bool own = in_range && span == 1 && klo == R;
    bool staged = spec >= 0 && own;
    unsigned present = staged ? 1u : 0u;  // bit s: source block row klo + s has a block in column C
    if (!staged && in_range && span <= a.slots) {
      // The speculative copy has landed (the wait above); nobody reads the stage yet.
      const std::int64_t* cells = a.sidx + cell(b, klo, C);
#pragma unroll
      for (int s = 0; s < kSpanSlots; ++s) {
        if (s < span) {
          const std::int64_t sb = __ldg(cells + s * a.sNb);
          if (sb >= 0) present |= 1u << s, copy_block(stage_vec + s * nvec, src + (sb << lblock), nvec);
        }
      }
      asm volatile("cp.async.wait_all;\n" ::: "memory");  // also the next item's: rare path
      __syncthreads();
      staged = true;
    }
    EP* ob = reinterpret_cast<EP*>(out + (k << lblock));
    // Staged, every index in range: element (row v - base, column j) of the stage, with
    // base the first staged row; slots of absent blocks read 0 (no select where every slot
    // holds a block).
    const int base = static_cast<int>(klo << lbs);
    const auto gather_staged = [&](auto all_present) {
#pragma unroll 4
      for (int q = threadIdx.x; q < ngroups; q += NT) {
        const IP iv = ib[q];
        const int j = (q * P) & bmask;
        EP o;
#pragma unroll
        for (int e = 0; e < P; ++e) {
          const int r = static_cast<int>(iv.v[e]) - base;
          const E x = stage[(r << lbs) + j + e];
          if constexpr (decltype(all_present)::value) o.v[e] = x;
          else o.v[e] = (present >> (r >> lbs)) & 1u ? x : E(0);
        }
        ob[q] = o;
      }
    };
    if (staged && present + 1 == (1u << span)) {
      gather_staged(std::true_type{});
    } else if (staged) {
      gather_staged(std::false_type{});
    } else {
      direct_item(ib, table_of(p), ob, b, C);
      ++direct_items;
    }
    if (in_range) speculate = own;
    // Advance: the next item becomes current, the one after it next.
    k = kn, b = nb, R = nR, C = nC, spec = next_spec;
    kn = kk, nb = kb2, nR = kR2, nC = kC2;
    nspec = kk < a.n && speculate ? home_of(nb, nR, nC) : -1;
    __syncthreads();  // buffer p and the span bounds are reused two items on
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  if (a.direct != nullptr && threadIdx.x == 0) a.direct[blockIdx.x] = direct_items;
  publish_range<NT>(static_cast<long long>(lo), static_cast<long long>(hi), rs);
}

// ---- gather along dim 1, staged by column strips ----------------------------------------

// A dim-1 gather's element out[b, i, j] reads src[b, v, j]: every index of column j names
// a row of source column j only. A work item (idx block column (b, C), strip s) copies the
// 32-byte strip s of every row of source block column (b, C) into shared memory (2 KiB a
// block of 64 rows; absent blocks are zero-filled there, not read), then writes strip s of
// every idx block of that column from it: coalesced index loads and output stores, each
// element one shared-memory load whatever rows the indices name. The source is read once
// (the strips of a column are consecutive items, so the CTAs running them share each 128-
// byte line through L2), the indices once and the output written once: the traffic of a
// copy, for scattered rows as for rows inside a block. The item's idx block list is staged
// with the source (the later index batches need no dependent global load). The stage holds
// a whole column, so the kernel applies to sources of up to kStripStageBytes / 32 rows.
// Measured slower (H100, bf16, density 1): 16-byte strips with two buffers a CTA, three
// CTAs an SM (every index load and output store used half a sector: 35% slower), and two
// buffers of 32-byte strips in one CTA of 1024 threads an SM (10% slower).
constexpr std::int64_t kStripBytes = 32;                // bytes of a row in a strip: one sector
constexpr std::int64_t kStripStageBytes = 96 * 1024;    // the most a stage holds (two CTAs an SM)
constexpr std::int64_t kStripListRows = 1024;           // the most idx block rows a list holds
constexpr int kStripCtas = 3;                           // CTAs an SM at stages of <= 64 KiB

/// Geometry of gather_strips_k.
struct StripArgs {
  const std::int64_t* col_offsets;  // CSC offsets of idx's layout
  const std::int64_t* col_blocks;   // CSC block lists of idx's layout
  const std::int64_t* sidx;         // block_index of src's layout
  std::int64_t items;               // idx block columns * strips of a block column
  std::int64_t ext;                 // src rows
  std::int64_t sB, sMb, sNb, iNb;
  int lbs, lstrips;  // log2 of the block size and of the strips of a block column
};

// The dim-1 gather by column strips (section comment above). A unit is half a row of a
// strip: V = 16 bytes of data, V indices. The first batch of indices is loaded while the
// stage lands (its block numbers from global memory), each later batch while the previous
// one is written (its block numbers from the staged list).
template <typename E, typename I>
__global__ void __launch_bounds__(kThreads, kStripCtas)
    gather_strips_k(const E* __restrict__ src, E* __restrict__ out, const I* __restrict__ idx, StripArgs a,
                    RangeSink rs) {
  constexpr int W = static_cast<int>(kStripBytes / sizeof(E)), V = W / 2;
  // Units a batch: 64 bytes of indices, at most 4 units (registers).
  constexpr int U = std::clamp(64 / static_cast<int>(V * sizeof(I)), 1, 4);
  using IP = Pack<I, V>;
  using EP = Pack<E, V>;
  extern __shared__ uint4 strip_vec[];
  const E* stage = reinterpret_cast<const E*>(strip_vec);
  const int lbs = a.lbs, bmask = (1 << lbs) - 1, lunits = lbs + 1;  // two units a row of a block's strip
  const int nvec = static_cast<int>(a.sMb << lbs) * 2;              // 16-byte vectors of the stage
  std::int64_t* list = reinterpret_cast<std::int64_t*>(strip_vec + nvec);
  I lo = std::numeric_limits<I>::max(), hi = std::numeric_limits<I>::min();
  for (std::int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    const std::int64_t col = item >> a.lstrips;  // b * iNb + C
    const int s = static_cast<int>(item & ((1 << a.lstrips) - 1));
    const std::int64_t cbeg = __ldg(a.col_offsets + col);
    const int nk = static_cast<int>(__ldg(a.col_offsets + col + 1) - cbeg);
    if (nk == 0) continue;  // the same for the whole CTA
    const std::int64_t b = col / a.iNb, C = col % a.iNb;
    const bool has_src = b < a.sB && C < a.sNb;
    const std::int64_t* scol = a.sidx + b * a.sMb * a.sNb + C;  // entry of block row r: scol[r * sNb]
#pragma unroll 4
    for (int q = threadIdx.x; q < nvec; q += kThreads) {
      const int row = q >> 1;
      const std::int64_t sb = has_src ? __ldg(scol + static_cast<std::int64_t>(row >> lbs) * a.sNb) : -1;
      if (sb >= 0) {
        copy16_async(strip_vec + q, src + (sb << (2 * lbs)) + (static_cast<std::int64_t>(row & bmask) << lbs) +
                                        s * W + (q & 1) * V);
      } else {
        strip_vec[q] = make_uint4(0, 0, 0, 0);
      }
    }
    for (int t = threadIdx.x; t < nk; t += kThreads) copy8_async(list + t, a.col_blocks + cbeg + t);
    const int nunits = nk << lunits;
    // Element offset of unit u in out and idx (block k): block list[u / units a block], row
    // (u / 2) mod bs, strip s, half u mod 2.
    const auto at_block = [&](std::int64_t k, int u) {
      return (k << (2 * lbs)) + (static_cast<std::int64_t>((u >> 1) & bmask) << lbs) + s * W + (u & 1) * V;
    };
    const auto at = [&](int u) { return at_block(list[u >> lunits], u); };
    IP cur[U];
    std::int64_t cur_at[U];
#pragma unroll
    for (int r = 0; r < U; ++r) {
      const int u = r * kThreads + static_cast<int>(threadIdx.x);
      if (u < nunits) {
        cur_at[r] = at_block(__ldg(a.col_blocks + cbeg + (u >> lunits)), u);
        cur[r] = reinterpret_cast<const IP*>(idx)[cur_at[r] / V];
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    for (int base = 0; base < nunits; base += U * kThreads) {
      const bool more = base + U * kThreads < nunits;
      IP nxt[U];
      std::int64_t nxt_at[U];
      if (more) {
#pragma unroll
        for (int r = 0; r < U; ++r) {
          const int u = base + (U + r) * kThreads + static_cast<int>(threadIdx.x);
          if (u < nunits) nxt_at[r] = at(u), nxt[r] = reinterpret_cast<const IP*>(idx)[nxt_at[r] / V];
        }
      }
#pragma unroll
      for (int r = 0; r < U; ++r) {
        const int u = base + r * kThreads + static_cast<int>(threadIdx.x);
        if (u < nunits) {
          const int w0 = (u & 1) * V;
          EP p;
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const I v = cur[r].v[e];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            const bool ok = in_extent(v, a.ext);
            const E x = stage[(ok ? static_cast<int>(v) : 0) * W + w0 + e];
            p.v[e] = ok ? x : E(0);
          }
          reinterpret_cast<EP*>(out)[cur_at[r] / V] = p;
        }
      }
      if (more) {
#pragma unroll
        for (int r = 0; r < U; ++r) cur[r] = nxt[r], cur_at[r] = nxt_at[r];
      }
    }
    __syncthreads();  // the next item restages
  }
  publish_range<kThreads>(static_cast<long long>(lo), static_cast<long long>(hi), rs);
}

/// Raises kernel K's dynamic shared-memory limit to `bytes` and prefers the largest shared
/// carveout, once per device (the attributes are per device; `dev` is the current one).
template <auto K>
void allow_smem(int dev, std::int64_t bytes) {
  static std::atomic<std::uint64_t> done{0};
  const std::uint64_t bit = dev < 64 ? std::uint64_t(1) << dev : 0;
  if (bit != 0 && (done.load(std::memory_order_acquire) & bit) != 0) return;
  TG_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  TG_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  done.fetch_or(bit, std::memory_order_release);
}

/// Sets the shared-memory limits of both CTA shapes of gather_rows_k<E, I> once.
template <typename E, typename I>
void allow_stage_smem(int dev) {
  allow_smem<gather_rows_k<E, I, rows_vector<E, I>()>>(dev, kStageBytes + kTableBytes);
  allow_smem<gather_rows_k<E, I, rows_vector<E, I>(), kSmallStageThreads, kSmallStageCtas>>(dev,
                                                                                            kStageBytes + kTableBytes);
}

/// The most active blocks in a source block row that a block row of idx with blocks reads
/// (idx block row (b, R) reads source block row (b, R)), from the layouts' host CSR
/// offsets (built once per layout); O(idx block rows).
std::int64_t densest_source_row(const Layout& sl, const Layout& il) {
  const std::int64_t* ioff = il.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  const std::int64_t* soff = sl.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  const std::int64_t iMb = il.block_rows(), sMb = sl.block_rows();
  std::int64_t m = 0;
  for (std::int64_t b = 0; b < il.batch(); ++b) {
    for (std::int64_t r = 0; r < iMb; ++r) {
      const std::int64_t q = b * iMb + r, s = b * sMb + r;
      if (ioff[q + 1] > ioff[q]) m = std::max(m, soff[s + 1] - soff[s]);
    }
  }
  return m;
}

/// Launches gather_rows_k for a dim-2 gather; false (nothing launched) where it does not
/// apply: misaligned data, blocks narrower than a unit, source rows over kStageBytes (this
/// bounds the slot table and keeps a column an int; the staged bytes themselves are the
/// active blocks only), or an idx with fewer than half as many blocks as the source has in
/// the block rows idx covers (staging reads all of those; a direct gather of a few columns
/// reads less).
template <typename E, typename I>
bool gather_rows(const Tensor& src, const Layout& sl, const Tensor& idx, const Layout& il, Tensor& out,
                 RangeLease* lease, int dev, cudaStream_t st) {
  constexpr int V = rows_vector<E, I>();
  const std::int64_t bs = il.block_size(), es = sizeof(E), row_bytes = sl.cols() * es;
  const std::int64_t rows = il.batch() * il.block_rows();
  if (sl.n_blocks() == 0 || bs < V || row_bytes > kStageBytes) return false;
  const double covered = static_cast<double>(sl.n_blocks()) * static_cast<double>(rows) /
                         static_cast<double>(sl.batch() * sl.block_rows());
  if (2.0 * static_cast<double>(il.n_blocks()) < covered) return false;
  const auto aligned = [](const void* p, std::int64_t w) { return reinterpret_cast<std::uintptr_t>(p) % w == 0; };
  if (!aligned(src.data_ptr(), 16) || !aligned(idx.data_ptr(), V * std::int64_t(sizeof(I))) ||
      !aligned(out.data_ptr(), V * es)) {
    return false;
  }
  // Stage slots: the densest source block row read, at least one (an absent block reads
  // slot 0, masked, so the stage is never empty).
  const std::int64_t slots = std::max<std::int64_t>(1, densest_source_row(sl, il));
  const bool small = slots * bs * es <= kSmallStageBytes;
  const int ctas = small ? kSmallStageCtas : kStageCtas;
  const std::int64_t stage_budget = small ? kSmallStageBytes : kStageBytes;
  // h: the most rows of that many blocks that fit, fewer while that leaves too few items to
  // give every SM its CTAs (a sparser source gets a taller stage).
  std::int64_t h = 1;
  while (2 * h <= bs && 2 * h * slots * bs * es <= stage_budget) h *= 2;
  const std::int64_t want = ctas * std::int64_t(cuda::multiprocessor_count(dev));
  while (h > 1 && rows * (bs / h) < want && (h / 2) * bs * es % 16 == 0) h /= 2;
  // A knob to measure the item height by hand (the rule above trades the fixed latency chain
  // of an item against the last wave's idle SMs).
  static const std::int64_t forced_h = env_power_of_two("gather", "TG_GATHER_STAGE_ROWS", 512);
  if (forced_h > 0) {
    h = std::min(forced_h, bs);
    while (h > 1 && h * slots * bs * es > stage_budget) h /= 2;
  }
  if (h * bs * es % 16 != 0 || il.cols() * h >= (std::int64_t(1) << 30)) return false;
  const std::int64_t stage_bytes = h * slots * bs * es;  // a multiple of 16
  const std::int64_t table_bytes = (sl.block_cols() * std::int64_t(sizeof(short)) + 15) / 16 * 16;
  if (table_bytes > kTableBytes) return false;
  const int lbs = log2_exact(bs), lh = log2_exact(h);
  const RowsArgs a{il.tables(idx.device()).row_offsets.data<std::int64_t>(),
                   sl.tables(src.device()).row_offsets.data<std::int64_t>(),
                   sl.tables(src.device()).block_index.data<std::int64_t>(),
                   rows << (lbs - lh),
                   sl.cols(),
                   static_cast<int>(il.block_rows()),
                   static_cast<int>(sl.block_rows()),
                   static_cast<int>(sl.block_cols()),
                   lbs,
                   lh,
                   log2_exact(h * bs * es / 16),
                   static_cast<int>(stage_bytes / 16)};
  allow_stage_smem<E, I>(dev);
  // The CTAs loop over items: more than a few waves of them only cost launches.
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(a.items, kMaxRangeCtas));
  const RangeSink rs = lease ? lease->sink(grid) : RangeSink{};
  if (small) {
    gather_rows_k<E, I, V, kSmallStageThreads, kSmallStageCtas>
        <<<grid, kSmallStageThreads, static_cast<std::size_t>(stage_bytes + table_bytes), st>>>(
        static_cast<const E*>(src.data_ptr()), static_cast<E*>(out.data_ptr()), static_cast<const I*>(idx.data_ptr()),
        a, rs);
  } else {
    gather_rows_k<E, I, V><<<grid, kThreads, static_cast<std::size_t>(stage_bytes + table_bytes), st>>>(
        static_cast<const E*>(src.data_ptr()), static_cast<E*>(out.data_ptr()), static_cast<const I*>(idx.data_ptr()),
        a, rs);
  }
  TG_CUDA_CHECK_LAST();
  return true;
}

/// Whether gather_strips_k<E, I> exists: at most 64 bytes of indices a unit (not for 1-byte
/// data with i64 indices).
template <typename E, typename I>
constexpr bool strips_kernel_exists() {
  return kStripBytes / 2 / sizeof(E) * sizeof(I) <= 64;
}

/// Launches gather_strips_k for a dim-1 gather; false (nothing launched) where it does not
/// apply: block rows narrower than a strip, a source column over kStripStageBytes of stage,
/// idx columns of over kStripListRows block rows, misaligned data, or a source that staging
/// would read more of than idx has blocks (each idx block column stages its whole source
/// column: an idx column of a few blocks over a dense source reads less by spans or
/// directly; `forced` skips this last rule).
template <typename E, typename I>
bool gather_strips(const Tensor& src, const Layout& sl, const Tensor& idx, const Layout& il, Tensor& out,
                   bool forced, RangeLease* lease, int dev, cudaStream_t st) {
  constexpr std::int64_t W = kStripBytes / std::int64_t(sizeof(E)), V = W / 2;
  const std::int64_t bs = il.block_size(), stage_bytes = sl.rows() * kStripBytes;
  if (sl.n_blocks() == 0 || bs < W || stage_bytes > kStripStageBytes || il.block_rows() > kStripListRows) {
    return false;
  }
  const auto aligned = [](const void* p, std::int64_t w) { return reinterpret_cast<std::uintptr_t>(p) % w == 0; };
  if (!aligned(src.data_ptr(), 16) || !aligned(idx.data_ptr(), V * std::int64_t(sizeof(I))) ||
      !aligned(out.data_ptr(), 16)) {
    return false;
  }
  // Source blocks staged: those of every source column that an idx column with blocks reads.
  const std::int64_t* ico = il.tables(Device::cpu()).col_offsets.data<std::int64_t>();
  const std::int64_t* sco = sl.tables(Device::cpu()).col_offsets.data<std::int64_t>();
  std::int64_t staged = 0;
  for (std::int64_t b = 0; b < std::min(il.batch(), sl.batch()); ++b) {
    for (std::int64_t c = 0; c < std::min(il.block_cols(), sl.block_cols()); ++c) {
      const std::int64_t q = b * il.block_cols() + c, r = b * sl.block_cols() + c;
      if (ico[q + 1] > ico[q]) staged += sco[r + 1] - sco[r];
    }
  }
  if (!forced && 2 * staged > 3 * il.n_blocks()) return false;
  const int lstrips = log2_exact(bs / W);
  const StripArgs a{il.tables(idx.device()).col_offsets.data<std::int64_t>(),
                    il.tables(idx.device()).col_blocks.data<std::int64_t>(),
                    sl.tables(src.device()).block_index.data<std::int64_t>(),
                    (il.batch() * il.block_cols()) << lstrips,
                    sl.rows(),
                    sl.batch(),
                    sl.block_rows(),
                    sl.block_cols(),
                    il.block_cols(),
                    log2_exact(bs),
                    lstrips};
  const std::int64_t smem = stage_bytes + il.block_rows() * 8;
  constexpr auto K = gather_strips_k<E, I>;
  allow_smem<K>(dev, kStripStageBytes + kStripListRows * 8);
  const std::int64_t per_sm = std::clamp<std::int64_t>(228 * 1024 / (smem + 1024), 1, kStripCtas);
  const unsigned grid = static_cast<unsigned>(
      std::min<std::int64_t>({a.items, per_sm * cuda::multiprocessor_count(dev), kMaxRangeCtas}));
  const RangeSink rs = lease ? lease->sink(grid) : RangeSink{};
  K<<<grid, kThreads, static_cast<std::size_t>(smem), st>>>(static_cast<const E*>(src.data_ptr()),
                                                                  static_cast<E*>(out.data_ptr()),
                                                                  static_cast<const I*>(idx.data_ptr()), a, rs);
  TG_CUDA_CHECK_LAST();
  return true;
}

/// Launches gather_span_k for a dim-1 gather; false (nothing launched) where it does not
/// apply: blocks under 4 KiB (a CTA an item would idle most of its threads), buffers (an
/// idx block and one source block at least) over kSpanBufferBytes, misaligned data, an
/// empty source. With `history`, the launch reports its counts of items gathered directly
/// there (where the history has room for them).
template <typename E, typename I>
bool gather_span(const Tensor& src, const Layout& sl, const Tensor& idx, const Layout& il, Tensor& out,
                 SpanHistory* history, RangeLease* lease, int dev, cudaStream_t st) {
  constexpr int P = span_group<E>();
  const std::int64_t bs = il.block_size(), block_bytes = bs * bs * std::int64_t(sizeof(E));
  const std::int64_t idx_bytes = bs * bs * std::int64_t(sizeof(I));
  if (sl.n_blocks() == 0 || bs < P || block_bytes < 4096 || idx_bytes + block_bytes > kSpanBufferBytes) return false;
  const auto aligned = [](const void* p, std::int64_t w) { return reinterpret_cast<std::uintptr_t>(p) % w == 0; };
  if (!aligned(src.data_ptr(), 16) || !aligned(idx.data_ptr(), 16) ||
      !aligned(out.data_ptr(), P * std::int64_t(sizeof(E)))) {
    return false;
  }
  const std::int64_t slots = std::clamp<std::int64_t>(
      std::min(kSpanStageBytes, kSpanBufferBytes - idx_bytes) / block_bytes, 1, kSpanSlots);
  const std::int64_t table_rows = sl.block_rows() <= kSpanTableRows ? sl.block_rows() : 0;
  const std::int64_t table = idx_bytes + slots * block_bytes;
  const std::int64_t buffer = table + (table_rows * 8 + 15) / 16 * 16, smem = 2 * buffer;
  SpanArgs a{il.tables(idx.device()).block_coords.data<std::int64_t>(),
                   sl.tables(src.device()).block_index.data<std::int64_t>(),
                   il.n_blocks(),
                   sl.rows(),
                   sl.batch(),
                   sl.block_rows(),
                   sl.block_cols(),
                   log2_exact(bs),
                   static_cast<int>(slots),
                   static_cast<int>(buffer),
                   static_cast<int>(table / 16),
                   static_cast<int>(table_rows),
                   nullptr};
  // CTAs an SM by shared memory (228 KiB, 1 KiB reserved each) and registers.
  const std::int64_t per_sm = std::clamp<std::int64_t>(228 * 1024 / (smem + 1024), 1, span_ctas<E>());
  const std::int64_t ctas = std::int64_t(cuda::multiprocessor_count(dev)) * per_sm;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>({a.n, ctas, kMaxRangeCtas}));
  a.direct = history ? history->sink(grid) : nullptr;
  const RangeSink rs = lease ? lease->sink(grid) : RangeSink{};
  constexpr auto K = gather_span_k<E, I>;
  allow_smem<K>(dev, 2 * (kSpanBufferBytes + kSpanTableRows * 8));
  K<<<grid, kSpanThreads, static_cast<std::size_t>(smem), st>>>(static_cast<const E*>(src.data_ptr()),
                                                                static_cast<E*>(out.data_ptr()),
                                                                static_cast<const I*>(idx.data_ptr()), a, rs);
  TG_CUDA_CHECK_LAST();
  if (a.direct != nullptr) history->launched(st, grid, a.n);
  return true;
}

/// Launches gather_direct_k (any dim, any alignment).
template <typename E, typename I>
void gather_direct(const Tensor& src, const Layout& sl, int dim, const Tensor& idx, const Layout& il, Tensor& out,
                   RangeLease* lease, int dev, cudaStream_t st) {
  const std::int64_t n = il.n_blocks(), bs = il.block_size(), es = sizeof(E);
  const std::int64_t* coords = il.tables(idx.device()).block_coords.data<std::int64_t>();
  const std::int64_t* sidx = sl.tables(src.device()).block_index.data<std::int64_t>();
  const std::int64_t cells = sl.batch() * sl.block_rows() * sl.block_cols();
  const bool narrow = std::max({n * bs * bs, sl.n_blocks() * bs * bs, cells}) < (std::int64_t(1) << 30);
  dispatch_v(index_vector<I>(bs, {idx.data_ptr(), out.data_ptr()}, es), [&](auto VV) {
    constexpr int V = decltype(VV)::value;
    constexpr int U = direct_units(V);
    const int shift = log2_exact(bs * bs / V);
    const DirectArgs a{n << shift, sl.block_rows(), sl.block_cols(), extent_of(sl, dim), dim, log2_exact(bs), shift};
    const unsigned grid = std::min(grid_for((a.units + U - 1) / U, dev, 8), kMaxRangeCtas);
    const RangeSink rs = lease ? lease->sink(grid) : RangeSink{};
    const E* s = static_cast<const E*>(src.data_ptr());
    E* o = static_cast<E*>(out.data_ptr());
    const I* x = static_cast<const I*>(idx.data_ptr());
    const auto launch = [&](auto full) {
      constexpr bool F = decltype(full)::value;
      if (narrow) gather_direct_k<E, I, V, int, F><<<grid, kThreads, 0, st>>>(s, o, x, coords, sidx, a, rs);
      else gather_direct_k<E, I, V, std::int64_t, F><<<grid, kThreads, 0, st>>>(s, o, x, coords, sidx, a, rs);
    };
    if (sl.n_blocks() == cells) launch(std::true_type{});
    else launch(std::false_type{});
    TG_CUDA_CHECK_LAST();
  });
}

void gather_cuda(const Tensor& src, const Layout& sl, int dim, const Tensor& idx, const Layout& il, Tensor& out,
                 const RangeVerdict* verdict) {
  if (il.n_blocks() == 0) return;
  const int dev = src.device().index;
  tg::cuda::DeviceGuard guard(dev);
  const Stream stream = tg::current_stream(src.device());
  cudaStream_t st = tg::cuda::stream_of(stream);
  std::unique_ptr<RangeLease> lease;
  if (verdict) lease = std::make_unique<RangeLease>(src.device());
  const Dim1Path dim1 = dim1_path();
  // The automatic dim-1 choice follows what the span kernel saw on this idx layout before
  // (span_history.h); the history's lock is held until the launch is recorded.
  // TG_GATHER_DIM1=strips makes the automatic choice try the strip kernel first always.
  static const int dim1_order = env_choice("gather", "TG_GATHER_DIM1", "span", "strips");
  std::shared_ptr<SpanHistory> history;
  std::unique_lock<std::mutex> history_lock;
  bool strips_first = dim1 == Dim1Path::Strips;
  if (dim == 1 && dim1 == Dim1Path::Auto) {
    history = SpanHistory::of(il, dev);
    history_lock = std::unique_lock<std::mutex>(history->mu);
    strips_first = dim1_order == 2 || history->prefer_strips();
  }
  Dim1Path ran = Dim1Path::Direct;
  dispatch_index(idx.dtype(), [&](auto ix) {
    using I = decltype(ix);
    dispatch_bytes(src.dtype(), [&](auto e) {
      using E = decltype(e);
      if (dim == 2 && gather_rows<E, I>(src, sl, idx, il, out, lease.get(), dev, st)) return;
      if (dim != 1) return gather_direct<E, I>(src, sl, dim, idx, il, out, lease.get(), dev, st);
      const auto strips = [&](bool forced) {
        if constexpr (strips_kernel_exists<E, I>()) {
          if (gather_strips<E, I>(src, sl, idx, il, out, forced, lease.get(), dev, st)) {
            ran = Dim1Path::Strips;
            return true;
          }
        }
        return false;
      };
      if (strips_first && strips(dim1 == Dim1Path::Strips)) return;
      if ((dim1 == Dim1Path::Auto || dim1 == Dim1Path::Span) &&
          gather_span<E, I>(src, sl, idx, il, out, history.get(), lease.get(), dev, st)) {
        ran = Dim1Path::Span;
        return;
      }
      if (dim1 == Dim1Path::Auto && !strips_first && strips(false)) return;
      gather_direct<E, I>(src, sl, dim, idx, il, out, lease.get(), dev, st);
    });
  });
  if (dim == 1) note_dim1_kernel(ran);
  if (lease) RangeLease::defer(std::move(lease), stream, *verdict);
}

void scatter_cuda(const Tensor& src, const Layout& sl, int dim, const Tensor& idx, const Layout& tl, bool sum,
                  Tensor& out) {
  const std::int64_t n = sl.n_blocks(), bs = sl.block_size();
  if (n == 0 || tl.n_blocks() == 0) return;
  const int dev = src.device().index, lbs = log2_exact(bs);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const std::int64_t* coords = sl.tables(src.device()).block_coords.data<std::int64_t>();
  const std::int64_t* tidx = tl.tables(src.device()).block_index.data<std::int64_t>();
  const std::int64_t ext = extent_of(tl, dim), es = static_cast<std::int64_t>(dtype_size(src.dtype()));
  dispatch_index(idx.dtype(), [&](auto ix) {
    using I = decltype(ix);
    const int v = index_vector<I>(bs, {idx.data_ptr(), src.data_ptr()}, es);
    dispatch_v(v, [&](auto VV) {
      constexpr int V = decltype(VV)::value;
      const int shift = log2_exact(bs * bs / V);
      const std::int64_t total = n << shift;
      const unsigned grid = grid_for(total, dev);
      if (sum) {
        TG_DISPATCH_FLOATING(src.dtype(), "scatter_reduce", [&] {
          using A = typename acc_type<scalar_t>::type;
          scatter_k<scalar_t, A, I, V, true><<<grid, kThreads, 0, st>>>(
              src.data<scalar_t>(), out.data<A>(), static_cast<const I*>(idx.data_ptr()), coords, tidx,
              tl.block_rows(), tl.block_cols(), ext, dim, lbs, total, shift);
        });
      } else {
        dispatch_bytes(src.dtype(), [&](auto e) {
          using E = decltype(e);
          scatter_k<E, E, I, V, false><<<grid, kThreads, 0, st>>>(
              static_cast<const E*>(src.data_ptr()), static_cast<E*>(out.data_ptr()),
              static_cast<const I*>(idx.data_ptr()), coords, tidx, tl.block_rows(), tl.block_cols(), ext, dim, lbs,
              total, shift);
        });
      }
      TG_CUDA_CHECK_LAST();
    });
  });
}

// ---- distribution layout -------------------------------------------------------------------

template <typename I>
__global__ void distribution_k(const I* __restrict__ idx, const std::int64_t* __restrict__ coords, int dim, int lbs,
                               int lbt, std::int64_t tB, std::int64_t tMb, std::int64_t tNb, std::int64_t total,
                               bool* __restrict__ flags) {
  const std::int64_t emask = (std::int64_t(1) << (2 * lbs)) - 1, bmask = (std::int64_t(1) << lbs) - 1;
  for (std::int64_t g = thread_index(); g < total; g += thread_stride()) {
    const std::int64_t k = g >> (2 * lbs), e = g & emask;
    std::int64_t p[3] = {coords[3 * k], (coords[3 * k + 1] << lbs) + (e >> lbs), (coords[3 * k + 2] << lbs) + (e & bmask)};
    p[dim] = static_cast<std::int64_t>(idx[g]);
    if (p[0] < 0 || p[0] >= tB || p[1] < 0 || (p[1] >> lbt) >= tMb || p[2] < 0 || (p[2] >> lbt) >= tNb) continue;
    flags[(p[0] * tMb + (p[1] >> lbt)) * tNb + (p[2] >> lbt)] = true;
  }
}

void distribution_cuda(const Tensor& idx, const Layout& il, int dim, std::int64_t bs, std::int64_t tB,
                       std::int64_t tMb, std::int64_t tNb, Tensor& flags) {
  const std::int64_t n = il.n_blocks(), ibs = il.block_size();
  if (n == 0) return;
  const int dev = idx.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const std::int64_t* coords = il.tables(idx.device()).block_coords.data<std::int64_t>();
  const std::int64_t total = n * ibs * ibs;
  dispatch_index(idx.dtype(), [&](auto ix) {
    using I = decltype(ix);
    distribution_k<I><<<grid_for(total, dev), kThreads, 0, st>>>(static_cast<const I*>(idx.data_ptr()), coords, dim,
                                                                 log2_exact(ibs), log2_exact(bs), tB, tMb, tNb, total,
                                                                 flags.data<bool>());
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_transpose_kernel, CUDA, &transpose_cuda);
TG_REGISTER_KERNEL(sparse_map_blocks_kernel, CUDA, &map_blocks_cuda);
TG_REGISTER_KERNEL(sparse_reduce_blocks_kernel, CUDA, &reduce_blocks_cuda);
TG_REGISTER_KERNEL(sparse_gather_kernel, CUDA, &gather_cuda);
TG_REGISTER_KERNEL(sparse_scatter_kernel, CUDA, &scatter_cuda);
TG_REGISTER_KERNEL(sparse_distribution_kernel, CUDA, &distribution_cuda);

}  // namespace tg::ops
