// Checks for CUDA runtime and cuBLAS calls: a failure throws tg::DeviceError naming the
// call as written, the library's error name and description, and the file and line.
//
//   TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream));
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   TG_CUDA_CHECK_LAST();
//   TG_CUBLAS_CHECK(cublasGemmEx(...));
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "runtime/error.h"

namespace tg::cuda::detail {

/// Throws tg::DeviceError describing the failed `call` (its source text) at file:line.
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  TG_THROW(DeviceError, "CUDA error ", cudaGetErrorName(err), " (", static_cast<int>(err),
           "): ", cudaGetErrorString(err), " in `", call, "` at ", file, ":", line);
}

/// Throws tg::DeviceError describing the failed cuBLAS `call` at file:line.
[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  TG_THROW(DeviceError, "cuBLAS error ", cublasGetStatusName(status), " (", static_cast<int>(status),
           "): ", cublasGetStatusString(status), " in `", call, "` at ", file, ":", line);
}

}  // namespace tg::cuda::detail

/// Evaluates a cudaError_t-returning call once; throws tg::DeviceError unless cudaSuccess.
#define TG_CUDA_CHECK(call)                                                         \
  do {                                                                              \
    const cudaError_t tg_cuda_err_ = (call);                                        \
    if (tg_cuda_err_ != cudaSuccess) {                                              \
      ::tg::cuda::detail::throw_cuda_error(tg_cuda_err_, #call, __FILE__, __LINE__); \
    }                                                                               \
  } while (0)

/// After a kernel launch: throws tg::DeviceError for a launch error (bad configuration,
/// missing kernel image, or a sticky error from earlier asynchronous work). Clears the
/// non-sticky error state as cudaGetLastError does.
#define TG_CUDA_CHECK_LAST()                                                                       \
  do {                                                                                             \
    const cudaError_t tg_cuda_err_ = cudaGetLastError();                                           \
    if (tg_cuda_err_ != cudaSuccess) {                                                             \
      ::tg::cuda::detail::throw_cuda_error(tg_cuda_err_, "kernel launch (cudaGetLastError)", __FILE__, \
                                           __LINE__);                                              \
    }                                                                                              \
  } while (0)

/// Evaluates a cublasStatus_t-returning call once; throws tg::DeviceError unless
/// CUBLAS_STATUS_SUCCESS.
#define TG_CUBLAS_CHECK(call)                                                          \
  do {                                                                                 \
    const cublasStatus_t tg_cublas_st_ = (call);                                       \
    if (tg_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                      \
      ::tg::cuda::detail::throw_cublas_error(tg_cublas_st_, #call, __FILE__, __LINE__); \
    }                                                                                  \
  } while (0)
