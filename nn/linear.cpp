#include "nn/linear.h"

#include <cmath>

#include "ops/factory/factory.h"
#include "ops/linalg/linear.h"
#include "ops/shape/shape_ops.h"
#include "ops/sparse_nn/sparse_nn.h"

namespace tg::nn {

Linear::Linear(std::int64_t in, std::int64_t out, bool with_bias, TensorOptions opts, std::uint64_t seed)
    : Module("Linear"), in_features(in), out_features(out) {
  if (in <= 0 || out <= 0) TG_THROW(ShapeError, "Linear: features must be positive, got in=", in, ", out=", out);
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  TensorOptions o{.dtype = opts.dtype, .device = opts.device};
  weight = register_parameter("weight", rand_seeded({out, in}, seed * 2 + 1, o, -bound, bound));
  if (with_bias) bias = register_parameter("bias", rand_seeded({out}, seed * 2 + 2, o, -bound, bound));
}

Tensor Linear::forward(const Tensor& x) const {
  if (!x.defined() || x.dim() < 1 || x.size(-1) != in_features) {
    TG_THROW(ShapeError, "Linear: input must have last extent in_features = ", in_features, ", got shape ",
             x.defined() ? x.shape().str() : std::string("undefined"));
  }
  // Flatten leading dims so one GEMM with the shared weight does the work.
  Shape out_shape = x.shape();
  out_shape.dims().back() = out_features;
  Tensor x2 = reshape(x, {x.numel() / in_features, in_features});
  return reshape(tg::linear(x2, weight, bias), out_shape);
}

BlockSparseTensor Linear::forward(const BlockSparseTensor& x) const { return linear(x, weight, bias); }

}  // namespace tg::nn
