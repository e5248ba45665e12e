// Linear layers on cuBLASLt: the GEMM with the bias added in its epilogue (forward), and
// the weight gradient with the bias gradient (column sums of the output gradient) reduced
// in its epilogue (backward). Each saves one pass over the [m, n] activations that a
// separate broadcast add / column sum would make.
//
// cuBLAS is column-major: a row-major [r, c] matrix read column-major is its transpose.
//  forward  y [m, n] = x wᵀ + b:   column-major D = yᵀ (n × m) = op(A) · B with A = w read
//           column-major (k × n, ld k) and transposed, B = x (k × m, ld k); the bias, of
//           length n = D's rows, is the BIAS epilogue's vector;
//  backward dw [n, k] = gᵀ x:      column-major D (k × n) = A · op(B) with A = x (k × m,
//           ld k) and B = g (n × m, ld n) transposed; db of length n = D's columns, the
//           sum over the GEMM's k = m (BGRADB). With many tokens and a small weight, as
//           a strided batch over chunks of m and a sum of the partials (split_wgrad).
// The algorithm of each (shape, dtype, epilogue) is asked of cuBLASLt's heuristic once and
// kept; a configuration without one is remembered as unsupported and the caller composes.
#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "ops/cuda_fast_math.cuh"
#include "ops/elementwise/elementwise.h"
#include "ops/factory/factory.h"
#include "ops/linalg/kernels.h"
#include "ops/linalg/matmul.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr std::size_t kWorkspace = std::size_t(4) << 20;

cudaDataType_t lt_dtype(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    default: return CUDA_R_16F;
  }
}

// The layouts and algorithm of one configuration (kept for the life of the process).
struct LtPlan {
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// device, rows, cols, k, lda, ldb, transposes, dtype, epilogue, compute type, alignment of
// the pointers (bytes), batch count, f32 output: everything a plan's layouts and algorithm
// depend on (the batch strides follow from the shape, see Batch)
using LtKey = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int>;

// `count` products (1: a single one), each A, B, D and epilogue vector `stride_*` elements
// after the previous one; `f32_out`: D (and the vector) in f32 whatever the operands.
struct Batch {
  int count = 1;
  std::int64_t stride_a = 0, stride_b = 0, stride_d = 0, stride_vec = 0;
  bool f32_out = false;
};

// f32 accumulation; f32 operands on TF32 tensor cores when tg::allow_tf32() is set.
cublasComputeType_t compute_type(DType dt) {
  return dt == DType::f32 && tg::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// The operation: D = op(A) op(B) with the compute type, the epilogue and its vector.
cublasLtMatmulDesc_t make_desc(DType dt, cublasComputeType_t compute, cublasOperation_t ta, cublasOperation_t tb,
                               cublasLtEpilogue_t epi, void* vec, const Batch& batch) {
  cublasLtMatmulDesc_t desc = nullptr;
  // The epilogue's vector has D's element type.
  const cudaDataType_t t = batch.f32_out ? CUDA_R_32F : lt_dtype(dt);
  TG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof(t)));
  if (vec != nullptr)
    TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof(vec)));
  if (batch.count > 1 && batch.stride_vec != 0) {
    TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &batch.stride_vec,
                                                   sizeof(batch.stride_vec)));
  }
  return desc;
}

// The largest power of two up to 256 dividing every address.
int alignment(std::initializer_list<const void*> ptrs) {
  int a = 256;
  for (const void* p : ptrs)
    while (a > 1 && reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(a) != 0) a /= 2;
  return a;
}

// Finds (or builds) the plan of D (rows × cols, ld rows) = op(A) · op(B) over k with the
// epilogue, for pointers aligned to `align` bytes; nullopt when cuBLASLt offers no
// algorithm for it.
std::optional<LtPlan> plan_for(int device, DType dt, cublasComputeType_t compute, cublasOperation_t ta,
                               cublasOperation_t tb, int rows, int cols, int k, int lda, int ldb, cublasLtEpilogue_t epi,
                               int align, const Batch& batch) {
  static std::mutex mu;
  static std::map<LtKey, std::optional<LtPlan>> plans;
  const LtKey key{device, rows, cols, k, lda, ldb, static_cast<int>(ta), static_cast<int>(tb), static_cast<int>(dt),
                  static_cast<int>(epi), static_cast<int>(compute), align, batch.count, batch.f32_out ? 1 : 0};
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = plans.find(key); it != plans.end()) return it->second;
  const cudaDataType_t t = lt_dtype(dt);
  LtPlan p;
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, ta == CUBLAS_OP_N ? rows : k, ta == CUBLAS_OP_N ? k : rows, lda));
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, tb == CUBLAS_OP_N ? k : cols, tb == CUBLAS_OP_N ? cols : k, ldb));
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, batch.f32_out ? CUDA_R_32F : t, rows, cols, rows));
  if (batch.count > 1) {
    for (auto [layout, stride] : {std::pair{p.a, batch.stride_a}, {p.b, batch.stride_b}, {p.d, batch.stride_d}}) {
      TG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch.count,
                                                       sizeof(batch.count)));
      TG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                       sizeof(stride)));
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  TG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t ws = kWorkspace;
  const std::uint32_t al = static_cast<std::uint32_t>(align);
  TG_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    TG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al)));
  cublasLtMatmulDesc_t desc = make_desc(dt, compute, ta, tb, epi, nullptr, batch);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  auto lt = reinterpret_cast<cublasLtHandle_t>(tg::cuda::cublas_handle(device));
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatmulDescDestroy(desc);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.d);
    return plans[key] = std::nullopt;
  }
  p.algo = result.algo;
  return plans[key] = p;
}

