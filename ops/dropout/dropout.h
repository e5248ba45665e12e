// Dropout with a counter-based (Philox) mask: element i is kept iff
// philox::uniform(seed, offset, i) >= p, so the CPU and CUDA masks are identical.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg {

/// Zeroes each element with probability p and scales the rest by 1/(1-p). p in [0, 1);
/// p == 0 returns x. Differentiable (the same mask scales the gradient).
/// Errors: ValueError (p outside [0, 1)), DTypeError (non-floating).
Tensor dropout(const Tensor& x, double p, std::uint64_t seed, std::uint64_t offset);

}  // namespace tg
