// CUDA kernels of to_sparse / to_dense.
//
// Both grid-stride over flat (block, W-byte unit) pairs, W the widest access (16 bytes
// when the rows and pointers allow) that every block row and pointer is aligned to. Block
// sizes and element sizes are powers of two, so the block, row and column of a unit are
// shifts and masks away. A CUDA block moves kUnroll * kThreads consecutive units per step
// and issues all its loads before any store: at low density a kernel lasts only tens of
// microseconds, and several independent 16-byte loads in flight per thread are what keeps
// HBM busy (one block per CUDA block left the loads serialised and the grid too small).
#include <cstdint>
#include <cstring>

#include "ops/sparse_convert/kernels.h"
#include "ops/sparse_move/cuda_util.cuh"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

using smove::Chunk;
using smove::dispatch_width;
using smove::kThreads;
using smove::log2_exact;

constexpr int kUnroll = 4;
constexpr std::int64_t kChunk = std::int64_t(kUnroll) * kThreads;

// Where the units of a bs x bs block sit: a block row is 1 << lrow units, a block
// 1 << shift units; a dense row is `pitch` units.
struct BlockGeo {
  int lrow, shift;
  std::int64_t bs, pitch;

  // Unit offset in the dense tensor of unit u of the tile whose first row is `row0`
  // (counted over all batches) and whose block column is c.
  __device__ __forceinline__ std::int64_t dense_unit(std::int64_t row0, std::int64_t c, std::int64_t u) const {
    const std::int64_t i = u >> lrow, j = u & ((std::int64_t(1) << lrow) - 1);
    return (row0 + i) * pitch + (c << lrow) + j;
  }
};

// dense [B, M, N] -> blocks [n, bs, bs]: unit g of the blocks is unit g & mask of block
// k = g >> shift at coords (b, r, c). The stores are contiguous; the loads are runs of a
// block row (bs * es bytes) each.
template <typename U>
__global__ void __launch_bounds__(kThreads) to_blocks_k(const U* __restrict__ dense, U* __restrict__ blocks,
                                                        const std::int64_t* __restrict__ coords, BlockGeo geo,
                                                        std::int64_t M, std::int64_t total) {
  const std::int64_t mask = (std::int64_t(1) << geo.shift) - 1;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kChunk; base < total;
       base += static_cast<std::int64_t>(gridDim.x) * kChunk) {
    U v[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) {
        const std::int64_t k = g >> geo.shift;
        const std::int64_t b = coords[3 * k], R = coords[3 * k + 1], C = coords[3 * k + 2];
        v[r] = dense[geo.dense_unit(b * M + R * geo.bs, C, g & mask)];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) blocks[g] = v[r];
    }
  }
}

// blocks -> every tile of dense: unit g is unit g & mask of dense tile t = g >> shift
// (t = (b * Mb + r) * Nb + c), copied from block index[t] when active, else the fill
// pattern, so each output byte is written exactly once. `narrow`: t fits 32 bits, so the
// division by Nb is a 32-bit one.
template <typename U>
__global__ void __launch_bounds__(kThreads) to_dense_k(U* __restrict__ dense, const U* __restrict__ blocks,
                                                       const std::int64_t* __restrict__ index, BlockGeo geo,
                                                       std::int64_t Nb, std::int64_t total, bool narrow, U fill) {
  const std::int64_t mask = (std::int64_t(1) << geo.shift) - 1;
  for (std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kChunk; base < total;
       base += static_cast<std::int64_t>(gridDim.x) * kChunk) {
    U v[kUnroll];
    std::int64_t at[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) {
        const std::int64_t t = g >> geo.shift, u = g & mask;
        const std::int64_t br = narrow ? static_cast<std::int64_t>(static_cast<std::uint32_t>(t) / static_cast<std::uint32_t>(Nb))
                                       : t / Nb;  // b * Mb + r
        const std::int64_t k = index[t];
        at[r] = geo.dense_unit(br * geo.bs, t - br * Nb, u);
        v[r] = fill;
        if (k >= 0) v[r] = blocks[(k << geo.shift) | u];
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const std::int64_t g = base + r * kThreads + threadIdx.x;
      if (g < total) dense[at[r]] = v[r];
    }
  }
}