// Runs D = op(A) op(B) (each of `batch`) with the epilogue's vector at `vec`; false when
// cuBLASLt has no algorithm for the configuration.
bool run(int device, DType dt, cublasOperation_t ta, cublasOperation_t tb, std::int64_t rows, std::int64_t cols,
         std::int64_t k, const void* A, int lda, const void* B, int ldb, void* D, cublasLtEpilogue_t epi, void* vec,
         const Batch& batch = {}) {
  constexpr std::int64_t kMax = 0x7fffffff;
  if (rows <= 0 || cols <= 0 || k <= 0 || rows > kMax || cols > kMax || k > kMax) return false;
  const int align = alignment({A, B, D, vec});
  const cublasComputeType_t compute = compute_type(dt);
  const auto plan = plan_for(device, dt, compute, ta, tb, static_cast<int>(rows), static_cast<int>(cols),
                             static_cast<int>(k), lda, ldb, epi, align, batch);
  if (!plan) return false;
  tg::cuda::DeviceGuard guard(device);
  const cudaStream_t stream = tg::cuda::current_cuda_stream(device);
  Tensor ws = empty({static_cast<std::int64_t>(kWorkspace)}, {.dtype = DType::boolean, .device = Device::cuda(device)});
  cublasLtMatmulDesc_t desc = make_desc(dt, compute, ta, tb, epi, vec, batch);
  const float alpha = 1.0f, beta = 0.0f;
  auto lt = reinterpret_cast<cublasLtHandle_t>(tg::cuda::cublas_handle(device));
  const cublasStatus_t st = cublasLtMatmul(lt, desc, &alpha, A, plan->a, B, plan->b, &beta, D, plan->d, D, plan->d,
                                           &plan->algo, ws.data_ptr(), kWorkspace, stream);
  cublasLtMatmulDescDestroy(desc);
  TG_CUBLAS_CHECK(st);
  return true;
}

bool supported(DType dt) { return dt == DType::f32 || dt == DType::bf16 || dt == DType::f16; }

bool linear_fwd_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out) {
  if (!supported(x.dtype())) return false;
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  return run(x.device().index, x.dtype(), CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, w.data_ptr(), static_cast<int>(k),
             x.data_ptr(), static_cast<int>(k), out.data_ptr(), CUBLASLT_EPILOGUE_BIAS, bias.data_ptr());
}

// ---- split weight gradients ---------------------------------------------------------------
// A Linear layer's weight gradient has the token count m as its GEMM's k and a small
// output (n × k of a few hundred to a few thousand): 9-36 output tiles of 128 × 128 for
// the example GPT's layers, far from filling 132 SMs, and cuBLASLt's heuristic answers
// with one tile per CTA walking all m (measured 144-330 TFLOP/s). Split m into S equal
// chunks instead: one strided batch of S products writing f32 partial gradients (and with
// BGRADB their partial bias gradients), then one pass summing the S partials in a fixed
// order (deterministic) and rounding to the weight's dtype.

/// dw[i] = Σ_s parts[s·count + i] and db[j] = Σ_s bparts[s·nb + j], rounded to T.
template <typename T>
__global__ void sum_partials_k(const float* __restrict__ parts, int S, std::int64_t count, T* __restrict__ dw,
                               const float* __restrict__ bparts, std::int64_t nb, T* __restrict__ db) {
  const std::int64_t quads = count / 4;
  const std::int64_t total = quads + (count - 4 * quads) + nb;
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (t < quads) {
      float4 a = reinterpret_cast<const float4*>(parts)[t];
      for (int s = 1; s < S; ++s) {
        const float4 b = reinterpret_cast<const float4*>(parts + s * count)[t];
        a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
      }
      uint2 o;
      o.x = gpu::pack2<T>(a.x, a.y);
      o.y = gpu::pack2<T>(a.z, a.w);
      reinterpret_cast<uint2*>(dw)[t] = o;
      continue;
    }
    const bool bias = t >= count - 3 * quads;  // past the scalar tail of dw
    const std::int64_t i = bias ? t - (count - 3 * quads) : 4 * quads + (t - quads);
    const float* p = bias ? bparts : parts;
    const std::int64_t stride = bias ? nb : count;
    float a = 0.0f;
    for (int s = 0; s < S; ++s) a += p[s * stride + i];
    const std::uint16_t bits = static_cast<std::uint16_t>(gpu::pack2<T>(a, 0.0f) & 0xffffu);
    reinterpret_cast<std::uint16_t*>(bias ? db : dw)[i] = bits;
  }
}

