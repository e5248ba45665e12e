// Tests of matmul (ops/linalg): a triple-loop f64 reference for every shape case and trans
// flag, 16-bit accuracy, empty extents, gradchecks, bad inputs, and CUDA against the CPU.
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "force_cpu_gemm.h"
#include "ops/linalg/cpu_gemm_choice.h"
#include "ops/linalg/cpu_packed_gemm.h"
#include "ops/linalg/kernels.h"
#include "util.h"

namespace test_matmul {

using namespace tg;

namespace {

struct Case {
  bool a_batched;      // a 3-d [batch, .., ..] (else 2-d)
  std::int64_t batch;
  bool b_batched;      // b 3-d too (else b is 2-d: shared by the batch when a is 3-d)
  std::int64_t m, k, n;
  bool ta, tb;
};

Shape a_shape(const Case& c) {
  const std::int64_t r = c.ta ? c.k : c.m, col = c.ta ? c.m : c.k;
  return c.a_batched ? Shape{c.batch, r, col} : Shape{r, col};
}
Shape b_shape(const Case& c) {
  const std::int64_t r = c.tb ? c.n : c.k, col = c.tb ? c.k : c.n;
  return c.b_batched ? Shape{c.batch, r, col} : Shape{r, col};
}

Shape out_shape(const Case& c) { return c.a_batched ? Shape{c.batch, c.m, c.n} : Shape{c.m, c.n}; }

// out[i][r][j] = sum_p op(a_i)[r][p] · op(b_i)[p][j], in f64 with plain loops.
Tensor reference(const Tensor& a, const Tensor& b, const Case& c) {
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  const std::int64_t nb = c.a_batched ? c.batch : 1;
  std::vector<double> out(static_cast<std::size_t>(nb * c.m * c.n), 0.0);
  for (std::int64_t i = 0; i < nb; ++i) {
    const double* pa = av.data() + i * c.m * c.k;
    const double* pb = bv.data() + (c.b_batched ? i * c.k * c.n : 0);
    for (std::int64_t r = 0; r < c.m; ++r) {
      for (std::int64_t j = 0; j < c.n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < c.k; ++p) {
          const double x = c.ta ? pa[p * c.m + r] : pa[r * c.k + p];
          const double y = c.tb ? pb[j * c.k + p] : pb[p * c.n + j];
          s += x * y;
        }
        out[static_cast<std::size_t>((i * c.m + r) * c.n + j)] = s;
      }
    }
  }
  return from_vector(out, out_shape(c));
}

// Every shape case (2-d, batched, shared b) with every trans combination.
std::vector<Case> all_cases(std::int64_t m, std::int64_t k, std::int64_t n, std::int64_t batch) {
  std::vector<Case> cs;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    cs.push_back({false, 1, false, m, k, n, ta, tb});
    cs.push_back({true, batch, true, m, k, n, ta, tb});
    cs.push_back({true, batch, false, m, k, n, ta, tb});
  }
  return cs;
}

std::string describe(const Case& c) {
  std::string s = !c.a_batched ? "2-d" : (c.b_batched ? "batched" : "shared-b");
  return s + " M=" + std::to_string(c.m) + " K=" + std::to_string(c.k) + " N=" + std::to_string(c.n) +
         " B=" + std::to_string(c.batch) + " trans_a=" + std::to_string(c.ta) + " trans_b=" + std::to_string(c.tb);
}

// f32 and 16-bit results: one rounding of an f32 sum (plus that sum's own error).
double rtol_for(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    case DType::bf16: return 1.0 / 128;  // 2^-8 is the worst-case rounding; some slack for the f32 sum
    case DType::f16: return 1.0 / 512;
    default: return 0;
  }
}

}  // namespace

TEST_CASE("matmul: matches a triple-loop f64 reference, every shape case and trans flag", "[ops][matmul]") {
  for (DType dt : {DType::f64, DType::f32}) {
    for (const Case& c : all_cases(5, 7, 3, 4)) {
      INFO(describe(c) << " dtype " << dt);
      Tensor a = tgt::rand64(a_shape(c), 11).to(dt), b = tgt::rand64(b_shape(c), 12).to(dt);
      Tensor out = matmul(a, b, c.ta, c.tb);
      REQUIRE(out.dtype() == dt);
      tgt::require_close(out, reference(a, b, c), rtol_for(dt), dt == DType::f64 ? 1e-12 : 1e-5);
    }
  }
}

