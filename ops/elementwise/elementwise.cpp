// Element-wise ops: validation, output allocation, dispatch, autograd recording.
#include "ops/elementwise/elementwise.h"

#include <algorithm>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/elementwise/kernels.h"
#include "ops/elementwise/plan.h"
#include "ops/factory/factory.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(unary_fwd, UnaryFwdFn)
TG_DEFINE_KERNEL(unary_bwd, UnaryBwdFn)
TG_DEFINE_KERNEL(binary_fwd, BinaryFwdFn)
TG_DEFINE_KERNEL(binary_bwd, BinaryBwdFn)
TG_DEFINE_KERNEL(sum_to_kernel, SumToFn)

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Copy: return "copy";
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Rsqrt: return "rsqrt";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::GeluErf: return "gelu";
    case UnaryOp::GeluTanh: return "gelu_tanh";
    case UnaryOp::Silu: return "silu";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Pow: return "pow";
    case UnaryOp::AddScalar: return "add_scalar";
    case UnaryOp::MulScalar: return "mul_scalar";
    case UnaryOp::DivScalar: return "div_scalar";
  }
  return "?";
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
  }
  return "?";
}
}  // namespace ops

using ops::BinaryOp;
using ops::UnaryOp;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int nd = std::max(a.ndim(), b.ndim());
  std::vector<std::int64_t> dims(static_cast<std::size_t>(nd));
  for (int i = 0; i < nd; ++i) {  // i counts from the last dim
    const std::int64_t ea = i < a.ndim() ? a[a.ndim() - 1 - i] : 1;
    const std::int64_t eb = i < b.ndim() ? b[b.ndim() - 1 - i] : 1;
    if (ea != eb && ea != 1 && eb != 1) {
      TG_THROW(ShapeError, op, ": shapes ", a, " and ", b, " do not broadcast (dim ", -1 - i, ": ", ea, " vs ", eb,
               ")");
    }
    dims[static_cast<std::size_t>(nd - 1 - i)] = ea == 1 ? eb : ea;
  }
  return Shape(std::move(dims));
}

namespace {

// Validates that `from` broadcasts to exactly `to` (used by sum_to and broadcast_to).
void check_broadcasts_to(const char* op, const Shape& from, const Shape& to, const std::string& what) {
  bool ok = from.ndim() <= to.ndim();
  for (int i = 0; ok && i < from.ndim(); ++i) {
    const std::int64_t ef = from[from.ndim() - 1 - i], et = to[to.ndim() - 1 - i];
    ok = ef == et || ef == 1;
  }
  if (!ok) TG_THROW(ShapeError, op, ": ", what);
}

// Runs the Copy kernel with broadcasting: x expanded to `shape` (a new tensor).
Tensor expand_copy(const Tensor& x, const Shape& shape) {
  Tensor out = ops::empty_like(x, shape, x.dtype());
  if (out.numel() > 0) ops::unary_fwd()(x.device())(UnaryOp::Copy, x, out, 0.0);
  return out;
}

// grad_in = unary_grad(op, saved, g) through the backward kernel.
Tensor unary_grad_kernel(UnaryOp op, const Tensor& saved, const Tensor& g, double s) {
  Tensor gi = ops::empty_like(g);
  if (gi.numel() > 0) ops::unary_bwd()(g.device())(op, saved, g, gi, s);
  return gi;
}

Tensor unary(UnaryOp op, const Tensor& x, double s) {
  const char* name = ops::unary_op_name(op);
  ops::check_floating(name, "x", x);
  Tensor out = ops::empty_like(x);
  if (x.numel() > 0) ops::unary_fwd()(x.device())(op, x, out, s);
  if (autograd::needs_grad({x})) {
    switch (op) {
      case UnaryOp::Copy:
      case UnaryOp::AddScalar:
        autograd::record(name, {x}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
        break;
      case UnaryOp::Neg:
        autograd::record(name, {x}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{neg(g[0])}; });
        break;
      case UnaryOp::MulScalar:
        autograd::record(name, {x}, {out},
                         [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{mul(g[0], s)}; });
        break;
      case UnaryOp::DivScalar:
        autograd::record(name, {x}, {out},
                         [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{div(g[0], s)}; });
        break;
      default: {
        Tensor saved = ops::unary_grad_uses_output(op) ? out.detach() : x.detach();
        autograd::record(name, {x}, {out}, [op, s, saved](const std::vector<Tensor>& g) {
          return std::vector<Tensor>{unary_grad_kernel(op, saved, g[0], s)};
        });
      }
    }
  }
  return out;
}

void check_binary(const char* name, const Tensor& a, const Tensor& b) {
  ops::check_floating(name, "a", a);
  ops::check_floating(name, "b", b);
  ops::check_same_dtype(name, "a", a, "b", b);
  ops::check_same_device(name, "a", a, "b", b);
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = ops::binary_op_name(op);
  check_binary(name, a, b);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  (void)ops::make_map_plan<2>(shape, {a.shape(), b.shape()}, name);  // rejects > 8 broadcast dims up front
  Tensor out = ops::empty_like(a, shape, a.dtype());
  if (out.numel() > 0) ops::binary_fwd()(a.device())(op, a, b, out);
  if (autograd::needs_grad({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    const Shape sa = a.shape(), sb = b.shape();
    if (op == BinaryOp::Add || op == BinaryOp::Sub) {
      autograd::record(name, {a, b}, {out}, [op, need_a, need_b, sa, sb](const std::vector<Tensor>& g) {
        Tensor ga = need_a ? sum_to(g[0], sa) : Tensor();
        Tensor gb;
        if (need_b) gb = op == BinaryOp::Add ? sum_to(g[0], sb) : neg(sum_to(g[0], sb));
        return std::vector<Tensor>{ga, gb};
      });
    } else {
      autograd::record(name, {a, b}, {out},
                       [op, need_a, need_b, ad = a.detach(), bd = b.detach()](const std::vector<Tensor>& g) {
                         const Tensor& go = g[0];
                         Tensor ga = need_a ? ops::empty_like(go) : Tensor();
                         Tensor gb = need_b ? ops::empty_like(go) : Tensor();
                         if (go.numel() > 0) ops::binary_bwd()(go.device())(op, ad, bd, go, ga, gb);
                         return std::vector<Tensor>{need_a ? sum_to(ga, ad.shape()) : Tensor(),
                                                    need_b ? sum_to(gb, bd.shape()) : Tensor()};
                       });
    }
  }
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(UnaryOp::Neg, x, 0.0); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x, 0.0); }
Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x, 0.0); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::Sqrt, x, 0.0); }
Tensor rsqrt(const Tensor& x) { return unary(UnaryOp::Rsqrt, x, 0.0); }
Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x, 0.0); }
Tensor gelu(const Tensor& x, GeluApprox approx) {
  return unary(approx == GeluApprox::Tanh ? UnaryOp::GeluTanh : UnaryOp::GeluErf, x, 0.0);
}
Tensor silu(const Tensor& x) { return unary(UnaryOp::Silu, x, 0.0); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::Tanh, x, 0.0); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::Sigmoid, x, 0.0); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::Abs, x, 0.0); }
Tensor pow(const Tensor& x, double p) { return unary(UnaryOp::Pow, x, p); }

