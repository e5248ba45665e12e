#include <cstdint>
#include <cstring>

#include "ops/sparse_convert/kernels.h"
#include "ops/sparse_move/cuda_util.cuh"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

using smove::balanced_grid;
using smove::load_once;
using smove::store_once;

// Both directions move bs x bs tiles between the dense tensor and the block array in units
// U (16 bytes when alignment allows). Units are numbered tile-major (tile, row, unit in
// row), so consecutive threads take consecutive 16-byte pieces of one tile row (coalesced
// rows of 256 B for a 64-wide f32 tile). A CTA step covers kUnroll * kThreads consecutive
// units (16 KiB, one 64x64 f32 tile), and a thread issues all kUnroll loads before its
// first store: the per-SM bytes in flight are kUnroll times those of a load-store loop.
// The grid is one resident wave, grid-striding over the steps.
constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr std::int64_t kStep = std::int64_t(kThreads) * kUnroll;

// Unit layout of a tile, all powers of two: units per tile 1 << tile_shift, per tile row
// 1 << row_shift; `pitch` is a dense row in units.
struct TileGeometry {
  int tile_shift, row_shift, lbs;
  std::int64_t pitch;
};

// q = n / d for n < 2^63 by a multiply-high (division by a runtime value is a long
// instruction sequence on the GPU, and the grid's column count need not be a power of two).
struct FastDiv {
  std::uint64_t magic = 0;
  int shift = 0;
  std::int64_t d = 1;
};
FastDiv make_fast_div(std::int64_t d) {
  FastDiv f;
  f.d = d;
  while ((std::int64_t(1) << f.shift) < d) ++f.shift;
  // magic = floor(2^64 (2^shift - d) / d) + 1
  const unsigned __int128 num = (static_cast<unsigned __int128>((std::uint64_t(1) << f.shift) - d)) << 64;
  f.magic = static_cast<std::uint64_t>(num / static_cast<unsigned __int128>(d)) + 1;
  return f;
}
__device__ __forceinline__ std::int64_t divide(std::int64_t n, const FastDiv& f) {
  const std::uint64_t u = static_cast<std::uint64_t>(n);
  return static_cast<std::int64_t>((__umul64hi(f.magic, u) + u) >> f.shift);
}

// dense -> blocks: unit g of block k (its (b, r, c) in coords) is read from dense.
template <typename U>
__global__ void __launch_bounds__(kThreads) to_blocks_k(const U* __restrict__ dense, U* __restrict__ blocks,
                                                        const std::int64_t* __restrict__ coords, std::int64_t total,
                                                        std::int64_t Mb, TileGeometry geo) {
  const int umask = (1 << geo.tile_shift) - 1, rmask = (1 << geo.row_shift) - 1;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kStep; base < total;
       base += static_cast<std::int64_t>(gridDim.x) * kStep) {
    std::int64_t from[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      const std::int64_t k = g < total ? g >> geo.tile_shift : 0;
      const int u = static_cast<int>(g) & umask;
      const std::int64_t b = __ldg(coords + 3 * k), R = __ldg(coords + 3 * k + 1), C = __ldg(coords + 3 * k + 2);
      const std::int64_t row = ((b * Mb + R) << geo.lbs) + (u >> geo.row_shift);
      from[r] = row * geo.pitch + (C << geo.row_shift) + (u & rmask);
    }
    U v[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      if (base + r * kThreads + threadIdx.x < total) v[r] = load_once(dense + from[r]);
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) store_once(blocks + g, v[r]);
    }
  }
}

// blocks -> dense over every tile t = (b * Mb + r) * Nb + c of the dense tensor: the tile's
// block when index[t] >= 0, else the fill pattern; each output byte is written once.
template <typename U>
__global__ void __launch_bounds__(kThreads) to_dense_k(U* __restrict__ dense, const U* __restrict__ blocks,
                                                       const std::int64_t* __restrict__ index, std::int64_t total,
                                                       FastDiv Nb, TileGeometry geo, U fill) {
  const int umask = (1 << geo.tile_shift) - 1, rmask = (1 << geo.row_shift) - 1;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kStep; base < total;
       base += static_cast<std::int64_t>(gridDim.x) * kStep) {
    std::int64_t from[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      const std::int64_t t = g < total ? g >> geo.tile_shift : 0;
      const std::int64_t k = __ldg(index + t);
      from[r] = k >= 0 ? (k << geo.tile_shift) + (static_cast<int>(g) & umask) : -1;
    }
    U v[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      v[r] = fill;
      if (from[r] >= 0 && base + r * kThreads + threadIdx.x < total) v[r] = load_once(blocks + from[r]);
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g >= total) continue;
      const std::int64_t t = g >> geo.tile_shift, br = divide(t, Nb), c = t - br * Nb.d;
      const int u = static_cast<int>(g) & umask;
      const std::int64_t row = (br << geo.lbs) + (u >> geo.row_shift);
      store_once(dense + row * geo.pitch + (c << geo.row_shift) + (u & rmask), v[r]);
    }
  }
}

