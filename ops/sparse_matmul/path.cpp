#include "ops/sparse_matmul/path.h"

#include <atomic>

namespace tg::ops::spmm {

namespace {
std::atomic<MmaPath> g_path{MmaPath::Auto};
}  // namespace

void set_mma_path(MmaPath path) { g_path.store(path, std::memory_order_relaxed); }

MmaPath mma_path() { return g_path.load(std::memory_order_relaxed); }

}  // namespace tg::ops::spmm
