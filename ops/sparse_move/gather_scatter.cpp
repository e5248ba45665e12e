// gather / scatter_reduce on block-sparse tensors: validation (the index range is checked
// on the indices' device, see range_verdict), dispatch and autograd.
#include <string>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/copy/copy.h"
#include "ops/factory/factory.h"
#include "ops/sparse_move/kernels.h"
#include "ops/sparse_move/sparse_move.h"

namespace tg {
namespace ops {
TG_DEFINE_KERNEL(sparse_gather_kernel, GatherFn)
TG_DEFINE_KERNEL(sparse_scatter_kernel, ScatterFn)
TG_DEFINE_KERNEL(sparse_distribution_kernel, DistributionFn)
}  // namespace ops

namespace {

const char* const kDimName[3] = {"B", "M", "N"};

int normalize_dim(const char* op, int dim) {
  if (dim < -3 || dim > 2) TG_THROW(ValueError, op, ": dim must be in [-3, 2], got ", dim);
  return dim < 0 ? dim + 3 : dim;
}

std::int64_t extent(const Layout& l, int d) { return d == 0 ? l.batch() : d == 1 ? l.rows() : l.cols(); }

void check_index_dtype(const char* op, const BlockSparseTensor& idx) {
  if (idx.dtype() != DType::i32 && idx.dtype() != DType::i64) {
    TG_THROW(DTypeError, op, ": idx must be an i32 or i64 tensor, got ", dtype_name(idx.dtype()));
  }
}

// `small` (idx for gather, src for scatter) may not exceed `big` along the dims other than
// `dim`, and both have one block size.
void check_extents(const char* op, int dim, const char* small_name, const Layout& small, const char* big_name,
                   const Layout& big) {
  if (small.block_size() != big.block_size()) {
    TG_THROW(LayoutError, op, ": ", small_name, " and ", big_name, " must have the same block size, got ",
             small.block_size(), " and ", big.block_size());
  }
  for (int d = 0; d < 3; ++d) {
    if (d == dim) continue;
    if (extent(small, d) > extent(big, d)) {
      TG_THROW(ShapeError, op, ": ", small_name, " extent along dim ", d, " (", kDimName[d], " = ", extent(small, d),
               ") may not exceed that of ", big_name, " (", extent(big, d), "); shapes [", small.batch(), ", ",
               small.rows(), ", ", small.cols(), "] and [", big.batch(), ", ", big.rows(), ", ", big.cols(), "]");
    }
  }
}

// The check that every index lies in [0, limit): throws naming the op and the range seen.
// On a GPU it usually runs after the op has returned (runtime/deferred_checks.h), and the
// message says where the error comes from.
ops::RangeVerdict range_verdict(const char* op, int dim, std::int64_t limit, const char* what, const Device& device) {
  const char* when = ops::deferred_check_note(device);
  return [op, dim, limit, what, when](std::int64_t lo, std::int64_t hi) {
    if (lo < 0 || hi >= limit) {
      TG_THROW(ValueError, op, ": idx values must lie in [0, ", limit, ") (the extent of ", what, " along dim ", dim,
               "), got values in [", lo, ", ", hi, "]", when);
    }
  };
}

// Every index must lie in [0, limit): a min/max pass on idx's device, judged by
// range_verdict.
void check_index_range(const char* op, const BlockSparseTensor& idx, int dim, std::int64_t limit, const char* what) {
  if (idx.layout().n_blocks() == 0) return;
  ops::index_range_kernel()(idx.device())(idx.data(), range_verdict(op, dim, limit, what, idx.device()));
}

Tensor gather_impl(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx, bool checked);

// Sum or none into target_layout, without validation; the result has src's dtype.
Tensor scatter_impl(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx, const Layout& target,
                    bool sum) {
  const std::int64_t bs = target.block_size();
  const DType acc = src.dtype() == DType::f64 ? DType::f64 : DType::f32;
  const DType work = sum ? acc : src.dtype();
  Tensor out = zeros({target.n_blocks(), bs, bs}, {.dtype = work, .device = src.device()});
  if (target.n_blocks() > 0 && src.layout().n_blocks() > 0) {
    ops::sparse_scatter_kernel()(src.device())(src.data(), src.layout(), dim, idx.data(), target, sum, out);
  }
  if (work != src.dtype()) out = to_dtype(out, src.dtype());
  return out;
}

// With `checked`, the kernel also reports idx's value range, and an index outside src's
// extent along dim throws (range_verdict; the kernel never reads outside src).
Tensor gather_impl(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx, bool checked) {
  const Layout& lo = idx.layout();
  const std::int64_t bs = lo.block_size();
  Tensor out = ops::empty_like(src.data(), {lo.n_blocks(), bs, bs}, src.dtype());
  if (lo.n_blocks() > 0) {
    const ops::RangeVerdict verdict = range_verdict("gather", dim, extent(src.layout(), dim), "src", src.device());
    ops::sparse_gather_kernel()(src.device())(src.data(), src.layout(), dim, idx.data(), lo, out,
                                              checked ? &verdict : nullptr);
  }
  return out;
}

}  // namespace

BlockSparseTensor gather(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx) {
  check_block_sparse("gather", "src", src);
  check_block_sparse("gather", "idx", idx);
  const int d = normalize_dim("gather", dim);
  check_index_dtype("gather", idx);
  ops::check_same_device("gather", "src", src.data(), "idx", idx.data());
  check_extents("gather", d, "idx", idx.layout(), "src", src.layout());
  Tensor out = gather_impl(src, d, idx, /*checked=*/true);
  if (autograd::needs_grad({src.data()})) {
    autograd::record("gather", {src.data()}, {out},
                     [d, ls = src.layout(), li = idx.layout(), id = idx.data().detach()](const std::vector<Tensor>& g) {
                       BlockSparseTensor gb(g[0], li), ib(id, li);
                       return std::vector<Tensor>{scatter_impl(gb, d, ib, ls, true)};
                     });
  }
  return BlockSparseTensor(out, idx.layout());
}

BlockSparseTensor scatter_reduce(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx,
                                 const Layout& target_layout, Reduce reduce) {
  check_block_sparse("scatter_reduce", "src", src);
  check_block_sparse("scatter_reduce", "idx", idx);
  const int d = normalize_dim("scatter_reduce", dim);
  check_index_dtype("scatter_reduce", idx);
  ops::check_same_device("scatter_reduce", "src", src.data(), "idx", idx.data());
  if (!target_layout.defined()) TG_THROW(LayoutError, "scatter_reduce: target_layout is undefined");
  if (!(idx.layout() == src.layout())) {
    TG_THROW(LayoutError, "scatter_reduce: idx must have the layout of src (one index per src element); src has ",
             src.layout().n_blocks(), " active blocks in a [", src.layout().batch(), ", ", src.layout().block_rows(),
             ", ", src.layout().block_cols(), "] grid, idx ", idx.layout().n_blocks(), " in a [",
             idx.layout().batch(), ", ", idx.layout().block_rows(), ", ", idx.layout().block_cols(), "] grid");
  }
  const bool sum = reduce == Reduce::Sum;
  if (sum && !is_floating(src.dtype())) {
    TG_THROW(DTypeError, "scatter_reduce: reduce = sum needs a floating src (f32, f64, bf16, f16), got ",
             dtype_name(src.dtype()));
  }
  check_extents("scatter_reduce", d, "src", src.layout(), "target_layout", target_layout);
  check_index_range("scatter_reduce", idx, d, extent(target_layout, d), "target_layout");
  Tensor out = scatter_impl(src, d, idx, target_layout, sum);
  if (autograd::needs_grad({src.data()})) {
    if (sum) {
      autograd::record("scatter_reduce", {src.data()}, {out},
                       [d, lt = target_layout, li = idx.layout(), id = idx.data().detach()](const std::vector<Tensor>& g) {
                         return std::vector<Tensor>{gather_impl(BlockSparseTensor(g[0], lt), d, BlockSparseTensor(id, li), false)};
                       });
    } else {
      autograd::record("scatter_reduce(none)", {src.data()}, {out}, [](const std::vector<Tensor>&) -> std::vector<Tensor> {
        TG_THROW(ValueError,
                 "scatter_reduce: reduce = none is not differentiable (which of several values written to one "
                 "position survives is unspecified); use Reduce::Sum, or detach src, to backpropagate");
      });
    }
  }
  return BlockSparseTensor(out, target_layout);
}

}  // namespace tg
