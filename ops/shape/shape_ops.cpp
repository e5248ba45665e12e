// reshape / transpose / cat / slice: validation, output allocation, dispatch, autograd.
#include "ops/shape/shape_ops.h"

#include <algorithm>
#include <string>
#include <utility>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/shape/kernels.h"
#include "runtime/backend.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(shape_copy_2d, Copy2dFn)
TG_DEFINE_KERNEL(shape_transpose, TransposeFn)
}  // namespace ops

namespace {

std::int64_t prod(const Shape& s, int begin, int end) {
  std::int64_t p = 1;
  for (int i = begin; i < end; ++i) p *= s.dims()[static_cast<std::size_t>(i)];
  return p;
}

void copy_rows(const Tensor& src, const Tensor& dst, const ops::Copy2dParams& p) {
  if (p.rows == 0 || p.row_bytes == 0) return;
  ops::shape_copy_2d()(dst.device())(src, dst, p);
}

void zero_fill(const Tensor& t) {
  if (t.nbytes() == 0) return;
  runtime::Backend& be = runtime::backend(t.device());
  be.memset_zero(t.data_ptr(), t.nbytes(), be.current_stream(t.device()));
}

// Zeros of `shape` with g copied into [start, start + g.size(dim)) of dim `dim`.
Tensor slice_backward(const Tensor& g, const Shape& shape, int dim, std::int64_t start) {
  Tensor dx = ops::empty_like(g, shape, g.dtype());
  zero_fill(dx);
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(g.dtype()));
  const std::int64_t after = prod(shape, dim + 1, shape.ndim()) * es;
  ops::Copy2dParams p;
  p.rows = prod(shape, 0, dim);
  p.row_bytes = g.size(dim) * after;
  p.src_pitch = p.row_bytes;
  p.dst_offset = start * after;
  p.dst_pitch = shape[dim] * after;
  copy_rows(g, dx, p);
  return dx;
}

std::string arg_name(std::size_t i) { return "xs[" + std::to_string(i) + "]"; }

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  ops::check_defined("reshape", "x", x);
  std::vector<std::int64_t> dims = shape.dims();
  int infer = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (infer >= 0) TG_THROW(ShapeError, "reshape: at most one extent of shape may be -1, got ", shape);
      infer = static_cast<int>(i);
    } else if (dims[i] < 0) {
      TG_THROW(ShapeError, "reshape: extents of shape must be >= 0 (or one -1), got ", shape);
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0) {
      TG_THROW(ShapeError, "reshape: cannot infer the -1 extent of shape ", shape, " for x of shape ", x.shape(),
               " (", x.numel(), " elements)");
    }
    dims[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  const Shape target(std::move(dims));
  if (target.numel() != x.numel()) {
    TG_THROW(ShapeError, "reshape: shape ", shape, " has ", target.numel(), " elements but x of shape ", x.shape(),
             " has ", x.numel());
  }
  Tensor out = alias_with_shape(x, target);
  if (autograd::needs_grad({x})) {
    autograd::record("reshape", {x}, {out}, [in_shape = x.shape()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{reshape(g[0], in_shape)};
    });
  }
  return out;
}