TEST_CASE("matmul: larger non-square shapes cross Eigen's blocking", "[ops][matmul]") {
  for (const Case& c : all_cases(67, 130, 45, 3)) {
    INFO(describe(c));
    Tensor a = tgt::rand64(a_shape(c), 21), b = tgt::rand64(b_shape(c), 22);
    tgt::require_close(matmul(a, b, c.ta, c.tb), reference(a, b, c), 1e-11, 1e-11);
  }
}

TEST_CASE("matmul: bf16 and f16 are within one output rounding of the f64 reference", "[ops][matmul]") {
  for (DType dt : {DType::bf16, DType::f16}) {
    for (const Case& c : all_cases(9, 33, 17, 3)) {
      INFO(describe(c) << " dtype " << dt);
      // The reference uses the same (rounded) inputs: only accumulation and output rounding differ.
      Tensor a = tgt::rand64(a_shape(c), 31).to(dt), b = tgt::rand64(b_shape(c), 32).to(dt);
      Tensor out = matmul(a, b, c.ta, c.tb);
      REQUIRE(out.dtype() == dt);
      tgt::require_close(out, reference(a, b, c), rtol_for(dt), 1e-3);
    }
  }
}

TEST_CASE("matmul: 16-bit dtypes accumulate in f32, rounding once at the end", "[ops][matmul]") {
  // 4096 products of 1 · 0.0100098 (exact in bf16): the sum 41.0 is far from what a bf16
  // running sum gives (it stalls once the ulp exceeds 2 · 0.01).
  const std::int64_t k = 4096;
  for (DType dt : {DType::bf16, DType::f16}) {
    INFO("dtype " << dt);
    Tensor a = from_vector(std::vector<double>(static_cast<std::size_t>(k), 1.0), {1, k}).to(dt);
    const double v = static_cast<double>(static_cast<float>(bfloat16(0.01f)));
    Tensor b = from_vector(std::vector<double>(static_cast<std::size_t>(k), v), {k, 1}).to(dt);
    const double exact = v * static_cast<double>(k);
    const double got = matmul(a, b).item<double>();
    CHECK(std::fabs(got - exact) <= rtol_for(dt) * exact);
  }
}

TEST_CASE("matmul: one element and 1-wide extents", "[ops][matmul]") {
  Tensor a = from_vector<double>({3.0}, {1, 1}), b = from_vector<double>({-2.5}, {1, 1});
  CHECK(matmul(a, b).item<double>() == -7.5);
  CHECK(matmul(a, b, true, true).item<double>() == -7.5);
  for (const Case& c : all_cases(1, 6, 1, 1)) {
    INFO(describe(c));
    Tensor x = tgt::rand64(a_shape(c), 41), y = tgt::rand64(b_shape(c), 42);
    tgt::require_close(matmul(x, y, c.ta, c.tb), reference(x, y, c), 1e-12, 1e-12);
  }
}

TEST_CASE("matmul: empty extents give empty results, K = 0 gives zeros", "[ops][matmul]") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (auto [m, k, n, batch] : std::vector<std::array<std::int64_t, 4>>{
             {0, 3, 4, 2}, {3, 0, 4, 2}, {3, 4, 0, 2}, {3, 4, 5, 0}, {0, 0, 0, 0}, {2, 0, 2, 1}}) {
      for (const Case& c : all_cases(m, k, n, batch)) {
        INFO(describe(c) << " dtype " << dt);
        Tensor a = tgt::rand64(a_shape(c), 51).to(dt), b = tgt::rand64(b_shape(c), 52).to(dt);
        Tensor out = matmul(a, b, c.ta, c.tb);
        REQUIRE(out.shape() == out_shape(c));
        // (B = 0 leaves the 2-d case non-empty: it must still be right.)
        tgt::require_close(out, reference(a, b, c), rtol_for(dt), 1e-3);
        if (k == 0) {
          for (double v : out.to_vector<double>()) CHECK(v == 0.0);
        }
      }
    }
  }
}

TEST_CASE("matmul: K = 0 zeros even a recycled, dirty output buffer", "[ops][matmul]") {
  // Fill the allocator's cache with non-zero bytes of the right size, then matmul with K = 0.
  { Tensor junk = tgt::rand64({4, 5}, 61, 1.0, 2.0); }
  Tensor out = matmul(tgt::rand64({4, 0}, 62), tgt::rand64({0, 5}, 63));
  for (double v : out.to_vector<double>()) CHECK(v == 0.0);
}

