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

}  // namespace tg::ops
