// Kernel slots of the block-sparse data-movement family. Every kernel receives validated
// inputs and allocated outputs and reads the index tables of the layouts it is given on
// the device of its tensors (Layout::tables), so no per-call index arrays are built.
#pragma once

#include <cstdint>

#include "core/layout.h"
#include "ops/index_check/kernels.h"
#include "ops/dispatch.h"
#include "ops/sparse_move/block_map.h"

namespace tg::ops {

/// Output block t of the transposed layout is source block col_blocks[t] transposed
/// (the CSC order of the source is the canonical order of its transpose). Any dtype.
using TransposeBlocksFn = void(const Tensor& src, const Layout& src_layout, Tensor& out);
/// Copies each source block to its destinations under `map` that are active in
/// `out_layout` (whose grid is map's destination grid). Any dtype.
using MapBlocksFn = void(const Tensor& src, const Layout& src_layout, const BlockMap& map, const Layout& out_layout,
                         Tensor& out);
/// The adjoint of MapBlocks: each source block gets the sum (in acc_type) of `grad` over its
/// destinations active in `out_layout`, 0 when none is. Floating dtypes.
using ReduceBlocksFn = void(const Tensor& grad, const Layout& out_layout, const BlockMap& map,
                            const Layout& src_layout, Tensor& grad_src);
/// out (layout of idx) = src read at the positions idx names along `dim` (0, 1 or 2);
/// absent source positions read 0. idx is i32 or i64; any src dtype.
/// With `verdict` non-null, the kernel also finds idx's smallest and largest value and
/// hands them to it: on the CPU before anything is gathered, on CUDA through
/// runtime::defer_check once the kernel has run (the check rides on the kernel's own read
/// of idx, and the host does not wait for it). Out-of-range values never touch memory
/// outside src (they read 0, or on the CPU nothing is gathered).
using GatherFn = void(const Tensor& src, const Layout& src_layout, int dim, const Tensor& idx,
                      const Layout& idx_layout, Tensor& out, const RangeVerdict* verdict);
/// Writes (sum: adds) each src element to the position idx names along `dim` in the
/// zero-initialised `out` (target_layout); positions in inactive target blocks are dropped.
/// Sum: `out` has the accumulation dtype (f32, or f64 for f64) and CUDA uses atomics.
/// None: `out` has src's dtype; overlapping writes leave one of the values.
using ScatterFn = void(const Tensor& src, const Layout& src_layout, int dim, const Tensor& idx,
                       const Layout& target_layout, bool sum, Tensor& out);
/// Sets flags[(b*tMb + R)*tNb + C] = true (bool, zero-initialised, on idx's device) for
/// every target block of block size `bs` that an element of idx writes to along `dim`
/// in a target grid of tB x tMb x tNb blocks. Values were range-checked.
using DistributionFn = void(const Tensor& idx, const Layout& idx_layout, int dim, std::int64_t bs,
                            std::int64_t tB, std::int64_t tMb, std::int64_t tNb, Tensor& flags);

TG_DECLARE_KERNEL(sparse_transpose_kernel, TransposeBlocksFn);
TG_DECLARE_KERNEL(sparse_map_blocks_kernel, MapBlocksFn);
TG_DECLARE_KERNEL(sparse_reduce_blocks_kernel, ReduceBlocksFn);
TG_DECLARE_KERNEL(sparse_gather_kernel, GatherFn);
TG_DECLARE_KERNEL(sparse_scatter_kernel, ScatterFn);
TG_DECLARE_KERNEL(sparse_distribution_kernel, DistributionFn);

}  // namespace tg::ops
