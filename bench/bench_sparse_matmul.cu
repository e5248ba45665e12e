// Block-sparse matmul (SDD, DSD, DDS) at 16 x 2048 x 2048 x 2048 against cuBLAS's dense
// batched GEMM of the same shape, measured in the same process (PERF.md: time <= 1.2 x
// density x cuBLAS at density >= 0.25, <= 1.5 x at 0.1; backward <= 2.2 x forward).
//
// Useful FLOPs count only block products that exist: 2·bs³ per (output block, k-block)
// pair, i.e. 2·B·M·N·K·density for these modes (density of the one sparse operand);
// the backward (dx + dy) does twice that. cuBLAS's bf16 runs bf16 in / f32 compute, its
// f32 TF32 (CUBLAS_COMPUTE_32F_FAST_TF32), and ours f32 with tg::set_allow_tf32(true).
// The floor is arithmetic: at density d the operands move at most ~0.4 GB (bf16) for
// d·275 GFLOP, far below the copy rate, so cuBLAS's rate is the ceiling to compare with.
// Medians of 20 runs after 5 warm-up runs, CUDA events on the default stream. bf16 forward
// lines also time each CUDA decomposition forced (per-block, grouped 128x128 / 64x128 /
// 128x64 regions, the Hopper kernel's tiles; at blocks 16 and 32 the product at its own
// block size and on the 64-blocks covering it, path.h CoarseBlocks), in three rounds of
// alternating order, against which to judge the automatic choice; those lines' time is the
// automatic choice's median over the same rounds.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "matmul_cases.h"
#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "tilegrad.h"

namespace {

constexpr std::int64_t kB = tg_bench::kMatmulB, kS = tg_bench::kMatmulS;
constexpr int kWarmup = 5, kReps = 20;
constexpr int kPathRounds = 3;  // rounds of the forced paths' timings (see there)

using Mode = tg_bench::MatmulMode;
using tg_bench::mode_name;

// Row-major C[i] = op(A[i]) · op(B[i]) (all kS x kS, batch kB) as cuBLAS's column-major
// Cᵀ = op(B)ᵀ · op(A)ᵀ.
void cublas_gemm(cublasHandle_t h, tg::DType dt, const void* a, const void* b, void* c, bool ta, bool tb) {
  const cudaDataType_t t = dt == tg::DType::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t ct = dt == tg::DType::bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
  const float one = 1.0f, zero = 0.0f;
  const int n = static_cast<int>(kS);
  const long long stride = kS * kS;
  TG_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, n, n,
                                             &one, b, t, n, stride, a, t, n, stride, &zero, c, t, n, stride,
                                             static_cast<int>(kB), ct, CUBLAS_GEMM_DEFAULT));
}

void line(const char* mode, std::int64_t bs, double density, tg::DType dt, const char* dir, double ms, double flops,
          double ref_ms, const std::string& extra) {
  std::printf("%-6s %4lld %7.3f %-5s %-4s %9.3f %9.1f %8.3f  %s\n", mode, static_cast<long long>(bs), density,
              tg::dtype_name(dt), dir, ms, flops / ms / 1e9, ms / (density * ref_ms), extra.c_str());
}

