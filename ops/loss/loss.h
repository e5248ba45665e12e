// Losses on dense tensors.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg {

/// Mean cross-entropy of `logits` [N, C] (floating) against class indices `target` [N]
/// (i64 or i32) over the rows whose target != ignore_index; 0 when every row is ignored.
/// Targets outside [0, C) (other than ignore_index) throw tg::ValueError (checked on the
/// host before the kernel). Differentiable w.r.t. logits; returns a 0-d tensor of
/// logits' dtype.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, std::int64_t ignore_index = -100);

/// Mean squared error between a and b (same shape). Differentiable in both.
Tensor mse_loss(const Tensor& a, const Tensor& b);

}  // namespace tg
