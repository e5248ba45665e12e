// Kernel slots of the softmax family. Every kernel receives validated, allocated tensors
// with numel > 0, viewed as [numel / cols, cols] rows (cols > 0).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// y = softmax(scale * x) (log = false) or log_softmax(scale * x) (log = true) per row.
/// A row that is all -inf after scaling gives zeros (log: -inf); a nan makes its row nan.
using SoftmaxFwdFn = void(const Tensor& x, std::int64_t cols, double scale, bool log, const Tensor& y);
TG_DECLARE_KERNEL(softmax_fwd_kernel, SoftmaxFwdFn);

/// dx from the forward output y and its gradient dy, per row:
///   softmax:     dx = scale * y * (dy - sum(dy * y))
///   log_softmax: dx = scale * (dy - exp(y) * sum(dy))
using SoftmaxBwdFn = void(const Tensor& y, const Tensor& dy, std::int64_t cols, double scale, bool log,
                          const Tensor& dx);
TG_DECLARE_KERNEL(softmax_bwd_kernel, SoftmaxBwdFn);

}  // namespace tg::ops
