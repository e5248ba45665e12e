// Allocation cost of the caching pool against cudaMalloc/cudaFree and the driver's
// stream-ordered allocator (cudaMallocAsync/cudaFreeAsync), then a training-step-like loop
// showing that the pool stops calling cudaMalloc after one warm-up step.
//
// Each case times batches of alloc+free pairs: host wall time with std::chrono (what the
// training loop waits for) and the GPU-timeline span with CUDA events (what the device
// sees, including any synchronization the call forces). Median of many batches after
// warm-up. Run with TG_POOL=off to see the pool in bypass mode.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/caching_pool.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/device.h"
#include "runtime/memory.h"
#include "runtime/stream.h"

namespace {

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;

struct Timing {
  double host_us;   // median host time per operation
  double event_us;  // median GPU-timeline time per operation
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median over `reps` runs (after `warmup`) of `batch()`, which performs `ops` operations.
Timing time_batches(const std::function<void()>& batch, int ops, int warmup, int reps, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) batch();
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  TG_CUDA_CHECK(cudaEventCreate(&start));
  TG_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> host, dev;
  for (int r = 0; r < reps; ++r) {
    TG_CUDA_CHECK(cudaEventRecord(start, stream));
    const auto t0 = std::chrono::steady_clock::now();
    batch();
    const auto t1 = std::chrono::steady_clock::now();
    TG_CUDA_CHECK(cudaEventRecord(stop, stream));
    TG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    host.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / ops);
    dev.push_back(1e3 * ms / ops);
  }
  TG_CUDA_CHECK(cudaEventDestroy(start));
  TG_CUDA_CHECK(cudaEventDestroy(stop));
  return {median(host), median(dev)};
}

struct Row {
  std::string name;
  Timing pool, malloc, async;
};

}  // namespace

