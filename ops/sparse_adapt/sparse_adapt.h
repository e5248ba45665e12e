// adapt_layout: the same logical values at another block size and/or layout (OPS.md
// "Conversion").
#pragma once

#include <cstdint>

#include "core/block_sparse.h"

namespace tg {

/// x [B, M, N] at block size `bs_to` (a power of two >= 1) with layout `layout_to`, or,
/// when layout_to is undefined, with adapted_layout(x, bs_to) (the blocks covering x's
/// non-zero blocks). Values outside layout_to are dropped; positions of layout_to that x
/// does not cover are 0. When M or N is not divisible by a larger bs_to, the extent is
/// padded with zeros to the next multiple of bs_to; a layout_to may also have the extent
/// that x is the padding of (M = M' rounded up to x's block size), which crops. Backward:
/// the gradient mapped back to x's blocks, only within x's extent. Any dtype.
/// Errors: LayoutError (bs_to, layout_to's block size), ShapeError (layout_to's extents).
BlockSparseTensor adapt_layout(const BlockSparseTensor& x, std::int64_t bs_to, const Layout& layout_to = Layout());

}  // namespace tg
