// Kernel slots of the loss family. Every kernel receives validated, allocated tensors (the
// targets of cross_entropy are checked by the forward kernel itself, see below).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"
#include "ops/index_check/kernels.h"

namespace tg::ops {

/// Cross-entropy forward. logits [N, C] floating, target [N] i64 or i32. Writes count
/// (i64 [1], logits' device) = the rows whose target is not ignore_index, lse[r] = log Σ_c
/// exp(logits[r, c]) (f32, f64 for f64 logits) and the 0-d out (logits' dtype) =
/// Σ_{counted r} (lse[r] − logits[r, target[r]]) / count, or 0 when count == 0; hands the
/// smallest and largest counted target to `verdict` (lo > hi when none): on the CPU before
/// anything is computed, on CUDA through runtime::defer_check once the kernels have run. A
/// counted target outside [0, C) contributes 0 and is never used as an address.
using CrossEntropyFwdFn = void(const Tensor& logits, const Tensor& target, std::int64_t ignore_index,
                               const Tensor& out, const Tensor& lse, const Tensor& count, const RangeVerdict& verdict);
TG_DECLARE_KERNEL(cross_entropy_fwd_kernel, CrossEntropyFwdFn);

/// Cross-entropy backward (N * C > 0): dlogits[r, c] = (exp(logits[r, c] − lse[r]) −
/// [c == target[r]]) · g / count for counted rows, 0 for ignored rows; g is the 0-d
/// output gradient (logits' dtype, on logits' device), count the forward's (read on the
/// device).
using CrossEntropyBwdFn = void(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad,
                               std::int64_t ignore_index, const Tensor& count, const Tensor& dlogits);
TG_DECLARE_KERNEL(cross_entropy_bwd_kernel, CrossEntropyBwdFn);

/// out (0-d) = Σ (a − b)² / numel (nan for numel 0); a, b of equal shape and dtype.
using MseFwdFn = void(const Tensor& a, const Tensor& b, const Tensor& out);
TG_DECLARE_KERNEL(mse_fwd_kernel, MseFwdFn);

/// da = 2 (a − b) · g / numel, db = −da (numel > 0); g is the 0-d output gradient.
using MseBwdFn = void(const Tensor& a, const Tensor& b, const Tensor& grad, const Tensor& da, const Tensor& db);
TG_DECLARE_KERNEL(mse_bwd_kernel, MseBwdFn);

}  // namespace tg::ops
