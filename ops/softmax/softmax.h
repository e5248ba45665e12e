// Softmax over the last dim of a dense tensor. Floating dtypes, f32 math for bf16/f16.
// A row of all -inf gives zeros (not nan); nan propagates. Differentiable.
#pragma once

#include "core/tensor.h"

namespace tg {

/// softmax(scale * x) over the last dim.
Tensor softmax(const Tensor& x, double scale = 1.0);
/// log_softmax(scale * x) over the last dim (-inf for an all -inf row).
Tensor log_softmax(const Tensor& x, double scale = 1.0);

}  // namespace tg
