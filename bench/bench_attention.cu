// Block-sparse flash attention, bf16, batch 4 x 16 heads x S 4096, D 64 and 128: forward
// (the public flash_attention) and forward + backward (its autograd backward), for the
// patterns dense, causal, causal window 1024, random 10% of 64-blocks and a pattern of
// variable block sizes (block-causal). CUDA events, warm-up, median of >= 20 runs.
//
// Useful FLOPs count only attended (query, key) pairs: 4·D per pair forward (QKᵀ and PV),
// 2.5 times that backward, so forward + backward = 3.5 · 4·D per pair. The pairs are
// counted exactly on the host from the pattern and causal / window. The bf16 GEMM rate of
// tg::matmul (cuBLAS) at 8192³, measured in the same run, is printed as the ceiling.
// Peers (PyTorch SDPA, FlexAttention) are timed by bench/attention_peers.py with the same
// shapes and patterns and the same table. TG_ATTENTION_SWEEP=1 times every variant of the
// Hopper kernels (kernel_choice.h) on each case instead, in one process: in each of
// TG_ATTENTION_SWEEP_ROUNDS rounds (default 5) every variant once, each ratio taken against
// the default's time of the same round, so that the machine's drift between rounds cancels;
// printed as the median over rounds with its range (the spread one decision must beat).
// TG_ATTENTION_SWEEP_ONLY (parts of variant names, comma-separated) times only those
// variants against the default.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "attention_cases.h"
#include "bench_util.h"
#include "ops/attention/attention.h"
#include "ops/attention/kernel_choice.h"
#include "tilegrad.h"

