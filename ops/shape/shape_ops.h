// Shape manipulation on dense tensors (any dtype). Differentiable for floating dtypes.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tg {

/// Same data, new shape (numel must match; one extent may be -1 and is inferred). Shares
/// storage with x. Backward: reshape back.
/// Errors: ShapeError (numel mismatch, more than one -1, other negative extents, a -1 that
/// cannot be inferred because the other extents multiply to 0); ValueError (undefined x).
Tensor reshape(const Tensor& x, const Shape& shape);
/// Swaps the last two dims (x must be >= 2-d): [..., R, C] -> [..., C, R]; a copy in
/// row-major order. Backward: transpose. Errors: ShapeError (fewer than 2 dims).
Tensor transpose(const Tensor& x);
/// Concatenates along `dim` (negative counts from the end); all other extents, the rank,
/// dtypes and devices must match (extent 0 along `dim` is fine). Always a new tensor.
/// Backward: the slices of the gradient. Errors: ValueError (no tensors, undefined ones),
/// ShapeError (rank, extents, dim out of range, 0-d), DTypeError, DeviceError.
Tensor cat(const std::vector<Tensor>& xs, int dim);
/// Elements [start, end) of dim `dim` (negative start/end count from the end; clamped to
/// the extent like Python slicing, step 1; end <= start gives extent 0). A copy.
/// Backward: the gradient scattered into zeros of x's shape. Errors: ShapeError (0-d x,
/// dim out of range).
Tensor slice(const Tensor& x, int dim, std::int64_t start, std::int64_t end);

}  // namespace tg