Tensor add(const Tensor& x, double s) { return unary(UnaryOp::AddScalar, x, s); }
Tensor sub(const Tensor& x, double s) { return unary(UnaryOp::AddScalar, x, -s); }
Tensor mul(const Tensor& x, double s) { return unary(UnaryOp::MulScalar, x, s); }
Tensor div(const Tensor& x, double s) { return unary(UnaryOp::DivScalar, x, s); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Minimum, a, b); }

Tensor sum_to(const Tensor& x, const Shape& shape) {
  ops::check_floating("sum_to", "x", x);
  for (auto d : shape.dims()) {
    if (d < 0) TG_THROW(ShapeError, "sum_to: shape must have non-negative extents, got ", shape);
  }
  check_broadcasts_to("sum_to", shape, x.shape(),
                      detail::concat("shape ", shape, " does not broadcast to x's shape ", x.shape()));
  if (shape == x.shape()) return x;
  (void)ops::make_sum_to_plan(x.shape(), shape, "sum_to");
  Tensor out = ops::empty_like(x, shape, x.dtype());
  if (out.numel() > 0) ops::sum_to_kernel()(x.device())(x, out);
  if (autograd::needs_grad({x})) {
    autograd::record("sum_to", {x}, {out}, [xs = x.shape()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{broadcast_to(g[0], xs)};
    });
  }
  return out;
}

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  ops::check_floating("broadcast_to", "x", x);
  for (auto d : shape.dims()) {
    if (d < 0) TG_THROW(ShapeError, "broadcast_to: shape must have non-negative extents, got ", shape);
  }
  check_broadcasts_to("broadcast_to", x.shape(), shape,
                      detail::concat("x's shape ", x.shape(), " does not broadcast to ", shape));
  if (shape == x.shape()) return x;
  (void)ops::make_map_plan<1>(shape, {x.shape()}, "broadcast_to");
  Tensor out = expand_copy(x, shape);
  if (autograd::needs_grad({x})) {
    autograd::record("broadcast_to", {x}, {out}, [xs = x.shape()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{sum_to(g[0], xs)};
    });
  }
  return out;
}

}  // namespace tg
