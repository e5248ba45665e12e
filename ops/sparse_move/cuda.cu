// CUDA kernels of the block-sparse data-movement family.
//
// Every kernel reads the index tables of the layouts on the device (built once per
// layout) and grid-strides over flat work: a work item is a naturally aligned unit of up
// to 16 bytes of one block (block sizes and element sizes are powers of two, so the
// block of a unit is a shift away). Consecutive threads take consecutive units of a block,
// so loads and stores are coalesced. transpose transposes 16-byte micro-tiles in
// registers and stages up to 64x64 tiles in (swizzled) shared memory so that both its
// reads and its writes are 16-byte row accesses.
#include <climits>
#include <limits>
#include <cstdint>
#include <vector>

#include "ops/sparse_move/cuda_util.cuh"
#include "ops/sparse_move/kernels.h"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using namespace smove;

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
// before any store so that enough bytes are in flight to keep HBM busy.
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
    U v[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) v[r] = src[g];
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g >= total) break;
      const std::int64_t k = g >> shift;
      const I b = static_cast<I>(coords[3 * k]), R = static_cast<I>(coords[3 * k + 1]),
              C = static_cast<I>(coords[3 * k + 2]);
      for (I c = 0; c < copies; ++c) {
        const std::int64_t t = oidx[m.dest<I>(b, R, C, c)];
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

// ---- host readback ---------------------------------------------------------------------------

// Decodes the (~min, max) words that the kernels' atomicMax wrote into `words` (an i64 [2]
// tensor on the device) into lo and hi; waits for the stream.
void read_range(const Tensor& words, std::int64_t& lo, std::int64_t& hi) {
  const std::vector<std::int64_t> h = words.to_vector<std::int64_t>();
  const auto unmap = [](std::uint64_t u) { return static_cast<std::int64_t>(u ^ 0x8000000000000000ull); };
  lo = unmap(~static_cast<std::uint64_t>(h[0]));
  hi = unmap(static_cast<std::uint64_t>(h[1]));
}

// ---- gather / scatter ----------------------------------------------------------------------

// Signed -> unsigned map that keeps the order, so that both extremes are atomicMax of
// unsigned values starting from a zeroed buffer: res[0] = max(~map(v)) (the minimum),
// res[1] = max(map(v)).
__device__ __forceinline__ unsigned long long order_map(long long v) {
  return static_cast<unsigned long long>(v) ^ 0x8000000000000000ull;
}


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

template <typename E, typename I, int V>
__global__ void gather_k(const E* __restrict__ src, E* __restrict__ out, const I* __restrict__ idx,
                         const std::int64_t* __restrict__ coords, const std::int64_t* __restrict__ sidx,
                         std::int64_t sMb, std::int64_t sNb, std::int64_t ext, int dim, int lbs, std::int64_t total,
                         int shift, unsigned long long* __restrict__ range) {
  using IP = Pack<I, V>;
  using EP = Pack<E, V>;
  const std::int64_t umask = (std::int64_t(1) << shift) - 1, bmask = (std::int64_t(1) << lbs) - 1;
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  for (std::int64_t g = thread_index(); g < total; g += thread_stride()) {
    const std::int64_t k = g >> shift, e0 = (g & umask) * V, i = e0 >> lbs, j0 = e0 & bmask;
    const IP ip = reinterpret_cast<const IP*>(idx)[g];
    const std::int64_t b = coords[3 * k], R = coords[3 * k + 1], C = coords[3 * k + 2];
    EP o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      lo = min(lo, static_cast<long long>(ip.v[e]));
      hi = max(hi, static_cast<long long>(ip.v[e]));
      const Target t = locate(dim, static_cast<std::int64_t>(ip.v[e]), ext, b, R, C, i, j0 + e, sMb, sNb, lbs);
      const std::int64_t s = t.cell >= 0 ? sidx[t.cell] : -1;
      o.v[e] = s >= 0 ? src[(s << (2 * lbs)) + (t.ri << lbs) + t.ci] : E(0);
    }
    reinterpret_cast<EP*>(out)[g] = o;
  }
  if (range) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off));
      hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
    }
    if ((threadIdx.x & 31) == 0) {
      atomicMax(range, ~order_map(lo));
      atomicMax(range + 1, order_map(hi));
    }
  }
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

