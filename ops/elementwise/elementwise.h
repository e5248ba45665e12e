// Element-wise ops on dense tensors (floating dtypes: f32, f64, bf16, f16; math in f32,
// f64 for f64). All differentiable. Binary ops broadcast NumPy-style (e.g. a trailing row
// vector [N] against [..., N], or a one-element tensor against anything); both operands
// must have the same dtype and device. Errors: tg::DTypeError (non-floating or mixed
// dtypes), tg::DeviceError (mixed devices), tg::ShapeError (shapes that do not broadcast).
#pragma once

#include "core/tensor.h"

namespace tg {

enum class GeluApprox { None, Tanh };

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
/// Natural log; log(0) = -inf, log(<0) = nan.
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor relu(const Tensor& x);
/// GELU, exact (erf) by default or the tanh approximation.
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::None);
Tensor silu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
/// |x|; its gradient at 0 is 0.
Tensor abs(const Tensor& x);
/// x^p for a scalar exponent p.
Tensor pow(const Tensor& x, double p);

// scalar arithmetic: x (op) s
Tensor add(const Tensor& x, double s);
Tensor sub(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);
Tensor div(const Tensor& x, double s);

// binary with broadcasting
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
/// Element-wise max; where a == b the gradient goes to a.
Tensor maximum(const Tensor& a, const Tensor& b);
/// Element-wise min; where a == b the gradient goes to a.
Tensor minimum(const Tensor& a, const Tensor& b);

/// The shape a and b broadcast to; throws tg::ShapeError naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op = "broadcast");
/// Sums `x` over broadcast dims so that it has `shape` (the backward of broadcasting):
/// `shape` must broadcast to x's shape (tg::ShapeError otherwise). Returns x itself when
/// the shapes are equal. Accumulates in f32 (f64 for f64). Differentiable.
Tensor sum_to(const Tensor& x, const Shape& shape);
/// `x` repeated NumPy-style to `shape` (a new contiguous tensor; x itself when the shapes
/// are equal); x's shape must broadcast to `shape` (tg::ShapeError otherwise).
/// Differentiable (backward: sum_to).
Tensor broadcast_to(const Tensor& x, const Shape& shape);

inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return div(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return add(neg(a), s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(double s, const Tensor& a) { return mul(pow(a, -1.0), s); }

}  // namespace tg
