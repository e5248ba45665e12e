// Building a layout's index tables (block_coords, block_index, CSR and CSC offsets): on
// the GPU (CUB scans over the mask, the path Layout::tables takes for CUDA devices), on
// the CPU (plain loops), and the CPU build followed by copying the five tables to the GPU
// (the path before the GPU builder). Each timed build uses a fresh Layout of the same mask
// (its caches empty); host wall clock including a device synchronisation, median of runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench_util.h"
#include "tilegrad.h"

namespace {

double median_us(const tg::Tensor& mask, std::int64_t bs, int reps, const std::function<void(const tg::Layout&)>& fn) {
  std::vector<double> us;
  for (int i = 0; i < reps + 5; ++i) {
    tg::Layout l(mask, bs);  // outside the timing
    TG_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    fn(l);
    TG_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= 5) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main() {
  const tg::Device gpu = tg::Device::cuda();
  std::printf("%-14s %8s %9s %10s %10s %14s\n", "blocks", "active", "density", "gpu us", "cpu us", "cpu+copy us");
  struct Grid {
    std::int64_t B, Mb, Nb;
  };
  for (const Grid& g : {Grid{16, 32, 32}, Grid{16, 128, 128}, Grid{64, 256, 256}}) {
    const tg::Layout proto = tg::random_layout(g.B, g.Mb, g.Nb, 64, 0.3, 1);
    const tg::Tensor& mask = proto.mask();
    const int reps = g.Mb >= 256 ? 20 : 100;
    const double t_gpu = median_us(mask, 64, reps, [&](const tg::Layout& l) { (void)l.tables(gpu); });
    const double t_cpu = median_us(mask, 64, reps, [&](const tg::Layout& l) { (void)l.tables(tg::Device::cpu()); });
    const double t_copy = median_us(mask, 64, reps, [&](const tg::Layout& l) {
      const tg::LayoutTables& h = l.tables(tg::Device::cpu());
      for (const tg::Tensor* t : {&h.block_coords, &h.block_index, &h.row_offsets, &h.col_offsets, &h.col_blocks}) {
        (void)t->to(gpu);
      }
    });
    char name[64];
    std::snprintf(name, sizeof name, "%lldx%lldx%lld", static_cast<long long>(g.B), static_cast<long long>(g.Mb),
                  static_cast<long long>(g.Nb));
    std::printf("%-14s %8lld %9.2f %10.1f %10.1f %14.1f\n", name, static_cast<long long>(proto.n_blocks()),
                proto.density(), t_gpu, t_cpu, t_copy);
  }
  return 0;
}
