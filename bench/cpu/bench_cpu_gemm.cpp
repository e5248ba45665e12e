// The CPU's f32 GEMM: Eigen's products against the packed GEMM (ops/linalg/cpu_packed_gemm.h)
// through tg::matmul, on the example GPT's products (the CPU main job's defaults: 2,048 rows
// of width 128, MLP 512, QKV 384, vocabulary 86; forward, input and weight gradients) and a
// few squares, next to the machine's FMA ceiling measured in the same run; then the example's
// block-sparse MLP products (nn::BlockSparseLinear at density 0.5, blocks of 32), whose
// panels run on either GEMM the same way.
//
// Each case alternates the two GEMMs for several rounds (the same inputs, each round the
// median of its repetitions) and prints the median round: GFLOP/s, the ratio, and the share
// of the ceiling. Run with OMP_NUM_THREADS to pin the thread count.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "ops/linalg/cpu_gemm_choice.h"
#include "ops/linalg/cpu_packed_gemm.h"
#include "tilegrad.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using tg::ops::CpuGemm;

// FLOP/s of independent 8-lane FMAs on every OpenMP thread: the f32 ceiling of an AVX2 GEMM.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) double fma_ceiling() {
  constexpr long kIters = 100'000'000;
  double seconds = 0;
  int threads = 1;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
  {
#pragma omp single
    {
#ifdef _OPENMP
      threads = omp_get_num_threads();
#endif
    }
    __m256 acc[10];
    for (int j = 0; j < 10; ++j) acc[j] = _mm256_set1_ps(1.f + static_cast<float>(j) * 1e-7f);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < kIters; ++i) {
#pragma GCC unroll 10
      for (int j = 0; j < 10; ++j) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
    }
    float keep = 0;
    for (int j = 0; j < 10; ++j) keep += _mm256_cvtss_f32(acc[j]);
    if (keep == 12345.f) std::printf(" ");  // keeps the loop
  }
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(threads) * kIters * 10 * 16 / seconds;
}
#else
double fma_ceiling() { return 0; }
#endif

struct Shape3 {
  const char* what;
  std::int64_t m, n, k;
  bool ta, tb;
};

// GFLOP/s of `run` on each GEMM: rounds alternating Eigen and the packed GEMM (when `packed`),
// each round the median of `reps` calls, then the median round. Leaves the automatic choice.
struct Rates {
  double eigen = 0, packed = 0;
};
Rates alternate(const std::function<void()>& run, double flop, int reps, bool packed) {
  constexpr int kRounds = 7;
  auto round = [&](CpuGemm g) {
    tg::ops::set_cpu_gemm(g);
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      run();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  std::vector<double> te, tp;
  for (int r = 0; r < kRounds; ++r) {
    te.push_back(round(CpuGemm::Eigen));
    if (packed) tp.push_back(round(CpuGemm::Packed));
  }
  tg::ops::set_cpu_gemm(CpuGemm::Auto);
  std::sort(te.begin(), te.end());
  std::sort(tp.begin(), tp.end());
  return {flop / te[kRounds / 2] * 1e-9, packed ? flop / tp[kRounds / 2] * 1e-9 : 0};
}

}  // namespace

