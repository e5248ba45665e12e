// Tests of the attention kernel-choice knobs (ops/attention/kernel_choice.h): a forced
// value wins, Auto goes back to the environment or the default. Host-only.
#include <cstdlib>

#include "ops/attention/kernel_choice.h"
#include "util.h"

namespace test_attention_kernel_choice {

using namespace tg;
namespace at = tg::ops::attn;

namespace {

// Forces each of `values` through `set`, checks `get` returns it, then restores Auto and
// checks the default (where the environment variable `env` is unset, else its choice).
template <typename E, typename Set, typename Get>
void check_knob(const char* env, Set set, Get get, std::initializer_list<E> values, E fallback) {
  INFO(env);
  for (E v : values) {
    set(v);
    CHECK(get() == v);
  }
  set(E::Auto);
  const char* held = std::getenv(env);
  if (held == nullptr || *held == '\0') CHECK(get() == fallback);
  CHECK((get() != E::Auto || fallback == E::Auto));  // Auto resolved, except TileHeight's per-problem choice
}

}  // namespace

TEST_CASE("attention kernel choice: the D 64 producer's rule from the kv lists", "[ops][attention]") {
  // the kv lists of one head of bench_attention's patterns (bench/attention_lists): 128-key
  // entries, 64-key entries, 128-key entries that check the pattern
  CHECK(at::producer_pays_at_d64(2048, 4096, 0));         // dense: the same area
  CHECK(at::producer_pays_at_d64(1056, 2080, 0));         // causal: 1.5% more area
  CHECK_FALSE(at::producer_pays_at_d64(504, 952, 0));     // causal window 1024: 5.9% more
  CHECK_FALSE(at::producer_pays_at_d64(1135, 2236, 34));  // variable blocks: 1.5% more, 3% checked
  // the 2% bound itself, and lists without entries
  CHECK(at::producer_pays_at_d64(51, 100, 0));
  CHECK_FALSE(at::producer_pays_at_d64(52, 100, 0));
  CHECK_FALSE(at::producer_pays_at_d64(0, 0, 0));
  // Lists is D 64's default (D 128's is the producer, which Lists also means there); forcing
  // it holds at both head dims, and Auto restores the defaults afterwards
  CHECK(at::default_bwd_warps(64) == at::BwdWarps::Lists);
  CHECK(at::default_bwd_warps(128) == at::BwdWarps::Producer);
  at::set_bwd_warps(at::BwdWarps::Lists);
  CHECK(at::bwd_warps(64) == at::BwdWarps::Lists);
  CHECK(at::bwd_warps(128) == at::BwdWarps::Lists);
  at::set_bwd_warps(at::BwdWarps::Uniform);
  CHECK(at::bwd_warps(64) == at::BwdWarps::Uniform);
  at::set_bwd_warps(at::BwdWarps::Auto);
  if (std::getenv("TG_ATTENTION_BWD_WARPS") == nullptr) CHECK(at::bwd_warps(64) == at::BwdWarps::Lists);
}

TEST_CASE("attention kernel-choice knobs: forced values win, Auto restores the default", "[ops][attention]") {
  check_knob<at::FwdKernel>("TG_ATTENTION_FWD", at::set_fwd_kernel, at::fwd_kernel,
                            {at::FwdKernel::Mma, at::FwdKernel::Wgmma}, at::kDefaultFwdKernel);
  check_knob<at::BwdKernel>("TG_ATTENTION_BWD", at::set_bwd_kernel, at::bwd_kernel,
                            {at::BwdKernel::Mma, at::BwdKernel::Wgmma}, at::kDefaultBwdKernel);
  check_knob<at::TileHeight>("TG_ATTENTION_TILES", at::set_tile_height, at::tile_height,
                             {at::TileHeight::Full, at::TileHeight::Half}, at::TileHeight::Auto);
  check_knob<at::FwdSchedule>("TG_ATTENTION_FWD_SCHEDULE", at::set_fwd_schedule, at::fwd_schedule,
                              {at::FwdSchedule::Overlap, at::FwdSchedule::Serial}, at::kDefaultFwdSchedule);
  check_knob<at::FwdKeys>("TG_ATTENTION_FWD_KEYS", at::set_fwd_keys, at::fwd_keys,
                          {at::FwdKeys::K128, at::FwdKeys::K64}, at::kDefaultFwdKeys);
  check_knob<at::FwdRows>("TG_ATTENTION_FWD_ROWS", at::set_fwd_rows, at::fwd_rows,
                          {at::FwdRows::R192, at::FwdRows::R128}, at::kDefaultFwdRows);
  check_knob<at::BwdDq>("TG_ATTENTION_BWD_DQ", at::set_bwd_dq, at::bwd_dq, {at::BwdDq::Columns, at::BwdDq::Keys},
                        at::kDefaultBwdDq);
  check_knob<at::BwdOperands>("TG_ATTENTION_BWD_OPERANDS", at::set_bwd_operands, at::bwd_operands,
                              {at::BwdOperands::Registers, at::BwdOperands::Shared}, at::kDefaultBwdOperands);
  check_knob<at::BwdStep>("TG_ATTENTION_BWD_STEP", at::set_bwd_step, at::bwd_step,
                          {at::BwdStep::Pipelined, at::BwdStep::Serial}, at::kDefaultBwdStep);
  check_knob<at::DropoutKernels>("TG_ATTENTION_DROPOUT", at::set_dropout_kernels, at::dropout_kernels,
                                 {at::DropoutKernels::Plain, at::DropoutKernels::General},
                                 at::kDefaultDropoutKernels);
  check_knob<at::LaunchOrder>("TG_ATTENTION_ORDER", at::set_launch_order, at::launch_order,
                              {at::LaunchOrder::Rows, at::LaunchOrder::Bands}, at::kDefaultLaunchOrder);
  check_knob<at::KvOrder>("TG_ATTENTION_KV_ORDER", at::set_kv_order, at::kv_order,
                          {at::KvOrder::Rows, at::KvOrder::Tail}, at::kDefaultKvOrder);
  check_knob<at::LaunchOverlap>("TG_ATTENTION_PDL", at::set_launch_overlap, at::launch_overlap,
                                {at::LaunchOverlap::Programmatic, at::LaunchOverlap::Plain}, at::kDefaultLaunchOverlap);
  check_knob<at::ProducerDq>("TG_ATTENTION_BWD_DQ_TURNS", at::set_producer_dq, at::producer_dq,
                             {at::ProducerDq::Keys, at::ProducerDq::Turns}, at::kDefaultProducerDq);
  // the softmax's and the kv pass's warp roles' defaults depend on the head dim
  for (std::int64_t d : {64, 128}) {
    INFO("D " << d);
    check_knob<at::BwdWarps>(
        "TG_ATTENTION_BWD_WARPS", at::set_bwd_warps, [d] { return at::bwd_warps(d); },
        {at::BwdWarps::Producer, at::BwdWarps::Uniform}, at::default_bwd_warps(d));
    check_knob<at::FwdSoftmax>(
        "TG_ATTENTION_FWD_SOFTMAX", at::set_fwd_softmax, [d] { return at::fwd_softmax(d); },
        {at::FwdSoftmax::Max, at::FwdSoftmax::Sums}, at::default_fwd_softmax(d));
  }
}

}  // namespace test_attention_kernel_choice
