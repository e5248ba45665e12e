// Kernel slots of the block-sparse row family. Every kernel receives validated, allocated
// tensors on one device, one floating dtype for all floating operands, and the layout of
// the block data (data [n, bs, bs] in the layout's compressed order).
//
// "row(e)" of the flat element e = (k * bs + i) * bs + j of block k = (b, r, c) is the
// logical row b * M + r * bs + i; "col(e)" is b * N + c * bs + j.
#pragma once

#include "core/layout.h"
#include "ops/dispatch.h"

namespace tg::ops {

enum class RowReduce { Sum, Max };

/// out [B, M] = the reduction of each logical row over its active elements (Sum: 0 for a
/// row without blocks; Max: -inf for it, nan propagating). For Max also writes, into the
/// i64 `index` [B, M], the flat data index of the first maximal element of each row (the
/// first nan when there is one), -1 for a row without blocks. B * M > 0; n may be 0.
/// Forward reductions are deterministic (no atomics).
using SparseRowReduceFn = void(const Tensor& data, const Layout& layout, RowReduce kind, const Tensor& out,
                               const Tensor& index);
TG_DECLARE_KERNEL(sparse_row_reduce_kernel, SparseRowReduceFn);

/// out [B, N] = the sum of each logical column over its active elements (0 for a column
/// without blocks). B * N > 0; n may be 0. Deterministic.
using SparseColSumFn = void(const Tensor& data, const Layout& layout, const Tensor& out);
TG_DECLARE_KERNEL(sparse_col_sum_kernel, SparseColSumFn);

enum class RowMapOp { Add, Mul, Div };

/// out[e] = x[e] (op) alpha * v[row(e)] for every element of out [n, bs, bs] (n > 0);
/// v is [B, M]. For Add, x may be undefined and reads as 0 (a pure row broadcast).
using SparseRowMapFn = void(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& layout,
                            const Tensor& out);
TG_DECLARE_KERNEL(sparse_row_map_kernel, SparseRowMapFn);

/// out[e] = a[row(e)] + alpha_b * b[col(e)] for every element of out [n, bs, bs] (n > 0);
/// a is [B, M], b is [B, N]; either may be undefined and then reads as 0.
using SparseOuterFn = void(const Tensor& a, const Tensor& b, double alpha_b, const Layout& layout,
                           const Tensor& out);
TG_DECLARE_KERNEL(sparse_outer_kernel, SparseOuterFn);

/// The backward of row_max: dx[e] = g[row(e)] where e == index[row(e)], else 0, for every
/// element of dx [n, bs, bs] (n > 0); g is [B, M], index the i64 [B, M] of the forward.
using SparseRowMaxBwdFn = void(const Tensor& g, const Tensor& index, const Layout& layout, const Tensor& dx);
TG_DECLARE_KERNEL(sparse_row_max_bwd_kernel, SparseRowMaxBwdFn);

}  // namespace tg::ops
