// Block-sparse row ops and an element-wise op at 16 x 2048 x 2048, block 64, next to the
// device copy rate measured in the same run (PERF.md target: >= 85% of it).
// %size-copy: the same rate over that of device copies moving the same bytes, timed the
// same way (the ceiling at this size, where launch and ramp-up weigh more).
//
// Bytes counted (the fewest that must move, each read and write once):
//   row_sum        read the blocks, write [B, M]
//   row_max        read the blocks, write [B, M] values and [B, M] i64 indices
//   row_add        read the blocks and v [B, M], write the blocks
//   broadcast_add  read a [B, M] and b [B, N], write the blocks
//   exp            read the blocks, write the blocks
// Each timed run issues kInner calls back to back, so the host-side cost of a call
// (validation, allocation from the pool, launch) is hidden only where the kernel is longer.
// The "queued" columns time the same calls queued behind a spin kernel
// (tgb::time_queued_ms): the GPU time alone, against copies timed that way; the 85% flag
// is on those. TG_BENCH_ONLY picks cases by label ("row_max d0.25 bf16").
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "bench_util.h"
#include "tilegrad.h"

namespace {
constexpr int kInner = 10;

void report(const char* op, double density, tg::DType dt, double bytes, const std::function<void()>& fn,
            double copy) {
  char label[64];
  std::snprintf(label, sizeof label, "%s d%.2f %s", op, density, tg::dtype_name(dt));
  if (!tgb::selected(label)) return;
  const tgb::CopyRates r = tgb::copy_rates(bytes, copy, fn, kInner);
  std::printf("%-14s %-14s %4d %7.2f %-5s %9.4f %9.0f %6.1f%% %9.1f%% %9.4f %6.1f%% %9.1f%%%s\n", op, "16x2048x2048", 64,
              density, tg::dtype_name(dt), r.ms, r.gbs, r.pct_copy, r.pct_size, r.qms, r.qpct_copy, r.qpct_size,
              r.qgbs >= 0.85 * copy ? "" : "  (< 85%)");
}
}  // namespace

int main() {
  const double copy = tgb::copy_rate_gbps();
  std::printf("device copy rate: %.0f GB/s (read + write)\n", copy);
  std::printf("%-14s %-14s %4s %7s %-5s %9s %9s %7s %10s %9s %7s %10s\n", "op", "shape", "bs", "density", "dtype", "ms",
              "GB/s", "%copy", "%size-copy", "queued ms", "%copy", "%size-copy");
  const std::int64_t B = 16, S = 2048, bs = 64;
  const tg::Device gpu = tg::Device::cuda();
  tg::NoGradGuard no_grad;
  for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
    const double es = static_cast<double>(tg::dtype_size(dt));
    tg::Tensor v = tg::rand_seeded({B, S}, 2, {.dtype = dt, .device = gpu});
    tg::Tensor a = tg::rand_seeded({B, S}, 3, {.dtype = dt, .device = gpu});
    tg::Tensor b = tg::rand_seeded({B, S}, 4, {.dtype = dt, .device = gpu});
    for (double density : {0.25, 0.5, 1.0}) {
      tg::Layout l = tg::random_layout(B, S / bs, S / bs, bs, density, 5);
      (void)l.tables(gpu);  // build the device index tables outside the timing
      tg::BlockSparseTensor x(tg::rand_seeded({l.n_blocks(), bs, bs}, 1, {.dtype = dt, .device = gpu}, -2, 2), l);
      const double blocks = static_cast<double>(x.data().nbytes());
      const double rowvec = static_cast<double>(B * S) * es;
      report("row_sum", density, dt, blocks + rowvec, [&] { tg::row_sum(x); }, copy);
      report("row_max", density, dt, blocks + rowvec + static_cast<double>(B * S) * 8, [&] { tg::row_max(x); },
             copy);
      report("row_add", density, dt, 2 * blocks + rowvec, [&] { tg::row_add(x, v); }, copy);
      report("broadcast_add", density, dt, blocks + 2 * rowvec, [&] { tg::broadcast_add(a, b, l); }, copy);
      report("exp", density, dt, 2 * blocks, [&] { tg::exp(x); }, copy);
    }
  }
  return 0;
}
