// The element-wise operations as enums, for the kernel slots (kernels.h) and for callers
// that run the kernels on raw tensors (e.g. block-sparse data).
#pragma once

#include <type_traits>

namespace tg::ops {

/// Unary ops; the `scalar` argument of the kernels is the exponent for Pow and the
/// operand for the *Scalar ops (SubScalar is AddScalar with -s), unused otherwise.
enum class UnaryOp : int {
  Copy,  ///< identity (also used to broadcast a tensor to a larger shape)
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Relu,
  GeluErf,
  GeluTanh,
  Silu,
  Tanh,
  Sigmoid,
  Abs,
  Pow,
  AddScalar,
  MulScalar,
  DivScalar,
};

enum class BinaryOp : int { Add, Sub, Mul, Div, Maximum, Minimum };

/// X(name) for every UnaryOp / BinaryOp (to turn a runtime op into a template argument).
#define TG_FOR_EACH_UNARY_OP(X) \
  X(Copy) X(Neg) X(Exp) X(Log) X(Sqrt) X(Rsqrt) X(Relu) X(GeluErf) X(GeluTanh) X(Silu) X(Tanh) X(Sigmoid) X(Abs) \
  X(Pow) X(AddScalar) X(MulScalar) X(DivScalar)
#define TG_FOR_EACH_BINARY_OP(X) X(Add) X(Sub) X(Mul) X(Div) X(Maximum) X(Minimum)

/// Calls fn(std::integral_constant<UnaryOp, op>{}): the one switch that turns a runtime op
/// into a kernel's template argument (every op instantiates fn once).
template <typename F>
void with_op(UnaryOp op, F&& fn) {
  switch (op) {
#define TG_CASE(name)                                            \
  case UnaryOp::name:                                            \
    fn(std::integral_constant<UnaryOp, UnaryOp::name>{});       \
    break;
    TG_FOR_EACH_UNARY_OP(TG_CASE)
#undef TG_CASE
  }
}

/// The same for a BinaryOp.
template <typename F>
void with_op(BinaryOp op, F&& fn) {
  switch (op) {
#define TG_CASE(name)                                              \
  case BinaryOp::name:                                             \
    fn(std::integral_constant<BinaryOp, BinaryOp::name>{});       \
    break;
    TG_FOR_EACH_BINARY_OP(TG_CASE)
#undef TG_CASE
  }
}

/// The name of an op ("gelu", "maximum", ...), for messages.
const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

/// Whether the backward of `op` reads the op's output (true) or its input (false): the
/// tensor to pass as `saved` to the unary_bwd kernel.
constexpr bool unary_grad_uses_output(UnaryOp op) {
  return op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Relu ||
         op == UnaryOp::Tanh || op == UnaryOp::Sigmoid;
}

}  // namespace tg::ops
