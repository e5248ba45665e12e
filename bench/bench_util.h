// Shared timing helpers for the GPU benchmarks: CUDA-event timing (warm-up, median of
// many runs) and the device-to-device copy rate used as the memory ceiling.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "runtime/cuda/cuda_check.h"

namespace tgb {

/// Median milliseconds of `fn` over `reps` timed runs after `warmup` untimed ones, each
/// run timed with CUDA events on the legacy default stream.
inline double time_ms(const std::function<void()>& fn, int warmup = 10, int reps = 50) {
  for (int i = 0; i < warmup; ++i) fn();
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  TG_CUDA_CHECK(cudaEventCreate(&a));
  TG_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    TG_CUDA_CHECK(cudaEventRecord(a));
    fn();
    TG_CUDA_CHECK(cudaEventRecord(b));
    TG_CUDA_CHECK(cudaEventSynchronize(b));
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms[static_cast<std::size_t>(i)], a, b));
  }
  TG_CUDA_CHECK(cudaEventDestroy(a));
  TG_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

/// Device-to-device copy rate in GB/s (bytes read + written) over a 2 GiB buffer.
inline double copy_rate_gbps() {
  const std::size_t bytes = std::size_t(2) << 30;
  void *src, *dst;
  TG_CUDA_CHECK(cudaMalloc(&src, bytes));
  TG_CUDA_CHECK(cudaMalloc(&dst, bytes));
  TG_CUDA_CHECK(cudaMemset(src, 1, bytes));
  double ms = time_ms([&] { TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  TG_CUDA_CHECK(cudaFree(src));
  TG_CUDA_CHECK(cudaFree(dst));
  return 2.0 * static_cast<double>(bytes) / ms / 1e6;
}

}  // namespace tgb
