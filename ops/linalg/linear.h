// The affine map of a Linear layer as one op, so that backends can fuse the bias into the
// GEMM (forward) and the bias gradient into the weight-gradient GEMM (backward).
#pragma once

#include "core/tensor.h"

namespace tg {

/// y [m, n] = x [m, k] · wᵀ + b, with w stored [n, k] (out_features × in_features, as in
/// nn::Linear) and b [n] (or undefined: no bias). f32, f64, bf16, f16 (16-bit accumulate in
/// f32). On CUDA one cuBLASLt GEMM with the bias in its epilogue (where cuBLASLt has one
/// for the dtype and shape; otherwise matmul then add). Backward: dx = g·w, dw = gᵀ·x and
/// db = column sums of g, the last two in one GEMM on CUDA.
/// Errors: ShapeError (x or w not 2-d, x.size(1) ≠ w.size(1), b not [n]), DTypeError
/// (non-floating or mixed dtypes), DeviceError (mixed devices), ValueError (undefined x, w).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

}  // namespace tg