TEST_CASE("matmul: gradcheck for every shape case and trans flag", "[ops][matmul][gradcheck]") {
  for (const Case& c : all_cases(3, 4, 2, 2)) {
    INFO(describe(c));
    Tensor a = tgt::rand64(a_shape(c), 71).requires_grad_(true);
    Tensor b = tgt::rand64(b_shape(c), 72).requires_grad_(true);
    auto res = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], c.ta, c.tb); }, {a, b});
    INFO(res.report);
    REQUIRE(res);
  }
}

TEST_CASE("matmul: gradients with only one input requiring grad, and with K = 0", "[ops][matmul][gradcheck]") {
  for (const Case& c : all_cases(3, 2, 4, 2)) {
    INFO(describe(c));
    Tensor a = tgt::rand64(a_shape(c), 81), b = tgt::rand64(b_shape(c), 82).requires_grad_(true);
    auto res = autograd::gradcheck([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], c.ta, c.tb); },
                                   {a, b});
    INFO(res.report);
    REQUIRE(res);
    Tensor a2 = tgt::rand64(a_shape(c), 83).requires_grad_(true), b2 = tgt::rand64(b_shape(c), 84);
    Tensor out = matmul(a2, b2, c.ta, c.tb);
    backward(out, tgt::rand64(out.shape(), 85));
    CHECK(a2.grad().shape() == a2.shape());
    CHECK_FALSE(b2.grad().defined());
  }
  for (const Case& c : all_cases(3, 0, 2, 2)) {
    INFO(describe(c));
    Tensor a = tgt::rand64(a_shape(c), 86).requires_grad_(true), b = tgt::rand64(b_shape(c), 87).requires_grad_(true);
    Tensor out = matmul(a, b, c.ta, c.tb);
    backward(out, tgt::rand64(out.shape(), 88));
    CHECK(a.grad().shape() == a.shape());
    CHECK(b.grad().shape() == b.shape());
  }
  // M = 0: dB sums over no rows and must be zeros of b's shape.
  Tensor a = tgt::rand64({2, 0, 3}, 89).requires_grad_(true), b = tgt::rand64({3, 4}, 90).requires_grad_(true);
  Tensor out = matmul(a, b);
  backward(out, tgt::rand64(out.shape(), 91));
  REQUIRE(b.grad().shape() == b.shape());
  for (double v : b.grad().to_vector<double>()) CHECK(v == 0.0);
}

TEST_CASE("matmul: bad inputs name the op, the argument and the extents", "[ops][matmul]") {
  Tensor a = tgt::rand64({2, 4}, 1), b = tgt::rand64({3, 5}, 2);
  tgt::require_throws<ShapeError>([&] { matmul(a, b); },
                                  {"matmul: inner extents differ: a has K=4 (dim -1), b has K=3 (dim -2)"});
  tgt::require_throws<ShapeError>([&] { matmul(a, b, true, true); }, {"a has K=2 (dim -2)", "b has K=5 (dim -1)"});
  tgt::require_throws<ShapeError>([&] { matmul(tgt::rand64({2, 3, 4}, 3), tgt::rand64({3, 4, 5}, 4)); },
                                  {"matmul", "batch", "a has B=2", "b has B=3"});
  tgt::require_throws<ShapeError>([&] { matmul(tgt::rand64({4}, 5), tgt::rand64({4, 2}, 6)); },
                                  {"matmul", "a", "[4]"});
  tgt::require_throws<ShapeError>([&] { matmul(tgt::rand64({1, 2, 3, 4}, 5), tgt::rand64({4, 2}, 6)); },
                                  {"matmul", "a", "[1, 2, 3, 4]"});
  tgt::require_throws<ShapeError>([&] { matmul(tgt::rand64({2, 3}, 5), tgt::rand64({4}, 6)); }, {"matmul", "b"});
  tgt::require_throws<ShapeError>([&] { matmul(tgt::rand64({2, 3}, 5), tgt::rand64({2, 3, 4}, 6)); },
                                  {"matmul", "b", "3-d", "[2, 3, 4]"});
  tgt::require_throws<DTypeError>([&] { matmul(a, tgt::rand64({4, 5}, 7).to(DType::f32)); },
                                  {"matmul", "a", "b", "f64", "f32"});
  tgt::require_throws<DTypeError>([&] { matmul(a.to(DType::i32), tgt::rand64({4, 5}, 7).to(DType::i32)); },
                                  {"matmul", "a", "floating", "i32"});
  tgt::require_throws<ValueError>([&] { matmul(Tensor(), a); }, {"matmul", "a", "undefined"});
  if (cuda_available()) {
    tgt::require_throws<DeviceError>([&] { matmul(a, tgt::rand64({4, 5}, 7).to(Device::cuda())); },
                                     {"matmul", "a", "b", "cpu", "cuda"});
  }
}

