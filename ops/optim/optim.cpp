#include "ops/optim/kernels.h"

namespace tg::ops {
TG_DEFINE_KERNEL(adamw_kernel, AdamWFn)
TG_DEFINE_KERNEL(sgd_kernel, SgdFn)
}  // namespace tg::ops
