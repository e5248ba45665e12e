// Embedding lookup.
#pragma once

#include "core/tensor.h"

namespace tg {

/// Rows of `weight` [V, D] selected by `indices` (i32 or i64, any shape S): result [S..., D].
/// Indices outside [0, V) throw tg::ValueError (checked before the kernel). Differentiable
/// w.r.t. weight (scatter-add of the gradient rows; atomics on CUDA).
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace tg