void bench_dtype(cublasHandle_t h, tg::DType dt) {
  const tg::Device gpu = tg::Device::cuda();
  const tg::TensorOptions o{.dtype = dt, .device = gpu};
  const tg::Tensor x = tg::rand_seeded({kB, kS, kS}, 1, o, -1, 1);
  const tg::Tensor y = tg::rand_seeded({kB, kS, kS}, 2, o, -1, 1);
  const tg::Tensor g = tg::rand_seeded({kB, kS, kS}, 3, o, -1, 1);
  const tg::Tensor c = tg::empty({kB, kS, kS}, o), d = tg::empty({kB, kS, kS}, o);
  const double dense_flops = 2.0 * kB * kS * kS * kS;

  const double ref_fwd =
      tgb::time_ms([&] { cublas_gemm(h, dt, x.data_ptr(), y.data_ptr(), c.data_ptr(), false, false); }, kWarmup, kReps);
  const double ref_bwd = tgb::time_ms(
      [&] {
        cublas_gemm(h, dt, g.data_ptr(), y.data_ptr(), c.data_ptr(), false, true);  // dx = dO · yᵀ
        cublas_gemm(h, dt, x.data_ptr(), g.data_ptr(), d.data_ptr(), true, false);  // dy = xᵀ · dO
      },
      kWarmup, kReps);
  line("cuBLAS", 0, 1.0, dt, "fwd", ref_fwd, dense_flops, ref_fwd, "");
  line("cuBLAS", 0, 1.0, dt, "bwd", ref_bwd, 2 * dense_flops, ref_bwd, "");

  tg_bench::for_each_matmul_case([&](Mode m, std::int64_t bs, double want, const tg::Layout& l) {
    if (!tgb::selected(std::string(mode_name(m)) + " " + std::to_string(bs) + " " + std::to_string(want) + " " +
                       tg::dtype_name(dt)))
      return;
    const double density = l.density();
    const double flops = dense_flops * density;  // pairs · 2·bs³ for these modes
    // leaves: the dense operands, or the block data of the sparse one
    tg::Tensor xl = m == Mode::DSD ? tg::to_sparse(x, l).data().detach() : x.detach();
    tg::Tensor yl = m == Mode::DDS ? tg::to_sparse(y, l).data().detach() : y.detach();
    tg::Tensor gl = m == Mode::SDD ? tg::to_sparse(g, l).data().detach() : g;
    auto forward = [&]() -> tg::Tensor {
      switch (m) {
        case Mode::SDD:
          return tg::matmul(xl, yl, l).data();
        case Mode::DSD:
          return tg::matmul(tg::BlockSparseTensor(xl, l), yl);
        default:
          return tg::matmul(xl, tg::BlockSparseTensor(yl, l));
      }
    };
    double fwd;
    {
      tg::NoGradGuard no_grad;
      fwd = tgb::time_ms([&] { forward(); }, kWarmup, kReps);
    }
    std::string paths;
    {
      // the GPU time alone (runs queued behind a spin kernel): tells the kernels' share
      // from the host's at small densities
      tg::NoGradGuard no_grad;
      char buf[48];
      std::snprintf(buf, sizeof buf, "queued %.3f ms", tgb::time_queued_ms([&] { forward(); }, kWarmup, kReps));
      paths += buf;
    }
    if (dt == tg::DType::bf16) {
      // The forward on each forced decomposition that applies (ops/sparse_matmul/path.h),
      // to check the automatic choice: per-block mma.sync, the grouped regions (blocks
      // 32 and 64), the Hopper TMA kernel one block a tile, on row groups, column groups and pairs
      // of either (blocks 64 and 128; at 128 the pairs are the groups of one line).
      using tg::ops::spmm::MmaPath;
      tg::NoGradGuard no_grad;
      // The automatic choice first, timed in the rounds too, so that it and the paths it
      // chooses between are timed alike (alone before them it read 2-5% slower than the same
      // schedule forced in them: SDD block 128 at density 0.5, 0.234 against 0.225 ms; in the
      // rounds one schedule still spreads 3-6% at block 128, bench/RESULTS.md 12-06,
      // twenty-ninth session). Its median over the rounds is the line's time.
      // Below block 64 the forced paths keep the block size (CoarseBlocks::Never), and
      // "covering 64" takes the 64-blocks covering it (Always), "own" the automatic choice
      // at its own size; for SDD "covering 64 moved" stores the 64-blocks and moves the fine
      // ones out of them instead of storing those straight (path.h set_fine_stores).
      using tg::ops::spmm::CoarseBlocks;
      struct Forced {
        MmaPath path;
        CoarseBlocks coarse;
        const char* name;
        bool fine_stores = true;
      };
      const CoarseBlocks own = bs < 64 ? CoarseBlocks::Never : CoarseBlocks::Auto;
      std::vector<Forced> forced{{MmaPath::Auto, CoarseBlocks::Auto, "auto"}, {MmaPath::PerBlock, own, "per-block"}};
      if (bs < 64) {
        forced.insert(forced.end(), {{MmaPath::Auto, CoarseBlocks::Never, "own"},
                                     {MmaPath::Auto, CoarseBlocks::Always, "covering 64"}});
        if (m == Mode::SDD) forced.push_back({MmaPath::Auto, CoarseBlocks::Always, "covering 64 moved", false});
      }
      if (bs == 32 || bs == 64) {
        forced.insert(forced.end(), {{MmaPath::Grouped, own, "128x128"},
                                     {MmaPath::GroupedWide, own, "64x128"},
                                     {MmaPath::GroupedTall, own, "128x64"}});
      }
      if ((bs == 64 || bs == 128) && tg::ops::spmm::wgmma_supported(0)) {
        forced.insert(forced.end(), {{MmaPath::WgmmaTmaNarrow, own, "tma-1"},
                                     {MmaPath::WgmmaTmaWide, own, "tma-rows"},
                                     {MmaPath::WgmmaTmaWideColumns, own, "tma-cols"},
                                     {MmaPath::WgmmaTmaRowPairs, own, "tma-2rows"},
                                     {MmaPath::WgmmaTmaColumnPairs, own, "tma-2cols"}});
      }
      // In rounds, every other one in reverse order, each path's median printed: in one fixed
      // order a later column read up to 13% slower than an earlier one on the same schedule
      // (block 128 at density 1, where the pairs are the row groups: bench/RESULTS.md, 12-06
      // twenty-seventh session), which a choice between paths a few percent apart cannot use.
      std::vector<std::vector<double>> times(forced.size());
      for (int round = 0; round < kPathRounds; ++round) {
        for (std::size_t i = 0; i < forced.size(); ++i) {
          const std::size_t k = round % 2 == 0 ? i : forced.size() - 1 - i;
          tg::ops::spmm::set_mma_path(forced[k].path);
          tg::ops::spmm::set_coarse_blocks(forced[k].coarse);
          tg::ops::spmm::set_fine_stores(forced[k].fine_stores);
          times[k].push_back(tgb::time_ms([&] { forward(); }, kWarmup, kReps));
        }
      }
      tg::ops::spmm::set_mma_path(MmaPath::Auto);
      tg::ops::spmm::set_coarse_blocks(CoarseBlocks::Auto);
      tg::ops::spmm::set_fine_stores(true);
      for (std::size_t k = 0; k < forced.size(); ++k) {
        std::sort(times[k].begin(), times[k].end());
        const double median = times[k][times[k].size() / 2];
        if (k == 0) {
          fwd = median;
          continue;
        }
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%s %.3f", k == 1 ? "; ms: " : ", ", forced[k].name, median);
        paths += buf;
      }
    }
    line(mode_name(m), bs, density, dt, "fwd", fwd, flops, ref_fwd, paths);
    xl.requires_grad_(true);
    yl.requires_grad_(true);
    const tg::Tensor out = forward();
    const double bwd = tgb::time_ms(
        [&] {
          xl.zero_grad();
          yl.zero_grad();
          tg::backward(out, gl, /*retain_graph=*/true);
        },
        kWarmup, kReps);
    char extra[64];
    std::snprintf(extra, sizeof extra, "bwd/fwd %.2f", bwd / fwd);
    line(mode_name(m), bs, density, dt, "bwd", bwd, 2 * flops, ref_bwd, extra);
  });
}

}  // namespace

int main() {
  if (!tg::cuda_available()) {
    std::printf("bench_sparse_matmul: no CUDA device\n");
    return 0;
  }
  cublasHandle_t h;
  TG_CUBLAS_CHECK(cublasCreate(&h));
  // tilegrad's default current stream is the legacy default stream, which time_ms times.
  TG_CUBLAS_CHECK(cublasSetStream(h, tg::cuda::current_cuda_stream(0)));
  tg::set_allow_tf32(true);
  std::printf("block-sparse matmul, B x M x N x K = %lld x %lld x %lld x %lld, vs cuBLAS dense batched GEMM\n",
              static_cast<long long>(kB), static_cast<long long>(kS), static_cast<long long>(kS),
              static_cast<long long>(kS));
  std::printf("%-6s %4s %7s %-5s %-4s %9s %9s %8s\n", "mode", "bs", "density", "dtype", "dir", "ms", "TFLOP/s",
              "ours/(d*cuBLAS)");
  for (tg::DType dt : {tg::DType::bf16, tg::DType::f32}) bench_dtype(h, dt);
  TG_CUBLAS_CHECK(cublasDestroy(h));
  return 0;
}
