// Block-sparse matmul: validation, plan lookup, output allocation, dispatch, autograd.
#include "ops/sparse_matmul/sparse_matmul.h"

#include <optional>
#include <string>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/layout/derived.h"
#include "ops/sparse_adapt/kernels.h"
#include "ops/sparse_matmul/kernels.h"
#include "ops/sparse_matmul/path.h"
#include "ops/sparse_move/layout_memo.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(sparse_matmul_kernel, SparseMatmulFn)
TG_DEFINE_KERNEL(sparse_matmul_fine_kernel, SparseMatmulFineFn)
}  // namespace ops

namespace {

constexpr const char* kOp = "matmul";
constexpr std::int64_t kCudaMinBlock = 16;

// One operand of a product: a dense [B, R, C] tensor, or block data with its layout;
// `trans` reads it transposed.
struct Side {
  Tensor t;
  Layout layout;
  bool trans = false;

  bool sparse() const { return layout.defined(); }
  ops::OperandDesc desc() const {
    if (sparse()) return {layout, layout.batch(), layout.rows(), layout.cols(), trans};
    return {Layout(), t.size(0), t.size(1), t.size(2), trans};
  }
  // Extents of op(side): the stored ones, rows and columns swapped when read transposed.
  std::int64_t op_rows() const { return trans ? desc().cols : desc().rows; }
  std::int64_t op_cols() const { return trans ? desc().rows : desc().cols; }
  // The stored dim (1 or 2) holding op(side)'s rows / columns, for messages.
  int rows_dim() const { return trans ? 2 : 1; }
  int cols_dim() const { return trans ? 1 : 2; }
};

// The output of a product: block-sparse with `layout`, or dense [batch, rows, cols].
ops::OperandDesc sparse_target(const Layout& l) { return {l, l.batch(), l.rows(), l.cols(), false}; }
ops::OperandDesc dense_target(std::int64_t batch, std::int64_t rows, std::int64_t cols) {
  return {Layout(), batch, rows, cols, false};
}
// The gradient of a side has the side's own stored form.
ops::OperandDesc target_like(const Side& s) {
  ops::OperandDesc d = s.desc();
  d.trans = false;
  return d;
}

Side dense_side(const char* arg, const Tensor& t, bool trans) {
  ops::check_floating(kOp, arg, t);
  ops::check_ndim(kOp, arg, t, 3);
  return {t, Layout(), trans};
}

Side sparse_side(const char* arg, const BlockSparseTensor& x, bool trans) {
  check_block_sparse(kOp, arg, x);
  ops::check_floating(kOp, arg, x.data());
  return {x.data(), x.layout(), trans};
}

// Checks x · y (and layout_out when given) and returns the common block size.
std::int64_t validate(const Side& x, const Side& y, const Layout* layout_out) {
  ops::check_same_dtype(kOp, "x", x.t, "y", y.t);
  ops::check_same_device(kOp, "x", x.t, "y", y.t);
  if (layout_out && !layout_out->defined()) TG_THROW(LayoutError, kOp, ": layout_out is undefined");

  // The block size: that of the first block-sparse argument; the others must agree.
  std::int64_t bs = 0;
  const char* bs_arg = nullptr;
  auto take = [&](const char* arg, const Layout& l) {
    if (bs == 0) {
      bs = l.block_size();
      bs_arg = arg;
    } else if (l.block_size() != bs) {
      TG_THROW(LayoutError, kOp, ": block sizes differ: ", bs_arg, " has block size ", bs, " but ", arg,
               " has block size ", l.block_size(), " (all block-sparse operands and layout_out must share one)");
    }
  };
  if (x.sparse()) take("x", x.layout);
  if (y.sparse()) take("y", y.layout);
  if (layout_out) take("layout_out", *layout_out);

  const ops::OperandDesc dx = x.desc(), dy = y.desc();
  if (dx.batch != dy.batch) {
    TG_THROW(ShapeError, kOp, ": batch extents differ: x has B=", dx.batch, " but y has B=", dy.batch);
  }
  // Names an operand as the product reads it.
  auto op_name = [](const char* arg, const Side& s) { return std::string(arg) + (s.trans ? " (transposed)" : ""); };
  if (x.op_cols() != y.op_rows()) {
    if (x.sparse() && y.sparse()) {
      TG_THROW(ShapeError, kOp, ": inner extents differ: layout of ", op_name("x", x), " has ",
               x.op_cols() / x.layout.block_size(), " block-columns (K=", x.op_cols(), ") but layout of ",
               op_name("y", y), " has ", y.op_rows() / y.layout.block_size(), " block-rows (K=", y.op_rows(), ")");
    }
    TG_THROW(ShapeError, kOp, ": inner extents differ: ", op_name("x", x), " has K=", x.op_cols(), " (dim ",
             x.cols_dim(), ") but ", op_name("y", y), " has K=", y.op_rows(), " (dim ", y.rows_dim(), ")");
  }
  auto divisible = [&](const char* arg, const char* what, int dim, std::int64_t v) {
    if (v % bs != 0) {
      TG_THROW(ShapeError, kOp, ": ", arg, " has ", what, "=", v, " (dim ", dim,
               "), which must be a multiple of the block size ", bs);
    }
  };
  if (!x.sparse()) {
    divisible("x", "M", x.rows_dim(), x.op_rows());
    divisible("x", "K", x.cols_dim(), x.op_cols());
  }
  if (!y.sparse()) {
    divisible("y", "K", y.rows_dim(), y.op_rows());
    divisible("y", "N", y.cols_dim(), y.op_cols());
  }
  if (layout_out) {
    const Shape want{dx.batch, x.op_rows() / bs, y.op_cols() / bs};
    const Shape got{layout_out->batch(), layout_out->block_rows(), layout_out->block_cols()};
    if (want != got) {
      TG_THROW(ShapeError, kOp, ": layout_out must have shape [B, M/bs, N/bs] = ", want, " (B=", dx.batch,
               ", M=", x.op_rows(), ", N=", y.op_cols(), ", bs=", bs, "), got ", got);
    }
  }
  if (x.t.device().is_cuda() && bs < kCudaMinBlock) {
    TG_THROW(LayoutError, kOp, ": block size ", bs, " is not supported on CUDA (expected ", kCudaMinBlock,
             ", 32, 64, 128 or another power of two >= ", kCudaMinBlock, ")");
  }
  return bs;
}

// The block size of the 64-blocks covering a product's blocks of 16 or 32.
constexpr std::int64_t kCoarseBlock = 64;

// The layout of the cb-blocks covering l's, the same object for the same l (its plans and
// device tables are built once).
Layout covering(const Layout& l, std::int64_t cb) {
  return ops::memo_layout("matmul.covering", {cb}, {l}, [&] { return covering_layout(l, cb); });
}

// The desc of side s at block size cb: a block-sparse one under the covering layout.
ops::OperandDesc covering_desc(const Side& s, std::int64_t cb) {
  ops::OperandDesc d = s.desc();
  if (d.sparse()) d.layout = covering(s.layout, cb);
  return d;
}

ops::OperandDesc covering_target(const ops::OperandDesc& c, std::int64_t cb) {
  if (!c.sparse()) return c;
  return sparse_target(covering(c.layout, cb));
}

// Side s at the block size of d (its covering_desc): a block-sparse one's blocks moved into
// d's layout, the fine blocks it lacks as zeros; a dense one as it is.
Side covering_side(const Side& s, const ops::OperandDesc& d) {
  if (!s.sparse()) return s;
  const std::int64_t cb = d.layout.block_size();
  Tensor t = ops::empty_like(s.t, {d.layout.n_blocks(), cb, cb}, s.t.dtype());
  if (d.layout.n_blocks() > 0) ops::sparse_adapt_kernel()(s.t.device())(s.t, s.layout, d.layout, t);
  return {t, d.layout, s.trans};
}

// A product's operands and output at kCoarseBlock.
struct Covering {
  ops::OperandDesc a, b, c;
};

// The covering descs when op(a) · op(b) at block size bs runs on the 64-blocks covering its
// blocks (spmm::CoarseBlocks), else none: the Hopper kernel multiplies 64-blocks several
// times faster per multiply-add than the mma.sync kernels multiply blocks of 16 or 32, so it
// pays unless the covering blocks add much work (max_coarse_work). The extents must be
// multiples of 64. A fine block the covering blocks add is zero, so the sums are those of
// the fine blocks; as on the grouped paths, a non-finite value facing such a zero block
// gives NaN.
std::optional<Covering> covering_route(const Side& a, const Side& b, const ops::OperandDesc& c, std::int64_t bs,
                                       const ops::MatmulPlan& plan) {
  using ops::spmm::CoarseBlocks;
  const CoarseBlocks choice = ops::spmm::coarse_blocks();
  if (choice == CoarseBlocks::Never || bs >= kCoarseBlock || plan.n_pairs() == 0) return std::nullopt;
  for (std::int64_t extent : {a.op_rows(), a.op_cols(), b.op_cols()})
    if (extent % kCoarseBlock != 0) return std::nullopt;
  const Device dev = a.t.device();
  const DType dt = a.t.dtype();
  if (choice == CoarseBlocks::Auto &&
      (!dev.is_cuda() || (dt != DType::bf16 && dt != DType::f16) || !ops::spmm::wgmma_supported(dev.index)))
    return std::nullopt;
  Covering cov{covering_desc(a, kCoarseBlock), covering_desc(b, kCoarseBlock), covering_target(c, kCoarseBlock)};
  if (choice == CoarseBlocks::Always) return cov;
  // Multiply-adds of each plan: pairs of blocks, bs³ each.
  const std::shared_ptr<const ops::MatmulPlan> coarse = ops::matmul_plan(cov.a, cov.b, cov.c, kCoarseBlock);
  const auto work = [](const ops::MatmulPlan& p, std::int64_t s) {
    return static_cast<double>(p.n_pairs()) * static_cast<double>(s * s * s);
  };
  if (work(*coarse, kCoarseBlock) > ops::spmm::max_coarse_work(bs) * work(plan, bs)) return std::nullopt;
  return cov;
}

// op(a) · op(b) by `plan` into a new output of c's form, without autograd.
Tensor run_plan(const ops::MatmulPlan& plan, const Side& a, const Side& b, const ops::OperandDesc& c, std::int64_t bs) {
  const Shape shape = c.sparse() ? Shape{c.layout.n_blocks(), bs, bs} : Shape{c.batch, c.rows, c.cols};
  Tensor out = ops::empty_like(a.t, shape, a.t.dtype());
  if (plan.n_out > 0) ops::sparse_matmul_kernel()(a.t.device())(plan, a.t, b.t, out);
  return out;
}

// op(a) · op(b) into the output described by c, without autograd: on the 64-blocks covering
// blocks of 16 or 32 where covering_route says so, else by the product's own plan.
Tensor run(const Side& a, const Side& b, const ops::OperandDesc& c, std::int64_t bs) {
  std::shared_ptr<const ops::MatmulPlan> plan = ops::matmul_plan(a.desc(), b.desc(), c, bs);
  const std::optional<Covering> cov = plan->n_out > 0 ? covering_route(a, b, c, bs, *plan) : std::nullopt;
  if (!cov) return run_plan(*plan, a, b, c, bs);
  const Side wa = covering_side(a, cov->a), wb = covering_side(b, cov->b);
  const std::shared_ptr<const ops::MatmulPlan> wide = ops::matmul_plan(wa.desc(), wb.desc(), cov->c, kCoarseBlock);
  if (!c.sparse()) return run_plan(*wide, wa, wb, cov->c, kCoarseBlock);
  // (plan->n_out > 0: the fine layout has blocks, and so has the covering one)
  Tensor out = ops::empty_like(a.t, {c.layout.n_blocks(), bs, bs}, a.t.dtype());
  const Device dev = a.t.device();
  if (ops::spmm::fine_stores() && ops::sparse_matmul_fine_kernel()(dev)(*wide, wa.t, wb.t, c.layout, out)) return out;
  const Tensor moved = run_plan(*wide, wa, wb, cov->c, kCoarseBlock);
  ops::sparse_adapt_kernel()(dev)(moved, cov->c.layout, c.layout, out);
  return out;
}

// op(a) · op(b), recording the backward. With C = op(A) · op(B):
//   dop(A) = dC · op(B)ᵀ, so dA = dC · op(B)ᵀ, or its transpose op(B) · dCᵀ when A is read
//   transposed; dop(B) = op(A)ᵀ · dC, so dB = op(A)ᵀ · dC, or dCᵀ · op(A) when B is.
// Each gradient is restricted to its operand's own layout (or dense form).
Tensor product(const Side& a, const Side& b, const ops::OperandDesc& c, std::int64_t bs) {
  Tensor out = run(a, b, c, bs);
  if (autograd::needs_grad({a.t, b.t})) {
    const bool need_a = a.t.requires_grad(), need_b = b.t.requires_grad();
    Side ad{a.t.detach(), a.layout, a.trans}, bd{b.t.detach(), b.layout, b.trans};
    autograd::record(kOp, {a.t, b.t}, {out}, [ad, bd, c, bs, need_a, need_b](const std::vector<Tensor>& g) {
      const Side gc{g[0], c.layout, false}, gct{g[0], c.layout, true};
      Tensor da, db;
      if (need_a) {
        da = ad.trans ? product(bd, gct, target_like(ad), bs)
                      : product(gc, Side{bd.t, bd.layout, !bd.trans}, target_like(ad), bs);
      }
      if (need_b) {
        db = bd.trans ? product(gct, ad, target_like(bd), bs)
                      : product(Side{ad.t, ad.layout, !ad.trans}, gc, target_like(bd), bs);
      }
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

BlockSparseTensor sparse_out(const Side& x, const Side& y, const Layout& layout_out) {
  const std::int64_t bs = validate(x, y, &layout_out);
  return BlockSparseTensor(product(x, y, sparse_target(layout_out), bs), layout_out);
}

Tensor dense_out(const Side& x, const Side& y) {
  const std::int64_t bs = validate(x, y, nullptr);
  return product(x, y, dense_target(x.desc().batch, x.op_rows(), y.op_cols()), bs);
}

}  // namespace

BlockSparseTensor matmul(const Tensor& x, const Tensor& y, const Layout& layout_out, const MatmulOptions& o) {
  return sparse_out(dense_side("x", x, o.transpose_x), dense_side("y", y, o.transpose_y), layout_out);
}
BlockSparseTensor matmul(const BlockSparseTensor& x, const Tensor& y, const Layout& layout_out,
                         const MatmulOptions& o) {
  return sparse_out(sparse_side("x", x, o.transpose_x), dense_side("y", y, o.transpose_y), layout_out);
}
BlockSparseTensor matmul(const Tensor& x, const BlockSparseTensor& y, const Layout& layout_out,
                         const MatmulOptions& o) {
  return sparse_out(dense_side("x", x, o.transpose_x), sparse_side("y", y, o.transpose_y), layout_out);
}
BlockSparseTensor matmul(const BlockSparseTensor& x, const BlockSparseTensor& y, const Layout& layout_out,
                         const MatmulOptions& o) {
  return sparse_out(sparse_side("x", x, o.transpose_x), sparse_side("y", y, o.transpose_y), layout_out);
}
Tensor matmul(const BlockSparseTensor& x, const Tensor& y, const MatmulOptions& o) {
  return dense_out(sparse_side("x", x, o.transpose_x), dense_side("y", y, o.transpose_y));
}
Tensor matmul(const Tensor& x, const BlockSparseTensor& y, const MatmulOptions& o) {
  return dense_out(dense_side("x", x, o.transpose_x), sparse_side("y", y, o.transpose_y));
}
Tensor matmul(const BlockSparseTensor& x, const BlockSparseTensor& y, const MatmulOptions& o) {
  return dense_out(sparse_side("x", x, o.transpose_x), sparse_side("y", y, o.transpose_y));
}

}  // namespace tg
