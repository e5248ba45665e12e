// LayerNorm, RMSNorm, Dropout and Embedding modules.
#pragma once

#include <cstdint>

#include "core/block_sparse.h"
#include "nn/module.h"

namespace tg::nn {

class LayerNorm : public Module {
 public:
  /// Normalises over a last dim of size `dim`; gamma = 1, beta = 0 initially.
  explicit LayerNorm(std::int64_t dim, double eps = 1e-5, TensorOptions opts = {});
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  /// Block-sparse input with a row-striped layout (see tg::layer_norm on block-sparse).
  BlockSparseTensor forward(const BlockSparseTensor& x) const;
  BlockSparseTensor operator()(const BlockSparseTensor& x) const { return forward(x); }
  Tensor weight, bias;
  double eps;
};

class RMSNorm : public Module {
 public:
  /// Normalises by the root mean square over a last dim of size `dim` (tg::rms_norm); with
  /// elementwise_affine a parameter "weight" [dim] = 1 scales the result, else none.
  explicit RMSNorm(std::int64_t dim, double eps = 1e-6, bool elementwise_affine = true, TensorOptions opts = {});
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  /// Block-sparse input with a row-striped layout (see tg::rms_norm on block-sparse).
  BlockSparseTensor forward(const BlockSparseTensor& x) const;
  BlockSparseTensor operator()(const BlockSparseTensor& x) const { return forward(x); }
  Tensor weight;  // undefined without elementwise_affine
  double eps;
};

class Dropout : public Module {
 public:
  /// Drops with probability p in training mode; the identity in eval mode. Each call
  /// draws a fresh Philox offset from its own generator seeded with `seed`.
  explicit Dropout(double p, std::uint64_t seed = 0);
  Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }
  /// On the active elements of a block-sparse tensor.
  BlockSparseTensor forward(const BlockSparseTensor& x);
  BlockSparseTensor operator()(const BlockSparseTensor& x) { return forward(x); }
  double p;

 private:
  std::uint64_t seed_, offset_ = 0;
};

class Embedding : public Module {
 public:
  /// A [num, dim] table initialised N(0, 1) (Philox with `seed`).
  Embedding(std::int64_t num, std::int64_t dim, TensorOptions opts = {}, std::uint64_t seed = 0);
  Tensor forward(const Tensor& indices) const;
  Tensor operator()(const Tensor& indices) const { return forward(indices); }
  Tensor weight;
};

}  // namespace tg::nn
