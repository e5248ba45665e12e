// Kernel slots of the layer_norm family (layer_norm and rms_norm). Every kernel receives
// validated, allocated, contiguous tensors; x is viewed as [rows, D] with rows > 0 and D > 0.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// y = (x - mean) * rstd * gamma + beta per row. gamma / beta: [D] of x's dtype, or
/// undefined (scale 1 / shift 0). Writes y (x's dtype) and the per-row statistics mean
/// and rstd = 1 / sqrt(var + eps) ([rows], f32; f64 for f64 x) that the backward reuses.
using LayerNormFwdFn = void(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows,
                            std::int64_t D, double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd);
TG_DECLARE_KERNEL(layer_norm_fwd_kernel, LayerNormFwdFn);

/// Gradients of layer_norm from dy ([rows, D], x's dtype) and the saved statistics.
/// Each of dx ([rows, D]), dgamma and dbeta ([D], x's dtype) may be undefined when not
/// wanted; every defined one is fully written. gamma may be undefined (scale 1).
///   xhat = (x - mean) * rstd,  g = dy * gamma
///   dx = rstd * (g - mean_D(g) - xhat * mean_D(g * xhat))
///   dgamma = sum_rows(dy * xhat),  dbeta = sum_rows(dy)
/// The column sums are deterministic (fixed reduction order, no atomics).
using LayerNormBwdFn = void(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                            const Tensor& rstd, std::int64_t rows, std::int64_t D, const Tensor& dx,
                            const Tensor& dgamma, const Tensor& dbeta);
TG_DECLARE_KERNEL(layer_norm_bwd_kernel, LayerNormBwdFn);

/// y = x * rstd * gamma per row with rstd = 1 / sqrt(mean_D(x^2) + eps). gamma: [D] of x's
/// dtype, or undefined (scale 1). Writes y (x's dtype) and rstd ([rows], f32; f64 for f64 x).
using RmsNormFwdFn = void(const Tensor& x, const Tensor& gamma, std::int64_t rows, std::int64_t D, double eps,
                          const Tensor& y, const Tensor& rstd);
TG_DECLARE_KERNEL(rms_norm_fwd_kernel, RmsNormFwdFn);

/// Gradients of rms_norm: layer_norm's with mean = 0 and no beta. dx ([rows, D]) and
/// dgamma ([D]) may each be undefined when not wanted; gamma may be undefined (scale 1).
///   xhat = x * rstd,  g = dy * gamma
///   dx = rstd * (g - xhat * mean_D(g * xhat)),  dgamma = sum_rows(dy * xhat)
/// The column sum is deterministic (fixed reduction order, no atomics).
using RmsNormBwdFn = void(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd,
                          std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma);
TG_DECLARE_KERNEL(rms_norm_bwd_kernel, RmsNormBwdFn);

}  // namespace tg::ops
