// RMS normalisation over the last dim (LLaMA-style transformers): layer_norm without the
// mean subtraction and the shift, run by the layer_norm kernels in their RMS mode
// (statistics in f32 for bf16/f16 storage, f64 for f64; deterministic parameter gradients).
#pragma once

#include "core/block_sparse.h"
#include "core/tensor.h"

namespace tg {

/// y = x / sqrt(mean(x^2 over the last dim D) + eps) * gamma for x [..., D] (any rank >= 1,
/// any number of leading rows, including 0); gamma is [D] of x's dtype and device, or
/// undefined (scale 1). Floating dtypes (f32, f64, bf16, f16). Differentiable in x and gamma.
/// Errors: ShapeError (x 0-d, D == 0, gamma not [D]), DTypeError (non-floating x, gamma of
/// another dtype), DeviceError (gamma on another device), ValueError (x undefined, eps not
/// finite or not > 0).
Tensor rms_norm(const Tensor& x, const Tensor& gamma, double eps = 1e-6);

/// rms_norm over the last logical dim of a block-sparse x whose layout is row-striped
/// (each block-row empty or full; LayoutError otherwise); gamma [N] optional. The result
/// has x's layout. Differentiable in x and gamma.
BlockSparseTensor rms_norm(const BlockSparseTensor& x, const Tensor& gamma, double eps = 1e-6);

}  // namespace tg
