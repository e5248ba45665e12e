// Flattening n-d tensors to the [B, M, N] matrix batches of the block-sparse ops
// (OPS.md "Conventions"): all leading dims merge into the batch dim and come back after.
#pragma once

#include <utility>

#include "core/tensor.h"

namespace tg {

/// x [d0, ..., dk, M, N] (at least 2-d) as x3 [d0 * ... * dk, M, N], sharing x's storage,
/// plus x's shape to undo it: `auto [x3, shape] = flatten_to_3d(x);`. A 3-d x comes back
/// as itself, a 2-d [M, N] as [1, M, N]. Differentiable (a reshape).
/// Errors: ValueError (undefined x), ShapeError (fewer than 2 dims).
std::pair<Tensor, Shape> flatten_to_3d(const Tensor& x);

/// The inverse of flatten_to_3d: x3 [B, M', N'] back to [d0, ..., dk, M', N'] where
/// d0 ... dk are the leading dims of `original_shape` (B must be their product; M' and N'
/// may differ from the original M and N, e.g. after a matmul). Shares storage;
/// differentiable. Errors: ValueError (undefined x3), ShapeError (x3 not 3-d,
/// original_shape with fewer than 2 dims, B not the product of its leading dims).
Tensor unflatten(const Tensor& x3, const Shape& original_shape);

}  // namespace tg
