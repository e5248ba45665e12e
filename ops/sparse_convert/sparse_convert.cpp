#include "ops/sparse_convert/sparse_convert.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/factory/factory.h"
#include "ops/sparse_convert/kernels.h"

namespace tg {
namespace ops {
TG_DEFINE_KERNEL(to_sparse_kernel, ToSparseFn)
TG_DEFINE_KERNEL(to_dense_kernel, ToDenseFn)
}  // namespace ops

BlockSparseTensor to_sparse(const Tensor& dense, const Layout& layout) {
  ops::check_ndim("to_sparse", "dense", dense, 3);
  if (!layout.defined()) TG_THROW(LayoutError, "to_sparse: layout is undefined");
  Shape want{layout.batch(), layout.rows(), layout.cols()};
  if (dense.shape() != want) {
    TG_THROW(ShapeError, "to_sparse: dense must have shape [B, M, N] = ", want, " to match the layout (",
             layout.batch(), " x ", layout.block_rows(), " x ", layout.block_cols(), " blocks of size ",
             layout.block_size(), "), got ", dense.shape());
  }
  std::int64_t bs = layout.block_size();
  Tensor blocks = ops::empty_like(dense, {layout.n_blocks(), bs, bs}, dense.dtype());
  if (layout.n_blocks() > 0) ops::to_sparse_kernel()(dense.device())(dense, layout, blocks);
  if (autograd::needs_grad({dense})) {
    autograd::record("to_sparse", {dense}, {blocks}, [layout](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{to_dense(BlockSparseTensor(g[0], layout), 0.0)};
    });
  }
  return BlockSparseTensor(blocks, layout);
}

Tensor to_dense(const BlockSparseTensor& x, double fill_value) {
  check_block_sparse("to_dense", "x", x);
  const Layout& layout = x.layout();
  Tensor dense = empty(x.shape(), {.dtype = x.dtype(), .device = x.device()});
  if (dense.numel() > 0) {
    const Tensor fill = full({1}, fill_value, {.dtype = x.dtype()});
    ops::to_dense_kernel()(x.device())(x.data(), layout, fill, dense);
  }
  if (autograd::needs_grad({x.data()})) {
    autograd::record("to_dense", {x.data()}, {dense}, [layout](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{to_sparse(g[0], layout).data()};
    });
  }
  return dense;
}

}  // namespace tg
