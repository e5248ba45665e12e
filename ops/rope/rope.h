// Rotary position embedding (RoPE, Su et al. 2021): pairs of features of a query or key row
// at position p are rotated by the angles p · base^(−2i / rotary_dim), so that the dot
// product of a rotated query and key depends on their positions only through p_q − p_k.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg {

/// The options of rope().
struct RopeOptions {
  /// Pair i turns by p · base^(−2i / rotary_dim), i in [0, rotary_dim / 2).
  double base = 10000.0;
  /// Features rotated: the first rotary_dim of the last dim (even); the rest pass through
  /// unchanged (partial rotary, as in GPT-NeoX). 0: all of them.
  std::int64_t rotary_dim = 0;
  /// Pairs (2i, 2i + 1) (GPT-J) instead of (i, i + rotary_dim / 2) (GPT-NeoX, LLaMA).
  bool interleaved = false;
  /// Positions without a `positions` tensor: offset + s for the s-th row of each sequence
  /// (a KV-cache decoder passes the cache's length).
  std::int64_t offset = 0;
  /// Explicit positions, i32 or i64, [S] (shared by every sequence) or [G, S] with G
  /// dividing N (sequence n reads row n / (N / G): with x [B·H, S, D] and positions [B, S],
  /// the heads of a batch share its positions), on x's device or the CPU. Undefined: offset.
  Tensor positions{};
};

/// Rotates x [..., S, D] (rank >= 2; N = the product of the leading dims sequences of S
/// rows): for each row (n, s) at position p and each pair (a, b) of rotated features,
/// a' = a·cos θ − b·sin θ and b' = a·sin θ + b·cos θ with θ = p · base^(−2i / rotary_dim).
/// The angle is formed and reduced to [−π, π] in f64, its sine and cosine taken in f32
/// (f64 for f64) and the rotation computed in f32 (f64 for f64) and rounded once to x's
/// dtype; the CPU and CUDA results agree to f32 rounding. dtypes f32, f64, bf16, f16.
/// Differentiable in x (backward: the inverse rotation of the gradient).
/// Errors: DTypeError (x not floating, positions not i32 / i64), ShapeError (x of rank < 2,
/// rotary_dim odd, negative or above D, positions not [S] or [G, S] with G dividing N),
/// ValueError (base not finite or <= 0), DeviceError (positions on another GPU). Each
/// message names rope, the argument, expected and given.
Tensor rope(const Tensor& x, const RopeOptions& options = {});

}  // namespace tg
