#include "ops/attention/kernel_choice.h"

#include <array>
#include <atomic>
#include <mutex>

#include "ops/common.h"
#include "ops/knob.h"

namespace tg::ops::attn {
namespace {

// The attention knobs (ops/knob.h), their errors naming flash_attention.
template <typename E>
struct Choice : Knob<E> {
  constexpr Choice(const char* env, const char* first, const char* second, E v1, E v2, E fallback)
      : Knob<E>("flash_attention", env, first, second, v1, v2, fallback) {}
};

constinit Choice<FwdKernel> g_fwd{"TG_ATTENTION_FWD", "mma", "wgmma", FwdKernel::Mma, FwdKernel::Wgmma,
                                  kDefaultFwdKernel};
constinit Choice<BwdKernel> g_bwd{"TG_ATTENTION_BWD", "mma", "wgmma", BwdKernel::Mma, BwdKernel::Wgmma,
                                  kDefaultBwdKernel};
constinit Choice<TileHeight> g_tiles{"TG_ATTENTION_TILES", "full", "half", TileHeight::Full, TileHeight::Half,
                                     TileHeight::Auto};
constinit Choice<FwdSchedule> g_schedule{"TG_ATTENTION_FWD_SCHEDULE", "serial", "overlap", FwdSchedule::Serial,
                                         FwdSchedule::Overlap, kDefaultFwdSchedule};
constinit Choice<FwdSoftmax> g_softmax{"TG_ATTENTION_FWD_SOFTMAX", "max", "sums", FwdSoftmax::Max, FwdSoftmax::Sums,
                                        FwdSoftmax::Auto};
constinit Choice<FwdKeys> g_keys{"TG_ATTENTION_FWD_KEYS", "64", "128", FwdKeys::K64, FwdKeys::K128, kDefaultFwdKeys};
constinit Choice<FwdRows> g_rows{"TG_ATTENTION_FWD_ROWS", "128", "192", FwdRows::R128, FwdRows::R192,
                                 kDefaultFwdRows};
constinit Choice<BwdDq> g_dq{"TG_ATTENTION_BWD_DQ", "keys", "columns", BwdDq::Keys, BwdDq::Columns, kDefaultBwdDq};
constinit Choice<BwdWarps> g_warps{"TG_ATTENTION_BWD_WARPS", "uniform",          "producer",
                                   BwdWarps::Uniform,        BwdWarps::Producer, BwdWarps::Auto};
constinit Choice<BwdOperands> g_operands{
    "TG_ATTENTION_BWD_OPERANDS", "shared",           "registers", BwdOperands::Shared,
    BwdOperands::Registers,      kDefaultBwdOperands};
constinit Choice<BwdStep> g_step{"TG_ATTENTION_BWD_STEP", "serial", "pipelined", BwdStep::Serial, BwdStep::Pipelined,
                                 kDefaultBwdStep};
constinit Choice<LaunchOrder> g_order{"TG_ATTENTION_ORDER", "rows", "bands", LaunchOrder::Rows, LaunchOrder::Bands,
                                      kDefaultLaunchOrder};
constinit Choice<KvOrder> g_kv_order{"TG_ATTENTION_KV_ORDER", "rows",        "tail",
                                     KvOrder::Rows,           KvOrder::Tail, kDefaultKvOrder};
constinit Choice<LaunchOverlap> g_overlap{
    "TG_ATTENTION_PDL", "off", "on", LaunchOverlap::Plain, LaunchOverlap::Programmatic, kDefaultLaunchOverlap};
constinit Choice<ProducerDq> g_turns{"TG_ATTENTION_BWD_DQ_TURNS", "off", "on", ProducerDq::Keys, ProducerDq::Turns,
                                     kDefaultProducerDq};
constinit Choice<BwdDqStaging> g_staging{
    "TG_ATTENTION_BWD_DQ_STAGING", "tile", "stage", BwdDqStaging::Tile, BwdDqStaging::Stage, kDefaultBwdDqStaging};
constinit Choice<DropoutKernels> g_dropout{"TG_ATTENTION_DROPOUT", "general", "plain", DropoutKernels::General,
                                           DropoutKernels::Plain, kDefaultDropoutKernels};

std::array<std::atomic<std::int64_t>, static_cast<std::size_t>(Path::kCount)> g_launches{};

}  // namespace

void set_fwd_kernel(FwdKernel k) { g_fwd.set(k); }
FwdKernel fwd_kernel() { return g_fwd.get(); }

void set_fwd_schedule(FwdSchedule s) { g_schedule.set(s); }
FwdSchedule fwd_schedule() { return g_schedule.get(); }

void set_fwd_softmax(FwdSoftmax s) { g_softmax.set(s); }
FwdSoftmax fwd_softmax(std::int64_t d) {
  const FwdSoftmax s = g_softmax.get();
  return s == FwdSoftmax::Auto ? default_fwd_softmax(d) : s;
}

void set_fwd_keys(FwdKeys k) { g_keys.set(k); }
FwdKeys fwd_keys() { return g_keys.get(); }

void set_fwd_rows(FwdRows r) { g_rows.set(r); }
FwdRows fwd_rows() { return g_rows.get(); }

void set_bwd_kernel(BwdKernel k) { g_bwd.set(k); }
BwdKernel bwd_kernel() { return g_bwd.get(); }

void set_bwd_dq(BwdDq s) { g_dq.set(s); }
BwdDq bwd_dq() { return g_dq.get(); }

void set_bwd_warps(BwdWarps w) { g_warps.set(w); }
BwdWarps bwd_warps(std::int64_t d) {
  const BwdWarps w = g_warps.get();
  return w == BwdWarps::Auto ? default_bwd_warps(d) : w;
}

bool producer_pays_at_d64(std::int64_t wide_entries, std::int64_t narrow_entries, std::int64_t wide_pattern_checked) {
  // areas in units of 64 x 64: a 128-key entry counts two
  return narrow_entries > 0 && wide_pattern_checked == 0 && 100 * 2 * wide_entries <= 102 * narrow_entries;
}

void set_bwd_operands(BwdOperands o) { g_operands.set(o); }
BwdOperands bwd_operands() { return g_operands.get(); }

void set_bwd_step(BwdStep s) { g_step.set(s); }
BwdStep bwd_step() { return g_step.get(); }

void set_launch_order(LaunchOrder o) { g_order.set(o); }
LaunchOrder launch_order() { return g_order.get(); }

void set_kv_order(KvOrder o) { g_kv_order.set(o); }
KvOrder kv_order() { return g_kv_order.get(); }

void set_launch_overlap(LaunchOverlap o) { g_overlap.set(o); }
LaunchOverlap launch_overlap() { return g_overlap.get(); }

void set_producer_dq(ProducerDq s) { g_turns.set(s); }
ProducerDq producer_dq() { return g_turns.get(); }

void set_bwd_dq_staging(BwdDqStaging s) { g_staging.set(s); }
BwdDqStaging bwd_dq_staging() { return g_staging.get(); }

void set_dropout_kernels(DropoutKernels k) { g_dropout.set(k); }
DropoutKernels dropout_kernels() { return g_dropout.get(); }

void set_tile_height(TileHeight h) { g_tiles.set(h); }
TileHeight tile_height() { return g_tiles.get(); }

std::int64_t launches(Path path) {
  return g_launches[static_cast<std::size_t>(path)].load(std::memory_order_relaxed);
}
void note_launch(Path path) { g_launches[static_cast<std::size_t>(path)].fetch_add(1, std::memory_order_relaxed); }

}  // namespace tg::ops::attn
