// Device transfers and dtype conversion. Implemented as ops so that they are
// differentiable: the gradient of to(device) goes back to the source device, the
// gradient of to(dtype) is converted back to the source dtype.
#pragma once

#include "core/tensor.h"

namespace tg {

/// `x` on `device` (x itself when already there).
Tensor to_device(const Tensor& x, Device device);
/// `x` converted to `dtype` (x itself when already of it). Floating to integer truncates
/// toward zero; to bool is x != 0.
Tensor to_dtype(const Tensor& x, DType dtype);
/// A deep copy.
Tensor clone(const Tensor& x);

}  // namespace tg
