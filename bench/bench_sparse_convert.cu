// to_sparse / to_dense throughput at 16 x 2048 x 2048, block 64, next to the copy rate and
// the rate of a copy moving the same bytes (%size-copy).
#include <cstdio>

#include "bench_util.h"
#include "tilegrad.h"

int main() {
  const double copy = tgb::copy_rate_gbps();
  std::printf("device copy rate: %.0f GB/s (read + write)\n", copy);
  std::printf("%-10s %-18s %5s %7s %-5s %9s %9s %7s %10s\n", "op", "shape", "bs", "density", "dtype", "ms", "GB/s", "%copy",
              "%size-copy");
  const std::int64_t B = 16, S = 2048, bs = 64;
  for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
    tg::Tensor dense = tg::rand_seeded({B, S, S}, 1, {.dtype = dt, .device = tg::Device::cuda()});
    for (double density : {0.25, 0.5, 1.0}) {
      tg::Layout l = tg::random_layout(B, S / bs, S / bs, bs, density, 3);
      tg::NoGradGuard ng;
      tg::BlockSparseTensor sp = tg::to_sparse(dense, l);
      double useful = static_cast<double>(sp.data().nbytes());
      double ms = tgb::time_ms([&] { tg::to_sparse(dense, l); });
      double bytes = 2 * useful;  // read the active blocks, write them
      double gbs = bytes / ms / 1e6;
      std::printf("%-10s %-18s %5lld %7.2f %-5s %9.3f %9.0f %6.1f%% %9.1f%%\n", "to_sparse", "16x2048x2048", (long long)bs,
                  density, tg::dtype_name(dt), ms, gbs, 100 * gbs / copy, 100 * gbs / tgb::same_size_copy_gbps(bytes));
      ms = tgb::time_ms([&] { tg::to_dense(sp); });
      // fewest bytes: write the whole dense output once, read the active blocks once
      bytes = useful + static_cast<double>(dense.nbytes());
      gbs = bytes / ms / 1e6;
      std::printf("%-10s %-18s %5lld %7.2f %-5s %9.3f %9.0f %6.1f%% %9.1f%%\n", "to_dense", "16x2048x2048", (long long)bs,
                  density, tg::dtype_name(dt), ms, gbs, 100 * gbs / copy, 100 * gbs / tgb::same_size_copy_gbps(bytes));
    }
  }
  return 0;
}
