// Softmax over the last dim of a dense tensor. Floating dtypes, f32 math for bf16/f16.
// A row of all -inf gives zeros (not nan); nan propagates. Differentiable.
#pragma once

#include "core/tensor.h"

namespace tg {

/// softmax(scale * x) over the last dim (a 0-d x counts as one row of one element).
/// Output: x's shape, dtype and device. Throws tg::DTypeError for non-floating x.
Tensor softmax(const Tensor& x, double scale = 1.0);
/// log_softmax(scale * x) over the last dim (-inf for an all -inf row).
Tensor log_softmax(const Tensor& x, double scale = 1.0);

/// The input gradient of softmax given its output `y` and output gradient `dy` (same
/// shape, dtype and device): scale * y ⊙ (dy − Σ_row dy ⊙ y). A backward primitive: it
/// records nothing for autograd. Throws tg::ShapeError / DTypeError / DeviceError on
/// mismatched arguments.
Tensor softmax_backward(const Tensor& y, const Tensor& dy, double scale = 1.0);
/// The input gradient of log_softmax given its output `y` and output gradient `dy`:
/// scale * (dy − exp(y) Σ_row dy). Records nothing for autograd.
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy, double scale = 1.0);

}  // namespace tg
