#include "ops/sparse_softmax/staged_threads.h"

#include <atomic>

#include "ops/common.h"
#include "runtime/error.h"

namespace tg::ops {
namespace {

std::atomic<int> g_threads{0};

int threads_from_environment() {
  static constexpr int kThreads[] = {0, 128, 256};
  return kThreads[env_choice("softmax", "TG_SOFTMAX_STAGE_THREADS", "128", "256")];
}

}  // namespace

void set_staged_threads(int n) {
  if (n != 0 && n != 128 && n != 256)
    TG_THROW(ValueError, "set_staged_threads: argument n: expected 0, 128 or 256, got ", n);
  g_threads.store(n, std::memory_order_relaxed);
}

int staged_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  if (n != 0) return n;
  static const int env = threads_from_environment();
  return env;
}

}  // namespace tg::ops
