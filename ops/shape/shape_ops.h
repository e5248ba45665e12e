// Shape manipulation on dense tensors (any dtype). Differentiable for floating dtypes.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tg {

/// Same data, new shape (numel must match; one extent may be -1). Shares storage.
Tensor reshape(const Tensor& x, const Shape& shape);
/// Swaps the last two dims (x must be >= 2-d); a copy in row-major order.
Tensor transpose(const Tensor& x);
/// Concatenates along `dim`; all other extents, dtypes and devices must match.
Tensor cat(const std::vector<Tensor>& xs, int dim);
/// Elements [start, end) of dim `dim` (negative start/end count from the end; clamped to
/// the extent like Python slicing, step 1). A copy.
Tensor slice(const Tensor& x, int dim, std::int64_t start, std::int64_t end);

}  // namespace tg
