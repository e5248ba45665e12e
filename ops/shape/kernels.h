// Kernel slots of the shape family. Both are dtype-agnostic data movement.
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

}  // namespace tg::ops
