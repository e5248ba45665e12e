// In-place initialisers for parameters (torch.nn.init): fill an existing tensor, keeping its
// shape, dtype, device and autograd identity, without recording a graph.
#pragma once

#include <cstdint>
#include <utility>

#include "core/tensor.h"

namespace tg::nn::init {

/// (fan_in, fan_out) of a dense weight: [out, in] -> (in, out); more dims (a kernel [out,
/// in, k...]) multiply both by the product of the dims after the second. Not for
/// block-sparse block data [n, bs, bs], whose fans depend on its layout. Throws ShapeError
/// for fewer than two dims.
std::pair<std::int64_t, std::int64_t> fans(const Tensor& w);

/// Each of these fills `t` in place (floating dtypes; DTypeError otherwise) from Philox with
/// `seed` (the same values on every device) and returns it.
Tensor& uniform_(Tensor& t, double lo, double hi, std::uint64_t seed);
Tensor& normal_(Tensor& t, double mean, double std, std::uint64_t seed);
Tensor& constant_(Tensor& t, double value);
Tensor& zeros_(Tensor& t);
/// Glorot: U(±gain·√(6 / (fan_in + fan_out))).
Tensor& xavier_uniform_(Tensor& w, std::uint64_t seed, double gain = 1.0);
/// Glorot: N(0, gain·√(2 / (fan_in + fan_out))).
Tensor& xavier_normal_(Tensor& w, std::uint64_t seed, double gain = 1.0);
/// He, for ReLU-like layers: N(0, gain / √fan_in), gain √2 by default.
Tensor& kaiming_normal_(Tensor& w, std::uint64_t seed, double gain = 1.4142135623730951);
/// He, uniform: U(±gain·√(3 / fan_in)).
Tensor& kaiming_uniform_(Tensor& w, std::uint64_t seed, double gain = 1.4142135623730951);

}  // namespace tg::nn::init
