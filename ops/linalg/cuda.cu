// CUDA GEMM through cuBLAS. cuBLAS is column-major: a row-major [r, c] matrix is, read
// column-major, its transpose. So the row-major C = op(A)·op(B) is computed as the
// column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e. with the operands swapped and no data movement.
#include <climits>

#include "ops/linalg/kernels.h"
#include "ops/linalg/matmul.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

cudaDataType_t cuda_dtype(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: TG_THROW(DTypeError, "matmul: expected a floating dtype (f32, f64, bf16, f16), got ", t);
  }
}

int to_int(std::int64_t v, const char* what) {
  if (v > INT_MAX) {
    TG_THROW(ShapeError, "matmul: ", what, " = ", v, " exceeds the cuBLAS limit of ", INT_MAX);
  }
  return static_cast<int>(v);
}

void gemm_cuda(const Tensor& a, const Tensor& b, const Tensor& out, const GemmParams& p) {
  const int m = to_int(p.m, "M"), n = to_int(p.n, "N"), k = to_int(p.k, "K");
  const int batch = to_int(p.batch, "batch");
  // Leading dims of the row-major storage: the stored row length.
  const int lda = p.trans_a ? m : k;  // a stored [m,k] or [k,m]
  const int ldb = p.trans_b ? k : n;  // b stored [k,n] or [n,k]
  const int ldc = n;
  const cudaDataType_t dt = cuda_dtype(out.dtype());
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (out.dtype() == DType::f64) compute = CUBLAS_COMPUTE_64F;
  else if (out.dtype() == DType::f32 && tg::allow_tf32()) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  const float alpha32 = 1.0f, beta32 = 0.0f;
  const double alpha64 = 1.0, beta64 = 0.0;
  const bool f64 = compute == CUBLAS_COMPUTE_64F;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  // Swapped operands (see the file comment): cuBLAS's "A" is our b, its "B" is our a.
  const cublasOperation_t op_first = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;

  tg::cuda::DeviceGuard guard(out.device().index);
  cublasHandle_t h = tg::cuda::cublas_handle(out.device().index);
  if (batch == 1) {
    TG_CUBLAS_CHECK(cublasGemmEx(h, op_first, op_second, n, m, k, alpha, b.data_ptr(), dt, ldb, a.data_ptr(), dt,
                                 lda, beta, out.data_ptr(), dt, ldc, compute, CUBLAS_GEMM_DEFAULT));
  } else {
    TG_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op_first, op_second, n, m, k, alpha, b.data_ptr(), dt, ldb,
                                               static_cast<long long>(p.stride_b), a.data_ptr(), dt, lda,
                                               static_cast<long long>(p.stride_a), beta, out.data_ptr(), dt, ldc,
                                               static_cast<long long>(p.m * p.n), batch, compute,
                                               CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace

TG_REGISTER_KERNEL(matmul_gemm, CUDA, &gemm_cuda);

}  // namespace tg::ops