int main() {
  const bool packed = tg::ops::packed_sgemm_available();
  const double ceiling = fma_ceiling();
  std::printf("CPU f32 GEMM through tg::matmul, Eigen against the packed GEMM%s\n",
              packed ? "" : " (not available on this CPU: Eigen only)");
  std::printf("FMA ceiling (8-lane FMAs on every thread): %.1f GFLOP/s\n\n", ceiling * 1e-9);
  const std::vector<Shape3> shapes = {
      {"qkv fwd", 2048, 384, 128, false, true},        {"proj fwd", 2048, 128, 128, false, true},
      {"mlp up fwd", 2048, 512, 128, false, true},     {"mlp down fwd", 2048, 128, 512, false, true},
      {"dX of qkv", 2048, 128, 384, false, false},     {"dW of qkv", 384, 128, 2048, true, false},
      {"dW of mlp up", 512, 128, 2048, true, false},   {"head fwd", 2048, 86, 128, false, true},
      {"square 128", 128, 128, 128, false, false},     {"square 512", 512, 512, 512, false, false},
      {"square 1024", 1024, 1024, 1024, false, false}, {"64 x 64 x 64", 64, 64, 64, false, false},
  };
  std::printf("%-14s %5s %5s %5s %3s %3s | %8s %8s | %6s | %7s\n", "product", "m", "n", "k", "ta", "tb", "Eigen",
              "packed", "ratio", "ceiling");
  for (const Shape3& s : shapes) {
    const tg::Tensor a = tg::randn(s.ta ? tg::Shape{s.k, s.m} : tg::Shape{s.m, s.k});
    const tg::Tensor b = tg::randn(s.tb ? tg::Shape{s.n, s.k} : tg::Shape{s.k, s.n});
    const double flop = 2.0 * static_cast<double>(s.m * s.n * s.k);
    const int reps = std::clamp(static_cast<int>(2e8 / flop), 3, 200);
    const Rates r = alternate([&] { (void)tg::matmul(a, b, s.ta, s.tb); }, flop, reps, packed);
    const double ge = r.eigen, gp = r.packed;
    std::printf("%-14s %5ld %5ld %5ld %3d %3d | %8.1f %8.1f | %5.2fx | %6.1f%%\n", s.what, static_cast<long>(s.m),
                static_cast<long>(s.n), static_cast<long>(s.k), s.ta, s.tb, ge, gp, packed ? gp / ge : 0.0,
                ceiling > 0 ? 100 * std::max(ge, gp) * 1e9 / ceiling : 0.0);
  }
  // DDS as nn::BlockSparseLinear runs it (x [2048, 128] · Wᵀ, W [512, 128] of 32-blocks at
  // density 0.5), and its input gradient (dY [2048, 512] · W) and the weight's (SDD)
  std::printf("\nblock-sparse (blocks of 32, density 0.5; useful GFLOP/s)\n");
  std::mt19937_64 rng(7);
  std::bernoulli_distribution keep(0.5);
  const tg::Tensor mask = [&] {
    std::vector<double> v(16 * 4);
    for (double& e : v) e = keep(rng) ? 1 : 0;
    return tg::from_vector(v, tg::Shape{1, 16, 4}).to(tg::DType::boolean);
  }();
  const tg::Layout lw(mask, 32);  // W [512, 128]
  const double active = static_cast<double>(lw.n_blocks()) / 64;
  const tg::BlockSparseTensor w = tg::to_sparse(tg::randn(tg::Shape{1, 512, 128}), lw);
  const tg::Tensor x = tg::randn(tg::Shape{1, 2048, 128}), dy = tg::randn(tg::Shape{1, 2048, 512});
  struct SparseCase {
    const char* what;
    std::function<void()> run;
    double flop;
  };
  const std::vector<SparseCase> cases = {
      {"x W^T (DDS)", [&] { (void)tg::matmul(x, w, {.transpose_y = true}); }, 2.0 * 2048 * 512 * 128 * active},
      {"dY W (DDS)", [&] { (void)tg::matmul(dy, w); }, 2.0 * 2048 * 512 * 128 * active},
      {"dY^T x (SDD)", [&] { (void)tg::matmul(dy, x, lw, {.transpose_x = true}); }, 2.0 * 2048 * 512 * 128 * active},
  };
  std::printf("%-16s | %8s %8s | %6s\n", "product", "Eigen", "packed", "ratio");
  for (const SparseCase& c : cases) {
    const Rates r = alternate(c.run, c.flop, 31, packed);
    const double ge = r.eigen, gp = r.packed;
    std::printf("%-16s | %8.1f %8.1f | %5.2fx\n", c.what, ge, gp, packed ? gp / ge : 0.0);
  }
  return 0;
}
