// Kernel slots of the reduce family. Every kernel receives validated, allocated tensors.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

enum class ReduceKind { Sum, Mean, Max };

/// Reduces all x.numel() elements into the 0-d `out` (x's dtype). Sum of nothing is 0,
/// mean of nothing nan; Max needs numel > 0 and also writes the flat index of the first
/// maximal element (a nan counts as maximal) into the 0-d i64 `index`.
using ReduceAllFn = void(const Tensor& x, ReduceKind kind, const Tensor& out, const Tensor& index);
TG_DECLARE_KERNEL(reduce_all_kernel, ReduceAllFn);

/// Reduces each row of x viewed as [rows, cols] into out[row] (rows > 0; cols may be 0
/// except for Max). Max also writes the in-row index of the first maximal element into
/// the i64 `index` [rows].
using ReduceRowsFn = void(const Tensor& x, std::int64_t rows, std::int64_t cols, ReduceKind kind, const Tensor& out,
                          const Tensor& index);
TG_DECLARE_KERNEL(reduce_rows_kernel, ReduceRowsFn);

/// Backward of sum/mean: dx[i] = g[i / cols] * factor for every element of dx (numel > 0,
/// cols > 0; g and dx of the same dtype).
using ExpandRowsFn = void(const Tensor& g, std::int64_t cols, double factor, const Tensor& dx);
TG_DECLARE_KERNEL(reduce_expand_kernel, ExpandRowsFn);

/// Backward of max: dx[r, c] = (c == index[r]) ? g[r] : 0 for dx viewed as [rows, cols]
/// (numel > 0, cols > 0).
using ScatterRowsFn = void(const Tensor& g, const Tensor& index, std::int64_t cols, const Tensor& dx);
TG_DECLARE_KERNEL(reduce_scatter_kernel, ScatterRowsFn);

}  // namespace tg::ops
