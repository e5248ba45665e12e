// Gradients grouped by device and their squared sums (internal to optim/): what gradient
// clipping and GradScaler's inf / NaN check both read, one fused launch per device.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace tg::optim::detail {

/// The defined, non-empty gradients of `params`, grouped by device in first-seen order.
/// Throws DTypeError "<op>: gradients must be floating, got <dtype>".
std::vector<std::vector<Tensor>> grads_by_device(const std::vector<Tensor>& params, const char* op);

/// Σ g² over each group, as an f64 tensor [1] on the group's device (squares summed in f32,
/// f64 for f64 gradients; inf and NaN propagate).
std::vector<Tensor> square_sums(const std::vector<std::vector<Tensor>>& groups);

}  // namespace tg::optim::detail