/// Chunks of m for the weight gradient of an [n, k] weight: doubled (from 1) while the
/// products still give at most two 128 × 128 tiles an SM and each chunk keeps at least
/// 1024 tokens (m divisible by the count; at most 16). TG_WGRAD_SPLIT=off: always 1.
int split_chunks(int device, std::int64_t m, std::int64_t n, std::int64_t k) {
  static const bool off = [] {
    const char* e = std::getenv("TG_WGRAD_SPLIT");
    return e != nullptr && std::string(e) == "off";
  }();
  if (off) return 1;
  const std::int64_t tiles = ((n + 127) / 128) * ((k + 127) / 128);
  const std::int64_t slots = 2 * std::int64_t(tg::cuda::multiprocessor_count(device));
  int s = 1;
  while (s < 16 && tiles * 2 * s <= slots && m % (2 * s) == 0 && m / (2 * s) >= 1024) s *= 2;
  return s;
}

// dw [n, k] and db [n] of g [m, n], x [m, k] as S chunk products into f32 partials (with the
// bias gradient in their epilogue where cuBLASLt offers it, else a column sum), then their
// sum; false where cuBLASLt has no algorithm for the batch.
bool split_wgrad(int device, int S, const Tensor& g, const Tensor& x, const Tensor& dw, const Tensor& db) {
  const std::int64_t m = x.size(0), k = x.size(1), n = g.size(1), mc = m / S;
  const Device dev = x.device();
  Tensor parts = empty({S, n, k}, {.dtype = DType::f32, .device = dev});
  Tensor bparts = empty({S, n}, {.dtype = DType::f32, .device = dev});
  const Batch batch{S, mc * k, mc * n, n * k, n, true};
  // Column-major D_s (k × n) = x_s (k × mc) · g_s (n × mc)ᵀ, chunk s = tokens [s mc, (s+1) mc).
  bool fused = run(device, x.dtype(), CUBLAS_OP_N, CUBLAS_OP_T, k, n, mc, x.data_ptr(), static_cast<int>(k),
                   g.data_ptr(), static_cast<int>(n), parts.data_ptr(), CUBLASLT_EPILOGUE_BGRADB, bparts.data_ptr(),
                   batch);
  if (!fused && !run(device, x.dtype(), CUBLAS_OP_N, CUBLAS_OP_T, k, n, mc, x.data_ptr(), static_cast<int>(k),
                     g.data_ptr(), static_cast<int>(n), parts.data_ptr(), CUBLASLT_EPILOGUE_DEFAULT, nullptr, batch)) {
    return false;
  }
  const std::int64_t count = n * k, nb = fused ? n : 0;
  const std::int64_t total = count / 4 + count % 4 + nb;
  const int threads = 256;
  const unsigned grid = static_cast<unsigned>(
      std::min<std::int64_t>((total + threads - 1) / threads, 8 * std::int64_t(tg::cuda::multiprocessor_count(device))));
  const cudaStream_t stream = tg::cuda::current_cuda_stream(device);
  const auto launch = [&](auto tag) {
    using T = decltype(tag);
    sum_partials_k<T><<<grid, threads, 0, stream>>>(parts.data<float>(), S, count, static_cast<T*>(dw.data_ptr()),
                                                    bparts.data<float>(), nb, static_cast<T*>(db.data_ptr()));
  };
  if (x.dtype() == DType::bf16) launch(bfloat16{});
  else launch(half{});
  TG_CUDA_CHECK(cudaGetLastError());
  if (!fused) copy_bytes(db, sum_to(g, Shape{n}));
  return true;
}

bool linear_wgrad_cuda(const Tensor& g, const Tensor& x, const Tensor& dw, const Tensor& db) {
  if (!supported(x.dtype())) return false;
  const std::int64_t m = x.size(0), k = x.size(1), n = g.size(1);
  const int device = x.device().index;
  // The split writes dw with 8-byte stores.
  const bool aligned = reinterpret_cast<std::uintptr_t>(dw.data_ptr()) % 8 == 0;
  if (x.dtype() != DType::f32 && aligned) {
    const int S = split_chunks(device, m, n, k);
    if (S > 1 && split_wgrad(device, S, g, x, dw, db)) {
      count_split_wgrad();
      return true;
    }
  }
  return run(device, x.dtype(), CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, x.data_ptr(), static_cast<int>(k), g.data_ptr(),
             static_cast<int>(n), dw.data_ptr(), CUBLASLT_EPILOGUE_BGRADB, db.data_ptr());
}

}  // namespace

TG_REGISTER_KERNEL(linear_fwd_kernel, CUDA, &linear_fwd_cuda);
TG_REGISTER_KERNEL(linear_wgrad_kernel, CUDA, &linear_wgrad_cuda);

}  // namespace tg::ops
