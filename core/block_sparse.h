// BlockSparseTensor: the active blocks of a [B, M, N] matrix batch plus their Layout.
#pragma once

#include <iosfwd>

#include "core/layout.h"
#include "core/tensor.h"

namespace tg {

/// `data` [n_blocks, bs, bs] holds the active blocks in row-major order of
/// (batch, block-row, block-col); `layout` says which they are. Copies are cheap handles.
class BlockSparseTensor {
 public:
  BlockSparseTensor() = default;
  /// Pairs data with a layout; throws LayoutError when data is not [layout.n_blocks(), bs, bs].
  BlockSparseTensor(Tensor data, Layout layout);

  const Tensor& data() const { return data_; }
  const Layout& layout() const { return layout_; }
  bool defined() const { return data_.defined(); }
  /// The logical dense shape [B, M, N].
  Shape shape() const { return {layout_.batch(), layout_.rows(), layout_.cols()}; }
  DType dtype() const { return data_.dtype(); }
  Device device() const { return data_.device(); }
  std::int64_t block_size() const { return layout_.block_size(); }
  bool requires_grad() const { return data_.requires_grad(); }
  BlockSparseTensor& requires_grad_(bool on = true) {
    data_.requires_grad_(on);
    return *this;
  }
  /// Gradient of the block data, as a block-sparse tensor with the same layout.
  BlockSparseTensor grad() const;

 private:
  Tensor data_;
  Layout layout_;
};

/// Validates that `x` is a well-formed block-sparse tensor for `op` (argument `arg`).
void check_block_sparse(const char* op, const char* arg, const BlockSparseTensor& x);

/// Prints the layout picture and the block data summary.
std::ostream& operator<<(std::ostream& os, const BlockSparseTensor& x);

}  // namespace tg
