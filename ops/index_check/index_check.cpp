#include "ops/index_check/kernels.h"

#include "runtime/deferred_checks.h"

namespace tg::ops {

TG_DEFINE_KERNEL(index_range_kernel, IndexRangeFn)

const char* deferred_check_note(const Device& device) {
  return device.is_cuda() && !sync_checks()
             ? " (checked on the device after the op returned; TG_SYNC_CHECKS=1 or tg::set_sync_checks(true) makes "
               "the op itself throw)"
             : "";
}

}  // namespace tg::ops
