// The scalar math of every element-wise op: forward value and derivative, written once
// for the CPU (cpu.cpp) and CUDA (cuda.cu) kernels so that both compute the same function.
// `A` is the arithmetic type: float for f32/bf16/f16, double for f64.
#pragma once

#include <cmath>

#include "ops/elementwise/ops.h"
#include "runtime/macros.h"

namespace tg::ops::ew {

// Overloads that pick the float or double C function on host and device alike.
TG_HOST_DEVICE TG_INLINE float m_exp(float x) { return ::expf(x); }
TG_HOST_DEVICE TG_INLINE double m_exp(double x) { return ::exp(x); }
TG_HOST_DEVICE TG_INLINE float m_log(float x) { return ::logf(x); }
TG_HOST_DEVICE TG_INLINE double m_log(double x) { return ::log(x); }
TG_HOST_DEVICE TG_INLINE float m_sqrt(float x) { return ::sqrtf(x); }
TG_HOST_DEVICE TG_INLINE double m_sqrt(double x) { return ::sqrt(x); }
TG_HOST_DEVICE TG_INLINE float m_tanh(float x) { return ::tanhf(x); }
TG_HOST_DEVICE TG_INLINE double m_tanh(double x) { return ::tanh(x); }
TG_HOST_DEVICE TG_INLINE float m_erf(float x) { return ::erff(x); }
TG_HOST_DEVICE TG_INLINE double m_erf(double x) { return ::erf(x); }
TG_HOST_DEVICE TG_INLINE float m_abs(float x) { return ::fabsf(x); }
TG_HOST_DEVICE TG_INLINE double m_abs(double x) { return ::fabs(x); }
TG_HOST_DEVICE TG_INLINE float m_pow(float x, float p) { return ::powf(x, p); }
TG_HOST_DEVICE TG_INLINE double m_pow(double x, double p) { return ::pow(x, p); }

// GELU constants: 1/sqrt(2), sqrt(2/pi), 1/sqrt(2 pi), and the cubic coefficient of the
// tanh approximation.
inline constexpr double kInvSqrt2 = 0.70710678118654752440;
inline constexpr double kSqrt2OverPi = 0.79788456080286535588;
inline constexpr double kInvSqrt2Pi = 0.39894228040143267794;
inline constexpr double kGeluCubic = 0.044715;

template <typename A>
TG_HOST_DEVICE TG_INLINE A sigmoid_of(A x) {
  // exp(-x) overflows to inf for very negative x, giving 1/inf = 0: the right limit.
  return A(1) / (A(1) + m_exp(-x));
}

/// The value of unary op OP at x (s: the op's scalar argument).
template <UnaryOp OP, typename A>
TG_HOST_DEVICE TG_INLINE A unary_value(A x, A s) {
  if constexpr (OP == UnaryOp::Copy) {
    return x;
  } else if constexpr (OP == UnaryOp::Neg) {
    return -x;
  } else if constexpr (OP == UnaryOp::Exp) {
    return m_exp(x);
  } else if constexpr (OP == UnaryOp::Log) {
    return m_log(x);
  } else if constexpr (OP == UnaryOp::Sqrt) {
    return m_sqrt(x);
  } else if constexpr (OP == UnaryOp::Rsqrt) {
    return A(1) / m_sqrt(x);
  } else if constexpr (OP == UnaryOp::Relu) {
    return x < A(0) ? A(0) : x;  // NaN propagates
  } else if constexpr (OP == UnaryOp::GeluErf) {
    return A(0.5) * x * (A(1) + m_erf(x * A(kInvSqrt2)));
  } else if constexpr (OP == UnaryOp::GeluTanh) {
    const A inner = A(kSqrt2OverPi) * (x + A(kGeluCubic) * x * x * x);
    return A(0.5) * x * (A(1) + m_tanh(inner));
  } else if constexpr (OP == UnaryOp::Silu) {
    return x * sigmoid_of(x);
  } else if constexpr (OP == UnaryOp::Tanh) {
    return m_tanh(x);
  } else if constexpr (OP == UnaryOp::Sigmoid) {
    return sigmoid_of(x);
  } else if constexpr (OP == UnaryOp::Abs) {
    return m_abs(x);
  } else if constexpr (OP == UnaryOp::Pow) {
    // Small integer exponents by multiplication: exact and cheap (pow(x, 0) = 1 even for NaN).
    if (s == A(2)) return x * x;
    if (s == A(1)) return x;
    if (s == A(0)) return A(1);
    if (s == A(3)) return x * x * x;
    if (s == A(-1)) return A(1) / x;
    return m_pow(x, s);
  } else if constexpr (OP == UnaryOp::AddScalar) {
    return x + s;
  } else if constexpr (OP == UnaryOp::MulScalar) {
    return x * s;
  } else {
    static_assert(OP == UnaryOp::DivScalar);
    return x / s;
  }
}

/// The gradient of unary op OP: g * d(op)/dx, where `saved` is the op's output when
/// unary_grad_uses_output(OP) and its input otherwise.
template <UnaryOp OP, typename A>
TG_HOST_DEVICE TG_INLINE A unary_grad(A saved, A g, A s) {
  if constexpr (OP == UnaryOp::Copy || OP == UnaryOp::AddScalar) {
    return g;
  } else if constexpr (OP == UnaryOp::Neg) {
    return -g;
  } else if constexpr (OP == UnaryOp::Exp) {
    return g * saved;  // saved = exp(x)
  } else if constexpr (OP == UnaryOp::Log) {
    return g / saved;
  } else if constexpr (OP == UnaryOp::Sqrt) {
    return g / (A(2) * saved);  // saved = sqrt(x)
  } else if constexpr (OP == UnaryOp::Rsqrt) {
    return A(-0.5) * g * saved * saved * saved;  // saved = x^-1/2; d/dx = -x^-3/2 / 2
  } else if constexpr (OP == UnaryOp::Relu) {
    return saved > A(0) ? g : A(0);  // saved = relu(x): > 0 exactly where x > 0
  } else if constexpr (OP == UnaryOp::GeluErf) {
    const A cdf = A(0.5) * (A(1) + m_erf(saved * A(kInvSqrt2)));
    const A pdf = m_exp(A(-0.5) * saved * saved) * A(kInvSqrt2Pi);
    return g * (cdf + saved * pdf);
  } else if constexpr (OP == UnaryOp::GeluTanh) {
    const A x = saved;
    const A x2 = x * x;
    const A t = m_tanh(A(kSqrt2OverPi) * (x + A(kGeluCubic) * x2 * x));
    const A dinner = A(kSqrt2OverPi) * (A(1) + A(3 * kGeluCubic) * x2);
    return g * (A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * dinner);
  } else if constexpr (OP == UnaryOp::Silu) {
    const A sg = sigmoid_of(saved);
    return g * sg * (A(1) + saved * (A(1) - sg));
  } else if constexpr (OP == UnaryOp::Tanh) {
    return g * (A(1) - saved * saved);  // saved = tanh(x)
  } else if constexpr (OP == UnaryOp::Sigmoid) {
    return g * saved * (A(1) - saved);  // saved = sigmoid(x)
  } else if constexpr (OP == UnaryOp::Abs) {
    return saved > A(0) ? g : (saved < A(0) ? -g : A(0));
  } else if constexpr (OP == UnaryOp::Pow) {
    if (s == A(0)) return A(0);
    if (s == A(1)) return g;
    if (s == A(2)) return g * A(2) * saved;
    return g * s * m_pow(saved, s - A(1));
  } else if constexpr (OP == UnaryOp::MulScalar) {
    return g * s;
  } else {
    static_assert(OP == UnaryOp::DivScalar);
    return g / s;
  }
}

/// maximum/minimum take a where this is true (a wins ties and a NaN in a), b otherwise;
/// the gradient follows the same choice. A NaN in b propagates through the comparison.
template <BinaryOp OP, typename A>
TG_HOST_DEVICE TG_INLINE bool takes_a(A a, A b) {
  if constexpr (OP == BinaryOp::Maximum) {
    return a >= b || a != a;
  } else {
    return a <= b || a != a;
  }
}

/// The value of binary op OP.
template <BinaryOp OP, typename A>
TG_HOST_DEVICE TG_INLINE A binary_value(A a, A b) {
  if constexpr (OP == BinaryOp::Add) {
    return a + b;
  } else if constexpr (OP == BinaryOp::Sub) {
    return a - b;
  } else if constexpr (OP == BinaryOp::Mul) {
    return a * b;
  } else if constexpr (OP == BinaryOp::Div) {
    return a / b;
  } else {
    return takes_a<OP>(a, b) ? a : b;
  }
}

/// The gradients of binary op OP at (a, b) for output gradient g (before summing over
/// broadcast dims).
template <BinaryOp OP, typename A>
TG_HOST_DEVICE TG_INLINE void binary_grad(A a, A b, A g, A& ga, A& gb) {
  if constexpr (OP == BinaryOp::Add) {
    ga = g;
    gb = g;
  } else if constexpr (OP == BinaryOp::Sub) {
    ga = g;
    gb = -g;
  } else if constexpr (OP == BinaryOp::Mul) {
    ga = g * b;
    gb = g * a;
  } else if constexpr (OP == BinaryOp::Div) {
    ga = g / b;
    gb = -ga * (a / b);  // -g a / b^2 without overflowing b^2
  } else {
    const bool ta = takes_a<OP>(a, b);
    ga = ta ? g : A(0);
    gb = ta ? A(0) : g;
  }
}

// Functors over one element: x holds the N inputs, y receives the M outputs (arithmetic
// type A). The map kernels of both backends call these.
template <UnaryOp OP, typename A>
struct UnaryFwd {
  static constexpr int kIn = 1, kOut = 1;
  A s;
  TG_HOST_DEVICE TG_INLINE void operator()(const A* x, A* y) const { y[0] = unary_value<OP>(x[0], s); }
};
template <UnaryOp OP, typename A>
struct UnaryBwd {  // inputs: saved, grad_out
  static constexpr int kIn = 2, kOut = 1;
  A s;
  TG_HOST_DEVICE TG_INLINE void operator()(const A* x, A* y) const { y[0] = unary_grad<OP>(x[0], x[1], s); }
};
template <BinaryOp OP, typename A>
struct BinaryFwd {
  static constexpr int kIn = 2, kOut = 1;
  TG_HOST_DEVICE TG_INLINE void operator()(const A* x, A* y) const { y[0] = binary_value<OP>(x[0], x[1]); }
};
template <BinaryOp OP, typename A>
struct BinaryBwd {  // inputs: a, b, grad_out; outputs: grad_a, grad_b
  static constexpr int kIn = 3, kOut = 2;
  TG_HOST_DEVICE TG_INLINE void operator()(const A* x, A* y) const { binary_grad<OP>(x[0], x[1], x[2], y[0], y[1]); }
};

}  // namespace tg::ops::ew
