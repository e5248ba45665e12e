#include "ops/sparse_matmul/path.h"

#include <atomic>
#include <mutex>

#include "ops/common.h"
#include "ops/knob.h"
#include "runtime/device.h"
#include "runtime/error.h"

namespace tg::ops::spmm {

namespace {
std::atomic<MmaPath> g_path{MmaPath::Auto};
std::atomic<int> g_max_ctas{0};
constinit Knob<CoarseBlocks> g_coarse{
    "matmul", "TG_MATMUL_COARSE", "never", "always", CoarseBlocks::Never, CoarseBlocks::Always, CoarseBlocks::Auto};
std::atomic<bool> g_fine_stores{true};
}  // namespace

void set_mma_path(MmaPath path) { g_path.store(path, std::memory_order_relaxed); }

MmaPath mma_path() { return g_path.load(std::memory_order_relaxed); }

void set_tma_max_ctas(int n) {
  if (n < 0) TG_THROW(Error, "matmul: set_tma_max_ctas: n must be >= 0 (0: one CTA an SM), got ", n);
  g_max_ctas.store(n, std::memory_order_relaxed);
}

int tma_max_ctas() { return g_max_ctas.load(std::memory_order_relaxed); }

bool wgmma_supported(int device) { return cuda_compute_capability(device) == 90; }

void set_coarse_blocks(CoarseBlocks c) { g_coarse.set(c); }

CoarseBlocks coarse_blocks() { return g_coarse.get(); }

void set_fine_stores(bool on) { g_fine_stores.store(on, std::memory_order_relaxed); }

bool fine_stores() {
  if (!g_fine_stores.load(std::memory_order_relaxed)) return false;
  static std::once_flag read;
  static int from_env = 0;
  std::call_once(read, [] { from_env = env_choice("matmul", "TG_MATMUL_FINE_STORES", "on", "off"); });
  return from_env != 2;
}

}  // namespace tg::ops::spmm
