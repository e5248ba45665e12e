// Kernel slots of the factory family. Every kernel writes all numel elements of `out`
// (contiguous, any dtype unless noted); numel > 0.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// out[i] = cast_value<dtype>(value).
using FillFn = void(const Tensor& out, double value);
TG_DECLARE_KERNEL(fill, FillFn);

/// out[i] = uniform_value(seed, offset, i, lo, hi) (floating out; see random_math.h).
using RandUniformFn = void(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi);
TG_DECLARE_KERNEL(rand_uniform, RandUniformFn);

/// out[i] = normal_value(seed, offset, i, mean, std) (floating out).
using RandNormalFn = void(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std);
TG_DECLARE_KERNEL(rand_normal, RandNormalFn);

/// out[i] = randint_value(seed, offset, i, lo, hi) (any dtype but bool); lo < hi.
using RandIntFn = void(const Tensor& out, std::uint64_t seed, std::uint64_t offset, std::int64_t lo,
                       std::int64_t hi);
TG_DECLARE_KERNEL(rand_int, RandIntFn);

}  // namespace tg::ops
