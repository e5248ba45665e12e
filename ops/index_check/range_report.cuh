// How a CUDA kernel reports the smallest and largest value of the indices it read, so that
// the host can judge them once the kernel has run (runtime/deferred_checks.h) without
// waiting for it: each CTA writes its (lo, hi) into a reused buffer of mapped pinned memory
// and the verdict reduces the pairs. Include only from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>

#include "ops/index_check/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/deferred_checks.h"
#include "runtime/error.h"
#include "runtime/op_caches.h"

namespace tg::ops::range {

/// The most CTAs a kernel reporting a range may have (launchers cap their grids).
constexpr unsigned kMaxRangeCtas = 8192;

/// Where a kernel reports the smallest and largest index it read: CTA c writes its
/// (lo, hi) to host[2c], host[2c + 1], mapped pinned memory, and the host reduces the pairs
/// once the kernel has completed (an event after it). Plain stores that no thread waits
/// for: a last-CTA reduction on the device (atomics, then a counter whose result a thread
/// must wait for) held every gather CTA's shared-memory stage for a round trip and cost ~5%
/// of the op at density 0.25. A null `host` reports nothing.
struct RangeSink {
  long long* host = nullptr;
};

/// Writes this CTA's (lo, hi) over all its threads' into rs; all kBlock threads of the CTA
/// must call it.
template <int kBlock>
__device__ __forceinline__ void publish_range(long long lo, long long hi, const RangeSink& rs) {
  if (rs.host == nullptr) return;
  __shared__ long long s_lo[kBlock / 32], s_hi[kBlock / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  if ((threadIdx.x & 31) == 0) s_lo[threadIdx.x >> 5] = lo, s_hi[threadIdx.x >> 5] = hi;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kBlock / 32; ++w) lo = min(lo, s_lo[w]), hi = max(hi, s_hi[w]);
  if (blockIdx.x < kMaxRangeCtas) reinterpret_cast<longlong2*>(rs.host)[blockIdx.x] = make_longlong2(lo, hi);
}

/// A reusable pinned, mapped buffer of kMaxRangeCtas (lo, hi) pairs on one device, which
/// kernels write through the host pointer itself (unified addressing, always on in 64-bit
/// processes, maps every cudaHostAlloc allocation).
struct RangeSlot {
  int device = -1;
  std::shared_ptr<long long> host;
};

/// Takes a free slot of `device` from a process-wide pool (or makes one) for one launch;
/// defer() hands the range to a verdict once the kernel has run and gives the slot back.
/// The pool is a mutex-guarded free list, so concurrent callers (threads, streams) never
/// share a slot while a kernel may still write it. A lease dropped before its verdict ran
/// (an exception between launch and defer, a thread exiting with checks queued) frees its
/// slot instead (cudaFreeHost waits for the device).
class RangeLease {
 public:
  explicit RangeLease(const Device& device) {
    auto& pool = runtime::OpCacheList<RangeSlot>::instance();
    {
      std::lock_guard<std::mutex> lock(pool.mu);
      for (auto it = pool.entries.begin(); it != pool.entries.end(); ++it) {
        if (it->device == device.index) {
          slot_ = std::move(*it);
          pool.entries.erase(it);
          return;
        }
      }
    }
    tg::cuda::DeviceGuard guard(device.index);
    slot_.device = device.index;
    void* p = nullptr;
    TG_CUDA_CHECK(cudaHostAlloc(&p, 2 * sizeof(long long) * kMaxRangeCtas, cudaHostAllocMapped | cudaHostAllocPortable));
    slot_.host.reset(static_cast<long long*>(p), [](long long* q) { cudaFreeHost(q); });
  }
  ~RangeLease() {
    if (!judged_) return;
    auto& pool = runtime::OpCacheList<RangeSlot>::instance();
    std::lock_guard<std::mutex> lock(pool.mu);
    pool.entries.push_front(std::move(slot_));
  }
  RangeLease(const RangeLease&) = delete;
  RangeLease& operator=(const RangeLease&) = delete;

  /// The sink of a launch of `ctas` (at most kMaxRangeCtas) CTAs; one launch per lease.
  RangeSink sink(unsigned ctas) {
    if (ctas > kMaxRangeCtas) TG_THROW(Error, "index range check: internal error: grid of ", ctas, " CTAs");
    ctas_ = ctas;
    return {slot_.host.get()};
  }

  /// Queues `verdict` on the range the launch given sink() writes (runtime::defer_check on
  /// `stream`, the launch's).
  static void defer(std::unique_ptr<RangeLease> lease, const Stream& stream, RangeVerdict verdict) {
    std::shared_ptr<RangeLease> held(std::move(lease));
    runtime::defer_check(stream, [held, v = std::move(verdict)] {
      std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = std::numeric_limits<std::int64_t>::min();
      const volatile long long* h = held->slot_.host.get();
      for (unsigned c = 0; c < held->ctas_; ++c) {
        lo = std::min<std::int64_t>(lo, h[2 * c]);
        hi = std::max<std::int64_t>(hi, h[2 * c + 1]);
      }
      held->judged_ = true;
      v(lo, hi);
    });
  }

 private:
  RangeSlot slot_;
  unsigned ctas_ = 0;
  bool judged_ = false;
};

}  // namespace tg::ops::range
