// Kernel slots of the copy family.
#pragma once

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// dst[i] = cast_value<dst dtype>(src[i]) for every element (same device, same numel,
/// different dtypes; numel > 0).
using CastFn = void(const Tensor& src, const Tensor& dst);
TG_DECLARE_KERNEL(cast_dtype, CastFn);

}  // namespace tg::ops
