// to_sparse / to_dense throughput at 16 x 2048 x 2048, block 64, next to the copy rate and
// the rate of a copy moving the same bytes (%size-copy). Each op is timed paced by the host
// and queued behind a spin kernel (the GPU's time alone, what a loop whose host runs ahead
// sees); the target is judged on the queued figure against the same-size copy timed the
// same way.
#include <cstdio>
#include <functional>

#include "bench_util.h"
#include "tilegrad.h"

namespace {

double g_copy = 0;

void row(const char* op, double density, tg::DType dt, double bytes, const std::function<void()>& fn) {
  const tgb::CopyRates r = tgb::copy_rates(bytes, g_copy, fn);
  std::printf("%-10s %-14s %4d %7.2f %-5s %8.3f %6.1f%% %9.1f%% %9.3f %6.1f%% %9.1f%%%s\n", op, "16x2048x2048", 64,
              density, tg::dtype_name(dt), r.ms, r.pct_copy, r.pct_size, r.qms, r.qpct_copy, r.qpct_size,
              r.qpct_size >= 85.0 ? "" : "  (< 85%)");
}

}  // namespace

int main() {
  g_copy = tgb::copy_rate_gbps();
  std::printf("device copy rate: %.0f GB/s (read + write)\n", g_copy);
  std::printf("%-10s %-14s %4s %7s %-5s %8s %7s %10s %9s %7s %10s\n", "op", "shape", "bs", "density", "dtype", "ms",
              "%copy", "%size-copy", "queued ms", "%copy", "%size-copy");
  const std::int64_t B = 16, S = 2048, bs = 64;
  for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
    tg::Tensor dense = tg::rand_seeded({B, S, S}, 1, {.dtype = dt, .device = tg::Device::cuda()});
    for (double density : {0.25, 0.5, 1.0}) {
      tg::Layout l = tg::random_layout(B, S / bs, S / bs, bs, density, 3);
      tg::NoGradGuard ng;
      tg::BlockSparseTensor sp = tg::to_sparse(dense, l);
      const double useful = static_cast<double>(sp.data().nbytes());
      row("to_sparse", density, dt, 2 * useful, [&] { tg::to_sparse(dense, l); });  // read the active blocks, write them
      // fewest bytes: write the whole dense output once, read the active blocks once
      row("to_dense", density, dt, useful + static_cast<double>(dense.nbytes()), [&] { tg::to_dense(sp); });
    }
  }
  return 0;
}
