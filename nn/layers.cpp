// LayerNorm, RMSNorm, Dropout and Embedding modules: thin wrappers over the ops of the same
// names that own their parameters (and, for Dropout, the Philox offset of the next call).
#include "nn/layers.h"

#include <cmath>

#include "ops/dropout/dropout.h"
#include "ops/embedding/embedding.h"
#include "ops/factory/factory.h"
#include "ops/layer_norm/layer_norm.h"
#include "ops/layer_norm/rms_norm.h"
#include "ops/sparse_nn/sparse_nn.h"
#include "runtime/rng_replay.h"

namespace tg::nn {

LayerNorm::LayerNorm(std::int64_t dim, double eps_, TensorOptions opts) : Module("LayerNorm"), eps(eps_) {
  TG_CHECK(dim > 0, ShapeError, "LayerNorm: dim must be positive, got ", dim);
  TG_CHECK(std::isfinite(eps_) && eps_ >= 0.0, ValueError, "LayerNorm: eps must be finite and >= 0, got ", eps_);
  TensorOptions o{.dtype = opts.dtype, .device = opts.device};
  weight = register_parameter("weight", ones({dim}, o));
  bias = register_parameter("bias", zeros({dim}, o));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

BlockSparseTensor LayerNorm::forward(const BlockSparseTensor& x) const { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(std::int64_t dim, double eps_, bool elementwise_affine, TensorOptions opts)
    : Module("RMSNorm"), eps(eps_) {
  TG_CHECK(dim > 0, ShapeError, "RMSNorm: dim must be positive, got ", dim);
  TG_CHECK(std::isfinite(eps_) && eps_ > 0.0, ValueError, "RMSNorm: eps must be finite and > 0, got ", eps_);
  TensorOptions o{.dtype = opts.dtype, .device = opts.device};
  if (elementwise_affine) weight = register_parameter("weight", ones({dim}, o));
}

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight, eps); }

BlockSparseTensor RMSNorm::forward(const BlockSparseTensor& x) const { return rms_norm(x, weight, eps); }

Dropout::Dropout(double p_, std::uint64_t seed) : Module("Dropout"), p(p_), seed_(seed) {
  TG_CHECK(p_ >= 0.0 && p_ < 1.0, ValueError, "Dropout: p must be in [0, 1), got ", p_);
}

Tensor Dropout::forward(const Tensor& x) {
  if (!is_training() || p == 0.0) return x;
  // A fresh offset per call: successive calls draw independent masks from the same seed.
  return dropout(x, p, seed_, next_rng_offset(offset_));
}

BlockSparseTensor Dropout::forward(const BlockSparseTensor& x) {
  if (!is_training() || p == 0.0) return x;
  return dropout(x, p, seed_, next_rng_offset(offset_));
}

Embedding::Embedding(std::int64_t num, std::int64_t dim, TensorOptions opts, std::uint64_t seed) : Module("Embedding") {
  TG_CHECK(num > 0 && dim > 0, ShapeError, "Embedding: num and dim must be positive, got num=", num, ", dim=", dim);
  TensorOptions o{.dtype = opts.dtype, .device = opts.device};
  weight = register_parameter("weight", randn_seeded({num, dim}, seed, o));
}

Tensor Embedding::forward(const Tensor& indices) const { return embedding(weight, indices); }

}  // namespace tg::nn
