// tg::matmul next to a direct cuBLAS call on the same buffers (the ceiling): bf16 8192³,
// bf16 16 x 2048³ batched, a Linear-like shared weight, and f32 with TF32 off and on;
// forward and backward (dA + dB); and a Linear layer's weight and bias gradients at the
// training example's shapes, fused in one cuBLASLt call or as a GEMM and a column sum.
// CUDA events, warm-up, median of >= 50 runs.
//
// FLOPs: 2·B·M·N·K forward, twice that backward. Bytes are not the limit at these sizes
// (bf16 8192³ moves ~0.4 GB for 1.1 TFLOP), so the ceiling is cuBLAS's own GEMM rate.
#include <cublas_v2.h>

#include <cstdio>
#include <string>

#include "bench_util.h"
#include "ops/linalg/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "tilegrad.h"

namespace {

// A row-major GEMM problem: C[i] (m x n) = op(A[i]) · op(B[i]), A/B strides 0 = shared.
struct Gemm {
  std::int64_t batch, m, n, k;
  bool ta, tb;
  std::int64_t stride_a, stride_b;
};

cudaDataType_t cuda_type(tg::DType dt) {
  switch (dt) {
    case tg::DType::bf16: return CUDA_R_16BF;
    case tg::DType::f16: return CUDA_R_16F;
    case tg::DType::f64: return CUDA_R_64F;
    default: return CUDA_R_32F;
  }
}

// The same row-major-as-column-major mapping tg::matmul uses, written out independently:
// Cᵀ = op(B)ᵀ·op(A)ᵀ in column-major terms.
void direct_gemm(cublasHandle_t h, tg::DType dt, bool tf32, const void* a, const void* b, void* c, const Gemm& g) {
  const cudaDataType_t t = cuda_type(dt);
  cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
  if (dt == tg::DType::f64) ct = CUBLAS_COMPUTE_64F;
  else if (dt == tg::DType::f32 && tf32) ct = CUBLAS_COMPUTE_32F_FAST_TF32;
  const float one = 1.0f, zero = 0.0f;
  const double one64 = 1.0, zero64 = 0.0;
  const void* alpha = dt == tg::DType::f64 ? static_cast<const void*>(&one64) : static_cast<const void*>(&one);
  const void* beta = dt == tg::DType::f64 ? static_cast<const void*>(&zero64) : static_cast<const void*>(&zero);
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  const int lda = g.ta ? m : k, ldb = g.tb ? k : n;
  const cublasOperation_t opb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, opa = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (g.batch == 1) {
    TG_CUBLAS_CHECK(cublasGemmEx(h, opb, opa, n, m, k, alpha, b, t, ldb, a, t, lda, beta, c, t, n, ct,
                                 CUBLAS_GEMM_DEFAULT));
  } else {
    TG_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, opb, opa, n, m, k, alpha, b, t, ldb, g.stride_b, a, t, lda,
                                               g.stride_a, beta, c, t, n, g.m * g.n, static_cast<int>(g.batch), ct,
                                               CUBLAS_GEMM_DEFAULT));
  }
}

void row(const std::string& what, const std::string& shape, tg::DType dt, double flops, double ms_tg,
         double ms_ref) {
  const double tf_tg = flops / ms_tg / 1e9, tf_ref = flops / ms_ref / 1e9;
  std::printf("%-22s %-22s %-10s %9.3f %9.1f %9.3f %9.1f %7.3f\n", what.c_str(), shape.c_str(), tg::dtype_name(dt),
              ms_tg, tf_tg, ms_ref, tf_ref, tf_tg / tf_ref);
}

