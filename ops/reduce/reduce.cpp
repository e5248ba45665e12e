// Reductions: validation, output allocation, dispatch, autograd recording.
#include "ops/reduce/reduce.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/reduce/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(reduce_all_kernel, ReduceAllFn)
TG_DEFINE_KERNEL(reduce_rows_kernel, ReduceRowsFn)
TG_DEFINE_KERNEL(reduce_expand_kernel, ExpandRowsFn)
TG_DEFINE_KERNEL(reduce_scatter_kernel, ScatterRowsFn)
}  // namespace ops

using ops::ReduceKind;

namespace {

const char* kind_name(ReduceKind k) {
  switch (k) {
    case ReduceKind::Sum: return "sum";
    case ReduceKind::Mean: return "mean";
    case ReduceKind::Max: return "max";
  }
  return "?";
}

// dx of `shape` (and g's dtype) with dx[i] = g[i / cols] * factor.
Tensor expand_grad(const Tensor& g, const Shape& shape, std::int64_t cols, double factor) {
  Tensor dx = ops::empty_like(g, shape, g.dtype());
  if (dx.numel() > 0) ops::reduce_expand_kernel()(g.device())(g, cols, factor, dx);
  return dx;
}

// dx of `shape` that is g[r] at (r, index[r]) and 0 elsewhere.
Tensor scatter_grad(const Tensor& g, const Tensor& index, const Shape& shape, std::int64_t cols) {
  Tensor dx = ops::empty_like(g, shape, g.dtype());
  if (dx.numel() > 0) ops::reduce_scatter_kernel()(g.device())(g, index, cols, dx);
  return dx;
}

Tensor reduce_all(const Tensor& x, ReduceKind kind) {
  const char* op = kind_name(kind);
  ops::check_floating(op, "x", x);
  if (kind == ReduceKind::Max) {
    TG_CHECK(x.numel() > 0, ShapeError, "max: x must have at least one element, got shape ", x.shape());
  }
  Tensor out = ops::empty_like(x, Shape{}, x.dtype());
  Tensor index = kind == ReduceKind::Max ? ops::empty_like(x, Shape{}, DType::i64) : Tensor();
  ops::reduce_all_kernel()(x.device())(x, kind, out, index);
  if (autograd::needs_grad({x})) {
    autograd::record(op, {x}, {out},
                     [kind, shape = x.shape(), n = x.numel(), index](const std::vector<Tensor>& g) {
                       if (kind == ReduceKind::Max) return std::vector<Tensor>{scatter_grad(g[0], index, shape, n)};
                       const double factor = kind == ReduceKind::Mean ? 1.0 / static_cast<double>(n) : 1.0;
                       return std::vector<Tensor>{expand_grad(g[0], shape, n, factor)};
                     });
  }
  return out;
}

Tensor reduce_last(const Tensor& x, int dim, bool keepdim, ReduceKind kind) {
  const char* op = kind_name(kind);
  ops::check_floating(op, "x", x);
  const int nd = x.dim();
  // A 0-d tensor behaves as one element along a dim 0 / -1 of extent 1 (as in PyTorch).
  if (nd == 0) {
    TG_CHECK(dim == 0 || dim == -1, ShapeError, op, ": dim ", dim, " out of range for a 0-d x (expected 0 or -1)");
  } else {
    const int d = x.shape().wrap_dim(dim, op);
    TG_CHECK(d == nd - 1, ShapeError, op, ": only the last dim (-1 or ", nd - 1, ") is supported, got dim ", dim,
             " for x of shape ", x.shape());
  }
  const std::int64_t cols = nd == 0 ? 1 : x.size(-1);
  if (kind == ReduceKind::Max) {
    TG_CHECK(cols > 0, ShapeError, "max: dim ", dim, " of x has extent 0 (x has shape ", x.shape(),
             "), max of an empty row is undefined");
  }
  std::vector<std::int64_t> dims;
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < nd; ++i) {
    dims.push_back(x.size(i));
    rows *= x.size(i);
  }
  if (nd > 0 && keepdim) dims.push_back(1);
  const Shape out_shape(std::move(dims));

  Tensor out = ops::empty_like(x, out_shape, x.dtype());
  Tensor index = kind == ReduceKind::Max ? ops::empty_like(x, out_shape, DType::i64) : Tensor();
  if (rows > 0) ops::reduce_rows_kernel()(x.device())(x, rows, cols, kind, out, index);
  if (autograd::needs_grad({x})) {
    autograd::record(op, {x}, {out}, [kind, shape = x.shape(), cols, index](const std::vector<Tensor>& g) {
      if (kind == ReduceKind::Max) return std::vector<Tensor>{scatter_grad(g[0], index, shape, cols)};
      const double factor = kind == ReduceKind::Mean ? 1.0 / static_cast<double>(cols) : 1.0;
      return std::vector<Tensor>{expand_grad(g[0], shape, cols, factor)};
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) { return reduce_all(x, ReduceKind::Sum); }
Tensor mean(const Tensor& x) { return reduce_all(x, ReduceKind::Mean); }
Tensor max(const Tensor& x) { return reduce_all(x, ReduceKind::Max); }

Tensor sum(const Tensor& x, int dim, bool keepdim) { return reduce_last(x, dim, keepdim, ReduceKind::Sum); }
Tensor mean(const Tensor& x, int dim, bool keepdim) { return reduce_last(x, dim, keepdim, ReduceKind::Mean); }
Tensor max(const Tensor& x, int dim, bool keepdim) { return reduce_last(x, dim, keepdim, ReduceKind::Max); }

}  // namespace tg
