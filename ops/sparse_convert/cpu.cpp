#include <cstring>
#include <vector>

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
// Every tile once: its block, or the fill value repeated.
void to_dense_cpu(const Tensor& blocks, const Layout& layout, const Tensor& fill, Tensor& dense) {
  const std::int64_t bs = layout.block_size(), B = layout.batch(), Mb = layout.block_rows(), Nb = layout.block_cols();
  const std::int64_t N = layout.cols();
  const std::size_t es = dtype_size(dense.dtype()), row_bytes = static_cast<std::size_t>(bs) * es;
  std::vector<char> fill_row(row_bytes);
  for (std::size_t o = 0; o < row_bytes; o += es) std::memcpy(fill_row.data() + o, fill.data_ptr(), es);
  const std::int64_t* index = layout.tables(Device::cpu()).block_index.data<std::int64_t>();
  char* d = static_cast<char*>(dense.data_ptr());
  const char* s = static_cast<const char*>(blocks.data_ptr());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t r = 0; r < Mb; ++r)
      for (std::int64_t c = 0; c < Nb; ++c) {
        const std::int64_t k = index[(b * Mb + r) * Nb + c];
        for (std::int64_t i = 0; i < bs; ++i) {
          char* drow = d + static_cast<std::size_t>(((b * Mb + r) * bs + i) * N + c * bs) * es;
          const char* src = k >= 0 ? s + static_cast<std::size_t>((k * bs + i) * bs) * es : fill_row.data();
          std::memcpy(drow, src, row_bytes);
        }
      }
}

}  // namespace

TG_REGISTER_KERNEL(to_sparse_kernel, CPU, &to_sparse_cpu);
TG_REGISTER_KERNEL(to_dense_kernel, CPU, &to_dense_cpu);

}  // namespace tg::ops
