// Element-wise ops on block-sparse tensors: validation, then the dense op on the block
// data (its kernels and its autograd node), wrapped with the input's layout. No kernels of
// their own: an element-wise op does not care where an element sits in the matrix.
#include "ops/sparse_elementwise/sparse_elementwise.h"

#include <sstream>

#include "ops/common.h"

namespace tg {

namespace {

std::string describe(const Layout& l) {
  std::ostringstream os;
  os << l.n_blocks() << " active blocks of " << Shape{l.batch(), l.block_rows(), l.block_cols()} << " at block "
     << l.block_size();
  return os.str();
}

const BlockSparseTensor& checked(const char* op, const char* arg, const BlockSparseTensor& x) {
  check_block_sparse(op, arg, x);
  return x;
}

template <typename F>
BlockSparseTensor unary(const char* op, const BlockSparseTensor& x, F&& f) {
  checked(op, "x", x);
  ops::check_floating(op, "x", x.data());
  return BlockSparseTensor(f(x.data()), x.layout());
}

template <typename F>
BlockSparseTensor binary(const char* op, const BlockSparseTensor& a, const BlockSparseTensor& b, F&& f) {
  check_same_layout(op, a, b);
  ops::check_floating(op, "a", a.data());
  ops::check_floating(op, "b", b.data());
  ops::check_same_dtype(op, "a", a.data(), "b", b.data());
  ops::check_same_device(op, "a", a.data(), "b", b.data());
  return BlockSparseTensor(f(a.data(), b.data()), a.layout());
}

}  // namespace

void check_same_layout(const char* op, const BlockSparseTensor& a, const BlockSparseTensor& b) {
  checked(op, "a", a);
  checked(op, "b", b);
  const Layout &la = a.layout(), &lb = b.layout();
  if (la == lb) return;
  const char* why = la.block_size() != lb.block_size() ? "block sizes differ"
                    : (la.batch() != lb.batch() || la.block_rows() != lb.block_rows() ||
                       la.block_cols() != lb.block_cols())
                        ? "block grids differ"
                        : "masks differ";
  TG_THROW(LayoutError, op, ": layouts of a and b differ (a: ", describe(la), ", b: ", describe(lb), "): ", why,
           "; element-wise ops on block-sparse tensors need equal layouts");
}

BlockSparseTensor neg(const BlockSparseTensor& x) { return unary("neg", x, [](const Tensor& d) { return neg(d); }); }
BlockSparseTensor exp(const BlockSparseTensor& x) { return unary("exp", x, [](const Tensor& d) { return exp(d); }); }
BlockSparseTensor log(const BlockSparseTensor& x) { return unary("log", x, [](const Tensor& d) { return log(d); }); }
BlockSparseTensor sqrt(const BlockSparseTensor& x) {
  return unary("sqrt", x, [](const Tensor& d) { return sqrt(d); });
}
BlockSparseTensor rsqrt(const BlockSparseTensor& x) {
  return unary("rsqrt", x, [](const Tensor& d) { return rsqrt(d); });
}
BlockSparseTensor relu(const BlockSparseTensor& x) {
  return unary("relu", x, [](const Tensor& d) { return relu(d); });
}
BlockSparseTensor gelu(const BlockSparseTensor& x, GeluApprox approx) {
  return unary("gelu", x, [approx](const Tensor& d) { return gelu(d, approx); });
}
BlockSparseTensor silu(const BlockSparseTensor& x) {
  return unary("silu", x, [](const Tensor& d) { return silu(d); });
}
BlockSparseTensor tanh(const BlockSparseTensor& x) {
  return unary("tanh", x, [](const Tensor& d) { return tanh(d); });
}
BlockSparseTensor sigmoid(const BlockSparseTensor& x) {
  return unary("sigmoid", x, [](const Tensor& d) { return sigmoid(d); });
}
BlockSparseTensor abs(const BlockSparseTensor& x) { return unary("abs", x, [](const Tensor& d) { return abs(d); }); }
BlockSparseTensor pow(const BlockSparseTensor& x, double p) {
  return unary("pow", x, [p](const Tensor& d) { return pow(d, p); });
}

BlockSparseTensor add(const BlockSparseTensor& x, double s) {
  return unary("add", x, [s](const Tensor& d) { return add(d, s); });
}
BlockSparseTensor sub(const BlockSparseTensor& x, double s) {
  return unary("sub", x, [s](const Tensor& d) { return sub(d, s); });
}
BlockSparseTensor mul(const BlockSparseTensor& x, double s) {
  return unary("mul", x, [s](const Tensor& d) { return mul(d, s); });
}
BlockSparseTensor div(const BlockSparseTensor& x, double s) {
  return unary("div", x, [s](const Tensor& d) { return div(d, s); });
}

BlockSparseTensor add(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("add", a, b, [](const Tensor& x, const Tensor& y) { return add(x, y); });
}
BlockSparseTensor sub(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("sub", a, b, [](const Tensor& x, const Tensor& y) { return sub(x, y); });
}
BlockSparseTensor mul(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("mul", a, b, [](const Tensor& x, const Tensor& y) { return mul(x, y); });
}
BlockSparseTensor div(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("div", a, b, [](const Tensor& x, const Tensor& y) { return div(x, y); });
}
BlockSparseTensor maximum(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("maximum", a, b, [](const Tensor& x, const Tensor& y) { return maximum(x, y); });
}
BlockSparseTensor minimum(const BlockSparseTensor& a, const BlockSparseTensor& b) {
  return binary("minimum", a, b, [](const Tensor& x, const Tensor& y) { return minimum(x, y); });
}

}  // namespace tg
