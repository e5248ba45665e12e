#include <cstdint>
#include <cstring>

#include "ops/sparse_convert/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

// Units a thread moves per round: all its loads are issued before its stores, so that
// kUnroll loads are in flight per thread (the compiler cannot reorder a load past a store
// through char pointers that may alias). At 16 KiB tiles and 256 threads, one round.
constexpr int kUnroll = 4;

// One CUDA block per tile (grid-stride over tiles); threads move VEC-byte units of the
// tile's rows, so a 64x64 f32 tile is 1024 16-byte moves, coalesced along each row.
template <typename Vec, bool ToBlocks>
__global__ void move_blocks_kernel(char* dense, char* blocks, const std::int64_t* coords, std::int64_t n,
                                   std::int64_t bs, std::int64_t M, std::int64_t N, std::int64_t es) {
  const std::int64_t units_per_row = bs * es / static_cast<std::int64_t>(sizeof(Vec));
  const std::int64_t units = bs * units_per_row;
  const std::int64_t step = blockDim.x;
  for (std::int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    char* tile = dense + ((b * M + r * bs) * N + c * bs) * es;
    char* block = blocks + k * bs * bs * es;
    for (std::int64_t u0 = threadIdx.x; u0 < units; u0 += kUnroll * step) {
      Vec v[kUnroll];
#pragma unroll
      for (int m = 0; m < kUnroll; ++m) {
        const std::int64_t u = u0 + m * step;
        if (u >= units) break;
        const std::int64_t i = u / units_per_row, j = u % units_per_row;
        v[m] = ToBlocks ? reinterpret_cast<const Vec*>(tile + i * N * es)[j] : reinterpret_cast<const Vec*>(block)[u];
      }
#pragma unroll
      for (int m = 0; m < kUnroll; ++m) {
        const std::int64_t u = u0 + m * step;
        if (u >= units) break;
        const std::int64_t i = u / units_per_row, j = u % units_per_row;
        if (ToBlocks) reinterpret_cast<Vec*>(block)[u] = v[m];
        else reinterpret_cast<Vec*>(tile + i * N * es)[j] = v[m];
      }
    }
  }
}

// One CUDA block per dense tile (b, r, c), grid-stride: copies the tile's block when the
// layout has it, else writes the fill pattern, so each output byte is written once.
template <typename Vec>
__global__ void to_dense_tiles_kernel(char* dense, const char* blocks, const std::int64_t* index, std::int64_t tiles,
                                      std::int64_t Mb, std::int64_t Nb, std::int64_t bs, std::int64_t es, Vec fill) {
  const std::int64_t units_per_row = bs * es / static_cast<std::int64_t>(sizeof(Vec));
  const std::int64_t units = bs * units_per_row;
  const std::int64_t N = Nb * bs;
  const std::int64_t step = blockDim.x;
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t k = index[t];
    const std::int64_t c = t % Nb, br = t / Nb;  // br = b * Mb + r
    char* tile = dense + (br * bs * N + c * bs) * es;
    const Vec* block = k >= 0 ? reinterpret_cast<const Vec*>(blocks + k * bs * bs * es) : nullptr;
    for (std::int64_t u0 = threadIdx.x; u0 < units; u0 += kUnroll * step) {
      Vec v[kUnroll];
#pragma unroll
      for (int m = 0; m < kUnroll; ++m) {
        const std::int64_t u = u0 + m * step;
        if (u >= units) break;
        v[m] = k >= 0 ? block[u] : fill;
      }
#pragma unroll
      for (int m = 0; m < kUnroll; ++m) {
        const std::int64_t u = u0 + m * step;
        if (u >= units) break;
        const std::int64_t i = u / units_per_row, j = u % units_per_row;
        reinterpret_cast<Vec*>(tile + i * N * es)[j] = v[m];
      }
    }
  }
}

// The fill element's bytes repeated over a Vec (es divides sizeof(Vec) here).
template <typename Vec>
Vec fill_pattern(const Tensor& fill, std::int64_t es) {
  Vec v;
  char* p = reinterpret_cast<char*>(&v);
  for (std::size_t o = 0; o < sizeof(Vec); o += static_cast<std::size_t>(es)) {
    std::memcpy(p + o, fill.data_ptr(), static_cast<std::size_t>(es));
  }
  return v;
}

