// nn ops on block-sparse tensors (OPS.md "nn on block-sparse tensors").
//
// First versions composed from verified ops (to_dense / dense op / to_sparse, or the
// dense op on the block data), so they share those kernels and their autograd; fused
// block-sparse kernels come with the attention work.
#pragma once

#include <cstdint>

#include "core/block_sparse.h"

namespace tg {

/// True when every block-row of `l` is either empty or fully active ("row-striped").
bool is_row_striped(const Layout& l);
/// The row-striped layout [B, Mb, Nb] whose block-row (b, r) is active iff block-row (b, r)
/// of `l` has any active block.
Layout row_striped_layout(const Layout& l, std::int64_t Nb);

/// x [B, M, K] block-sparse times Wᵀ (W [N, K]) plus bias [N] (optional): [B, M, N]
/// block-sparse with the row-striped layout of x's active block-rows (N must be divisible
/// by the block size). Rows without an active block are not computed. Differentiable in x,
/// W and bias. Errors: ShapeError (K or N mismatch, N not divisible), DTypeError, DeviceError.
BlockSparseTensor linear(const BlockSparseTensor& x, const Tensor& weight, const Tensor& bias = Tensor());

/// layer_norm over the last logical dim of a row-striped x (throws LayoutError otherwise);
/// gamma/beta [N] optional. Differentiable in x, gamma and beta.
BlockSparseTensor layer_norm(const BlockSparseTensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);

/// Dropout on the active elements (the same Philox mask as dense dropout of the block data).
BlockSparseTensor dropout(const BlockSparseTensor& x, double p, std::uint64_t seed, std::uint64_t offset);

}  // namespace tg
