// Block-sparse row ops: validation, output allocation, dispatch, autograd recording.
#include "ops/sparse_rows/sparse_rows.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/elementwise/elementwise.h"
#include "ops/sparse_rows/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(sparse_row_reduce_kernel, SparseRowReduceFn)
TG_DEFINE_KERNEL(sparse_col_sum_kernel, SparseColSumFn)
TG_DEFINE_KERNEL(sparse_row_map_kernel, SparseRowMapFn)
TG_DEFINE_KERNEL(sparse_outer_kernel, SparseOuterFn)
TG_DEFINE_KERNEL(sparse_row_max_bwd_kernel, SparseRowMaxBwdFn)
}  // namespace ops

using ops::RowMapOp;
using ops::RowReduce;

namespace {

void check_x(const char* op, const BlockSparseTensor& x) {
  check_block_sparse(op, "x", x);
  ops::check_floating(op, "x", x.data());
}

// A per-row ([B, M], rows = true) or per-column ([B, N]) vector `v` for the layout `l`,
// matching `like` (argument `like_arg`) in dtype and device.
void check_vector(const char* op, const char* arg, const Tensor& v, const Layout& l, bool rows, const char* like_arg,
                  const Tensor& like) {
  ops::check_floating(op, arg, v);
  const Shape want{l.batch(), rows ? l.rows() : l.cols()};
  if (v.shape() != want) {
    TG_THROW(ShapeError, op, ": ", arg, " must have shape ", rows ? "[B, M] = " : "[B, N] = ", want, " (one value per ",
             rows ? "row" : "column", " of a ", l.batch(), " x ", l.rows(), " x ", l.cols(),
             " block-sparse matrix batch), got ", v.shape());
  }
  if (like.defined()) {
    ops::check_same_dtype(op, like_arg, like, arg, v);
    ops::check_same_device(op, like_arg, like, arg, v);
  }
}

Tensor reduce(const BlockSparseTensor& x, RowReduce kind, const Tensor& index) {
  const Layout& l = x.layout();
  Tensor out = ops::empty_like(x.data(), {l.batch(), l.rows()}, x.dtype());
  if (out.numel() > 0) ops::sparse_row_reduce_kernel()(x.device())(x.data(), l, kind, out, index);
  return out;
}

// Block data [n, bs, bs] with out[e] = x[e] (op) alpha * v[row(e)] (x undefined: 0 + ...).
Tensor row_map(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& l) {
  const std::int64_t bs = l.block_size();
  Tensor out = ops::empty_like(v, {l.n_blocks(), bs, bs}, v.dtype());
  if (out.numel() > 0) ops::sparse_row_map_kernel()(v.device())(op, x, v, alpha, l, out);
  return out;
}

// Block data [n, bs, bs] with out[e] = a[row(e)] + alpha_b * b[col(e)] (undefined: 0).
Tensor outer(const Tensor& a, const Tensor& b, double alpha_b, const Layout& l) {
  const Tensor& like = a.defined() ? a : b;
  const std::int64_t bs = l.block_size();
  Tensor out = ops::empty_like(like, {l.n_blocks(), bs, bs}, like.dtype());
  if (out.numel() > 0) ops::sparse_outer_kernel()(like.device())(a, b, alpha_b, l, out);
  return out;
}

BlockSparseTensor row_map_op(const char* name, RowMapOp op, double alpha, const BlockSparseTensor& x,
                             const Tensor& v) {
  check_x(name, x);
  const Layout& l = x.layout();
  check_vector(name, "v", v, l, true, "x", x.data());
  Tensor out = row_map(op, x.data(), v, alpha, l);
  if (autograd::needs_grad({x.data(), v})) {
    const bool need_x = x.data().requires_grad(), need_v = v.requires_grad();
    Tensor xd = op == RowMapOp::Mul && need_v ? x.data().detach() : Tensor();
    Tensor yd = op == RowMapOp::Div && need_v ? out.detach() : Tensor();
    Tensor vd = op != RowMapOp::Add ? v.detach() : Tensor();
    autograd::record(name, {x.data(), v}, {out},
                     [op, alpha, l, need_x, need_v, xd, yd, vd](const std::vector<Tensor>& g) {
                       const Tensor& gy = g[0];
                       Tensor gx, gv;
                       switch (op) {
                         case RowMapOp::Add:  // y = x + alpha v
                           if (need_x) gx = gy;
                           if (need_v) {
                             gv = row_sum(BlockSparseTensor(gy, l));
                             if (alpha != 1.0) gv = mul(gv, alpha);
                           }
                           break;
                         case RowMapOp::Mul:  // y = x * v
                           if (need_x) gx = row_map(RowMapOp::Mul, gy, vd, 1.0, l);
                           if (need_v) gv = row_sum(BlockSparseTensor(mul(gy, xd), l));
                           break;
                         case RowMapOp::Div:  // y = x / v: dv = -sum(gy * x) / v^2 = -sum(gy * y) / v
                           if (need_x) gx = row_map(RowMapOp::Div, gy, vd, 1.0, l);
                           if (need_v) gv = neg(div(row_sum(BlockSparseTensor(mul(gy, yd), l)), vd));
                           break;
                       }
                       return std::vector<Tensor>{gx, gv};
                     });
  }
  return BlockSparseTensor(out, l);
}

BlockSparseTensor broadcast_op(const char* name, double alpha_b, const Tensor& a, const Tensor& b,
                               const Layout& layout_out) {
  if (!layout_out.defined()) TG_THROW(LayoutError, name, ": layout_out is undefined");
  check_vector(name, "a", a, layout_out, true, nullptr, Tensor());
  check_vector(name, "b", b, layout_out, false, "a", a);
  Tensor out = outer(a, b, alpha_b, layout_out);
  if (autograd::needs_grad({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    autograd::record(name, {a, b}, {out}, [alpha_b, l = layout_out, need_a, need_b](const std::vector<Tensor>& g) {
      BlockSparseTensor gy(g[0], l);
      Tensor ga = need_a ? row_sum(gy) : Tensor();
      Tensor gb;
      if (need_b) gb = alpha_b == 1.0 ? col_sum(gy) : mul(col_sum(gy), alpha_b);
      return std::vector<Tensor>{ga, gb};
    });
  }
  return BlockSparseTensor(out, layout_out);
}

}  // namespace

Tensor row_sum(const BlockSparseTensor& x) {
  check_x("row_sum", x);
  Tensor out = reduce(x, RowReduce::Sum, Tensor());
  if (autograd::needs_grad({x.data()})) {
    autograd::record("row_sum", {x.data()}, {out}, [l = x.layout()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{row_map(RowMapOp::Add, Tensor(), g[0], 1.0, l)};
    });
  }
  return out;
}

Tensor row_max(const BlockSparseTensor& x) {
  check_x("row_max", x);
  const Layout& l = x.layout();
  Tensor index = ops::empty_like(x.data(), {l.batch(), l.rows()}, DType::i64);
  Tensor out = reduce(x, RowReduce::Max, index);
  if (autograd::needs_grad({x.data()})) {
    autograd::record("row_max", {x.data()}, {out}, [l, index](const std::vector<Tensor>& g) {
      const std::int64_t bs = l.block_size();
      Tensor dx = ops::empty_like(g[0], {l.n_blocks(), bs, bs}, g[0].dtype());
      if (dx.numel() > 0) ops::sparse_row_max_bwd_kernel()(dx.device())(g[0], index, l, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor col_sum(const BlockSparseTensor& x) {
  check_x("col_sum", x);
  const Layout& l = x.layout();
  Tensor out = ops::empty_like(x.data(), {l.batch(), l.cols()}, x.dtype());
  if (out.numel() > 0) ops::sparse_col_sum_kernel()(x.device())(x.data(), l, out);
  if (autograd::needs_grad({x.data()})) {
    autograd::record("col_sum", {x.data()}, {out}, [l](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{outer(Tensor(), g[0], 1.0, l)};
    });
  }
  return out;
}

BlockSparseTensor row_add(const BlockSparseTensor& x, const Tensor& v) {
  return row_map_op("row_add", RowMapOp::Add, 1.0, x, v);
}
BlockSparseTensor row_sub(const BlockSparseTensor& x, const Tensor& v) {
  return row_map_op("row_sub", RowMapOp::Add, -1.0, x, v);
}
BlockSparseTensor row_mul(const BlockSparseTensor& x, const Tensor& v) {
  return row_map_op("row_mul", RowMapOp::Mul, 1.0, x, v);
}
BlockSparseTensor row_div(const BlockSparseTensor& x, const Tensor& v) {
  return row_map_op("row_div", RowMapOp::Div, 1.0, x, v);
}

BlockSparseTensor broadcast_add(const Tensor& a, const Tensor& b, const Layout& layout_out) {
  return broadcast_op("broadcast_add", 1.0, a, b, layout_out);
}
BlockSparseTensor broadcast_sub(const Tensor& a, const Tensor& b, const Layout& layout_out) {
  return broadcast_op("broadcast_sub", -1.0, a, b, layout_out);
}

}  // namespace tg
