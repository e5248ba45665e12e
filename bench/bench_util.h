// Shared timing helpers for the GPU benchmarks: CUDA-event timing (warm-up, median of
// many runs) and the device-to-device copy rate used as the memory ceiling.
#pragma once

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <string_view>
#include <cstdio>
#include <functional>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "runtime/cuda/cuda_check.h"

namespace tgb {

/// Whether the case named `label` runs: every case when TG_BENCH_ONLY is unset, else those
/// whose label contains one of its '|'-separated parts (to profile one case, e.g. under
/// ncu, or to time a few).
inline bool selected(const std::string& label) {
  static const char* only = std::getenv("TG_BENCH_ONLY");
  if (only == nullptr) return true;
  std::string_view rest = only;
  for (;;) {
    const std::size_t e = rest.find('|');
    if (std::string_view(label).find(rest.substr(0, e)) != std::string_view::npos) return true;
    if (e == std::string_view::npos) return false;
    rest.remove_prefix(e + 1);
  }
}

/// Runs `fn` once between cudaProfilerStart and cudaProfilerStop when TG_PROFILE_RANGE=1 (a
/// profiler started with profiling off, as scripts/gpu-check's `times` step does, then sees
/// only the launches of that one run: a per-kernel breakdown of an op); otherwise nothing.
/// Returns whether it ran (the caller then skips its timing, which the profiler would slow).
inline bool profile_range(const std::function<void()>& fn) {
  static const char* on = std::getenv("TG_PROFILE_RANGE");
  if (on == nullptr || std::string_view(on) != "1") return false;
  fn();  // warm: allocations, plans and caches as in a training step
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  TG_CUDA_CHECK(cudaProfilerStart());
  fn();
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  TG_CUDA_CHECK(cudaProfilerStop());
  return true;
}

/// Holds the stream for `ns` nanoseconds (one thread), so that the host can queue work
/// behind it.
template <int = 0>
__global__ void spin_kernel(long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (static_cast<long long>(t - t0) < ns);
}

/// Holds the legacy default stream for 2 ms, so that the host queues what follows behind it.
inline void hold_stream() {
  spin_kernel<<<1, 1>>>(2000000);
  TG_CUDA_CHECK(cudaGetLastError());
}

/// Median milliseconds of `fn` over `reps` timed runs after `warmup` untimed ones, each
/// run timed with CUDA events on the legacy default stream. `queued`: each run is queued
/// behind a 2 ms spin kernel, with the first event after it, so the time is the GPU's
/// alone, without gaps where it waits for the host's launches (validation, allocation,
/// dispatch): what a training loop whose host runs ahead of the GPU sees. Unqueued runs
/// show where the host cannot keep up.
inline double time_ms(const std::function<void()>& fn, int warmup = 10, int reps = 50, bool queued = false) {
  for (int i = 0; i < warmup; ++i) fn();
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  TG_CUDA_CHECK(cudaEventCreate(&a));
  TG_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    if (queued) hold_stream();
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

/// time_ms with each run queued behind a spin kernel (see there).
inline double time_queued_ms(const std::function<void()>& fn, int warmup = 10, int reps = 50) {
  return time_ms(fn, warmup, reps, true);
}

/// Median host milliseconds one call of `fn` takes to return (its launch path: validation,
/// dispatch, allocation), each call queued behind a 2 ms spin kernel so that the host never
/// waits for the GPU unless `fn` synchronises (then the spin shows up in the time).
inline double host_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20) {
  for (int i = 0; i < warmup; ++i) fn();
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    hold_stream();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms[static_cast<std::size_t>(i)] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    TG_CUDA_CHECK(cudaDeviceSynchronize());
  }
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

/// The rate in GB/s (bytes read + written) of device-to-device copies moving `bytes` in all
/// (bytes / 2 read, as many written), `inner` copies back to back per timed run as the
/// benchmark times its op: the ceiling at that size, where launch and ramp-up weigh more
/// than in copy_rate_gbps(). Measured once per (size, inner) and remembered.
/// `queued`: timed with time_queued_ms (the GPU time of the copies alone).
inline double same_size_copy_gbps(double bytes, int inner = 1, bool queued = false) {
  static std::map<std::tuple<std::size_t, int, bool>, double> memo;
  const std::size_t half = (static_cast<std::size_t>(bytes / 2) + 255) & ~std::size_t(255);
  const auto key = std::tuple{half, inner, queued};
  if (auto it = memo.find(key); it != memo.end()) return it->second;
  void *src, *dst;
  TG_CUDA_CHECK(cudaMalloc(&src, half));
  TG_CUDA_CHECK(cudaMalloc(&dst, half));
  TG_CUDA_CHECK(cudaMemset(src, 1, half));
  const auto copies = [&] {
    for (int i = 0; i < inner; ++i) TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, half, cudaMemcpyDeviceToDevice));
  };
  const double ms = time_ms(copies, 10, 50, queued) / inner;
  TG_CUDA_CHECK(cudaFree(src));
  TG_CUDA_CHECK(cudaFree(dst));
  return memo[key] = 2.0 * static_cast<double>(half) / ms / 1e6;
}

/// A memory-bound op moving `bytes` a call, timed paced by the host (ms) and queued behind a
/// spin kernel (qms), `inner` calls back to back a timed run (the times are per call), each
/// as GB/s and as % of `copy` (the 2 GiB copy rate, GB/s) and of `inner` same-size copies
/// timed the same way (the queued one is what a target is judged on).
struct CopyRates {
  double ms, gbs, pct_copy, pct_size, qms, qgbs, qpct_copy, qpct_size;
};
inline CopyRates copy_rates(double bytes, double copy, const std::function<void()>& fn, int inner = 1) {
  const auto calls = [&] {
    for (int i = 0; i < inner; ++i) fn();
  };
  const double ms = time_ms(calls) / inner, qms = time_queued_ms(calls) / inner;
  const double gbs = bytes / ms / 1e6, qgbs = bytes / qms / 1e6;
  return {ms,  gbs,  100 * gbs / copy,  100 * gbs / same_size_copy_gbps(bytes, inner),
          qms, qgbs, 100 * qgbs / copy, 100 * qgbs / same_size_copy_gbps(bytes, inner, true)};
}

}  // namespace tgb
