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
//           sum over the GEMM's k = m (BGRADB); only for weights of at least as many
//           128 x 128 tiles as SMs (see linear_wgrad_cuda).
// The algorithm of each (shape, dtype, epilogue) is asked of cuBLASLt's heuristic once and
// kept; a configuration without one is remembered as unsupported and the caller composes.
#include <cublasLt.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

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
// the pointers (bytes): everything a plan's layouts and algorithm depend on
using LtKey = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int>;

// f32 accumulation; f32 operands on TF32 tensor cores when tg::allow_tf32() is set.
cublasComputeType_t compute_type(DType dt) {
  return dt == DType::f32 && tg::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// The operation: D = op(A) op(B) with the compute type, the epilogue and its vector.
cublasLtMatmulDesc_t make_desc(DType dt, cublasComputeType_t compute, cublasOperation_t ta, cublasOperation_t tb,
                               cublasLtEpilogue_t epi, void* vec) {
  cublasLtMatmulDesc_t desc = nullptr;
  const cudaDataType_t t = lt_dtype(dt);
  TG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof(t)));
  if (vec != nullptr)
    TG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof(vec)));
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
                               int align) {
  static std::mutex mu;
  static std::map<LtKey, std::optional<LtPlan>> plans;
  const LtKey key{device, rows, cols, k, lda, ldb, static_cast<int>(ta), static_cast<int>(tb), static_cast<int>(dt),
                  static_cast<int>(epi), static_cast<int>(compute), align};
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = plans.find(key); it != plans.end()) return it->second;
  const cudaDataType_t t = lt_dtype(dt);
  LtPlan p;
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, t, ta == CUBLAS_OP_N ? rows : k, ta == CUBLAS_OP_N ? k : rows, lda));
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, t, tb == CUBLAS_OP_N ? k : cols, tb == CUBLAS_OP_N ? cols : k, ldb));
  TG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, t, rows, cols, rows));
  cublasLtMatmulPreference_t pref = nullptr;
  TG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t ws = kWorkspace;
  const std::uint32_t al = static_cast<std::uint32_t>(align);
  TG_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    TG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al)));
  cublasLtMatmulDesc_t desc = make_desc(dt, compute, ta, tb, epi, nullptr);
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

// Runs D = op(A) op(B) with the epilogue's vector at `vec`; false when cuBLASLt has no
// algorithm for the configuration.
bool run(int device, DType dt, cublasOperation_t ta, cublasOperation_t tb, std::int64_t rows, std::int64_t cols,
         std::int64_t k, const void* A, int lda, const void* B, int ldb, void* D, cublasLtEpilogue_t epi, void* vec) {
  constexpr std::int64_t kMax = 0x7fffffff;
  if (rows <= 0 || cols <= 0 || k <= 0 || rows > kMax || cols > kMax || k > kMax) return false;
  const int align = alignment({A, B, D, vec});
  const cublasComputeType_t compute = compute_type(dt);
  const auto plan = plan_for(device, dt, compute, ta, tb, static_cast<int>(rows), static_cast<int>(cols),
                             static_cast<int>(k), lda, ldb, epi, align);
  if (!plan) return false;
  tg::cuda::DeviceGuard guard(device);
  const cudaStream_t stream = tg::cuda::current_cuda_stream(device);
  Tensor ws = empty({static_cast<std::int64_t>(kWorkspace)}, {.dtype = DType::boolean, .device = Device::cuda(device)});
  cublasLtMatmulDesc_t desc = make_desc(dt, compute, ta, tb, epi, vec);
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

bool linear_wgrad_cuda(const Tensor& g, const Tensor& x, const Tensor& dw, const Tensor& db) {
  if (!supported(x.dtype())) return false;
  const std::int64_t m = x.size(0), k = x.size(1), n = g.size(1);
  // With the bias gradient in its epilogue cuBLASLt does not split the GEMM's k (the
  // tokens): a weight of fewer 128 x 128 tiles than the GPU has SMs then leaves most of
  // them idle, and the plain GEMM (split) with a separate column sum is faster (H200,
  // [16384 tokens] x the example GPT's layers: 0.074 -> 0.062 ms for a [1152, 384] weight).
  const std::int64_t tiles = ((n + 127) / 128) * ((k + 127) / 128);
  if (tiles < tg::cuda::multiprocessor_count(x.device().index)) return false;
  return run(x.device().index, x.dtype(), CUBLAS_OP_N, CUBLAS_OP_T, k, n, m, x.data_ptr(), static_cast<int>(k),
             g.data_ptr(), static_cast<int>(n), dw.data_ptr(), CUBLASLT_EPILOGUE_BGRADB, db.data_ptr());
}

}  // namespace

TG_REGISTER_KERNEL(linear_fwd_kernel, CUDA, &linear_fwd_cuda);
TG_REGISTER_KERNEL(linear_wgrad_kernel, CUDA, &linear_wgrad_cuda);

}  // namespace tg::ops
