// Conversions between dense [B, M, N] tensors and block-sparse tensors (OPS.md "Conversion").
#pragma once

#include "core/block_sparse.h"

namespace tg {

/// The active blocks of `dense` [B, M, N] under `layout` (whose block size is used).
/// Differentiable: the gradient is the block gradient scattered back (0 elsewhere).
/// Errors: ShapeError (rank, B/M/N not matching the layout), DeviceError.
BlockSparseTensor to_sparse(const Tensor& dense, const Layout& layout);

/// The dense [B, M, N] tensor: active blocks copied, every other element `fill_value`
/// (e.g. -inf to build an attention mask). Differentiable w.r.t. the block data.
Tensor to_dense(const BlockSparseTensor& x, double fill_value = 0.0);

}  // namespace tg
