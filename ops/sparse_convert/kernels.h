#pragma once

#include "core/layout.h"
#include "ops/dispatch.h"

namespace tg::ops {

// dense [B,M,N] -> blocks [n,bs,bs] (gather) using the layout's block_coords on the device.
using ToSparseFn = void(const Tensor& dense, const Layout& layout, Tensor& blocks);
// blocks -> dense in one pass: every bs x bs tile of `dense` (uninitialised, numel > 0) is
// written once, with its block when active and with `fill` (one element of dense's dtype,
// on the CPU) when not.
using ToDenseFn = void(const Tensor& blocks, const Layout& layout, const Tensor& fill, Tensor& dense);
TG_DECLARE_KERNEL(to_sparse_kernel, ToSparseFn);
TG_DECLARE_KERNEL(to_dense_kernel, ToDenseFn);

}  // namespace tg::ops
