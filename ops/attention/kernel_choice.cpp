#include "ops/attention/kernel_choice.h"

#include <atomic>

#include "ops/common.h"

namespace tg::ops::attn {
namespace {

std::atomic<FwdKernel> g_fwd{FwdKernel::Auto};
std::atomic<BwdKernel> g_bwd{BwdKernel::Auto};
std::atomic<TileHeight> g_tiles{TileHeight::Auto};
std::atomic<FwdSchedule> g_schedule{FwdSchedule::Auto};
std::atomic<FwdKeys> g_keys{FwdKeys::Auto};
std::atomic<FwdRows> g_rows{FwdRows::Auto};
std::atomic<std::int64_t> g_wgmma_fwd{0}, g_wgmma_fwd_narrow{0}, g_wgmma_bwd{0}, g_narrow_kv{0},
    g_wgmma_fwd_overlap{0}, g_wgmma_fwd_wide_key{0}, g_wgmma_fwd_tall{0};

int kernel_from_environment(const char* name) { return env_choice("flash_attention", name, "mma", "wgmma"); }

}  // namespace

void set_fwd_kernel(FwdKernel k) { g_fwd.store(k, std::memory_order_relaxed); }

FwdKernel fwd_kernel() {
  const FwdKernel k = g_fwd.load(std::memory_order_relaxed);
  if (k != FwdKernel::Auto) return k;
  static const int env = kernel_from_environment("TG_ATTENTION_FWD");
  return env == 1 ? FwdKernel::Mma : env == 2 ? FwdKernel::Wgmma : kDefaultFwdKernel;
}

std::int64_t wgmma_fwd_launches() { return g_wgmma_fwd.load(std::memory_order_relaxed); }

std::int64_t wgmma_fwd_narrow_launches() { return g_wgmma_fwd_narrow.load(std::memory_order_relaxed); }

void note_wgmma_fwd_launch(bool narrow) {
  g_wgmma_fwd.fetch_add(1, std::memory_order_relaxed);
  if (narrow) g_wgmma_fwd_narrow.fetch_add(1, std::memory_order_relaxed);
}

void set_fwd_schedule(FwdSchedule s) { g_schedule.store(s, std::memory_order_relaxed); }

FwdSchedule fwd_schedule() {
  const FwdSchedule s = g_schedule.load(std::memory_order_relaxed);
  if (s != FwdSchedule::Auto) return s;
  static const int env = env_choice("flash_attention", "TG_ATTENTION_FWD_SCHEDULE", "serial", "overlap");
  return env == 1 ? FwdSchedule::Serial : env == 2 ? FwdSchedule::Overlap : kDefaultFwdSchedule;
}

std::int64_t wgmma_fwd_overlap_launches() { return g_wgmma_fwd_overlap.load(std::memory_order_relaxed); }

void note_wgmma_fwd_overlap_launch() { g_wgmma_fwd_overlap.fetch_add(1, std::memory_order_relaxed); }

void set_fwd_keys(FwdKeys k) { g_keys.store(k, std::memory_order_relaxed); }

FwdKeys fwd_keys() {
  const FwdKeys k = g_keys.load(std::memory_order_relaxed);
  if (k != FwdKeys::Auto) return k;
  static const int env = env_choice("flash_attention", "TG_ATTENTION_FWD_KEYS", "64", "128");
  return env == 1 ? FwdKeys::K64 : env == 2 ? FwdKeys::K128 : kDefaultFwdKeys;
}

std::int64_t wgmma_fwd_wide_key_launches() { return g_wgmma_fwd_wide_key.load(std::memory_order_relaxed); }

void note_wgmma_fwd_wide_key_launch() { g_wgmma_fwd_wide_key.fetch_add(1, std::memory_order_relaxed); }

void set_fwd_rows(FwdRows r) { g_rows.store(r, std::memory_order_relaxed); }

FwdRows fwd_rows() {
  const FwdRows r = g_rows.load(std::memory_order_relaxed);
  if (r != FwdRows::Auto) return r;
  static const int env = env_choice("flash_attention", "TG_ATTENTION_FWD_ROWS", "128", "192");
  return env == 1 ? FwdRows::R128 : env == 2 ? FwdRows::R192 : kDefaultFwdRows;
}

std::int64_t wgmma_fwd_tall_launches() { return g_wgmma_fwd_tall.load(std::memory_order_relaxed); }

void note_wgmma_fwd_tall_launch() { g_wgmma_fwd_tall.fetch_add(1, std::memory_order_relaxed); }

void set_bwd_kernel(BwdKernel k) { g_bwd.store(k, std::memory_order_relaxed); }

BwdKernel bwd_kernel() {
  const BwdKernel k = g_bwd.load(std::memory_order_relaxed);
  if (k != BwdKernel::Auto) return k;
  static const int env = kernel_from_environment("TG_ATTENTION_BWD");
  return env == 1 ? BwdKernel::Mma : env == 2 ? BwdKernel::Wgmma : kDefaultBwdKernel;
}

void set_tile_height(TileHeight h) { g_tiles.store(h, std::memory_order_relaxed); }

TileHeight tile_height() {
  const TileHeight h = g_tiles.load(std::memory_order_relaxed);
  if (h != TileHeight::Auto) return h;
  static const int env = env_choice("flash_attention", "TG_ATTENTION_TILES", "full", "half");
  return env == 1 ? TileHeight::Full : env == 2 ? TileHeight::Half : TileHeight::Auto;
}

std::int64_t wgmma_bwd_launches() { return g_wgmma_bwd.load(std::memory_order_relaxed); }

void note_wgmma_bwd_launch() { g_wgmma_bwd.fetch_add(1, std::memory_order_relaxed); }

std::int64_t narrow_kv_launches() { return g_narrow_kv.load(std::memory_order_relaxed); }

void note_narrow_kv_launch() { g_narrow_kv.fetch_add(1, std::memory_order_relaxed); }

}  // namespace tg::ops::attn
