// Fully connected layer: y = x Wᵀ + b.
#pragma once

#include "core/block_sparse.h"
#include "nn/module.h"

namespace tg::nn {

class Linear : public Module {
 public:
  /// W [out, in] and b [out] initialised U(-1/√in, 1/√in) like PyTorch (Philox with `seed`).
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, TensorOptions opts = {},
         std::uint64_t seed = 0);
  /// x [..., in] -> [..., out]. Throws ShapeError when the last extent is not in_features.
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  /// Block-sparse x [B, M, in]: only rows with an active block compute; the output has the
  /// row-striped layout of those rows (out_features must be divisible by the block size).
  BlockSparseTensor forward(const BlockSparseTensor& x) const;
  BlockSparseTensor operator()(const BlockSparseTensor& x) const { return forward(x); }
  Tensor weight, bias;
  std::int64_t in_features, out_features;
};

}  // namespace tg::nn
