// Memory statistics and cache control of the per-device allocators.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>

#include "runtime/device.h"

namespace tg {

/// Counters of one device's allocator. On CUDA these are the caching pool's; on the CPU
/// `reserved == in_use` and there is no cache.
struct MemoryStats {
  std::size_t bytes_in_use = 0;       ///< bytes handed out to tensors now (rounded sizes)
  std::size_t bytes_reserved = 0;     ///< bytes obtained from the device (in use + cached)
  std::size_t peak_bytes_in_use = 0;  ///< high-water mark of bytes_in_use
  std::uint64_t num_allocs = 0;       ///< allocation requests served
  std::uint64_t num_frees = 0;        ///< blocks returned
  std::uint64_t device_allocs = 0;    ///< calls to the device allocator (cudaMalloc)
  std::uint64_t device_frees = 0;     ///< calls to the device free (cudaFree)
  std::uint64_t cache_hits = 0;       ///< requests served from cached blocks
  std::uint64_t splits = 0;           ///< blocks split to serve a smaller request
  std::uint64_t merges = 0;           ///< neighbouring free blocks coalesced
  std::uint64_t oom_retries = 0;      ///< times the cache was emptied to retry a failed allocation
};

std::ostream& operator<<(std::ostream& os, const MemoryStats& s);

/// Statistics of `device`'s allocator.
MemoryStats memory_stats(Device device);
/// Resets the peak and the counters (not bytes_in_use / bytes_reserved).
void reset_peak_stats(Device device);
/// Returns every cached, unused segment of `device` to the driver.
void empty_cache(Device device);
/// Frees every device resource tilegrad keeps for reuse, on every device: the ops' caches
/// (block-sparse matmul plans, attention tile lists, derived layouts), cuBLAS handles and
/// workspaces, and the pools' unused segments. Meant for the end of a program checked by
/// a leak checker, or before handing the GPU to another library. Tensors alive stay valid;
/// later calls re-create what they need (at some cost). No other thread may run tilegrad
/// work meanwhile. Harmless on a CPU-only build.
void release_device_resources();

}  // namespace tg