void gather_cuda(const Tensor& src, const Layout& sl, int dim, const Tensor& idx, const Layout& il, Tensor& out,
                 std::int64_t* range) {
  const std::int64_t n = il.n_blocks(), bs = il.block_size();
  if (n == 0) return;
  const int dev = src.device().index, lbs = log2_exact(bs);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  Tensor res;
  unsigned long long* r = nullptr;
  if (range) {
    res = empty({2}, {.dtype = DType::i64, .device = src.device()});
    r = reinterpret_cast<unsigned long long*>(res.data<std::int64_t>());
    TG_CUDA_CHECK(cudaMemsetAsync(r, 0, 2 * sizeof(unsigned long long), st));
  }
  const std::int64_t* coords = il.tables(idx.device()).block_coords.data<std::int64_t>();
  const std::int64_t* sidx = sl.tables(src.device()).block_index.data<std::int64_t>();
  const std::int64_t ext = extent_of(sl, dim), es = static_cast<std::int64_t>(dtype_size(src.dtype()));
  dispatch_index(idx.dtype(), [&](auto ix) {
    using I = decltype(ix);
    const int v = index_vector<I>(bs, {idx.data_ptr(), out.data_ptr()}, es);
    dispatch_bytes(src.dtype(), [&](auto e) {
      using E = decltype(e);
      dispatch_v(v, [&](auto VV) {
        constexpr int V = decltype(VV)::value;
        const int shift = log2_exact(bs * bs / V);
        const std::int64_t total = n << shift;
        gather_k<E, I, V><<<grid_for(total, dev), kThreads, 0, st>>>(
            static_cast<const E*>(src.data_ptr()), static_cast<E*>(out.data_ptr()), static_cast<const I*>(idx.data_ptr()),
            coords, sidx, sl.block_rows(), sl.block_cols(), ext, dim, lbs, total, shift, r);
        TG_CUDA_CHECK_LAST();
      });
    });
  });
  if (range) read_range(res, range[0], range[1]);
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

// ---- index range ---------------------------------------------------------------------------

template <typename I, int V>
__global__ void __launch_bounds__(kThreads) index_range_k(const I* __restrict__ idx, std::int64_t units,
                                                          unsigned long long* __restrict__ res) {
  using P = Pack<I, V>;
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  const P* p = reinterpret_cast<const P*>(idx);
  constexpr std::int64_t kChunk = std::int64_t(kUnroll) * kThreads;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kChunk; base < units;
       base += static_cast<std::int64_t>(gridDim.x) * kChunk) {
    P x[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < units) x[r] = p[g];
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      if (base + r * kThreads + threadIdx.x >= units) break;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        lo = min(lo, static_cast<long long>(x[r].v[e]));
        hi = max(hi, static_cast<long long>(x[r].v[e]));
      }
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  if ((threadIdx.x & 31) == 0) {
    atomicMax(res, ~order_map(lo));
    atomicMax(res + 1, order_map(hi));
  }
}

void index_range_cuda(const Tensor& idx, std::int64_t& lo, std::int64_t& hi) {
  const std::int64_t n = idx.numel();
  lo = std::numeric_limits<std::int64_t>::max();
  hi = std::numeric_limits<std::int64_t>::min();
  if (n == 0) return;
  Tensor res = empty({2}, {.dtype = DType::i64, .device = idx.device()});
  const int dev = idx.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  auto* r = reinterpret_cast<unsigned long long*>(res.data<std::int64_t>());
  TG_CUDA_CHECK(cudaMemsetAsync(r, 0, 2 * sizeof(unsigned long long), st));
  dispatch_index(idx.dtype(), [&](auto ix) {
    using I = decltype(ix);
    constexpr int VMAX = 16 / sizeof(I);
    const bool vec = n % VMAX == 0 && reinterpret_cast<std::uintptr_t>(idx.data_ptr()) % 16 == 0;
    const I* p = static_cast<const I*>(idx.data_ptr());
    if (vec) {
      index_range_k<I, VMAX><<<chunk_grid(n / VMAX, dev), kThreads, 0, st>>>(p, n / VMAX, r);
    } else {
      index_range_k<I, 1><<<chunk_grid(n, dev), kThreads, 0, st>>>(p, n, r);
    }
    TG_CUDA_CHECK_LAST();
  });
  read_range(res, lo, hi);
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
TG_REGISTER_KERNEL(sparse_index_range_kernel, CUDA, &index_range_cuda);
TG_REGISTER_KERNEL(sparse_distribution_kernel, CUDA, &distribution_cuda);

}  // namespace tg::ops