Tensor transpose(const Tensor& x) {
  ops::check_defined("transpose", "x", x);
  if (x.dim() < 2) TG_THROW(ShapeError, "transpose: x must have at least 2 dims, got shape ", x.shape());
  Shape out_shape = x.shape();
  const std::size_t nd = out_shape.dims().size();
  std::swap(out_shape.dims()[nd - 1], out_shape.dims()[nd - 2]);
  Tensor out = ops::empty_like(x, out_shape, x.dtype());
  if (out.numel() > 0) {
    const std::int64_t rows = x.size(-2), cols = x.size(-1);
    ops::shape_transpose()(x.device())(x, out, x.numel() / (rows * cols), rows, cols);
  }
  if (autograd::needs_grad({x})) {
    autograd::record("transpose", {x}, {out},
                     [](const std::vector<Tensor>& g) { return std::vector<Tensor>{transpose(g[0])}; });
  }
  return out;
}

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  TG_CHECK(!xs.empty(), ValueError, "cat: expected at least one tensor in xs, got none");
  for (std::size_t i = 0; i < xs.size(); ++i) ops::check_defined("cat", arg_name(i).c_str(), xs[i]);
  const Tensor& x0 = xs[0];
  if (x0.dim() == 0) TG_THROW(ShapeError, "cat: xs[0] is 0-d (shape []); only tensors with >= 1 dim can be concatenated");
  const int d = x0.shape().wrap_dim(dim, "cat");
  Shape out_shape = x0.shape();
  std::int64_t total = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    const std::string name = arg_name(i);
    ops::check_same_dtype("cat", "xs[0]", x0, name.c_str(), x);
    ops::check_same_device("cat", "xs[0]", x0, name.c_str(), x);
    if (x.dim() != x0.dim()) {
      TG_THROW(ShapeError, "cat: ", name, " has ", x.dim(), " dims (shape ", x.shape(), ") but xs[0] has ", x0.dim(),
               " (shape ", x0.shape(), ")");
    }
    for (int j = 0; j < x0.dim(); ++j) {
      if (j != d && x.size(j) != x0.size(j)) {
        TG_THROW(ShapeError, "cat: ", name, " has shape ", x.shape(), " but xs[0] has shape ", x0.shape(),
                 ": extents must match except in the concatenation dim ", d, " (they differ in dim ", j, ")");
      }
    }
    total += x.size(d);
  }
  out_shape.dims()[static_cast<std::size_t>(d)] = total;
  Tensor out = ops::empty_like(x0, out_shape, x0.dtype());
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(x0.dtype()));
  const std::int64_t outer = prod(out_shape, 0, d), after = prod(out_shape, d + 1, out_shape.ndim()) * es;
  std::int64_t offset = 0;
  std::vector<std::int64_t> starts;
  for (const Tensor& x : xs) {
    starts.push_back(offset);
    ops::Copy2dParams p;
    p.rows = outer;
    p.row_bytes = x.size(d) * after;
    p.src_pitch = p.row_bytes;
    p.dst_offset = offset * after;
    p.dst_pitch = total * after;
    copy_rows(x, out, p);
    offset += x.size(d);
  }
  if (autograd::needs_grad(xs)) {
    std::vector<bool> need;
    std::vector<std::int64_t> sizes;
    for (const Tensor& x : xs) {
      need.push_back(x.requires_grad());
      sizes.push_back(x.size(d));
    }
    autograd::record("cat", xs, {out}, [d, need, sizes, starts](const std::vector<Tensor>& g) {
      std::vector<Tensor> grads(need.size());
      for (std::size_t i = 0; i < need.size(); ++i) {
        if (need[i]) grads[i] = slice(g[0], d, starts[i], starts[i] + sizes[i]);
      }
      return grads;
    });
  }
  return out;
}

Tensor slice(const Tensor& x, int dim, std::int64_t start, std::int64_t end) {
  ops::check_defined("slice", "x", x);
  if (x.dim() == 0) TG_THROW(ShapeError, "slice: x must have at least 1 dim, got a 0-d tensor");
  const int d = x.shape().wrap_dim(dim, "slice");
  const std::int64_t n = x.size(d);
  // Python slicing: negative bounds count from the end, then both clamp to [0, n].
  auto clamp = [n](std::int64_t v) {
    if (v < 0) v += n;
    return v < 0 ? std::int64_t{0} : (v > n ? n : v);
  };
  const std::int64_t lo = clamp(start);
  const std::int64_t hi = std::max(lo, clamp(end));
  Shape out_shape = x.shape();
  out_shape.dims()[static_cast<std::size_t>(d)] = hi - lo;
  Tensor out = ops::empty_like(x, out_shape, x.dtype());
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(x.dtype()));
  const std::int64_t after = prod(x.shape(), d + 1, x.dim()) * es;
  ops::Copy2dParams p;
  p.rows = prod(x.shape(), 0, d);
  p.row_bytes = (hi - lo) * after;
  p.src_offset = lo * after;
  p.src_pitch = n * after;
  p.dst_pitch = p.row_bytes;
  copy_rows(x, out, p);
  if (autograd::needs_grad({x})) {
    autograd::record("slice", {x}, {out}, [in_shape = x.shape(), d, lo](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{slice_backward(g[0], in_shape, d, lo)};
    });
  }
  return out;
}

}  // namespace tg