TEST_CASE("matmul: allow_tf32 is a switch, off by default", "[ops][matmul]") {
  CHECK_FALSE(allow_tf32());
  set_allow_tf32(true);
  CHECK(allow_tf32());
  set_allow_tf32(false);
  CHECK_FALSE(allow_tf32());
}

// ---- the CPU's packed f32 GEMM ---------------------------------------------------------------

TEST_CASE("matmul: the packed CPU GEMM matches the f64 reference across its tile, block and panel edges",
          "[ops][matmul]") {
  if (!ops::packed_sgemm_available()) TG_SKIP("this CPU lacks AVX2 or FMA: the packed GEMM cannot run here");
  const tgt::ForceCpuGemm packed(ops::CpuGemm::Packed);
  // m: one row, partial / whole / one-past 6-row tiles, A blocks of unequal height (121 rows:
  // 66 + 55), seven blocks; n: partial / whole / one-past 16-column slivers, 4100 columns
  // crossing the 4096-column panel; k: one, the 256-deep step's edges, several steps.
  const std::vector<std::array<std::int64_t, 3>> sizes = {{1, 1, 1},      {5, 15, 255},  {6, 16, 256},
                                                          {7, 17, 257},   {121, 33, 40}, {13, 300, 600},
                                                          {250, 47, 300}, {3, 4100, 3},  {721, 20, 8}};
  for (const auto& [m, n, k] : sizes) {
    for (int t = 0; t < 4; ++t) {
      const Case c{false, 1, false, m, k, n, (t & 1) != 0, (t & 2) != 0};
      INFO(describe(c));
      Tensor a = tgt::rand64(a_shape(c), 41).to(DType::f32), b = tgt::rand64(b_shape(c), 42).to(DType::f32);
      // one f32 rounding of each product and partial sum: k ulps of the terms at the most
      tgt::require_close(matmul(a, b, c.ta, c.tb), reference(a, b, c), 1e-5, 2.5e-7 * static_cast<double>(k));
    }
  }
  // batched and shared operands (the backend's loop over the batch), and bf16 / f16 widened to f32
  for (const Case& c : all_cases(37, 70, 45, 3)) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      INFO(describe(c) << " dtype " << dt);
      Tensor a = tgt::rand64(a_shape(c), 43).to(dt), b = tgt::rand64(b_shape(c), 44).to(dt);
      Tensor out = matmul(a, b, c.ta, c.tb);
      REQUIRE(out.dtype() == dt);
      tgt::require_close(out, reference(a, b, c), rtol_for(dt), dt == DType::f32 ? 1e-4 : 1e-3);
    }
  }
}

TEST_CASE("matmul: the CPU GEMM choice: forced either way, else the packed one for large products on AVX2 CPUs",
          "[ops][matmul]") {
  {
    const tgt::ForceCpuGemm eigen(ops::CpuGemm::Eigen);
    CHECK(ops::cpu_gemm() == ops::CpuGemm::Eigen);
    CHECK_FALSE(ops::use_packed_gemm(4096, 4096, 4096, false));
  }
  {
    const tgt::ForceCpuGemm packed(ops::CpuGemm::Packed);
    CHECK(ops::cpu_gemm() == ops::CpuGemm::Packed);
    if (ops::packed_sgemm_available()) {
      CHECK(ops::use_packed_gemm(1, 1, 1, true));
    } else {
      tgt::require_throws<ValueError>([] { ops::use_packed_gemm(1, 1, 1, true); },
                                      {"matmul", "TG_CPU_GEMM", "AVX2", "FMA"});
    }
  }
  // the automatic choice (unless the environment forces one for this process)
  if (ops::cpu_gemm() == ops::CpuGemm::Auto) {
    CHECK_FALSE(ops::use_packed_gemm(64, 64, 64, false));  // 2^18 multiply-adds: Eigen's fixed cost is lower
    CHECK(ops::use_packed_gemm(128, 128, 64, false) == ops::packed_sgemm_available());
    CHECK_FALSE(ops::use_packed_gemm(2048, 2048, 2048, true));  // Eigen on AVX-512 keeps its products
  }
}

