// linear: validation, the fused kernels where the backend has them (else matmul + add),
// autograd.
#include "ops/linalg/linear.h"

#include <atomic>
#include <cstdint>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/common.h"
#include "ops/elementwise/elementwise.h"
#include "ops/linalg/kernels.h"
#include "ops/linalg/matmul.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(linear_fwd_kernel, LinearFwdFn)
TG_DEFINE_KERNEL(linear_wgrad_kernel, LinearWgradFn)

namespace {
std::atomic<std::int64_t> g_fused_fwd{0}, g_fused_wgrad{0};
}  // namespace

std::int64_t linear_fused_forwards() { return g_fused_fwd.load(std::memory_order_relaxed); }
std::int64_t linear_fused_wgrads() { return g_fused_wgrad.load(std::memory_order_relaxed); }
}  // namespace ops

namespace {

void validate(const Tensor& x, const Tensor& w, const Tensor& b) {
  ops::check_defined("linear", "x", x);
  ops::check_defined("linear", "w", w);
  ops::check_floating("linear", "x", x);
  ops::check_same_dtype("linear", "x", x, "w", w);
  ops::check_same_device("linear", "x", x, "w", w);
  if (x.dim() != 2) TG_THROW(ShapeError, "linear: x must be 2-d [m, k], got shape ", x.shape());
  if (w.dim() != 2) TG_THROW(ShapeError, "linear: w must be 2-d [n, k], got shape ", w.shape());
  if (x.size(1) != w.size(1)) {
    TG_THROW(ShapeError, "linear: x's k = ", x.size(1), " (dim 1) differs from w's k = ", w.size(1),
             " (dim 1); x has shape ", x.shape(), ", w ", w.shape());
  }
  if (b.defined()) {
    ops::check_same_dtype("linear", "x", x, "b", b);
    ops::check_same_device("linear", "x", x, "b", b);
    if (b.dim() != 1 || b.size(0) != w.size(0)) {
      TG_THROW(ShapeError, "linear: b must have shape [", w.size(0), "] (w's n), got ", b.shape());
    }
  }
}

// x·wᵀ + b without recording: the fused kernel, else the composition.
Tensor forward_values(const Tensor& x, const Tensor& w, const Tensor& b) {
  NoGradGuard ng;
  if (b.defined() && x.numel() > 0 && w.numel() > 0) {
    Tensor out = ops::empty_like(x, {x.size(0), w.size(0)}, x.dtype());
    if (ops::linear_fwd_kernel()(x.device())(x, w, b, out)) {
      ops::g_fused_fwd.fetch_add(1, std::memory_order_relaxed);
      return out;
    }
  }
  Tensor y = matmul(x, w, false, /*trans_b=*/true);
  return b.defined() ? add(y, b) : y;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  validate(x, w, b);
  Tensor out = forward_values(x, w, b);
  std::vector<Tensor> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  if (autograd::needs_grad(inputs)) {
    autograd::record("linear", inputs, {out},
                     [xd = x.detach(), wd = w.detach(), has_b = b.defined(), need_x = x.requires_grad(),
                      need_w = w.requires_grad(), need_b = b.defined() && b.requires_grad()](
                         const std::vector<Tensor>& g) {
                       const Tensor& gy = g[0];
                       Tensor dx, dw, db;
                       if (need_x) dx = matmul(gy, wd);
                       bool fused = false;
                       if (need_w && need_b && !grad_enabled() && gy.numel() > 0 && xd.numel() > 0) {
                         dw = ops::empty_like(wd);
                         db = ops::empty_like(wd, {wd.size(0)}, wd.dtype());
                         fused = ops::linear_wgrad_kernel()(gy.device())(gy, xd, dw, db);
                         if (fused) ops::g_fused_wgrad.fetch_add(1, std::memory_order_relaxed);
                       }
                       if (!fused) {
                         if (need_w) dw = matmul(gy, xd, /*trans_a=*/true);
                         if (need_b) db = sum_to(gy, Shape{gy.size(1)});
                       }
                       std::vector<Tensor> grads{dx, dw};
                       if (has_b) grads.push_back(db);
                       return grads;
                     });
  }
  return out;
}

}  // namespace tg
