// Kernel slots of the dropout family. Every kernel receives validated, allocated tensors.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "runtime/macros.h"
#include "runtime/philox.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// The keep threshold for drop probability p in [0, 1): element i is kept iff
/// (philox::bits(seed, offset, i) >> 8) >= threshold, which is exactly
/// philox::uniform(seed, offset, i) >= p (uniform is k / 2^24 for the 24-bit k, and
/// p * 2^24 is exact in double). Integer compare: both backends decide identically.
inline std::uint32_t dropout_threshold(double p) { return philox::threshold(p, 24); }

/// out[i] = keep(i) ? x[i] * scale : 0 for every i < x.numel() (numel > 0), in the
/// accumulation type (f32; f64 for f64) and rounded once to x's dtype.
using DropoutFn = void(const Tensor& x, std::uint32_t threshold, double scale, std::uint64_t seed,
                       std::uint64_t offset, const Tensor& out);
TG_DECLARE_KERNEL(dropout_kernel, DropoutFn);

}  // namespace tg::ops