// ---- CUDA ---------------------------------------------------------------------------------

namespace {

// Forward and both gradients of one case on `device`, as f64 CPU tensors.
std::vector<Tensor> run_case(const Case& c, DType dt, Device device, std::uint64_t seed) {
  Tensor a = tgt::rand64(a_shape(c), seed).to(dt).to(device).requires_grad_(true);
  Tensor b = tgt::rand64(b_shape(c), seed + 1).to(dt).to(device).requires_grad_(true);
  Tensor out = matmul(a, b, c.ta, c.tb);
  REQUIRE(out.device() == device);
  REQUIRE(out.dtype() == dt);
  Tensor g = tgt::rand64(out.shape(), seed + 2).to(dt).to(device);
  backward(out, g);
  REQUIRE(a.grad().device() == device);
  REQUIRE(a.grad().dtype() == dt);
  REQUIRE(b.grad().dtype() == dt);
  auto host = [](const Tensor& t) { return t.detach().to(Device::cpu()).to(DType::f64); };
  return {host(out), host(a.grad()), host(b.grad())};
}

}  // namespace

TEST_CASE("matmul [cuda]: forward and backward match the CPU for every dtype, shape case and trans flag",
          "[ops][matmul][cuda]") {
  TG_REQUIRE_CUDA();
  // Both sides accumulate in f32 (f64) but in different orders: 16-bit results may differ
  // by one rounding of the output.
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (const auto& dims : std::vector<std::array<std::int64_t, 4>>{{5, 7, 3, 4}, {64, 96, 80, 3}, {33, 130, 17, 2}}) {
      for (const Case& c : all_cases(dims[0], dims[1], dims[2], dims[3])) {
        INFO(describe(c) << " dtype " << dt);
        auto cpu = run_case(c, dt, Device::cpu(), 100);
        auto gpu = run_case(c, dt, Device::cuda(), 100);
        const double rtol = dt == DType::f64 ? 1e-10 : 2 * rtol_for(dt);
        const double atol = dt == DType::f64 ? 1e-10 : (dt == DType::f32 ? 1e-4 : 2e-2);
        for (std::size_t i = 0; i < 3; ++i) {
          INFO("output " << i << " (0: out, 1: grad a, 2: grad b)");
          tgt::require_close(gpu[i], cpu[i], rtol, atol);
        }
      }
    }
  }
}

TEST_CASE("matmul [cuda]: empty extents and K = 0 zeros on the GPU", "[ops][matmul][cuda]") {
  TG_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16}) {
    for (auto [m, k, n, batch] : std::vector<std::array<std::int64_t, 4>>{
             {0, 3, 4, 2}, {3, 0, 4, 2}, {3, 4, 0, 2}, {3, 4, 5, 0}}) {
      for (const Case& c : all_cases(m, k, n, batch)) {
        INFO(describe(c) << " dtype " << dt);
        { Tensor junk = tgt::rand64({64, 64}, 5, 1.0, 2.0).to(dt).to(Device::cuda()); }
        Tensor a = tgt::rand64(a_shape(c), 51).to(dt).to(Device::cuda());
        Tensor b = tgt::rand64(b_shape(c), 52).to(dt).to(Device::cuda());
        Tensor out = matmul(a, b, c.ta, c.tb);
        REQUIRE(out.device() == Device::cuda());
        REQUIRE(out.shape() == out_shape(c));
        tgt::require_close(out, reference(a, b, c), 2 * rtol_for(dt), 2e-2);
        if (k == 0) {
          for (double v : out.to_vector<double>()) CHECK(v == 0.0);
        }
      }
    }
  }
}

