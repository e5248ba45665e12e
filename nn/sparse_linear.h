// A fully connected layer with a block-sparse weight: the layer of sparse MLPs.
#pragma once

#include <cstdint>
#include <string>

#include "core/block_sparse.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace tg::nn {

/// y = x Wᵀ + b where W [out, in] is block-sparse with a fixed layout [1, out/bs, in/bs]:
/// only the active blocks are stored (parameter `weight` [n_blocks, bs, bs], the block data
/// of W in the layout's order) and multiplied, by one block-sparse product (dense x times
/// the stored W read transposed, no copy of W). The layout is kept in the buffer `layout`
/// (bool [1, out/bs, in/bs]) so that a checkpoint restores the layout it was saved with.
class BlockSparseLinear : public Module {
 public:
  /// W's layout [1, out/bs, in/bs] (out_features = its rows, in_features = its columns).
  /// Each active block of block-row r is drawn U(-1/√f, 1/√f) with f the row's fan-in (its
  /// active blocks × bs), as nn::Linear does with the dense fan-in, so a sparse layer starts
  /// at the activation scale of a dense one; the bias likewise (1/√in for rows without
  /// blocks). Philox with `seed`. Errors: LayoutError (undefined layout, batch ≠ 1).
  explicit BlockSparseLinear(const Layout& layout, bool bias = true, TensorOptions opts = {}, std::uint64_t seed = 0);

  /// The active blocks of a dense layer's weight under `layout` (and its bias): one-shot
  /// pruning of a trained layer, e.g. with magnitude_layout(weight as [1, out, in], bs, d).
  /// The new layer has the dense layer's dtype and device. Errors: ShapeError (layout's
  /// extents not the layer's [out, in]), those of the constructor.
  static std::shared_ptr<BlockSparseLinear> from_dense(const Linear& dense, const Layout& layout);

  /// x [..., in] -> [..., out] (f32 / bf16 / f16 / f64, the weight's dtype and device).
  /// The flattened rows are padded to a multiple of the block size when needed. Output
  /// features of block-rows without active blocks are the bias alone. Errors: ShapeError
  /// (last extent ≠ in_features), DTypeError, DeviceError, LayoutError (on CUDA: block
  /// size < 16, see tg::matmul).
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  /// W as a block-sparse [1, out, in] tensor (shares the parameter's storage and autograd).
  BlockSparseTensor weight_sparse() const { return BlockSparseTensor(weight, layout_); }
  const Layout& layout() const { return layout_; }
  /// Re-reads the layout from the buffer after nn::load (a checkpoint of another layout
  /// with the same block count loads; another count fails earlier on `weight`'s shape).
  void on_loaded() override;

  Tensor weight, bias;
  std::int64_t in_features, out_features;

 protected:
  std::string extra_info() const override;

 private:
  Layout layout_;
  Tensor layout_buffer_;
};

}  // namespace tg::nn
