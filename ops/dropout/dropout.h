// Dropout with a counter-based (Philox) mask: element i is kept iff
// philox::uniform(seed, offset, i) >= p, so the CPU and CUDA masks are identical.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg {

/// Zeroes each element with probability p and scales the rest by 1/(1-p) (in f32, f64 for
/// f64, rounded once to x's dtype); dropped elements are exactly 0, even where x is inf or
/// nan. p in [0, 1); p == 0 returns x itself. The mask depends only on (seed, offset, flat
/// index), so the same call on the CPU and on CUDA drops the same elements; use a new
/// offset (or seed) per call for independent masks. Differentiable: the backward
/// recomputes the mask from (seed, offset) (nothing is stored) and applies it to the
/// gradient. Errors: ValueError (p outside [0, 1) or nan; x undefined), DTypeError
/// (non-floating x).
Tensor dropout(const Tensor& x, double p, std::uint64_t seed, std::uint64_t offset);

}  // namespace tg