// Forward and backward of op(A)·op(B) with A [batch?, M, K], B [batch?, K, N] (or shared),
// tg::matmul against the direct cuBLAS calls of the same problems.
void bench_case(cublasHandle_t h, const std::string& name, tg::DType dt, bool tf32, std::int64_t batch,
                bool batched_b, std::int64_t M, std::int64_t N, std::int64_t K, int reps) {
  tg::set_allow_tf32(tf32);
  const tg::TensorOptions o{.dtype = dt, .device = tg::Device::cuda()};
  const bool batched_a = batch > 0;
  const std::int64_t nb = batched_a ? batch : 1;
  tg::Tensor a = batched_a ? tg::rand_seeded({batch, M, K}, 1, o, -1, 1) : tg::rand_seeded({M, K}, 1, o, -1, 1);
  tg::Tensor b = batched_b ? tg::rand_seeded({batch, K, N}, 2, o, -1, 1) : tg::rand_seeded({K, N}, 2, o, -1, 1);
  tg::Tensor dc = batched_a ? tg::rand_seeded({batch, M, N}, 3, o, -1, 1) : tg::rand_seeded({M, N}, 3, o, -1, 1);
  tg::Tensor c_ref = tg::empty(dc.shape(), o), da_ref = tg::empty(a.shape(), o), db_ref = tg::empty(b.shape(), o);
  const std::string label = name + (dt == tg::DType::f32 ? (tf32 ? " tf32" : " no-tf32") : "");
  const double fwd_flops = 2.0 * static_cast<double>(nb) * M * N * K;
  const std::string dims = (batched_a ? std::to_string(batch) + (batched_b ? "x" : "x(shared)") : "") +
                           std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);

  // Forward. A shared B against a batch is one [B·M, K] x [K, N] GEMM for cuBLAS.
  const bool shared = batched_a && !batched_b;
  const Gemm fwd = shared ? Gemm{1, nb * M, N, K, false, false, 0, 0}
                          : Gemm{nb, M, N, K, false, false, M * K, K * N};
  double ms_tg, ms_ref;
  {
    tg::NoGradGuard ng;
    ms_tg = tgb::time_ms([&] { tg::matmul(a, b); }, 10, reps);
  }
  ms_ref = tgb::time_ms([&] { direct_gemm(h, dt, tf32, a.data_ptr(), b.data_ptr(), c_ref.data_ptr(), fwd); }, 10, reps);
  row(label + " fwd", dims, dt, fwd_flops, ms_tg, ms_ref);

  // Backward: dA = dC·Bᵀ, dB = Aᵀ·dC (summed over the batch for a shared B) -- the two
  // matmuls the autograd backward issues, and the whole autograd backward on top.
  const Gemm g_da = shared ? Gemm{1, nb * M, K, N, false, true, 0, 0} : Gemm{nb, M, K, N, false, true, M * N, K * N};
  const Gemm g_db = shared ? Gemm{1, K, N, nb * M, true, false, 0, 0} : Gemm{nb, K, N, M, true, false, M * K, M * N};
  {
    tg::NoGradGuard ng;
    ms_tg = tgb::time_ms(
        [&] {
          tg::matmul(dc, b, false, true);
          if (shared) {
            tg::matmul(tg::reshape(a, {nb * M, K}), tg::reshape(dc, {nb * M, N}), true, false);
          } else {
            tg::matmul(a, dc, true, false);
          }
        },
        10, reps);
  }
  ms_ref = tgb::time_ms(
      [&] {
        direct_gemm(h, dt, tf32, dc.data_ptr(), b.data_ptr(), da_ref.data_ptr(), g_da);
        direct_gemm(h, dt, tf32, a.data_ptr(), dc.data_ptr(), db_ref.data_ptr(), g_db);
      },
      10, reps);
  row(label + " bwd gemms", dims, dt, 2 * fwd_flops, ms_tg, ms_ref);

  tg::Tensor al = a.detach().requires_grad_(true), bl = b.detach().requires_grad_(true);
  tg::Tensor out = tg::matmul(al, bl);
  ms_tg = tgb::time_ms(
      [&] {
        al.zero_grad();
        bl.zero_grad();
        tg::backward(out, dc, /*retain_graph=*/true);
      },
      10, reps);
  row(label + " bwd autograd", dims, dt, 2 * fwd_flops, ms_tg, ms_ref);
  tg::set_allow_tf32(false);
}

}  // namespace

