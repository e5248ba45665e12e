// Finite-difference checks of analytic gradients.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tg::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step
  double atol = 1e-5;  ///< |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  std::uint64_t seed = 1234;  ///< for the random projection of the output (and the directions)
  /// 0: perturb every element of every input (two calls of f an element). k > 0: perturb
  /// each input along k random directions D over all its elements instead (two calls a
  /// direction, like PyTorch's fast mode), comparing <dL/dx, D> from the backward with
  /// (L(x + eps D) - L(x - eps D)) / 2 eps: every gradient element weighs in, for inputs
  /// too large to check element by element. The compared values are sums over the input,
  /// so scale atol with it.
  std::int64_t directions = 0;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string report;  ///< the worst mismatches, readable
  explicit operator bool() const { return ok; }
};

/// Checks the gradients of `f` with respect to each input that requires grad.
/// Inputs must be f64 CPU tensors. The output of f (any shape) is reduced to a scalar by a
/// fixed random projection L = sum(r * f(x)); dL/dx from backward is compared with central
/// differences of L, element by element (or along random directions: opts.directions).
/// Throws tg::DTypeError / DeviceError for other inputs, ValueError for directions < 0.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, GradcheckOptions opts = {});

}  // namespace tg::autograd
