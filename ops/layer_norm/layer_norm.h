// Layer normalisation over the last dim. Floating dtypes; statistics in f32 (f64 for f64)
// with Welford's algorithm. Differentiable in x, gamma and beta.
#pragma once

#include "core/tensor.h"

namespace tg {

/// y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim D of x [..., D];
/// gamma and beta are [D] (either may be undefined: scale 1 / shift 0) of x's dtype.
/// Errors: ShapeError (gamma/beta not [D], x 0-d), DTypeError, DeviceError.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

}  // namespace tg