int main() {
  const tg::Device dev = tg::Device::cuda(0);
  tg::runtime::Backend* be = tg::runtime::find_backend(tg::DeviceType::CUDA);
  if (be == nullptr || tg::cuda_device_count() == 0) {
    std::printf("bench_pool: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  TG_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const bool bypass = tg::runtime::pool_disabled_by_env();
  std::printf("device: %s | pool: %s\n", prop.name, bypass ? "bypass (TG_POOL=off)" : "caching");

  // Give the stream-ordered allocator its own caching behaviour (keep freed memory) so
  // the comparison is cache against cache, not against returning memory at each sync.
  cudaMemPool_t mempool;
  TG_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&mempool, 0));
  std::uint64_t threshold = UINT64_MAX;
  TG_CUDA_CHECK(cudaMemPoolSetAttribute(mempool, cudaMemPoolAttrReleaseThreshold, &threshold));

  const tg::Stream stream = be->current_stream(dev);
  const cudaStream_t cs = static_cast<cudaStream_t>(stream.handle);

  // ---- alloc+free pairs ------------------------------------------------------------
  const std::vector<std::pair<std::string, std::size_t>> cases = {
      {"512 B", 512}, {"64 KiB", 64 * KiB}, {"1 MiB", MiB}, {"16 MiB", 16 * MiB}, {"256 MiB", 256 * MiB}};
  std::vector<Row> rows;
  std::printf("\nalloc+free pair, median us per pair (host wall | GPU timeline)\n");
  for (const auto& [name, bytes] : cases) {
    // Big cudaMalloc calls are slow; keep every case well under a second.
    const int ops = bytes >= 16 * MiB ? 10 : 100;
    const int reps = bytes >= 16 * MiB ? 21 : 51;
    Row row{name, {}, {}, {}};
    row.pool = time_batches(
        [&, bytes = bytes] {
          for (int i = 0; i < ops; ++i) be->deallocate(be->allocate(bytes, stream), dev);
        },
        ops, 3, reps, cs);
    row.malloc = time_batches(
        [&, bytes = bytes] {
          for (int i = 0; i < ops; ++i) {
            void* p = nullptr;
            TG_CUDA_CHECK(cudaMalloc(&p, bytes));
            TG_CUDA_CHECK(cudaFree(p));
          }
        },
        ops, 3, reps, cs);
    row.async = time_batches(
        [&, bytes = bytes] {
          for (int i = 0; i < ops; ++i) {
            void* p = nullptr;
            TG_CUDA_CHECK(cudaMallocAsync(&p, bytes, cs));
            TG_CUDA_CHECK(cudaFreeAsync(p, cs));
          }
        },
        ops, 3, reps, cs);
    std::printf(
        "%-8s pool %8.3f | %8.3f   cudaMalloc+Free %9.3f | %9.3f (x%.0f)   cudaMallocAsync+FreeAsync %7.3f | %7.3f "
        "(x%.1f)\n",
        name.c_str(), row.pool.host_us, row.pool.event_us, row.malloc.host_us, row.malloc.event_us,
        row.malloc.host_us / row.pool.host_us, row.async.host_us, row.async.event_us,
        row.async.host_us / row.pool.host_us);
    rows.push_back(row);
  }

  // ---- training-step-like loop ---------------------------------------------------------
  // 50 tensors per step: weights-sized and activation-sized blocks allocated in forward
  // order, short-lived temporaries freed at once, everything freed in reverse ("backward").
  std::vector<std::size_t> sizes;
  const std::size_t base[] = {4 * KiB, 48 * MiB, 300, MiB, 256 * KiB, 3 * MiB + 100, 12 * MiB, 2 * KiB, 96 * MiB, 640 * KiB};
  for (int i = 0; i < 50; ++i) sizes.push_back(base[i % 10] + static_cast<std::size_t>(i / 10) * 4096);
  const int iters = 100;
  auto step_pool = [&] {
    std::vector<void*> live;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      void* tmp = be->allocate(sizes[(i + 3) % sizes.size()] / 2 + 1, stream);
      live.push_back(be->allocate(sizes[i], stream));
      be->deallocate(tmp, dev);
    }
    for (std::size_t i = live.size(); i-- > 0;) be->deallocate(live[i], dev);
  };
  auto step_async = [&] {
    std::vector<void*> live;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      void *tmp = nullptr, *p = nullptr;
      TG_CUDA_CHECK(cudaMallocAsync(&tmp, sizes[(i + 3) % sizes.size()] / 2 + 1, cs));
      TG_CUDA_CHECK(cudaMallocAsync(&p, sizes[i], cs));
      live.push_back(p);
      TG_CUDA_CHECK(cudaFreeAsync(tmp, cs));
    }
    for (std::size_t i = live.size(); i-- > 0;) TG_CUDA_CHECK(cudaFreeAsync(live[i], cs));
  };
  auto step_malloc = [&] {
    std::vector<void*> live;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      void *tmp = nullptr, *p = nullptr;
      TG_CUDA_CHECK(cudaMalloc(&tmp, sizes[(i + 3) % sizes.size()] / 2 + 1));
      TG_CUDA_CHECK(cudaMalloc(&p, sizes[i]));
      live.push_back(p);
      TG_CUDA_CHECK(cudaFree(tmp));
    }
    for (std::size_t i = live.size(); i-- > 0;) TG_CUDA_CHECK(cudaFree(live[i]));
  };

  be->empty_cache(dev);
  const auto s0 = be->memory_stats(dev);
  step_pool();  // warm-up step
  const auto s1 = be->memory_stats(dev);
  const Timing loop_pool = time_batches(step_pool, 1, 0, iters, cs);
  const auto s2 = be->memory_stats(dev);
  const Timing loop_async = time_batches(step_async, 1, 1, iters, cs);
  const Timing loop_malloc = time_batches(step_malloc, 1, 1, 21, cs);

  std::printf("\ntraining-like loop: 50 tensors + 50 temporaries per step, %d steps\n", iters);
  std::printf("  cudaMalloc calls by the pool: warm-up step %llu, next %d steps %llu%s\n",
              static_cast<unsigned long long>(s1.device_allocs - s0.device_allocs), iters,
              static_cast<unsigned long long>(s2.device_allocs - s1.device_allocs),
              s2.device_allocs == s1.device_allocs ? " (steady state: none)"
              : bypass                             ? " (bypass mode)"
                                                   : "  <-- EXPECTED 0");
  std::printf("  reserved %.1f MiB, peak in use %.1f MiB, cache hits %llu\n", s2.bytes_reserved / double(MiB),
              s2.peak_bytes_in_use / double(MiB), static_cast<unsigned long long>(s2.cache_hits));
  std::printf("  per step (host | GPU): pool %.1f | %.1f us, cudaMallocAsync %.1f | %.1f us, cudaMalloc %.1f | %.1f us\n",
              loop_pool.host_us, loop_pool.event_us, loop_async.host_us, loop_async.event_us, loop_malloc.host_us,
              loop_malloc.event_us);

  // ---- summary ---------------------------------------------------------------------------
  std::printf("\nsummary (host us per alloc+free; speed-up of the pool)\n");
  std::printf("%-10s %10s %12s %9s %12s %9s\n", "case", "pool", "cudaMalloc", "x", "mallocAsync", "x");
  for (const Row& r : rows)
    std::printf("%-10s %10.3f %12.3f %9.1f %12.3f %9.1f\n", r.name.c_str(), r.pool.host_us, r.malloc.host_us,
                r.malloc.host_us / r.pool.host_us, r.async.host_us, r.async.host_us / r.pool.host_us);
  std::printf("%-10s %10.1f %12.1f %9.1f %12.1f %9.1f\n", "step(50)", loop_pool.host_us, loop_malloc.host_us,
              loop_malloc.host_us / loop_pool.host_us, loop_async.host_us, loop_async.host_us / loop_pool.host_us);
  return bypass || s2.device_allocs == s1.device_allocs ? 0 : 1;
}
