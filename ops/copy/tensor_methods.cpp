// The conversion members of Tensor (declared in core/tensor.h), implemented by the copy ops.
#include "core/tensor.h"
#include "ops/copy/copy.h"

namespace tg {

Tensor Tensor::to(Device device) const { return to_device(*this, device); }
Tensor Tensor::to(DType dtype) const { return to_dtype(*this, dtype); }
Tensor Tensor::clone() const { return tg::clone(*this); }

}  // namespace tg
