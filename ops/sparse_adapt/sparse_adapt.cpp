#include "ops/sparse_adapt/sparse_adapt.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/layout/derived.h"
#include "ops/sparse_adapt/kernels.h"

namespace tg {
namespace ops {
TG_DEFINE_KERNEL(sparse_adapt_kernel, AdaptFn)
TG_DEFINE_KERNEL(sparse_nonzero_blocks_kernel, NonzeroBlocksFn)
}  // namespace ops

namespace {

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// x's values moved into `out_layout`; differentiable (the backward moves back).
BlockSparseTensor adapt_impl(const BlockSparseTensor& x, const Layout& out_layout) {
  const std::int64_t bs = out_layout.block_size();
  Tensor out = ops::empty_like(x.data(), {out_layout.n_blocks(), bs, bs}, x.dtype());
  if (out_layout.n_blocks() > 0) ops::sparse_adapt_kernel()(x.device())(x.data(), x.layout(), out_layout, out);
  if (autograd::needs_grad({x.data()})) {
    autograd::record("adapt_layout", {x.data()}, {out}, [lx = x.layout(), out_layout](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{adapt_impl(BlockSparseTensor(g[0], out_layout), lx).data()};
    });
  }
  return BlockSparseTensor(out, out_layout);
}

void check_extent(const char* what, std::int64_t from, std::int64_t bs_from, std::int64_t to, std::int64_t bs_to) {
  if (to == round_up(from, bs_to) || from == round_up(to, bs_from)) return;
  TG_THROW(ShapeError, "adapt_layout: layout_to has ", what, " = ", to, " but x has ", what, " = ", from,
           "; expected ", round_up(from, bs_to), " (x's extent rounded up to bs_to = ", bs_to,
           ") or an extent that rounds up to ", from, " at x's block size ", bs_from);
}

}  // namespace

BlockSparseTensor adapt_layout(const BlockSparseTensor& x, std::int64_t bs_to, const Layout& layout_to) {
  check_block_sparse("adapt_layout", "x", x);
  if (bs_to < 1 || (bs_to & (bs_to - 1))) {
    TG_THROW(LayoutError, "adapt_layout: bs_to must be a power of two >= 1, got ", bs_to);
  }
  if (!layout_to.defined()) return adapt_impl(x, adapted_layout(x, bs_to));
  if (layout_to.block_size() != bs_to) {
    TG_THROW(LayoutError, "adapt_layout: layout_to has block size ", layout_to.block_size(), " but bs_to is ", bs_to);
  }
  const Layout& lx = x.layout();
  if (layout_to.batch() != lx.batch()) {
    TG_THROW(ShapeError, "adapt_layout: layout_to has batch ", layout_to.batch(), " but x has batch ", lx.batch());
  }
  check_extent("M", lx.rows(), lx.block_size(), layout_to.rows(), bs_to);
  check_extent("N", lx.cols(), lx.block_size(), layout_to.cols(), bs_to);
  return adapt_impl(x, layout_to);
}

}  // namespace tg