TEST_CASE("matmul [cuda]: f32 with TF32 allowed stays close to the f64 reference", "[ops][matmul][cuda]") {
  TG_REQUIRE_CUDA();
  set_allow_tf32(true);
  for (const Case& c : all_cases(64, 256, 48, 2)) {
    INFO(describe(c));
    Tensor a = tgt::rand64(a_shape(c), 7), b = tgt::rand64(b_shape(c), 8);
    Tensor out = matmul(a.to(DType::f32).to(Device::cuda()), b.to(DType::f32).to(Device::cuda()), c.ta, c.tb);
    // TF32 keeps 10 mantissa bits of each input: error ~ 2^-11 · sum |a||b| <= 2^-11 · K.
    tgt::require_close(out, reference(a, b, c), 0, 256.0 / 1024);
  }
  set_allow_tf32(false);
  for (const Case& c : all_cases(64, 256, 48, 2)) {
    INFO(describe(c) << " (TF32 off: f32 accuracy)");
    Tensor a = tgt::rand64(a_shape(c), 7), b = tgt::rand64(b_shape(c), 8);
    Tensor out = matmul(a.to(DType::f32).to(Device::cuda()), b.to(DType::f32).to(Device::cuda()), c.ta, c.tb);
    tgt::require_close(out, reference(a.to(DType::f32), b.to(DType::f32), c), 1e-5, 1e-4);
  }
}

TEST_CASE("matmul [cuda]: 16-bit dtypes accumulate in f32 on the GPU", "[ops][matmul][cuda]") {
  TG_REQUIRE_CUDA();
  const std::int64_t k = 4096;
  for (DType dt : {DType::bf16, DType::f16}) {
    INFO("dtype " << dt);
    const double v = static_cast<double>(static_cast<float>(bfloat16(0.01f)));
    Tensor a = from_vector(std::vector<double>(static_cast<std::size_t>(k), 1.0), {1, k}).to(dt).to(Device::cuda());
    Tensor b = from_vector(std::vector<double>(static_cast<std::size_t>(k), v), {k, 1}).to(dt).to(Device::cuda());
    const double exact = v * static_cast<double>(k);
    CHECK(std::fabs(matmul(a, b).item<double>() - exact) <= rtol_for(dt) * exact);
  }
}

// ---- linear ---------------------------------------------------------------------------------

namespace {

// x [m, k] · wᵀ + b in f64 by triple loop.
Tensor linear_reference(const Tensor& x, const Tensor& w, const Tensor& b) {
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const auto xv = x.to_vector<double>(), wv = w.to_vector<double>();
  const auto bv = b.defined() ? b.to_vector<double>() : std::vector<double>(static_cast<std::size_t>(n), 0.0);
  std::vector<double> y(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = bv[static_cast<std::size_t>(j)];
      for (std::int64_t p = 0; p < k; ++p)
        s += xv[static_cast<std::size_t>(i * k + p)] * wv[static_cast<std::size_t>(j * k + p)];
      y[static_cast<std::size_t>(i * n + j)] = s;
    }
  return from_vector(y, {m, n});
}

}  // namespace

TEST_CASE("linear: x wᵀ + b against an f64 reference, with and without bias, gradcheck, bad inputs",
          "[ops][matmul][linear][gradcheck]") {
  for (auto [m, k, n] : std::vector<std::array<std::int64_t, 3>>{{3, 5, 7}, {1, 1, 1}, {16, 8, 4}, {0, 3, 2}}) {
    INFO("m " << m << " k " << k << " n " << n);
    Tensor x = tgt::rand64({m, k}, 300), w = tgt::rand64({n, k}, 301), b = tgt::rand64({n}, 302);
    tgt::require_close(linear(x, w, b), linear_reference(x, w, b), 1e-12, 1e-12);
    tgt::require_close(linear(x, w), linear_reference(x, w, Tensor()), 1e-12, 1e-12);
    tgt::require_close(linear(x.to(DType::f32), w.to(DType::f32), b.to(DType::f32)),
                       linear_reference(x, w, b), 1e-5, 1e-5);
  }
  Tensor x = tgt::rand64({4, 3}, 303).requires_grad_(true), w = tgt::rand64({5, 3}, 304).requires_grad_(true);
  Tensor b = tgt::rand64({5}, 305).requires_grad_(true);
  auto res = autograd::gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  INFO(res.report);
  REQUIRE(res);
  auto res2 = autograd::gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w});
  INFO(res2.report);
  REQUIRE(res2);
  Tensor xb = tgt::rand64({2, 3}, 306);
  tgt::require_throws<ShapeError>([&] { linear(xb, tgt::rand64({4, 2}, 1)); }, {"linear", "k = 3", "k = 2"});
  tgt::require_throws<ShapeError>([&] { linear(xb, tgt::rand64({4, 3}, 1), tgt::rand64({3}, 2)); },
                                  {"linear", "b", "[4]", "[3]"});
  tgt::require_throws<ShapeError>([&] { linear(reshape(xb, {-1}), tgt::rand64({4, 3}, 1)); }, {"linear", "x", "2-d"});
  tgt::require_throws<DTypeError>([&] { linear(xb.to(DType::f32), tgt::rand64({4, 3}, 1)); }, {"linear"});
}

