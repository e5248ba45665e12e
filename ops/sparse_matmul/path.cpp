#include "ops/sparse_matmul/path.h"

#include <atomic>

#include "runtime/device.h"

namespace tg::ops::spmm {

namespace {
std::atomic<MmaPath> g_path{MmaPath::Auto};
}  // namespace

void set_mma_path(MmaPath path) { g_path.store(path, std::memory_order_relaxed); }

MmaPath mma_path() { return g_path.load(std::memory_order_relaxed); }

bool wgmma_supported(int device) { return cuda_compute_capability(device) == 90; }

}  // namespace tg::ops::spmm
