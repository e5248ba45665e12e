// Kernel slots of the block-sparse softmax family. Every kernel receives validated,
// allocated tensors on one device, one floating dtype for all floating operands, and the
// layout of the block data (data [n, bs, bs] in the layout's compressed order, n > 0).
//
// Logical row (b, R) of the [B, M, N] batch is made of one bs-long segment per active
// block of block-row R / bs: the in-block row R % bs of each of those blocks, in
// increasing block-column order (the layout's CSR row_offsets).
#pragma once

#include "core/block_sparse.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// y = softmax(scale * x) per logical row over its active elements. When `mask` is
/// defined (bool, same logical shape and block size as `layout`, any layout of its own),
/// its true elements are excluded and written as 0. A row that is all -inf after scaling
/// and masking gives zeros; a nan among the included elements makes the included
/// outputs of its row nan.
using SparseSoftmaxFwdFn = void(const Tensor& x, const Layout& layout, const BlockSparseTensor& mask, double scale,
                                const Tensor& y);
TG_DECLARE_KERNEL(sparse_softmax_fwd_kernel, SparseSoftmaxFwdFn);

/// dx = scale * y * (dy - s) per logical row with s = sum of y * dy over the row's
/// elements where y != 0; dx = 0 exactly where y == 0.
using SparseSoftmaxBwdFn = void(const Tensor& y, const Tensor& dy, const Layout& layout, double scale,
                                const Tensor& dx);
TG_DECLARE_KERNEL(sparse_softmax_bwd_kernel, SparseSoftmaxBwdFn);

}  // namespace tg::ops
