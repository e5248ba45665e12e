#pragma once

#include "core/layout.h"
#include "ops/dispatch.h"

namespace tg::ops {

// dense [B,M,N] -> blocks [n,bs,bs] (gather) using the layout's block_coords on the device.
using ToSparseFn = void(const Tensor& dense, const Layout& layout, Tensor& blocks);
// blocks -> dense; `dense` was pre-filled with the fill value.
using ToDenseFn = void(const Tensor& blocks, const Layout& layout, Tensor& dense);
TG_DECLARE_KERNEL(to_sparse_kernel, ToSparseFn);
TG_DECLARE_KERNEL(to_dense_kernel, ToDenseFn);

}  // namespace tg::ops