namespace {

using namespace tg_bench;

double gemm_ceiling() {
  const tg::Device gpu = tg::Device::cuda();
  tg::NoGradGuard ng;
  const std::int64_t n = 8192;
  tg::Tensor a = tg::rand_seeded({n, n}, 1, {.dtype = tg::DType::bf16, .device = gpu}, -1, 1);
  tg::Tensor b = tg::rand_seeded({n, n}, 2, {.dtype = tg::DType::bf16, .device = gpu}, -1, 1);
  const double ms = tgb::time_ms([&] { (void)tg::matmul(a, b); }, 5, 20);
  return 2.0 * static_cast<double>(n) * n * n / ms / 1e9;
}

struct Timing {
  double fwd_ms = 0, both_ms = 0;
  // queued behind a spin kernel (the GPU's time alone) and the host's time to return, when asked
  double fwd_queued_ms = 0, both_queued_ms = 0, fwd_host_ms = 0, both_host_ms = 0;
};

// Forward alone (no autograd), then forward + backward, of one case, paced by the host as
// the peers are timed; `gpu_alone` also times both queued and the host's part of a call,
// which tell the host's launch path from the kernels' time.
Timing time_case(const tg::Tensor& q, const tg::Tensor& k, const tg::Tensor& v, const tg::Tensor& dout,
                 const tg::AttentionPattern& pattern, const tg::AttentionOptions& o, bool gpu_alone = false) {
  Timing t;
  {
    tg::NoGradGuard ng;
    const auto fwd = [&] { (void)tg::flash_attention(q, k, v, pattern, o); };
    t.fwd_ms = tgb::time_ms(fwd, 3, 30);
    if (gpu_alone) {
      t.fwd_queued_ms = tgb::time_queued_ms(fwd, 3, 30);
      t.fwd_host_ms = tgb::host_ms(fwd);
    }
  }
  tg::Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
  const auto both = [&] {
    tg::flash_attention(qg, kg, vg, pattern, o).backward(dout);
    qg.zero_grad();
    kg.zero_grad();
    vg.zero_grad();
  };
  t.both_ms = tgb::time_ms(both, 2, 20);
  if (gpu_alone) {
    t.both_queued_ms = tgb::time_queued_ms(both, 2, 20);
    t.both_host_ms = tgb::host_ms(both);
  }
  return t;
}

namespace at = tg::ops::attn;

// A setting of the Hopper kernels' variant knobs (kernel_choice.h), timed at head dim
// `only_d` (where the others would run the default kernels) or every one (0).
struct Variant {
  const char* name;
  at::FwdSchedule schedule;
  at::FwdKeys keys;
  at::FwdRows rows;
  at::BwdDq dq;
  at::TileHeight height;
  at::BwdStep step;
  std::int64_t only_d;
  at::DropoutKernels dropout = at::kDefaultDropoutKernels;
  at::FwdSoftmax softmax = at::FwdSoftmax::Auto;  // Auto: by head dim
  at::BwdWarps warps = at::BwdWarps::Auto;        // Auto: by head dim
  at::BwdOperands operands = at::kDefaultBwdOperands;
  at::LaunchOrder order = at::LaunchOrder::Auto;
  at::KvOrder kv_order = at::KvOrder::Auto;
  at::LaunchOverlap overlap = at::LaunchOverlap::Auto;
  at::ProducerDq turns = at::ProducerDq::Auto;
  at::BwdDqStaging staging = at::BwdDqStaging::Auto;
  void apply() const {
    at::set_fwd_schedule(schedule);
    at::set_fwd_keys(keys);
    at::set_fwd_rows(rows);
    at::set_bwd_dq(dq);
    at::set_tile_height(height);
    at::set_bwd_step(step);
    at::set_dropout_kernels(dropout);
    at::set_fwd_softmax(softmax);
    at::set_bwd_warps(warps);
    at::set_bwd_operands(operands);
    at::set_launch_order(order);
    at::set_kv_order(kv_order);
    at::set_launch_overlap(overlap);
    at::set_producer_dq(turns);
    at::set_bwd_dq_staging(staging);
  }
};

// TG_ATTENTION_SWEEP=1: every variant on each case in turn, in one process (A/B on the same
// inputs and GPU state), TFLOP/s and the ratio to the first (the measured defaults).
constexpr bool kDefaultPlainLaunches = at::kDefaultLaunchOverlap == at::LaunchOverlap::Plain;
constexpr bool kDefaultDqByKeys = at::kDefaultProducerDq == at::ProducerDq::Keys;

// The D 128 kv pass on 64-key tiles with dQ staged the other way (BwdDqStaging), appended to v:
// where the default takes those tiles (random 64-blocks), and on every pattern with them forced.
std::vector<Variant> with_staging(std::vector<Variant> v) {
  constexpr bool tile = at::kDefaultBwdDqStaging == at::BwdDqStaging::Tile;
  Variant staged = v.front();
  staged.name = tile ? "dQ staged in the stage (kv pass)" : "dQ staged in a tile (kv pass)";
  staged.only_d = 128;
  staged.staging = tile ? at::BwdDqStaging::Stage : at::BwdDqStaging::Tile;
  v.push_back(staged);
  staged.name = tile ? "64-key tiles forced, dQ in the stage" : "64-key tiles forced, dQ in a tile";
  staged.height = at::TileHeight::Half;
  v.push_back(staged);
  return v;
}

const std::vector<Variant>& variants() {
  using S = at::FwdSchedule;
  using K = at::FwdKeys;
  using R = at::FwdRows;
  using Q = at::BwdDq;
  using H = at::TileHeight;
  constexpr at::BwdStep step = at::kDefaultBwdStep;  // the kv step every other variant keeps
  static const std::vector<Variant> v = with_staging({
      {"serial, keys 64 (default)", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 0},
      {"128-row tiles forced", S::Serial, K::K64, R::R128, Q::Keys, H::Full, step, 64},
      {"overlap", S::Overlap, K::K64, R::R128, Q::Keys, H::Auto, step, 0},
      {"keys 128", S::Serial, K::K128, R::R128, Q::Keys, H::Auto, step, 0},
      {"keys 128, overlap", S::Overlap, K::K128, R::R128, Q::Keys, H::Auto, step, 0},
      {"keys 128, rows 192", S::Serial, K::K128, R::R192, Q::Keys, H::Auto, step, 64},
      {"keys 128, rows 192, overlap", S::Overlap, K::K128, R::R192, Q::Keys, H::Auto, step, 64},
      // (on the pipelined step, the producer warpgroup's order without the producer)
      {"dQ by columns (kv pass)", S::Serial, K::K64, R::R128, Q::Columns, H::Auto, step, 128,
       at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Uniform},
      // the forward column answers whether D 128 gains from 64-row tiles as D 64 did (the kv pass
      // then takes 64-key tiles, one CTA an SM)
      {"64-row / 64-key tiles forced", S::Serial, K::K64, R::R128, Q::Keys, H::Half, step, 128},
      {"serial kv step", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, at::BwdStep::Serial, 0,
       at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Uniform},
      // dropout on the general transform's kernels (the dropout cases; the others run the defaults)
      {"general dropout kernels", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 0, at::DropoutKernels::General},
      // the forward's whole tiles bounded by row sums (the default at D 64) or by tile maxima (at D 128)
      {"row sums (no tile maxima)", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 128, at::kDefaultDropoutKernels,
       at::FwdSoftmax::Sums},
      {"tile maxima", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 64, at::kDefaultDropoutKernels,
       at::FwdSoftmax::Max},
      // the kv pass's warp roles: without the producer warpgroup (the default before: at D 128
      // dQ by keys, at D 64 64-key tiles everywhere), with it at D 64 wherever 128-key tiles
      // cost no more work (the default takes it where its lists say so)
      {"uniform warpgroups (kv pass)", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 0,
       at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Uniform},
      {"producer warpgroup (kv pass)", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 64,
       at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Producer, at::BwdOperands::Shared},
      // and with K and V as register operands of Sᵀ and dPᵀ
      {"producer, K and V in registers (kv pass)", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 64,
       at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Producer, at::BwdOperands::Registers},
      // every item by row (the order before this: the forwards' LaunchOrder and the kv passes' KvOrder)
      {"launch order by rows", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 0, at::kDefaultDropoutKernels,
       at::FwdSoftmax::Auto, at::BwdWarps::Auto, at::kDefaultBwdOperands, at::LaunchOrder::Rows, at::KvOrder::Rows},
      // the kv passes' items by row to the end (KvOrder)
      {"launch order: kv rows", S::Serial, K::K64, R::R128, Q::Keys, H::Auto, step, 0, at::kDefaultDropoutKernels,
       at::FwdSoftmax::Auto, at::BwdWarps::Auto, at::kDefaultBwdOperands, at::LaunchOrder::Auto, at::KvOrder::Rows},
      // the backward's kernels launched the other way (LaunchOverlap)
      {kDefaultPlainLaunches ? "programmatic launches (backward)" : "plain launches (backward)", S::Serial, K::K64,
       R::R128, Q::Keys, H::Auto, step, 0, at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Auto,
       at::kDefaultBwdOperands, at::LaunchOrder::Auto, at::KvOrder::Auto,
       kDefaultPlainLaunches ? at::LaunchOverlap::Programmatic : at::LaunchOverlap::Plain},
      // the D 64 producer kv pass's dQ the other way (ProducerDq)
      {kDefaultDqByKeys ? "dQ in turns (kv pass)" : "dQ by keys (kv pass)", S::Serial, K::K64, R::R128, Q::Keys,
       H::Auto, step, 64, at::kDefaultDropoutKernels, at::FwdSoftmax::Auto, at::BwdWarps::Auto, at::kDefaultBwdOperands,
       at::LaunchOrder::Auto, at::KvOrder::Auto, at::LaunchOverlap::Auto,
       kDefaultDqByKeys ? at::ProducerDq::Turns : at::ProducerDq::Keys},
  });
  return v;
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const std::size_t n = x.size();
  return n == 0 ? 0.0 : n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// TG_ATTENTION_SWEEP_ONLY: comma-separated parts of variant names to time (the default, the
// first, always); unset or empty: every variant. One flag a variant.
std::vector<bool> sweep_choice() {
  const char* e = std::getenv("TG_ATTENTION_SWEEP_ONLY");
  const std::string list = e != nullptr ? e : "";
  std::vector<bool> chosen(variants().size(), list.empty());
  chosen[0] = true;
  for (std::size_t from = 0; from < list.size();) {
    const std::size_t to = std::min(list.find(',', from), list.size());
    const std::string part = list.substr(from, to - from);
    for (std::size_t vi = 0; vi < chosen.size() && !part.empty(); ++vi)
      if (std::string(variants()[vi].name).find(part) != std::string::npos) chosen[vi] = true;
    from = to + 1;
  }
  return chosen;
}

int sweep_rounds() {
  const char* e = std::getenv("TG_ATTENTION_SWEEP_ROUNDS");
  const int r = e != nullptr ? std::atoi(e) : 5;
  return r > 0 ? r : 5;
}

}  // namespace

int main() {
  const tg::Device gpu = tg::Device::cuda();
  const double ceiling = gemm_ceiling();
  const char* sweep_env = std::getenv("TG_ATTENTION_SWEEP");
  const bool sweep = sweep_env != nullptr && std::string(sweep_env) == "1";
  const int rounds = sweep_rounds();
  const std::vector<bool> chosen = sweep_choice();
  std::printf("bf16 GEMM 8192^3 (tg::matmul, cuBLAS): %.0f TFLOP/s\n", ceiling);
  std::printf("flash attention bf16, B %lld x H %lld, S %lld; TFLOP/s of attended pairs only\n",
              static_cast<long long>(kBatch), static_cast<long long>(kHeads), static_cast<long long>(kSeq));
  if (sweep) {
    std::printf("every variant of the Hopper kernels (TG_ATTENTION_SWEEP=1), %d rounds; TFLOP/s: medians; ratios to the "
                "first variant's time in the same round: median [min, max]\n",
                rounds);
    std::printf("(variants in reverse order in odd rounds; bwd x: the backward's time, fwd+bwd less fwd)\n");
    std::printf("%-30s %4s %-28s %9s %11s %21s %21s %21s\n", "pattern", "D", "variant", "fwd TF/s", "fwd+bwd TF/s",
                "fwd x [range]", "both x [range]", "bwd x [range]");
  } else {
    std::printf("Hopper forward: %s schedule (TG_ATTENTION_FWD_SCHEDULE), key tiles of %d (TG_ATTENTION_FWD_KEYS), "
                "%d-row tiles with them at D 64 (TG_ATTENTION_FWD_ROWS)\n",
                at::fwd_schedule() == at::FwdSchedule::Overlap ? "overlap" : "serial",
                at::fwd_keys() == at::FwdKeys::K128 ? 128 : 64, at::fwd_rows() == at::FwdRows::R192 ? 192 : 128);
    std::printf(
        "Hopper kv pass: warpgroups at D 64 %s, at D 128 %s (TG_ATTENTION_BWD_WARPS); without a producer "
        "the %s step (TG_ATTENTION_BWD_STEP), at D 128 dQ by %s (TG_ATTENTION_BWD_DQ)\n",
        at::bwd_warps(64) == at::BwdWarps::Producer ? "with a producer" : "uniform",
        at::bwd_warps(128) == at::BwdWarps::Producer ? "with a producer" : "uniform",
        at::bwd_step() == at::BwdStep::Pipelined ? "pipelined" : "serial",
        at::bwd_dq() == at::BwdDq::Columns ? "columns" : "keys");
    std::printf("Hopper kv pass at D 128 on 64-key tiles: dQ staged in %s (TG_ATTENTION_BWD_DQ_STAGING)\n",
                at::bwd_dq_staging() == at::BwdDqStaging::Stage ? "the step's stage" : "a tile of its own");
    std::printf("(queued: each run behind a 2 ms spin kernel, the GPU's time alone; host: the time a call takes "
                "to return, its launch path)\n");
    std::printf("%-30s %4s %8s %9s %9s %11s %11s %9s %10s %12s %9s %11s\n", "pattern", "D", "density", "fwd ms",
                "fwd TF/s", "fwd+bwd ms", "fwd+bwd TF/s", "%ceiling", "queued fwd", "queued both", "host fwd",
                "host both");
  }
  const std::int64_t bh = kBatch * kHeads;
  for (std::int64_t d : {64, 128}) {
    const tg::TensorOptions bf{.dtype = tg::DType::bf16, .device = gpu};
    tg::Tensor q = tg::rand_seeded({bh, kSeq, d}, 10, bf, -1, 1);
    tg::Tensor k = tg::rand_seeded({bh, kSeq, d}, 11, bf, -1, 1);
    tg::Tensor v = tg::rand_seeded({bh, kSeq, d}, 12, bf, -1, 1);
    tg::Tensor dout = tg::rand_seeded({bh, kSeq, d}, 13, bf, -1, 1);
    for (const Case& c : cases()) {
      if (!tgb::selected(c.name + " " + std::to_string(d))) continue;
      tg::AttentionOptions o = c.options;
      o.num_heads = kHeads;
      const double pairs = attended_pairs(c.pattern, o) * static_cast<double>(bh);
      const double density = pairs / (static_cast<double>(bh) * kSeq * kSeq);
      const double fwd_flops = 4.0 * static_cast<double>(d) * pairs;
      if (sweep) {
        const std::size_t nv = variants().size();
        std::vector<std::vector<Timing>> runs(nv);
        for (int round = 0; round < rounds; ++round) {
          for (std::size_t slot = 0; slot < nv; ++slot) {
            // reversed in odd rounds, so that no variant always runs right after the same one
            const std::size_t vi = round % 2 ? nv - 1 - slot : slot;
            const Variant& var = variants()[vi];
            if ((var.only_d != 0 && var.only_d != d) || !chosen[vi]) continue;
            var.apply();
            runs[vi].push_back(time_case(q, k, v, dout, c.pattern, o));
          }
        }
        for (std::size_t vi = 0; vi < nv; ++vi) {
          if (runs[vi].empty()) continue;
          std::vector<double> fwd_tf, both_tf, fwd_x, both_x, bwd_x;
          for (std::size_t r = 0; r < runs[vi].size(); ++r) {
            const Timing& t = runs[vi][r];
            const Timing& base = runs[0][r];
            fwd_tf.push_back(fwd_flops / t.fwd_ms / 1e9);
            both_tf.push_back(3.5 * fwd_flops / t.both_ms / 1e9);
            fwd_x.push_back(base.fwd_ms / t.fwd_ms);
            both_x.push_back(base.both_ms / t.both_ms);
            bwd_x.push_back((base.both_ms - base.fwd_ms) / (t.both_ms - t.fwd_ms));
          }
          const auto [fx_lo, fx_hi] = std::minmax_element(fwd_x.begin(), fwd_x.end());
          const auto [bx_lo, bx_hi] = std::minmax_element(both_x.begin(), both_x.end());
          const auto [kx_lo, kx_hi] = std::minmax_element(bwd_x.begin(), bwd_x.end());
          std::printf("%-30s %4lld %-28s %9.1f %11.1f   %5.3f [%5.3f, %5.3f]   %5.3f [%5.3f, %5.3f]   %5.3f [%5.3f, %5.3f]\n",
                      c.name.c_str(), static_cast<long long>(d), variants()[vi].name, median(fwd_tf), median(both_tf),
                      median(fwd_x), *fx_lo, *fx_hi, median(both_x), *bx_lo, *bx_hi, median(bwd_x), *kx_lo, *kx_hi);
        }
        std::fflush(stdout);
        continue;
      }
      {
        tg::Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
        auto step = [&] {
          tg::flash_attention(qg, kg, vg, c.pattern, o).backward(dout);
          qg.zero_grad();  // as a training step after its optimizer: the next backward assigns, not adds
          kg.zero_grad();
          vg.zero_grad();
        };
        if (tgb::profile_range(step)) {
          std::printf("%-30s %4lld profiled (one forward + backward)\n", c.name.c_str(), static_cast<long long>(d));
          continue;
        }
      }
      const Timing t = time_case(q, k, v, dout, c.pattern, o, true);
      const double fwd_tf = fwd_flops / t.fwd_ms / 1e9, both_tf = 3.5 * fwd_flops / t.both_ms / 1e9;
      std::printf("%-30s %4lld %8.3f %9.3f %9.1f %11.3f %11.1f %8.1f%% %10.3f %12.3f %9.3f %11.3f\n", c.name.c_str(),
                  static_cast<long long>(d), density, t.fwd_ms, fwd_tf, t.both_ms, both_tf, 100.0 * both_tf / ceiling,
                  t.fwd_queued_ms, t.both_queued_ms, t.fwd_host_ms, t.both_host_ms);
      std::fflush(stdout);
    }
  }
  if (sweep) {
    at::set_fwd_schedule(at::FwdSchedule::Auto);
    at::set_fwd_keys(at::FwdKeys::Auto);
    at::set_fwd_rows(at::FwdRows::Auto);
    at::set_bwd_dq(at::BwdDq::Auto);
    at::set_tile_height(at::TileHeight::Auto);
    at::set_bwd_step(at::BwdStep::Auto);
    at::set_dropout_kernels(at::DropoutKernels::Auto);
    at::set_fwd_softmax(at::FwdSoftmax::Auto);
    at::set_bwd_warps(at::BwdWarps::Auto);
    at::set_bwd_operands(at::BwdOperands::Auto);
  }
  return 0;
}
