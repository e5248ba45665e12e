// layer_norm: validation, output allocation, dispatch, autograd recording.
#include "ops/layer_norm/layer_norm.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/factory/factory.h"
#include "ops/layer_norm/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(layer_norm_fwd_kernel, LayerNormFwdFn)
TG_DEFINE_KERNEL(layer_norm_bwd_kernel, LayerNormBwdFn)
}  // namespace ops

namespace {

constexpr const char* kOp = "layer_norm";

void check_param(const Tensor& x, std::int64_t D, const char* name, const Tensor& p) {
  if (!p.defined()) return;  // optional: scale 1 / shift 0
  ops::check_same_dtype(kOp, "x", x, name, p);
  ops::check_same_device(kOp, "x", x, name, p);
  TG_CHECK(p.dim() == 1 && p.size(0) == D, ShapeError, kOp, ": ", name, " must have shape [", D,
           "] (the last extent of x, whose shape is ", x.shape(), "), got ", p.shape());
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  ops::check_floating(kOp, "x", x);
  TG_CHECK(x.dim() >= 1, ShapeError, kOp, ": x must have at least 1 dim (it is normalised over the last), got a 0-d tensor");
  const std::int64_t D = x.size(-1);
  TG_CHECK(D > 0, ShapeError, kOp, ": the last extent of x (the normalised dim) must be positive, got shape ",
           x.shape());
  check_param(x, D, "gamma", gamma);
  check_param(x, D, "beta", beta);
  TG_CHECK(std::isfinite(eps) && eps >= 0.0, ValueError, kOp, ": eps must be finite and >= 0, got ", eps);

  const std::int64_t rows = x.numel() / D;
  const DType stat_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor y = ops::empty_like(x);
  Tensor mean = ops::empty_like(x, Shape{rows}, stat_dtype);
  Tensor rstd = ops::empty_like(x, Shape{rows}, stat_dtype);
  if (rows > 0) ops::layer_norm_fwd_kernel()(x.device())(x, gamma, beta, rows, D, eps, y, mean, rstd);

  if (autograd::needs_grad({x, gamma, beta})) {
    const bool want_x = x.requires_grad();
    const bool want_g = gamma.defined() && gamma.requires_grad();
    const bool want_b = beta.defined() && beta.requires_grad();
    autograd::record(
        kOp, {x, gamma, beta}, {y},
        [xd = x.detach(), gd = gamma.defined() ? gamma.detach() : Tensor(), mean, rstd, rows, D, want_x, want_g,
         want_b](const std::vector<Tensor>& g) {
          Tensor dx = want_x ? ops::empty_like(xd) : Tensor();
          Tensor dgamma = want_g ? ops::empty_like(xd, Shape{D}, xd.dtype()) : Tensor();
          Tensor dbeta = want_b ? ops::empty_like(xd, Shape{D}, xd.dtype()) : Tensor();
          if (rows > 0) {
            ops::layer_norm_bwd_kernel()(xd.device())(g[0], xd, gd, mean, rstd, rows, D, dx, dgamma, dbeta);
          } else {
            // An empty batch contributes nothing to the parameters' gradients.
            if (want_g) dgamma = zeros({D}, {.dtype = xd.dtype(), .device = xd.device()});
            if (want_b) dbeta = zeros({D}, {.dtype = xd.dtype(), .device = xd.device()});
          }
          return std::vector<Tensor>{dx, dgamma, dbeta};
        });
  }
  return y;
}

}  // namespace tg