void to_dense_cuda(const Tensor& blocks, const Layout& layout, const Tensor& fill, Tensor& dense) {
  const std::int64_t bs = layout.block_size(), es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t Mb = layout.block_rows(), Nb = layout.block_cols();
  const std::int64_t tiles = layout.batch() * Mb * Nb;
  const std::int64_t row_bytes = bs * es;
  const std::int64_t* index = layout.tables(dense.device()).block_index.data<std::int64_t>();
  cudaStream_t st = tg::cuda::current_cuda_stream(dense.device().index);
  char* d = static_cast<char*>(dense.data_ptr());
  const char* s = static_cast<const char*>(blocks.data_ptr());
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(tiles, 65535 * 16));
  auto aligned = [&](std::int64_t w) {
    return row_bytes % w == 0 && reinterpret_cast<std::uintptr_t>(d) % w == 0 &&
           (s == nullptr || reinterpret_cast<std::uintptr_t>(s) % w == 0);
  };
  const std::int64_t units = bs * bs * es;
  const unsigned threads = static_cast<unsigned>(std::min<std::int64_t>(256, std::max<std::int64_t>(32, units / 16)));
  // The widest unit that is aligned and holds whole elements (the fill pattern repeats
  // one element). Every pointer is aligned to its element size, so w = es always fits.
  if (aligned(16) && es <= 16) {
    to_dense_tiles_kernel<int4><<<grid, threads, 0, st>>>(d, s, index, tiles, Mb, Nb, bs, es, fill_pattern<int4>(fill, es));
  } else if (aligned(8) && es <= 8) {
    to_dense_tiles_kernel<int2><<<grid, threads, 0, st>>>(d, s, index, tiles, Mb, Nb, bs, es, fill_pattern<int2>(fill, es));
  } else if (aligned(4) && es <= 4) {
    to_dense_tiles_kernel<int><<<grid, threads, 0, st>>>(d, s, index, tiles, Mb, Nb, bs, es, fill_pattern<int>(fill, es));
  } else if (aligned(2) && es <= 2) {
    to_dense_tiles_kernel<short><<<grid, threads, 0, st>>>(d, s, index, tiles, Mb, Nb, bs, es, fill_pattern<short>(fill, es));
  } else {
    TG_CHECK(es == 1, ValueError, "to_dense: block data is not aligned to its ", es, "-byte elements");
    to_dense_tiles_kernel<char><<<grid, threads, 0, st>>>(d, s, index, tiles, Mb, Nb, bs, es, fill_pattern<char>(fill, es));
  }
  TG_CUDA_CHECK_LAST();
}

template <bool ToBlocks>
void launch(const Tensor& dense, const Layout& layout, const Tensor& blocks) {
  const std::int64_t n = layout.n_blocks();
  if (n == 0) return;
  const std::int64_t bs = layout.block_size(), es = static_cast<std::int64_t>(dtype_size(dense.dtype()));
  const std::int64_t row_bytes = bs * es;
  const std::int64_t* coords = layout.tables(dense.device()).block_coords.data<std::int64_t>();
  cudaStream_t st = tg::cuda::current_cuda_stream(dense.device().index);
  char* d = static_cast<char*>(dense.data_ptr());
  char* s = static_cast<char*>(blocks.data_ptr());
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(n, 65535 * 16));
  // Widest unit dividing a block row (and the row pitch, which is a multiple of it).
  auto aligned = [&](std::int64_t w) {
    return row_bytes % w == 0 && (layout.cols() * es) % w == 0 && reinterpret_cast<std::uintptr_t>(d) % w == 0 &&
           reinterpret_cast<std::uintptr_t>(s) % w == 0;
  };
  const std::int64_t units = bs * bs * es;
  const unsigned threads = static_cast<unsigned>(std::min<std::int64_t>(256, std::max<std::int64_t>(32, units / 16)));
  const std::int64_t M = layout.rows(), N = layout.cols();
  if (aligned(16)) move_blocks_kernel<int4, ToBlocks><<<grid, threads, 0, st>>>(d, s, coords, n, bs, M, N, es);
  else if (aligned(8)) move_blocks_kernel<int2, ToBlocks><<<grid, threads, 0, st>>>(d, s, coords, n, bs, M, N, es);
  else if (aligned(4)) move_blocks_kernel<int, ToBlocks><<<grid, threads, 0, st>>>(d, s, coords, n, bs, M, N, es);
  else if (aligned(2)) move_blocks_kernel<short, ToBlocks><<<grid, threads, 0, st>>>(d, s, coords, n, bs, M, N, es);
  else move_blocks_kernel<char, ToBlocks><<<grid, threads, 0, st>>>(d, s, coords, n, bs, M, N, es);
  TG_CUDA_CHECK_LAST();
}

void to_sparse_cuda(const Tensor& dense, const Layout& layout, Tensor& blocks) { launch<true>(dense, layout, blocks); }

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CUDA, &to_sparse_cuda);
TG_REGISTER_KERNEL(to_dense_kernel, CUDA, &to_dense_cuda);

}  // namespace tg::ops
