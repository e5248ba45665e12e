#include <cstring>

#include "ops/sparse_convert/kernels.h"

namespace tg::ops {
namespace {

// Copies each active block row by row; `to_blocks` picks the direction.
void move_blocks(const Tensor& dense, const Layout& layout, const Tensor& blocks, bool to_blocks) {
  const std::int64_t bs = layout.block_size(), M = layout.rows(), N = layout.cols();
  const std::size_t es = dtype_size(dense.dtype()), row_bytes = static_cast<std::size_t>(bs) * es;
  const std::int64_t* coords = layout.tables(Device::cpu()).block_coords.data<std::int64_t>();
  char* d = static_cast<char*>(dense.data_ptr());
  char* s = static_cast<char*>(blocks.data_ptr());
  for (std::int64_t k = 0; k < layout.n_blocks(); ++k) {
    std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    for (std::int64_t i = 0; i < bs; ++i) {
      char* drow = d + static_cast<std::size_t>((b * M + r * bs + i) * N + c * bs) * es;
      char* srow = s + static_cast<std::size_t>((k * bs + i) * bs) * es;
      if (to_blocks) std::memcpy(srow, drow, row_bytes);
      else std::memcpy(drow, srow, row_bytes);
    }
  }
}

void to_sparse_cpu(const Tensor& dense, const Layout& layout, Tensor& blocks) { move_blocks(dense, layout, blocks, true); }
void to_dense_cpu(const Tensor& blocks, const Layout& layout, Tensor& dense) { move_blocks(dense, layout, blocks, false); }

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CPU, &to_sparse_cpu);
TG_REGISTER_KERNEL(to_dense_kernel, CPU, &to_dense_cpu);

}  // namespace tg::ops
