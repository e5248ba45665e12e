#include "ops/sparse_nn/sparse_nn.h"

#include "ops/dropout/dropout.h"
#include "ops/elementwise/elementwise.h"
#include "ops/layer_norm/layer_norm.h"
#include "ops/linalg/matmul.h"
#include "ops/shape/shape_ops.h"
#include "ops/sparse_convert/sparse_convert.h"

namespace tg {

bool is_row_striped(const Layout& l) {
  const auto& m = l.mask_host();
  const std::int64_t Nb = l.block_cols();
  for (std::int64_t row = 0; row < l.batch() * l.block_rows(); ++row) {
    std::int64_t on = 0;
    for (std::int64_t c = 0; c < Nb; ++c) on += m[static_cast<std::size_t>(row * Nb + c)];
    if (on != 0 && on != Nb) return false;
  }
  return true;
}

Layout row_striped_layout(const Layout& l, std::int64_t Nb) {
  const auto& m = l.mask_host();
  std::vector<bool> out(static_cast<std::size_t>(l.batch() * l.block_rows() * Nb));
  for (std::int64_t row = 0; row < l.batch() * l.block_rows(); ++row) {
    bool any = false;
    for (std::int64_t c = 0; c < l.block_cols(); ++c) any = any || m[static_cast<std::size_t>(row * l.block_cols() + c)];
    for (std::int64_t c = 0; c < Nb; ++c) out[static_cast<std::size_t>(row * Nb + c)] = any;
  }
  return Layout(from_vector(out, {l.batch(), l.block_rows(), Nb}), l.block_size());
}

BlockSparseTensor linear(const BlockSparseTensor& x, const Tensor& weight, const Tensor& bias) {
  check_block_sparse("linear", "x", x);
  if (!weight.defined() || weight.dim() != 2) {
    TG_THROW(ShapeError, "linear: weight must be 2-d [N, K], got ",
             weight.defined() ? weight.shape().str() : std::string("an undefined tensor"));
  }
  const std::int64_t K = x.shape()[2], N = weight.size(0), bs = x.block_size();
  if (weight.size(1) != K) {
    TG_THROW(ShapeError, "linear: weight has K = ", weight.size(1), " (dim 1) but x has K = ", K, " (dim 2)");
  }
  if (N % bs) TG_THROW(ShapeError, "linear: N = ", N, " must be divisible by x's block size ", bs);
  if (bias.defined() && bias.shape() != Shape{N}) {
    TG_THROW(ShapeError, "linear: bias must have shape [", N, "], got ", bias.shape());
  }
  // Inactive rows of x are zeros in the dense view; their outputs are dropped by to_sparse.
  Tensor y = matmul(to_dense(x), weight, false, /*trans_b=*/true);
  if (bias.defined()) y = add(y, bias);
  return to_sparse(y, row_striped_layout(x.layout(), N / bs));
}

BlockSparseTensor layer_norm(const BlockSparseTensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_block_sparse("layer_norm", "x", x);
  if (!is_row_striped(x.layout())) {
    TG_THROW(LayoutError, "layer_norm: x must have a row-striped layout (each block-row empty or full), got ",
             x.layout().n_blocks(), " active blocks of [", x.layout().batch(), ", ", x.layout().block_rows(), ", ",
             x.layout().block_cols(), "] that leave some block-rows partly active");
  }
  return to_sparse(layer_norm(to_dense(x), gamma, beta, eps), x.layout());
}

BlockSparseTensor dropout(const BlockSparseTensor& x, double p, std::uint64_t seed, std::uint64_t offset) {
  check_block_sparse("dropout", "x", x);
  return BlockSparseTensor(dropout(x.data(), p, seed, offset), x.layout());
}

}  // namespace tg
