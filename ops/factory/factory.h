// Tensor factories. Random ones use Philox-4x32-10: the same seed gives the same numbers
// on the CPU and on CUDA.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg {

Tensor zeros(const Shape& shape, TensorOptions opts = {});
Tensor ones(const Shape& shape, TensorOptions opts = {});
Tensor full(const Shape& shape, double value, TensorOptions opts = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
/// [start, start+step, ...) up to (excluding) end, as a 1-d tensor.
Tensor arange(double start, double end, double step = 1.0, TensorOptions opts = {.dtype = DType::i64});
inline Tensor arange(std::int64_t n, TensorOptions opts = {.dtype = DType::i64}) {
  return arange(0.0, static_cast<double>(n), 1.0, opts);
}

/// Seed and stream offset of the global generator used when no seed is given.
void manual_seed(std::uint64_t seed);

/// Uniform in [lo, hi). Floating dtypes.
Tensor rand(const Shape& shape, TensorOptions opts = {}, double lo = 0.0, double hi = 1.0);
/// Standard normal times std plus mean. Floating dtypes.
Tensor randn(const Shape& shape, TensorOptions opts = {}, double mean = 0.0, double std = 1.0);
/// The same with an explicit seed (does not advance the global generator).
Tensor rand_seeded(const Shape& shape, std::uint64_t seed, TensorOptions opts = {}, double lo = 0.0, double hi = 1.0);
Tensor randn_seeded(const Shape& shape, std::uint64_t seed, TensorOptions opts = {}, double mean = 0.0,
                    double std = 1.0);
/// Integers uniform in [lo, hi) (i64 by default).
Tensor randint(std::int64_t lo, std::int64_t hi, const Shape& shape, TensorOptions opts = {.dtype = DType::i64});

}  // namespace tg
