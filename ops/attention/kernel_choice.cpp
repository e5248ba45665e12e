#include "ops/attention/kernel_choice.h"

#include <atomic>
#include <mutex>

#include "ops/common.h"

namespace tg::ops::attn {
namespace {

// One knob: a process-wide forced value (Auto: none), else the environment variable's
// choice of two values (read once), else the default. Constant-initialised, so usable from
// other translation units' static initialisers.
template <typename E>
class Choice {
 public:
  constexpr Choice(const char* env, const char* first, const char* second, E v1, E v2, E fallback)
      : env_(env), first_(first), second_(second), v1_(v1), v2_(v2), fallback_(fallback) {}

  void set(E e) { forced_.store(e, std::memory_order_relaxed); }

  // Throws tg::ValueError naming the variable when it holds neither choice (every call).
  E get() {
    const E k = forced_.load(std::memory_order_relaxed);
    if (k != E::Auto) return k;
    std::call_once(read_, [this] { from_env_ = env_choice("flash_attention", env_, first_, second_); });
    return from_env_ == 1 ? v1_ : from_env_ == 2 ? v2_ : fallback_;
  }

 private:
  std::atomic<E> forced_{E::Auto};
  std::once_flag read_;
  int from_env_ = 0;
  const char *env_, *first_, *second_;
  E v1_, v2_, fallback_;
};

constinit Choice<FwdKernel> g_fwd{"TG_ATTENTION_FWD", "mma", "wgmma", FwdKernel::Mma, FwdKernel::Wgmma,
                                  kDefaultFwdKernel};
constinit Choice<BwdKernel> g_bwd{"TG_ATTENTION_BWD", "mma", "wgmma", BwdKernel::Mma, BwdKernel::Wgmma,
                                  kDefaultBwdKernel};
constinit Choice<TileHeight> g_tiles{"TG_ATTENTION_TILES", "full", "half", TileHeight::Full, TileHeight::Half,
                                     TileHeight::Auto};
constinit Choice<FwdSchedule> g_schedule{"TG_ATTENTION_FWD_SCHEDULE", "serial", "overlap", FwdSchedule::Serial,
                                         FwdSchedule::Overlap, kDefaultFwdSchedule};
constinit Choice<FwdKeys> g_keys{"TG_ATTENTION_FWD_KEYS", "64", "128", FwdKeys::K64, FwdKeys::K128,
                                 kDefaultFwdKeys};
constinit Choice<FwdRows> g_rows{"TG_ATTENTION_FWD_ROWS", "128", "192", FwdRows::R128, FwdRows::R192,
                                 kDefaultFwdRows};
constinit Choice<BwdDq> g_dq{"TG_ATTENTION_BWD_DQ", "keys", "columns", BwdDq::Keys, BwdDq::Columns, kDefaultBwdDq};
constinit Choice<BwdStep> g_step{"TG_ATTENTION_BWD_STEP", "serial", "pipelined", BwdStep::Serial, BwdStep::Pipelined,
                                 kDefaultBwdStep};

std::atomic<std::int64_t> g_wgmma_fwd{0}, g_wgmma_fwd_narrow{0}, g_wgmma_bwd{0}, g_narrow_kv{0},
    g_wgmma_fwd_overlap{0}, g_wgmma_fwd_wide_key{0}, g_wgmma_fwd_tall{0}, g_wgmma_bwd_dq_columns{0},
    g_wgmma_bwd_pipelined{0};

std::int64_t count(const std::atomic<std::int64_t>& c) { return c.load(std::memory_order_relaxed); }
void bump(std::atomic<std::int64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

void set_fwd_kernel(FwdKernel k) { g_fwd.set(k); }
FwdKernel fwd_kernel() { return g_fwd.get(); }

std::int64_t wgmma_fwd_launches() { return count(g_wgmma_fwd); }
std::int64_t wgmma_fwd_narrow_launches() { return count(g_wgmma_fwd_narrow); }
void note_wgmma_fwd_launch(bool narrow) {
  bump(g_wgmma_fwd);
  if (narrow) bump(g_wgmma_fwd_narrow);
}

void set_fwd_schedule(FwdSchedule s) { g_schedule.set(s); }
FwdSchedule fwd_schedule() { return g_schedule.get(); }
std::int64_t wgmma_fwd_overlap_launches() { return count(g_wgmma_fwd_overlap); }
void note_wgmma_fwd_overlap_launch() { bump(g_wgmma_fwd_overlap); }

void set_fwd_keys(FwdKeys k) { g_keys.set(k); }
FwdKeys fwd_keys() { return g_keys.get(); }
std::int64_t wgmma_fwd_wide_key_launches() { return count(g_wgmma_fwd_wide_key); }
void note_wgmma_fwd_wide_key_launch() { bump(g_wgmma_fwd_wide_key); }

void set_fwd_rows(FwdRows r) { g_rows.set(r); }
FwdRows fwd_rows() { return g_rows.get(); }
std::int64_t wgmma_fwd_tall_launches() { return count(g_wgmma_fwd_tall); }
void note_wgmma_fwd_tall_launch() { bump(g_wgmma_fwd_tall); }

void set_bwd_kernel(BwdKernel k) { g_bwd.set(k); }
BwdKernel bwd_kernel() { return g_bwd.get(); }

void set_bwd_dq(BwdDq s) { g_dq.set(s); }
BwdDq bwd_dq() { return g_dq.get(); }
std::int64_t wgmma_bwd_dq_columns_launches() { return count(g_wgmma_bwd_dq_columns); }
void note_wgmma_bwd_dq_columns_launch() { bump(g_wgmma_bwd_dq_columns); }

void set_bwd_step(BwdStep s) { g_step.set(s); }
BwdStep bwd_step() { return g_step.get(); }
std::int64_t wgmma_bwd_pipelined_launches() { return count(g_wgmma_bwd_pipelined); }
void note_wgmma_bwd_pipelined_launch() { bump(g_wgmma_bwd_pipelined); }

void set_tile_height(TileHeight h) { g_tiles.set(h); }
TileHeight tile_height() { return g_tiles.get(); }

std::int64_t wgmma_bwd_launches() { return count(g_wgmma_bwd); }
void note_wgmma_bwd_launch() { bump(g_wgmma_bwd); }

std::int64_t narrow_kv_launches() { return count(g_narrow_kv); }
void note_narrow_kv_launch() { bump(g_narrow_kv); }

}  // namespace tg::ops::attn
