// Embedding lookup.
#pragma once

#include "core/tensor.h"

namespace tg {

/// Rows of `weight` [V, D] selected by `indices` (i32 or i64, any shape S, on weight's
/// device): result [S..., D] of weight's dtype. Indices are copied to the host and
/// checked before any kernel runs: a value outside [0, V) throws tg::ValueError naming the
/// op, the position in `indices`, the value and V. Differentiable w.r.t. weight: the
/// gradient is a zero [V, D] tensor with the gradient rows scatter-added (repeated indices
/// sum; f32 accumulation for bf16/f16; atomics on CUDA, so sums of many rows may differ in
/// the last bits from run to run). Errors: DTypeError (non-floating weight, non-integer
/// indices), ShapeError (weight not 2-d), DeviceError (different devices), ValueError.
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace tg
