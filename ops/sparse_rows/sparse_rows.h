// Row-wise arithmetic on block-sparse matrices (OPS.md "Arithmetic"): reductions over the
// active elements of each logical row (or column), per-row and per-column broadcasts, and
// the outer broadcast of a row vector against a column vector restricted to a layout.
//
// A block-sparse x has the logical shape [B, M, N] (see core/block_sparse.h). A "row
// vector" v has shape [B, M] (one value per logical row), a "column vector" [B, N].
// Inactive blocks are absent: they add nothing to sums, are excluded from maxima and are
// never written. All ops take floating dtypes (f32, f64, bf16, f16), reduce in f32 (f64
// for f64) and are differentiable in every floating argument.
//
// Errors (before any kernel runs): tg::LayoutError (malformed x), tg::ShapeError (a row or
// column vector of the wrong shape), tg::DTypeError (non-floating or mixed dtypes),
// tg::DeviceError (mixed devices).
#pragma once

#include "core/block_sparse.h"

namespace tg {

/// Sum of the active elements of each logical row: dense [B, M] of x's dtype; a row with
/// no active block sums to 0. Backward: the row gradient on every active element.
Tensor row_sum(const BlockSparseTensor& x);

/// Max of the active elements of each logical row: dense [B, M] of x's dtype; a row with
/// no active block gives -inf, and nan propagates. Backward: the row gradient goes to the
/// first maximal element of the row (the first nan if there is one), nothing to the rest.
Tensor row_max(const BlockSparseTensor& x);

/// Sum of the active elements of each logical column: dense [B, N] of x's dtype; a column
/// with no active block sums to 0. Backward: the column gradient on every active element.
Tensor col_sum(const BlockSparseTensor& x);

/// x + v[b, i] on every active element (b, i, j) of x; v is [B, M] of x's dtype and
/// device. Returns a block-sparse tensor with x's layout. Backward: dx = dy,
/// dv = row_sum(dy).
BlockSparseTensor row_add(const BlockSparseTensor& x, const Tensor& v);
/// x - v[b, i] on every active element. Backward: dx = dy, dv = -row_sum(dy).
BlockSparseTensor row_sub(const BlockSparseTensor& x, const Tensor& v);
/// x * v[b, i] on every active element. Backward: dx = row_mul(dy, v),
/// dv = row_sum(dy * x).
BlockSparseTensor row_mul(const BlockSparseTensor& x, const Tensor& v);
/// x / v[b, i] on every active element (IEEE division: /0 gives ±inf or nan).
/// Backward: dx = row_div(dy, v), dv = -row_sum(dy * y) / v.
BlockSparseTensor row_div(const BlockSparseTensor& x, const Tensor& v);

/// The active blocks of a[:, :, None] + b[:, None, :] under `layout_out`: element (bt, i, j)
/// of an active block is a[bt, i] + b[bt, j]. a is [B, M], b is [B, N] with B, M, N those of
/// layout_out; same floating dtype and device. Backward: da = row_sum(dy),
/// db = col_sum(dy).
BlockSparseTensor broadcast_add(const Tensor& a, const Tensor& b, const Layout& layout_out);
/// The active blocks of a[:, :, None] - b[:, None, :]. Backward: da = row_sum(dy),
/// db = -col_sum(dy).
BlockSparseTensor broadcast_sub(const Tensor& a, const Tensor& b, const Layout& layout_out);

}  // namespace tg
