#include <cstdint>

#include "ops/sparse_convert/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

// One CUDA block per tile (grid-stride over tiles); threads move VEC-byte units of the
// tile's rows, so a 64x64 f32 tile is 1024 16-byte moves, coalesced along each row.
template <typename Vec, bool ToBlocks>
__global__ void move_blocks_kernel(char* dense, char* blocks, const std::int64_t* coords, std::int64_t n,
                                   std::int64_t bs, std::int64_t M, std::int64_t N, std::int64_t es) {
  const std::int64_t units_per_row = bs * es / static_cast<std::int64_t>(sizeof(Vec));
  const std::int64_t units = bs * units_per_row;
  for (std::int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    for (std::int64_t u = threadIdx.x; u < units; u += blockDim.x) {
      const std::int64_t i = u / units_per_row, j = u % units_per_row;
      Vec* d = reinterpret_cast<Vec*>(dense + ((b * M + r * bs + i) * N + c * bs) * es) + j;
      Vec* s = reinterpret_cast<Vec*>(blocks + (k * bs + i) * bs * es) + j;
      if (ToBlocks) *s = *d;
      else *d = *s;
    }
  }
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
void to_dense_cuda(const Tensor& blocks, const Layout& layout, Tensor& dense) { launch<false>(dense, layout, blocks); }

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CUDA, &to_sparse_cuda);
TG_REGISTER_KERNEL(to_dense_kernel, CUDA, &to_dense_cuda);

}  // namespace tg::ops
