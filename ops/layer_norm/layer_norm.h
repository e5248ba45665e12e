// Layer normalisation over the last dim. Floating dtypes; statistics in f32 (f64 for f64)
// whatever the storage dtype: two passes over the row held in registers for rows of up to
// 1024 elements on CUDA (and on the CPU), Welford's algorithm for longer rows on CUDA.
// Differentiable in x, gamma and beta (fused backward kernels; the column sums for gamma
// and beta are deterministic).
#pragma once

#include "core/tensor.h"

namespace tg {

/// y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dim D of x [..., D]
/// (biased variance, as in PyTorch); gamma and beta are [D] (either may be undefined:
/// scale 1 / shift 0) of x's dtype and device. Any number of leading rows, including 0.
/// Errors: ShapeError (x 0-d, D == 0, gamma/beta not [D]), DTypeError (non-floating x,
/// gamma/beta of another dtype), DeviceError (gamma/beta on another device), ValueError
/// (eps negative or not finite; x undefined).
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

}  // namespace tg