// The weight and bias gradients of a Linear layer on m tokens (x [m, k], gy [m, n]) at the
// training example's shapes: the fused cuBLASLt call (bias gradient in the GEMM's epilogue;
// "declined" where the kernel leaves small weights to the composition) against
// tg::matmul(gyᵀ, x) and tg::sum_to(gy) run one after the other. The GEMM's k is the
// token count, its output small: how the fused call's algorithm handles that decides.
void bench_wgrad(std::int64_t m, std::int64_t k, std::int64_t n) {
  const tg::TensorOptions o{.dtype = tg::DType::bf16, .device = tg::Device::cuda()};
  const tg::Tensor x = tg::rand_seeded({m, k}, 1, o, -1, 1), gy = tg::rand_seeded({m, n}, 2, o, -1, 1);
  tg::Tensor dw = tg::empty({n, k}, o), db = tg::empty({n}, o);
  tg::NoGradGuard ng;
  bool fused_ok = true;
  // GPU time (queued behind a spin kernel), as in a training step whose host runs ahead
  const double fused =
      tgb::time_queued_ms([&] { fused_ok = tg::ops::linear_wgrad_kernel()(gy.device())(gy, x, dw, db); });
  const double gemm = tgb::time_queued_ms([&] { (void)tg::matmul(gy, x, /*trans_a=*/true); });
  const double sum = tgb::time_queued_ms([&] { (void)tg::sum_to(gy, tg::Shape{n}); });
  const double tf = 2.0 * static_cast<double>(m) * k * n / 1e9;
  char shape[48];
  std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", static_cast<long long>(m), static_cast<long long>(n),
                static_cast<long long>(k));
  char fused_txt[48] = "declined";
  if (fused_ok) std::snprintf(fused_txt, sizeof fused_txt, "%.4f ms (%.0f TF/s)", fused, tf / fused);
  std::printf("%-22s %-22s fused %s | matmul %.4f ms (%.0f TF/s) + sum_to %.4f ms = %.4f ms\n",
              "linear wgrad + bgrad", shape, fused_txt, gemm, tf / gemm, sum, gemm + sum);
}

int main() {
  if (!tg::cuda_available()) {
    std::printf("bench_matmul: no CUDA device\n");
    return 0;
  }
  cublasHandle_t h;
  TG_CUBLAS_CHECK(cublasCreate(&h));
  // tilegrad's default current stream is the legacy default stream, which time_ms times.
  TG_CUBLAS_CHECK(cublasSetStream(h, tg::cuda::current_cuda_stream(0)));
  std::printf("tg::matmul vs direct cuBLAS (same buffers, same process); TFLOP/s of 2·B·M·N·K per GEMM\n");
  std::printf("%-22s %-22s %-10s %9s %9s %9s %9s %7s\n", "case", "BxMxNxK", "dtype", "tg ms", "tg TF/s", "cublas ms",
              "cublas TF/s", "ratio");
  bench_case(h, "gemm", tg::DType::bf16, false, 0, false, 8192, 8192, 8192, 50);
  bench_case(h, "batched", tg::DType::bf16, false, 16, true, 2048, 2048, 2048, 100);
  bench_case(h, "linear (shared b)", tg::DType::bf16, false, 16, false, 2048, 2048, 2048, 100);
  bench_case(h, "gemm", tg::DType::f32, false, 0, false, 8192, 8192, 8192, 50);
  bench_case(h, "gemm", tg::DType::f32, true, 0, false, 8192, 8192, 8192, 50);
  // the example GPT's layers (16 x 1024 tokens, d 384): qkv, output projection, MLP in, out
  for (auto [k, n] : {std::pair<std::int64_t, std::int64_t>{384, 1152}, {384, 384}, {384, 1536}, {1536, 384}})
    bench_wgrad(16 * 1024, k, n);
  bench_wgrad(16 * 1024, 4096, 4096);
  TG_CUBLAS_CHECK(cublasDestroy(h));
  return 0;
}
