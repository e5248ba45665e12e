// Kernel slots of the element-wise family. They take raw contiguous tensors of any shape
// (e.g. block-sparse data [n, bs, bs]) of one floating dtype on one device; numel(out) > 0.
// Outputs are written in full; inputs are read with NumPy broadcasting against the
// output's shape (see plan.h).
#pragma once

#include "core/tensor.h"
#include "ops/dispatch.h"
#include "ops/elementwise/ops.h"

namespace tg::ops {

/// out = op(x, scalar). x has out's shape, except that UnaryOp::Copy may broadcast x.
using UnaryFwdFn = void(UnaryOp op, const Tensor& x, const Tensor& out, double scalar);
TG_DECLARE_KERNEL(unary_fwd, UnaryFwdFn);

/// grad_in = grad_out * op'(x): `saved` is op's output when unary_grad_uses_output(op), else
/// its input. saved, grad_out and grad_in have one shape.
using UnaryBwdFn = void(UnaryOp op, const Tensor& saved, const Tensor& grad_out, const Tensor& grad_in,
                        double scalar);
TG_DECLARE_KERNEL(unary_bwd, UnaryBwdFn);

/// out = op(a, b); a and b broadcast to out's shape.
using BinaryFwdFn = void(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
TG_DECLARE_KERNEL(binary_fwd, BinaryFwdFn);

/// The per-element gradients of out = op(a, b) at grad_out's (= out's) shape, before
/// summing over broadcast dims: grad_a and grad_b have grad_out's shape; either may be
/// undefined (not computed).
using BinaryBwdFn = void(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& grad_out,
                         const Tensor& grad_a, const Tensor& grad_b);
TG_DECLARE_KERNEL(binary_bwd, BinaryBwdFn);

/// out = x summed over the dims where out (aligned to x's rank by leading 1s) has extent 1
/// and x does not. Accumulates in f32 (f64 for f64). x may be empty (out becomes 0).
using SumToFn = void(const Tensor& x, const Tensor& out);
TG_DECLARE_KERNEL(sum_to_kernel, SumToFn);

}  // namespace tg::ops