TEST_CASE("linear on the CPU: the packed GEMM adds the bias as it stores, f32 only", "[ops][matmul][linear]") {
  if (!ops::packed_sgemm_available()) TG_SKIP("this CPU lacks AVX2 or FMA: the packed GEMM cannot run here");
  const tgt::ForceCpuGemm packed(ops::CpuGemm::Packed);
  // partial and whole tiles and slivers, k of one and of several 256-deep steps
  for (auto [m, k, n] :
       std::vector<std::array<std::int64_t, 3>>{{1, 1, 1}, {7, 300, 17}, {130, 64, 48}, {13, 600, 5}}) {
    INFO("m " << m << " k " << k << " n " << n);
    Tensor x = tgt::rand64({m, k}, 310), w = tgt::rand64({n, k}, 311), b = tgt::rand64({n}, 312);
    const std::int64_t fused = ops::linear_fused_forwards();
    Tensor out = linear(x.to(DType::f32), w.to(DType::f32), b.to(DType::f32));
    CHECK(ops::linear_fused_forwards() == fused + 1);
    tgt::require_close(out, linear_reference(x, w, b), 1e-5, 2.5e-7 * static_cast<double>(k) + 1e-6);
    // without a bias, and in f64 or bf16, the composition
    tgt::require_close(linear(x.to(DType::f32), w.to(DType::f32)), linear_reference(x, w, Tensor()), 1e-5,
                       2.5e-7 * static_cast<double>(k) + 1e-6);
    (void)linear(x, w, b);
    (void)linear(x.to(DType::bf16), w.to(DType::bf16), b.to(DType::bf16));
    CHECK(ops::linear_fused_forwards() == fused + 1);
  }
}

TEST_CASE("linear [cuda]: fused bias GEMM and bias-gradient GEMM match the CPU", "[ops][matmul][linear][cuda]") {
  TG_REQUIRE_CUDA();
  const std::int64_t fwd0 = ops::linear_fused_forwards(), wg0 = ops::linear_fused_wgrads();
  // a weight of many tiles first (its gradient takes the fused kernel), then the example
  // GPT's shapes (few tiles: GEMM and column sum) and odd ones
  for (auto [m, k, n] : std::vector<std::array<std::int64_t, 3>>{
           {256, 4096, 4096}, {2048, 384, 1152}, {2048, 1536, 384}, {64, 64, 64}, {3, 5, 7}, {33, 17, 9}}) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      INFO("m " << m << " k " << k << " n " << n << " " << dt);
      Tensor x = tgt::rand64({m, k}, 310).to(dt), w = tgt::rand64({n, k}, 311).to(dt), b = tgt::rand64({n}, 312).to(dt);
      Tensor g = tgt::rand64({m, n}, 313).to(dt);
      auto run = [&](Device dev) {
        // detached: on the CPU .to() returns x itself, which must not become the leaf that
        // the CUDA run's copy then flows its gradient into
        Tensor xd = x.to(dev).detach().requires_grad_(true), wd = w.to(dev).detach().requires_grad_(true);
        Tensor bd = b.to(dev).detach().requires_grad_(true);
        Tensor y = linear(xd, wd, bd);
        backward(y, g.to(dev));
        return std::vector<Tensor>{y.detach().to(Device::cpu()), xd.grad().to(Device::cpu()), wd.grad().to(Device::cpu()),
                                   bd.grad().to(Device::cpu())};
      };
      const auto c = run(Device::cpu()), d = run(Device::cuda());
      const double tol = dt == DType::f32 ? 1e-4 : 3e-2;
      for (std::size_t i = 0; i < 4; ++i) {
        INFO("output " << i << " (y, dx, dw, db)");
        // sums over up to 2048 terms: relative tolerance on the scale of the sum
        tgt::require_close(d[i], c[i], tol, tol * std::sqrt(static_cast<double>(std::max(m, k))));
      }
    }
  }
  CHECK(ops::linear_fused_forwards() - fwd0 >= 9);  // the first three shapes, every dtype
  CHECK(ops::linear_fused_wgrads() - wg0 >= 3);      // the first shape, every dtype
}

}  // namespace test_matmul