// CUDA blocks for `total` units: one step of kChunk units each, capped at what stays
// resident (8 blocks of 256 threads per SM), the kernels grid-stride over the rest.
unsigned grid_for_units(std::int64_t total, int device) {
  const std::int64_t steps = (total + kChunk - 1) / kChunk;
  return static_cast<unsigned>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(steps, std::int64_t(smove::sm_count(device)) * 8)));
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

// The widest of 16, 8, 4, 2, 1 bytes dividing a block row, the dense row pitch and both
// pointers (a null pointer, an empty tensor, is aligned to anything).
int unit_width(std::int64_t row_bytes, std::int64_t pitch_bytes, const void* a, const void* b) {
  for (int w : {16, 8, 4, 2}) {
    const auto ok = [w](const void* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % w == 0; };
    if (row_bytes % w == 0 && pitch_bytes % w == 0 && ok(a) && ok(b)) return w;
  }
  return 1;
}

BlockGeo geometry(const Layout& layout, std::int64_t es, int w) {
  const std::int64_t bs = layout.block_size();
  const int lrow = log2_exact(bs * es / w);
  return BlockGeo{lrow, lrow + log2_exact(bs), bs, layout.cols() * es / w};
}

void to_dense_cuda(const Tensor& blocks, const Layout& layout, const Tensor& fill, Tensor& dense) {
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t tiles = layout.batch() * layout.block_rows() * layout.block_cols();
  const std::int64_t* index = layout.tables(dense.device()).block_index.data<std::int64_t>();
  const int dev = dense.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  void* d = dense.data_ptr();
  const void* s = layout.n_blocks() > 0 ? blocks.data_ptr() : nullptr;
  // Every pointer is aligned to its element size, so w >= es and the fill pattern (one
  // element repeated) fills a unit exactly.
  const int w = unit_width(layout.block_size() * es, layout.cols() * es, d, s);
  const BlockGeo geo = geometry(layout, es, w);
  const std::int64_t total = tiles << geo.shift;
  const bool narrow = tiles < (std::int64_t(1) << 32);
  dispatch_width(w, [&](auto W) {
    using U = Chunk<decltype(W)::value>;
    to_dense_k<U><<<grid_for_units(total, dev), kThreads, 0, st>>>(static_cast<U*>(d), static_cast<const U*>(s), index,
                                                                   geo, layout.block_cols(), total, narrow,
                                                                   fill_pattern<U>(fill, es));
    TG_CUDA_CHECK_LAST();
  });
}

void to_sparse_cuda(const Tensor& dense, const Layout& layout, Tensor& blocks) {
  const std::int64_t n = layout.n_blocks();
  if (n == 0) return;
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t* coords = layout.tables(dense.device()).block_coords.data<std::int64_t>();
  const int dev = dense.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const int w = unit_width(layout.block_size() * es, layout.cols() * es, dense.data_ptr(), blocks.data_ptr());
  const BlockGeo geo = geometry(layout, es, w);
  const std::int64_t total = n << geo.shift;
  dispatch_width(w, [&](auto W) {
    using U = Chunk<decltype(W)::value>;
    to_blocks_k<U><<<grid_for_units(total, dev), kThreads, 0, st>>>(static_cast<const U*>(dense.data_ptr()),
                                                                    static_cast<U*>(blocks.data_ptr()), coords, geo,
                                                                    layout.rows(), total);
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CUDA, &to_sparse_cuda);
TG_REGISTER_KERNEL(to_dense_kernel, CUDA, &to_dense_cuda);

}  // namespace tg::ops
