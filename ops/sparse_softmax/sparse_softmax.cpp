// Block-sparse softmax: validation, output allocation, dispatch, autograd recording.
#include "ops/sparse_softmax/sparse_softmax.h"

#include <cmath>
#include <sstream>
#include <string>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/sparse_softmax/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(sparse_softmax_fwd_kernel, SparseSoftmaxFwdFn)
TG_DEFINE_KERNEL(sparse_softmax_bwd_kernel, SparseSoftmaxBwdFn)
}  // namespace ops

namespace {

std::string describe(const Layout& l) {
  std::ostringstream os;
  os << l.n_blocks() << " active blocks of " << Shape{l.batch(), l.block_rows(), l.block_cols()} << " at block "
     << l.block_size();
  return os.str();
}

void check_scale(const char* op, double scale) {
  TG_CHECK(std::isfinite(scale), ValueError, op, ": scale must be finite, got ", scale);
}

void check_floating_bs(const char* op, const char* arg, const BlockSparseTensor& t) {
  check_block_sparse(op, arg, t);
  ops::check_floating(op, arg, t.data());
}

void check_mask(const char* op, const BlockSparseTensor& x, const BlockSparseTensor& mask) {
  check_block_sparse(op, "mask", mask);
  ops::check_dtype(op, "mask", mask.data(), DType::boolean);
  if (mask.shape() != x.shape()) {
    TG_THROW(ShapeError, op, ": mask must have the logical shape of x, ", x.shape(), ", got ", mask.shape());
  }
  if (mask.block_size() != x.block_size()) {
    TG_THROW(LayoutError, op, ": mask must have the block size of x, ", x.block_size(), ", got ", mask.block_size());
  }
  ops::check_same_device(op, "x", x.data(), "mask", mask.data());
}

Tensor backward_data(const Tensor& y, const Tensor& dy, const Layout& l, double scale) {
  Tensor dx = ops::empty_like(y);
  if (dx.numel() > 0) ops::sparse_softmax_bwd_kernel()(y.device())(y, dy, l, scale, dx);
  return dx;
}

// Validated x (and mask, when defined): the forward and its autograd node.
BlockSparseTensor forward(const char* op, const BlockSparseTensor& x, const BlockSparseTensor& mask, double scale) {
  const Layout& l = x.layout();
  Tensor y = ops::empty_like(x.data());
  if (y.numel() > 0) ops::sparse_softmax_fwd_kernel()(x.device())(x.data(), l, mask, scale, y);
  if (autograd::needs_grad({x.data()})) {
    autograd::record(op, {x.data()}, {y}, [yd = y.detach(), l, scale](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{backward_data(yd, g[0], l, scale)};
    });
  }
  return BlockSparseTensor(y, l);
}

}  // namespace

BlockSparseTensor softmax(const BlockSparseTensor& x, double scale) {
  check_floating_bs("softmax", "x", x);
  check_scale("softmax", scale);
  return forward("softmax", x, BlockSparseTensor(), scale);
}

BlockSparseTensor masked_softmax(const BlockSparseTensor& x, const BlockSparseTensor& mask, double scale) {
  check_floating_bs("masked_softmax", "x", x);
  check_mask("masked_softmax", x, mask);
  check_scale("masked_softmax", scale);
  return forward("masked_softmax", x, mask, scale);
}

BlockSparseTensor softmax_backward(const BlockSparseTensor& y, const BlockSparseTensor& dy, double scale) {
  const char* op = "softmax_backward";
  check_floating_bs(op, "y", y);
  check_floating_bs(op, "dy", dy);
  if (!(y.layout() == dy.layout())) {
    TG_THROW(LayoutError, op, ": y and dy must have the same layout, got y: ", describe(y.layout()),
             ", dy: ", describe(dy.layout()));
  }
  ops::check_same_dtype(op, "y", y.data(), "dy", dy.data());
  ops::check_same_device(op, "y", y.data(), "dy", dy.data());
  check_scale(op, scale);
  return BlockSparseTensor(backward_data(y.data(), dy.data(), y.layout(), scale), y.layout());
}

}  // namespace tg
