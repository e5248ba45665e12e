// Fused optimizer kernels: one call updates (or measures, or scales) every parameter's
// tensor.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/dispatch.h"
#include "runtime/macros.h"

namespace tg::ops {

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  std::int64_t step = 1;  ///< 1-based step for bias correction
  /// Gradients are multiplied by it as they are read, in the f32 (f64) arithmetic: a loss
  /// scale's inverse (optim::GradScaler), applied where a 16-bit gradient divided in place
  /// would underflow.
  double grad_scale = 1.0;
};

/// For each i: params[i] (f32/bf16/f16/f64) -= lr * (m̂ / (√v̂ + eps) + wd * param), with
/// m, v (f32, f64 for f64 params) updated from grads[i] · grad_scale (grads[i] of
/// params[i]'s dtype).
using AdamWFn = void(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& m, const std::vector<Tensor>& v, const AdamWHyper& h);
/// For each i, with g = grads[i] · grad_scale: buf = momentum * buf + (g + wd * p) (buf
/// undefined when momentum == 0); p -= lr * buf (or lr * (g + wd * p) without momentum).
using SgdFn = void(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                   const std::vector<Tensor>& bufs, double lr, double momentum, double weight_decay,
                   double grad_scale);
TG_DECLARE_KERNEL(adamw_kernel, AdamWFn);
TG_DECLARE_KERNEL(sgd_kernel, SgdFn);

/// Adds Σ_i Σ_j grads[i][j]² (f32/bf16/f16/f64, all on out's device; squares summed in f32,
/// f64 for f64 tensors, partial sums added in f64) to out, an f64 tensor of one element.
using GradSquaresFn = void(const std::vector<Tensor>& grads, Tensor& out);
/// The gradient clipping factor for the global sum of squares `sumsq`: max_norm / (norm +
/// 1e-6) when norm = sqrt(sumsq) exceeds max_norm (and is positive), else 1.
TG_HOST_DEVICE inline double clip_factor(double sumsq, double max_norm) {
  const double norm = ::sqrt(sumsq);  // the C function: host and device
  return norm > max_norm && norm > 0 ? max_norm / (norm + 1e-6) : 1.0;
}
/// grads[i] *= clip_factor(sumsq, max_norm) in place for every i (floating dtypes, one
/// device); sumsq is an f64 tensor of one element on that device, read there (the host
/// never waits for it). A factor of 1 writes nothing.
using GradScaleFn = void(const std::vector<Tensor>& grads, const Tensor& sumsq, double max_norm);
TG_DECLARE_KERNEL(grad_squares_kernel, GradSquaresFn);
TG_DECLARE_KERNEL(grad_scale_kernel, GradScaleFn);

}  // namespace tg::ops
