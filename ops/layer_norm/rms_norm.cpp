// rms_norm: validation, output allocation, dispatch, autograd recording; the block-sparse
// overload for row-striped layouts.
#include "ops/layer_norm/rms_norm.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/factory/factory.h"
#include "ops/layer_norm/kernels.h"
#include "ops/sparse_convert/sparse_convert.h"
#include "ops/sparse_nn/sparse_nn.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(rms_norm_fwd_kernel, RmsNormFwdFn)
TG_DEFINE_KERNEL(rms_norm_bwd_kernel, RmsNormBwdFn)
}  // namespace ops

namespace {
constexpr const char* kOp = "rms_norm";
}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& gamma, double eps) {
  ops::check_floating(kOp, "x", x);
  TG_CHECK(x.dim() >= 1, ShapeError, kOp,
           ": x must have at least 1 dim (it is normalised over the last), got a 0-d tensor");
  const std::int64_t D = x.size(-1);
  TG_CHECK(D > 0, ShapeError, kOp, ": the last extent of x (the normalised dim) must be positive, got shape ",
           x.shape());
  if (gamma.defined()) {
    ops::check_same_dtype(kOp, "x", x, "gamma", gamma);
    ops::check_same_device(kOp, "x", x, "gamma", gamma);
    TG_CHECK(gamma.dim() == 1 && gamma.size(0) == D, ShapeError, kOp, ": gamma must have shape [", D,
             "] (the last extent of x, whose shape is ", x.shape(), "), got ", gamma.shape());
  }
  // eps = 0 would turn an all-zero row (padding) into 0 * inf = nan.
  TG_CHECK(std::isfinite(eps) && eps > 0.0, ValueError, kOp, ": eps must be finite and > 0, got ", eps);

  const std::int64_t rows = x.numel() / D;
  const DType stat_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor y = ops::empty_like(x);
  Tensor rstd = ops::empty_like(x, Shape{rows}, stat_dtype);
  if (rows > 0) ops::rms_norm_fwd_kernel()(x.device())(x, gamma, rows, D, eps, y, rstd);

  if (autograd::needs_grad({x, gamma})) {
    const bool want_x = x.requires_grad();
    const bool want_g = gamma.defined() && gamma.requires_grad();
    autograd::record(kOp, {x, gamma}, {y},
                     [xd = x.detach(), gd = gamma.defined() ? gamma.detach() : Tensor(), rstd, rows, D, want_x,
                      want_g](const std::vector<Tensor>& g) {
                       Tensor dx = want_x ? ops::empty_like(xd) : Tensor();
                       Tensor dgamma = want_g ? ops::empty_like(xd, Shape{D}, xd.dtype()) : Tensor();
                       if (rows > 0) {
                         ops::rms_norm_bwd_kernel()(xd.device())(g[0], xd, gd, rstd, rows, D, dx, dgamma);
                       } else if (want_g) {
                         // An empty batch contributes nothing to gamma's gradient.
                         dgamma = zeros({D}, {.dtype = xd.dtype(), .device = xd.device()});
                       }
                       return std::vector<Tensor>{dx, dgamma};
                     });
  }
  return y;
}

BlockSparseTensor rms_norm(const BlockSparseTensor& x, const Tensor& gamma, double eps) {
  check_block_sparse(kOp, "x", x);
  const Layout& l = x.layout();
  TG_CHECK(is_row_striped(l), LayoutError, kOp,
           ": x must have a row-striped layout (each block-row empty or full), got ", l.n_blocks(),
           " active blocks of [", l.batch(), ", ", l.block_rows(), ", ", l.block_cols(),
           "] that leave some block-rows partly active");
  // Inactive rows are zeros in the dense form; eps > 0 keeps them finite, and to_sparse
  // drops them again.
  return to_sparse(rms_norm(to_dense(x), gamma, eps), l);
}

}  // namespace tg
