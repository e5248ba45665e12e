#include "ops/sparse_matmul/path.h"

#include <atomic>

#if TG_WITH_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif

namespace tg::ops::spmm {

namespace {
std::atomic<MmaPath> g_path{MmaPath::Auto};
}  // namespace

void set_mma_path(MmaPath path) { g_path.store(path, std::memory_order_relaxed); }

MmaPath mma_path() { return g_path.load(std::memory_order_relaxed); }

bool wgmma_supported(int device) {
#if TG_WITH_CUDA
  return cuda::compute_capability_major(device) == 9 && cuda::compute_capability_minor(device) == 0;
#else
  (void)device;
  return false;
#endif
}

}  // namespace tg::ops::spmm
