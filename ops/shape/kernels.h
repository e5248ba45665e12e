// Kernel slots of the shape family. All are dtype-agnostic data movement.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// Copies `rows` rows of `row_bytes` bytes: row r goes from byte
/// src_offset + r·src_pitch of src to byte dst_offset + r·dst_pitch of dst (same device;
/// every touched byte in range; rows > 0, row_bytes > 0). Used for cat, slice and the
/// slice backward.
struct Copy2dParams {
  std::int64_t rows = 0, row_bytes = 0;
  std::int64_t src_offset = 0, src_pitch = 0;
  std::int64_t dst_offset = 0, dst_pitch = 0;
};
using Copy2dFn = void(const Tensor& src, const Tensor& dst, const Copy2dParams& p);
TG_DECLARE_KERNEL(shape_copy_2d, Copy2dFn);

/// dst[b][c][r] = src[b][r][c] for b < batch, r < rows, c < cols (any dtype, same dtype and
/// device; batch·rows·cols > 0).
using TransposeFn = void(const Tensor& src, const Tensor& dst, std::int64_t batch, std::int64_t rows,
                         std::int64_t cols);
TG_DECLARE_KERNEL(shape_transpose, TransposeFn);

/// A strided copy over a 4-d index space c = (c0, c1, c2, c3), c3 innermost:
/// dst[dst_offset + Σ c_i·dst_stride[i]] = src[src_offset + Σ c_i·src_stride[i]], offsets
/// and strides in bytes, c3 running over n[3] bytes contiguous on both sides (stride 1).
/// Every n > 0 and every touched byte in range. Used by split_heads / merge_heads.
struct Copy4dParams {
  std::int64_t n[4] = {1, 1, 1, 1};
  std::int64_t src_stride[3] = {0, 0, 0}, dst_stride[3] = {0, 0, 0};
  std::int64_t src_offset = 0, dst_offset = 0;
};
using Copy4dFn = void(const Tensor& src, const Tensor& dst, const Copy4dParams& p);
TG_DECLARE_KERNEL(shape_copy_4d, Copy4dFn);

}  // namespace tg::ops
