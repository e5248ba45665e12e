#include "ops/sparse_softmax/staged_threads.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace tg::ops {
namespace {

std::atomic<int> g_threads{0};

int threads_from_environment() {
  const char* v = std::getenv("TG_SOFTMAX_STAGE_THREADS");
  if (v == nullptr || *v == '\0') return 0;
  const std::string s(v);
  if (s == "128") return 128;
  if (s == "256") return 256;
  TG_THROW(ValueError, "softmax: environment variable TG_SOFTMAX_STAGE_THREADS: expected 128 or 256, got '", s, "'");
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
