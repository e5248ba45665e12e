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

/// The blocks of 16 or 32 that a product on the 64-blocks covering them (the covering route,
/// sparse_matmul.cpp) reads or writes in place of its plan's 64-blocks. Each of a, b, c is
/// undefined (that tensor is as the plan says) or the layout of the fine blocks the tensor
/// holds instead, [fine.n_blocks(), fbs, fbs]: for an operand, the 64-blocks of the plan's
/// layout of that side (a_cover, b_cover) read as the fine blocks they cover, zeros where
/// the fine layout has none; for the output, each fine block receives the part of its 64-block
/// that it covers. Every defined one has the same block size, and its plan side's layout
/// covers it as covering_layout(fine, 64) does.
struct FineBlocks {
  Layout a, b, c;
  Layout a_cover, b_cover;  ///< the plan's layouts of a and b (with a, b)
  bool any() const { return a.defined() || b.defined() || c.defined(); }
};

/// The product of `plan` (block size 64: the covering route's) with the operands and output
/// of `fine` (fine.any()) held as their fine blocks. Returns false without touching anything
/// where the backend has no such path for this call (CUDA: outside the Hopper kernel's path,
/// e.g. f32 or another compute capability); the caller then moves the blocks to and from
/// 64-blocks. a, b and out as for sparse_matmul_kernel; plan.n_out > 0.
using SparseMatmulFineFn = bool(const MatmulPlan& plan, const Tensor& a, const Tensor& b, const Tensor& out,
                                const FineBlocks& fine);
TG_DECLARE_KERNEL(sparse_matmul_fine_kernel, SparseMatmulFineFn);

}  // namespace tg::ops
