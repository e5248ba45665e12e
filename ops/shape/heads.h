// Moving attention heads between the feature dim and the batch dim in one copy each way.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tg {

/// Splits the last dim of x [B, S, W] into consecutive parts of heads[p] heads of
/// head_dim features each (W = Σ heads[p]·head_dim) and moves each part's heads next to
/// the batch: part p becomes [B·heads[p], S, head_dim], row b·heads[p] + j holding head j
/// of batch entry b (the q / k / v layout of flash_attention). One strided copy per part,
/// where slice + transpose + reshape + transpose take three. Any dtype. Backward: the
/// parts' gradients written back into one [B, S, W] tensor (parts without a gradient as 0).
/// Errors: ValueError (undefined x, no parts), ShapeError (x not 3-d, a non-positive
/// head count or head_dim, W ≠ Σ heads·head_dim).
std::vector<Tensor> split_heads(const Tensor& x, const std::vector<std::int64_t>& heads, std::int64_t head_dim);

/// The inverse of split_heads for one part: x [B·h, S, Dh] -> [B, S, h·Dh], feature
/// j·Dh + e of row (b, s) being element e of row s of x[b·h + j]. One strided copy. Any
/// dtype. Backward: split_heads. Errors: ValueError (undefined x), ShapeError (x not 3-d,
/// batch ≤ 0 or not dividing x.size(0)).
Tensor merge_heads(const Tensor& x, std::int64_t batch);

}  // namespace tg
