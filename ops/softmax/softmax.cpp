// Softmax and log_softmax: validation, output allocation, dispatch, autograd recording.
#include "ops/softmax/softmax.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/softmax/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(softmax_fwd_kernel, SoftmaxFwdFn)
TG_DEFINE_KERNEL(softmax_bwd_kernel, SoftmaxBwdFn)
}  // namespace ops

namespace {

std::int64_t row_length(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

void check_scale(const char* op, double scale) {
  TG_CHECK(std::isfinite(scale), ValueError, op, ": scale must be finite, got ", scale);
}

Tensor backward_impl(const char* op, const Tensor& y, const Tensor& dy, double scale, bool log) {
  ops::check_floating(op, "y", y);
  ops::check_floating(op, "dy", dy);
  ops::check_same_dtype(op, "y", y, "dy", dy);
  ops::check_same_device(op, "y", y, "dy", dy);
  TG_CHECK(y.shape() == dy.shape(), ShapeError, op, ": y and dy must have the same shape, got ", y.shape(), " and ",
           dy.shape());
  check_scale(op, scale);
  Tensor dx = ops::empty_like(y);
  if (y.numel() > 0) ops::softmax_bwd_kernel()(y.device())(y, dy, row_length(y), scale, log, dx);
  return dx;
}

Tensor forward_impl(const char* op, const char* bwd_op, const Tensor& x, double scale, bool log) {
  ops::check_floating(op, "x", x);
  check_scale(op, scale);
  Tensor y = ops::empty_like(x);
  if (x.numel() > 0) ops::softmax_fwd_kernel()(x.device())(x, row_length(x), scale, log, y);
  if (autograd::needs_grad({x})) {
    autograd::record(op, {x}, {y}, [bwd_op, yd = y.detach(), scale, log](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{backward_impl(bwd_op, yd, g[0], scale, log)};
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, double scale) { return forward_impl("softmax", "softmax_backward", x, scale, false); }
Tensor log_softmax(const Tensor& x, double scale) {
  return forward_impl("log_softmax", "log_softmax_backward", x, scale, true);
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy, double scale) {
  return backward_impl("softmax_backward", y, dy, scale, false);
}
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy, double scale) {
  return backward_impl("log_softmax_backward", y, dy, scale, true);
}

}  // namespace tg
