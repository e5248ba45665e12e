// Softmax over the active elements of each logical row of a block-sparse matrix batch
// (OPS.md "softmax"), plain and with an element mask, and its backward primitive.
//
// A block-sparse x has the logical shape [B, M, N] (see core/block_sparse.h). Inactive
// blocks count as -inf: they are excluded from every row and are never written, so a row
// with no active block yields no output. A row whose remaining values are all -inf (after
// scaling) yields zeros, not nan; a nan anywhere in a row makes the row's outputs nan.
// Scaling is IEEE arithmetic, so -inf stands for "excluded" only with scale > 0: with
// scale 0 it scales to nan (0 * -inf) and with scale < 0 to +inf, and the row is nan. To
// exclude elements under any scale, pass them as masked_softmax's mask instead.
// Storage dtypes f32, f64, bf16, f16; the math runs in f32 (f64 for f64).
//
// Errors (before any kernel runs): tg::ValueError (undefined arguments, non-finite
// scale), tg::LayoutError (malformed tensors, mismatched layouts or block sizes),
// tg::ShapeError (mismatched logical shapes), tg::DTypeError (non-floating x, non-bool
// mask, mixed dtypes), tg::DeviceError (mixed devices).
#pragma once

#include "core/block_sparse.h"
#include "ops/softmax/softmax.h"  // the dense overloads

namespace tg {

/// y = softmax(scale * x) over the active elements of each logical row of x. Returns a
/// block-sparse tensor with x's layout, dtype and device. Differentiable:
/// dx = scale * y ⊙ (dy − row_sum(dy ⊙ y)), and exactly 0 wherever y is 0.
BlockSparseTensor softmax(const BlockSparseTensor& x, double scale = 1.0);

/// softmax(scale * x) over the active elements of each logical row that `mask` does not
/// exclude. `mask` is a block-sparse bool tensor with x's logical shape, block size and
/// device (its layout may differ): a true element excludes the element of x at the same
/// position; blocks absent from mask's layout exclude nothing. Excluded elements output 0
/// and get a 0 gradient; a row with every element excluded outputs zeros. Differentiable
/// in x (the mask has no gradient).
BlockSparseTensor masked_softmax(const BlockSparseTensor& x, const BlockSparseTensor& mask, double scale = 1.0);

/// The input gradient of (masked_)softmax from its output `y` and output gradient `dy`
/// (equal layouts, same floating dtype and device): scale * y ⊙ (dy − row_sum(dy ⊙ y))
/// per logical row, with exactly 0 wherever y is 0 (excluded or underflowed elements),
/// whose dy also drops out of the row sum. A backward primitive: it records nothing for
/// autograd.
BlockSparseTensor softmax_backward(const BlockSparseTensor& y, const BlockSparseTensor& dy, double scale = 1.0);

}  // namespace tg
