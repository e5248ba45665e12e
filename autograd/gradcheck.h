// Finite-difference checks of analytic gradients.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tg::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step
  double atol = 1e-5;  ///< |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  std::uint64_t seed = 1234;  ///< for the random projection of the output
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
/// differences of L, element by element. Throws tg::DTypeError / DeviceError for other inputs.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, GradcheckOptions opts = {});

}  // namespace tg::autograd
