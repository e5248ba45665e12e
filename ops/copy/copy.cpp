// Device transfers, dtype conversion and clone: validation, dispatch, autograd.
#include "ops/copy/copy.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/copy/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(cast_dtype, CastFn)
}  // namespace ops

namespace {

void check_device_exists(const char* op, Device device) {
  if (device.index < 0) TG_THROW(DeviceError, op, ": device index must be >= 0, got ", device);
  if (device.is_cuda() && device.index >= cuda_device_count()) {
    TG_THROW(DeviceError, op, ": device ", device, " does not exist (", cuda_device_count(),
             " CUDA device(s) visible)");
  }
}

}  // namespace

Tensor to_device(const Tensor& x, Device device) {
  ops::check_defined("to_device", "x", x);
  if (x.device() == device) return x;
  check_device_exists("to_device", device);
  Tensor out = empty(x.shape(), {.dtype = x.dtype(), .device = device});
  copy_bytes(out, x);
  if (autograd::needs_grad({x})) {
    autograd::record("to_device", {x}, {out}, [src = x.device()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{to_device(g[0], src)};
    });
  }
  return out;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  ops::check_defined("to_dtype", "x", x);
  if (x.dtype() == dtype) return x;
  Tensor out = ops::empty_like(x, x.shape(), dtype);
  if (x.numel() > 0) ops::cast_dtype()(x.device())(x, out);
  // Only a floating result can carry a gradient back (an integer or bool result is a
  // constant as far as autograd is concerned).
  if (is_floating(dtype) && autograd::needs_grad({x})) {
    autograd::record("to_dtype", {x}, {out}, [src = x.dtype()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{to_dtype(g[0], src)};
    });
  }
  return out;
}

Tensor clone(const Tensor& x) {
  ops::check_defined("clone", "x", x);
  Tensor out = ops::empty_like(x);
  copy_bytes(out, x);
  if (autograd::needs_grad({x})) {
    autograd::record("clone", {x}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  }
  return out;
}

}  // namespace tg
