// CUDA-side helpers of the runtime, for the CUDA kernels of ops/ (CUDA builds only).
//
// The backend itself (tg::runtime::Backend for DeviceType::CUDA) lives in
// cuda_backend.cpp and registers itself at load time; it touches no CUDA API before its
// first use, so a CUDA build loads and runs its CPU paths on a machine without a driver.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "runtime/caching_pool.h"
#include "runtime/stream.h"

namespace tg::cuda {

/// Number of visible CUDA devices; 0 when there is no GPU or no (recent enough) driver.
/// Never throws; queried once and cached.
int device_count();

/// The cudaStream_t behind `stream` (nullptr is the legacy default stream). Throws
/// tg::DeviceError when `stream` is not a CUDA stream.
cudaStream_t stream_of(tg::Stream stream);

/// The calling thread's current stream on `device` (see tg::current_stream). Throws
/// tg::DeviceError for an invalid device index.
cudaStream_t current_cuda_stream(int device);

/// Multiprocessors of `device`, read once per device and cached (kernels size their grids
/// with it on every launch).
int multiprocessor_count(int device);

/// Major compute capability of `device`, read once per device and cached.
int compute_capability_major(int device);

/// L2 cache bytes of `device`, read once per device and cached.
int l2_cache_bytes(int device);

/// Minor compute capability of `device`, read once per device and cached.
int compute_capability_minor(int device);

/// A cuBLAS handle owned by the calling thread for `device`, bound to the thread's current
/// stream on that device and to a workspace from the caching pool reserved for that
/// stream. Rebinds on every call, so call it right before each cuBLAS call rather than
/// caching the result across stream changes.
cublasHandle_t cublas_handle(int device);

/// The caching pool of `device`, created on first use (bypassing the cache when
/// TG_POOL=off). Throws tg::DeviceError for an invalid device index.
runtime::CachingPool& pool(int device);

/// Makes `device` the calling thread's current CUDA device for the guard's lifetime, so
/// that allocations, streams and events land on the intended device.
class DeviceGuard {
 public:
  /// Switches to `device` (no CUDA call when it is already current).
  explicit DeviceGuard(int device);
  /// Restores the previous device.
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;  // -1: nothing to restore
};

}  // namespace tg::cuda
