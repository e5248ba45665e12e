// Element-wise ops on block-sparse tensors (OPS.md "Arithmetic"): the ops of
// ops/elementwise/elementwise.h applied to the active blocks. Each runs the dense op on the
// block data, so the same kernels and backward apply, and returns a block-sparse tensor
// with the input's layout. Inactive blocks stay absent: exp(x) of an absent element is not
// 1, it simply does not exist.
//
// Binary ops need EQUAL layouts (same batch, block grid, block size and mask); there is no
// broadcasting between block-sparse tensors. Dtypes: f32, f64, bf16, f16 (math in f32,
// f64 for f64). All differentiable with respect to the block data.
//
// Errors: tg::LayoutError (malformed operands, differing layouts: "add: layouts of a and b
// differ (a: 12 active blocks of [2, 4, 4] at block 16, b: ...)"), tg::DTypeError
// (non-floating or mixed dtypes), tg::DeviceError (mixed devices).
#pragma once

#include "core/block_sparse.h"
#include "ops/elementwise/elementwise.h"

namespace tg {

BlockSparseTensor neg(const BlockSparseTensor& x);
BlockSparseTensor exp(const BlockSparseTensor& x);
/// Natural log; log(0) = -inf, log(<0) = nan.
BlockSparseTensor log(const BlockSparseTensor& x);
BlockSparseTensor sqrt(const BlockSparseTensor& x);
BlockSparseTensor rsqrt(const BlockSparseTensor& x);
BlockSparseTensor relu(const BlockSparseTensor& x);
/// GELU, exact (erf) by default or the tanh approximation.
BlockSparseTensor gelu(const BlockSparseTensor& x, GeluApprox approx = GeluApprox::None);
BlockSparseTensor silu(const BlockSparseTensor& x);
BlockSparseTensor tanh(const BlockSparseTensor& x);
BlockSparseTensor sigmoid(const BlockSparseTensor& x);
/// |x|; its gradient at 0 is 0.
BlockSparseTensor abs(const BlockSparseTensor& x);
/// x^p for a scalar exponent p.
BlockSparseTensor pow(const BlockSparseTensor& x, double p);

// scalar arithmetic on every active element: x (op) s
BlockSparseTensor add(const BlockSparseTensor& x, double s);
BlockSparseTensor sub(const BlockSparseTensor& x, double s);
BlockSparseTensor mul(const BlockSparseTensor& x, double s);
BlockSparseTensor div(const BlockSparseTensor& x, double s);

// binary, on tensors with equal layouts
BlockSparseTensor add(const BlockSparseTensor& a, const BlockSparseTensor& b);
BlockSparseTensor sub(const BlockSparseTensor& a, const BlockSparseTensor& b);
BlockSparseTensor mul(const BlockSparseTensor& a, const BlockSparseTensor& b);
BlockSparseTensor div(const BlockSparseTensor& a, const BlockSparseTensor& b);
/// Element-wise max; where a == b the gradient goes to a.
BlockSparseTensor maximum(const BlockSparseTensor& a, const BlockSparseTensor& b);
/// Element-wise min; where a == b the gradient goes to a.
BlockSparseTensor minimum(const BlockSparseTensor& a, const BlockSparseTensor& b);

/// Throws tg::LayoutError naming `op` unless a and b are well-formed block-sparse tensors
/// with equal layouts (for ops of your own that combine two block-sparse operands).
void check_same_layout(const char* op, const BlockSparseTensor& a, const BlockSparseTensor& b);

inline BlockSparseTensor operator-(const BlockSparseTensor& x) { return neg(x); }
inline BlockSparseTensor operator+(const BlockSparseTensor& a, const BlockSparseTensor& b) { return add(a, b); }
inline BlockSparseTensor operator-(const BlockSparseTensor& a, const BlockSparseTensor& b) { return sub(a, b); }
inline BlockSparseTensor operator*(const BlockSparseTensor& a, const BlockSparseTensor& b) { return mul(a, b); }
inline BlockSparseTensor operator/(const BlockSparseTensor& a, const BlockSparseTensor& b) { return div(a, b); }
inline BlockSparseTensor operator+(const BlockSparseTensor& x, double s) { return add(x, s); }
inline BlockSparseTensor operator-(const BlockSparseTensor& x, double s) { return sub(x, s); }
inline BlockSparseTensor operator*(const BlockSparseTensor& x, double s) { return mul(x, s); }
inline BlockSparseTensor operator/(const BlockSparseTensor& x, double s) { return div(x, s); }
inline BlockSparseTensor operator+(double s, const BlockSparseTensor& x) { return add(x, s); }
inline BlockSparseTensor operator-(double s, const BlockSparseTensor& x) { return add(neg(x), s); }
inline BlockSparseTensor operator*(double s, const BlockSparseTensor& x) { return mul(x, s); }
/// s / x on every active element.
inline BlockSparseTensor operator/(double s, const BlockSparseTensor& x) { return mul(pow(x, -1.0), s); }

}  // namespace tg
