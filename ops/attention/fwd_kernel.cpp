#include "ops/attention/fwd_kernel.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace tg::ops::attn {
namespace {

std::atomic<FwdKernel> g_forced{FwdKernel::Auto};
std::atomic<std::int64_t> g_wgmma_launches{0};

// TG_ATTENTION_FWD, read once: Auto when unset.
FwdKernel from_environment() {
  static const FwdKernel k = [] {
    const char* v = std::getenv("TG_ATTENTION_FWD");
    if (v == nullptr || *v == '\0') return FwdKernel::Auto;
    const std::string s(v);
    if (s == "mma") return FwdKernel::Mma;
    if (s == "wgmma") return FwdKernel::Wgmma;
    TG_THROW(ValueError, "flash_attention: environment variable TG_ATTENTION_FWD: expected mma or wgmma, got '", s,
             "'");
  }();
  return k;
}

}  // namespace

void set_fwd_kernel(FwdKernel k) { g_forced.store(k, std::memory_order_relaxed); }

FwdKernel fwd_kernel() {
  FwdKernel k = g_forced.load(std::memory_order_relaxed);
  if (k == FwdKernel::Auto) k = from_environment();
  return k == FwdKernel::Auto ? kDefaultFwdKernel : k;
}

std::int64_t wgmma_fwd_launches() { return g_wgmma_launches.load(std::memory_order_relaxed); }

void note_wgmma_fwd_launch() { g_wgmma_launches.fetch_add(1, std::memory_order_relaxed); }

}  // namespace tg::ops::attn
