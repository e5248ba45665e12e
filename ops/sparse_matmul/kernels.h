// Kernel slot of the block-sparse matmul family.
#pragma once

#include "core/tensor.h"
#include "ops/dispatch.h"
#include "ops/sparse_matmul/plan.h"

namespace tg::ops {

/// For every output tile o of `plan`: C(o) = sum over its pairs (ta, tb) of
/// op(A tile ta) · op(B tile tb), accumulated in f32 (f64 for f64) and rounded once into
/// `out`; a tile without pairs is set to 0. a, b and out are validated, allocated, on one
/// device, of one floating dtype, laid out as the plan's TileAddrs say. plan.n_out > 0.
using SparseMatmulFn = void(const MatmulPlan& plan, const Tensor& a, const Tensor& b, const Tensor& out);
TG_DECLARE_KERNEL(sparse_matmul_kernel, SparseMatmulFn);

/// The product of `plan` (block size 64: the covering route's, sparse_matmul.cpp) stored
/// straight into the blocks of `fine` (block size 16 or 32, covered by plan's output layout,
/// as covering_layout(fine, 64) covers it): out is [fine.n_blocks(), fbs, fbs], each fine
/// block the part of its 64-block's product it covers. Returns false without touching
/// anything where the backend has no such store for this call (CUDA: outside the Hopper
/// kernel's path, e.g. f32 or another compute capability); the caller then computes the
/// 64-blocks and moves them. a, b and out as for sparse_matmul_kernel; plan.n_out > 0.
using SparseMatmulFineFn = bool(const MatmulPlan& plan, const Tensor& a, const Tensor& b, const Layout& fine,
                                const Tensor& out);
TG_DECLARE_KERNEL(sparse_matmul_fine_kernel, SparseMatmulFineFn);

}  // namespace tg::ops
