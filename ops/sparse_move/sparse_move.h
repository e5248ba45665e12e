// Block-sparse data movement (OPS.md "Data movement"): transpose, gather, scatter_reduce,
// repeat, repeat_interleave, split and merge. All work on any dtype; every op except
// scatter_reduce with Reduce::None is differentiable w.r.t. its floating block data.
//
// Ops taking an optional `layout_out` (an undefined Layout() means none) compute only the
// blocks active in both their natural output layout and the given one; the result's
// layout is that intersection.
#pragma once

#include <array>
#include <cstdint>

#include "core/block_sparse.h"

namespace tg {

/// How scatter_reduce combines the values written to one position.
enum class Reduce { Sum, None };

/// [B, M, N] -> [B, N, M]: the layout is x.layout().transposed(), each block transposed,
/// blocks in the canonical order of the new layout. Backward: transpose.
BlockSparseTensor transpose(const BlockSparseTensor& x);

/// torch.gather on block-sparse operands: the result has idx's layout and
///   dim 2: out[b,r,c] = src[b, r, idx[b,r,c]],  dim 1: src[b, idx[b,r,c], c],
///   dim 0: src[idx[b,r,c], r, c]
/// (dim may be negative, -1 = 2). Absent source positions read 0. idx: an i32/i64
/// block-sparse tensor with src's block size whose extent along each dim other than `dim`
/// is at most src's. Backward w.r.t. src: scatter-add of the gradient.
/// Errors: DTypeError (idx not i32/i64), LayoutError (block sizes), ShapeError (extents),
/// ValueError (dim, an index outside [0, src extent along dim)), DeviceError.
/// Speed on CUDA (block 64): dim 2 runs at 80-99% of a copy for any indices (source rows
/// are staged); dim 1 at 87-98% where an idx block reads rows of its own source block (also
/// at block 32 with elements of 4 bytes or more, where two neighbouring blocks may be read).
/// Dim-1 indices spread wider, and dim-0 indices that differ from element to element, read
/// one memory sector an element (10-40% of a copy).
BlockSparseTensor gather(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx);

/// The inverse of gather: out[b, r, idx[b,r,c]] (+)= src[b,r,c] for dim 2 (torch.scatter
/// rules for dims 0 and 1), into a zero tensor with `target_layout`; writes into inactive
/// target blocks are dropped. idx must have src's layout and be i32/i64; target_layout
/// has src's block size and extents at least src's along the other dims. Sum accumulates
/// in f32 (f64 for f64) and is differentiable (backward: gather); with atomics on CUDA the
/// order of additions, hence the rounding, may vary between runs. None keeps one of the
/// values written to a position (which one is unspecified) and is not differentiable: a
/// backward through its result throws ValueError. Errors as for gather.
BlockSparseTensor scatter_reduce(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx,
                                 const Layout& target_layout, Reduce reduce = Reduce::Sum);

/// Tiles x like torch.Tensor.repeat on [B, M, N] with counts {rB, rM, rN} (>= 0; a 0 gives
/// an empty result): out[b', i', j'] = x[b' % B, i' % M, j' % N], shape [B*rB, M*rM, N*rN].
/// Backward: the sum over the copies. Errors: ValueError (negative counts), LayoutError /
/// ShapeError (layout_out of another block size or shape).
BlockSparseTensor repeat(const BlockSparseTensor& x, std::array<std::int64_t, 3> repeats,
                         const Layout& layout_out = Layout());

/// Each batch matrix repeated r >= 0 times consecutively: out batch b*r + i is x batch b,
/// shape [B*r, M, N]. Backward: the sum over the copies. Errors as for repeat.
BlockSparseTensor repeat_interleave(const BlockSparseTensor& x, std::int64_t r, const Layout& layout_out = Layout());

/// "Split heads": dim -1 or 2: [B, M, N] -> [B*P, M, N/P], out batch b*P + p holding the
/// columns [p*N/P, (p+1)*N/P) of batch b; dim 1 or -2: the same with rows,
/// [B, M, N] -> [B*P, M/P, N]. N/bs (M/bs for rows) must be divisible by P >= 1.
/// Backward: merge. Errors: ValueError (dim, P), ShapeError (divisibility).
BlockSparseTensor split(const BlockSparseTensor& x, std::int64_t parts, int dim = -1);

/// The inverse of split: [B*P, M, N] -> [B, M, N*P] (dim -1/2) or [B, M*P, N] (dim 1/-2),
/// out batch b made of input batches b*P .. b*P + P-1 side by side. B must be divisible
/// by P >= 1. Backward: split.
BlockSparseTensor merge(const BlockSparseTensor& x, std::int64_t parts, int dim = -1);

}  // namespace tg