// The fill element's bytes repeated over a U (es divides sizeof(U) here).
template <typename U>
U fill_pattern(const Tensor& fill, std::int64_t es) {
  U v;
  char* p = reinterpret_cast<char*>(&v);
  for (std::size_t o = 0; o < sizeof(U); o += static_cast<std::size_t>(es)) {
    std::memcpy(p + o, fill.data_ptr(), static_cast<std::size_t>(es));
  }
  return v;
}

TileGeometry geometry(const Layout& layout, std::int64_t es, int w) {
  const std::int64_t bs = layout.block_size();
  const int row_shift = smove::log2_exact(bs * es / w);
  return {row_shift + smove::log2_exact(bs), row_shift, smove::log2_exact(bs), layout.cols() * es / w};
}

// The widest unit that divides a block row and is aligned in both arrays. Every pointer is
// aligned to its element size and a row holds whole elements, so w = es always fits.
int unit_width(const Layout& layout, std::int64_t es, const void* dense, const void* blocks) {
  const std::int64_t row_bytes = layout.block_size() * es;
  if (blocks == nullptr) return smove::widest_unit(row_bytes, {dense});
  return smove::widest_unit(row_bytes, {dense, blocks});
}

void to_dense_cuda(const Tensor& blocks, const Layout& layout, const Tensor& fill, Tensor& dense) {
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t tiles = layout.batch() * layout.block_rows() * layout.block_cols();
  const std::int64_t* index = layout.tables(dense.device()).block_index.data<std::int64_t>();
  const int dev = dense.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const void* s = blocks.numel() > 0 ? blocks.data_ptr() : nullptr;
  // The fill pattern repeats whole elements, so a unit may not be narrower than one.
  const int w = unit_width(layout, es, dense.data_ptr(), s);
  TG_CHECK(w >= es, ValueError, "to_dense: block data is not aligned to its ", es, "-byte elements");
  const TileGeometry geo = geometry(layout, es, w);
  const std::int64_t total = tiles << geo.tile_shift;
  const FastDiv nb = make_fast_div(layout.block_cols());
  smove::dispatch_width(w, [&](auto W) {
    using U = smove::Chunk<decltype(W)::value>;
    constexpr auto kernel = &to_dense_k<U>;
    const unsigned grid = balanced_grid((total + kStep - 1) / kStep, dev, smove::resident_ctas<kernel>(kThreads));
    kernel<<<grid, kThreads, 0, st>>>(static_cast<U*>(dense.data_ptr()), static_cast<const U*>(s), index, total, nb,
                                      geo, fill_pattern<U>(fill, es));
  });
  TG_CUDA_CHECK_LAST();
}

void to_sparse_cuda(const Tensor& dense, const Layout& layout, Tensor& blocks) {
  const std::int64_t n = layout.n_blocks();
  if (n == 0) return;
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t* coords = layout.tables(dense.device()).block_coords.data<std::int64_t>();
  const int dev = dense.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const int w = unit_width(layout, es, dense.data_ptr(), blocks.data_ptr());
  const TileGeometry geo = geometry(layout, es, w);
  const std::int64_t total = n << geo.tile_shift;
  smove::dispatch_width(w, [&](auto W) {
    using U = smove::Chunk<decltype(W)::value>;
    constexpr auto kernel = &to_blocks_k<U>;
    const unsigned grid = balanced_grid((total + kStep - 1) / kStep, dev, smove::resident_ctas<kernel>(kThreads));
    kernel<<<grid, kThreads, 0, st>>>(static_cast<const U*>(dense.data_ptr()), static_cast<U*>(blocks.data_ptr()),
                                      coords, total, layout.block_rows(), geo);
  });
  TG_CUDA_CHECK_LAST();
}

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CUDA, &to_sparse_cuda);
TG_REGISTER_KERNEL(to_dense_kernel, CUDA, &to_dense_cuda);

}  // namespace tg::ops
