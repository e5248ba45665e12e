#pragma once

#include "core/layout.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// Every element of every block of `out_layout` gets the element of `src` (src_layout) at
/// the same logical (b, row, col), or 0 where that position is outside src's extent or in
/// an inactive source block. Block sizes may differ; any dtype.
using AdaptFn = void(const Tensor& src, const Layout& src_layout, const Layout& out_layout, Tensor& out);
/// flags[k] (bool [n], on src's device) = whether block k of src holds any non-zero
/// element (NaN counts as non-zero).
using NonzeroBlocksFn = void(const Tensor& src, Tensor& flags);

TG_DECLARE_KERNEL(sparse_adapt_kernel, AdaptFn);
TG_DECLARE_KERNEL(sparse_nonzero_blocks_kernel, NonzeroBlocksFn);

}  // namespace tg::ops
