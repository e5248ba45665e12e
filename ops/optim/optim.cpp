#include "ops/optim/kernels.h"

namespace tg::ops {
TG_DEFINE_KERNEL(adamw_kernel, AdamWFn)
TG_DEFINE_KERNEL(sgd_kernel, SgdFn)
TG_DEFINE_KERNEL(grad_squares_kernel, GradSquaresFn)
TG_DEFINE_KERNEL(grad_scale_kernel, GradScaleFn)
}  // namespace tg::ops
