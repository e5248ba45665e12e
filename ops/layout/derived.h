// Layouts derived from other layouts or from block-sparse content (OPS.md "Layout
// builders"; no gradient).
#pragma once

#include <cstdint>

#include "core/block_sparse.h"
#include "core/layout.h"

namespace tg {

/// The exact structural product of lx [B, Mb, Kb] and ly [B, Kb, Nb]: block (b, i, j) is
/// active iff some k has lx(b, i, k) and ly(b, k, j). Block size: that of lx and ly.
/// Errors: LayoutError (undefined layouts, block sizes differ), ShapeError (batch or inner
/// block extents differ).
Layout matmul_layout(const Layout& lx, const Layout& ly);

/// The layout of x's non-zero content at block size `bs_to` (a power of two >= 1): a target
/// block is active iff it overlaps an active block of x holding any non-zero element (NaN
/// counts as non-zero). The grid is [B, ceil(M / bs_to), ceil(N / bs_to)] (the extent is
/// padded when a larger bs_to does not divide it). Reads x's data (on CUDA: waits for it).
/// Errors: LayoutError (bs_to).
Layout adapted_layout(const BlockSparseTensor& x, std::int64_t bs_to);

/// The layout at block size `bs_to` (a power of two >= 1) whose blocks cover l's active
/// blocks: a target block is active iff it overlaps an active block of l. The grid is
/// [B, ceil(M / bs_to), ceil(N / bs_to)], as adapted_layout's, which is this layout
/// narrowed to blocks holding a non-zero; this one reads no data (structure only).
/// Errors: LayoutError (undefined l, bs_to).
Layout covering_layout(const Layout& l, std::int64_t bs_to);

/// The target blocks that scatter_reduce(src, dim, idx, ...) writes to: target_shape is
/// the logical [B, M, N] of the target, bs its block size (M and N divisible by it). An
/// element of idx at (b, r, c) with value v names (b, r, v) for dim 2, (b, v, c) for dim 1
/// and (v, r, c) for dim 0. idx: i32/i64, extents along the other dims at most the target's.
/// Errors: DTypeError, ShapeError, LayoutError, ValueError (dim, values outside the target).
Layout distribution_layout(const BlockSparseTensor& idx, int dim, const Shape& target_shape, std::int64_t bs);

}  // namespace tg
