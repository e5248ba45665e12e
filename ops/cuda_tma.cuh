// Hopper (sm_90) asynchronous copies behind small functions: shared-memory mbarriers
// (init, arrive, the transaction-count arrive a TMA copy completes, parity waits) and the
// 2-d tiled TMA load (cp.async.bulk.tensor) that writes a box of a global tensor, laid
// out as its tensor map says (here: 128-byte swizzled), into shared memory and signals an
// mbarrier when its bytes have landed. Like cuda_wgmma.cuh, compiled for another target
// every wrapper traps; the host launches kernels that use them only on compute capability
// 9.0. The tensor maps themselves are encoded on the host (runtime/cuda/tensor_map.h).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tg::ops::tma {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define TG_TMA_ENABLED 1
#else
#define TG_TMA_ENABLED 0
#endif

/// Shared-window address of a shared-memory object.
__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// Initialises the mbarrier at shared address `bar` to expect `count` arrivals per phase.
/// Publish with fence_init() and a CTA barrier before any other thread uses it.
__device__ __forceinline__ void init(std::uint32_t bar, std::uint32_t count) {
#if TG_TMA_ENABLED
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#else
  __trap();
#endif
}

/// Makes earlier mbarrier inits visible to the async proxy (TMA completes on them).
__device__ __forceinline__ void fence_init() {
#if TG_TMA_ENABLED
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/// One arrival on `bar`.
__device__ __forceinline__ void arrive(std::uint32_t bar) {
#if TG_TMA_ENABLED
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
  __trap();
#endif
}

/// One arrival on `bar` that also announces `bytes` of asynchronous copies the current
/// phase must wait for (the copies' complete_tx counts them down).
__device__ __forceinline__ void arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
#if TG_TMA_ENABLED
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#else
  __trap();
#endif
}

/// Blocks until the phase of `bar` with parity `parity` has completed. A freshly
/// initialised barrier counts as having completed the phase of parity 1, so a producer
/// waiting for free slots starts at parity 1 and a consumer waiting for data at parity 0.
__device__ __forceinline__ void wait(std::uint32_t bar, std::uint32_t parity) {
#if TG_TMA_ENABLED
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#else
  __trap();
#endif
}

/// Starts the TMA load of the box at element coordinates (c0 innermost, c1) of the tensor
/// `map` (a __grid_constant__ kernel parameter) into shared address `dst` (aligned as the
/// map's swizzle needs: 1024 bytes for 128-byte swizzling); its bytes count down `bar`.
__device__ __forceinline__ void load_2d(std::uint32_t dst, const CUtensorMap* map, std::uint32_t bar, int c0, int c1) {
#if TG_TMA_ENABLED
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
#else
  __trap();
#endif
}

/// Starts the TMA store of the box at shared address `src` (laid out as the 2-d tensor map
/// `map` says) to element coordinates (c0 innermost, c1) of the tensor, in this thread's
/// current bulk group. The source must have been written before a fence_proxy_async;
/// commit the group and wait for it (bulk_wait_read) before writing the source again.
__device__ __forceinline__ void store_2d(const CUtensorMap* map, std::uint32_t src, int c0, int c1) {
#if TG_TMA_ENABLED
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
                   reinterpret_cast<std::uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1)
               : "memory");
#else
  __trap();
#endif
}

/// The same for a 3-d tensor map: the box at element coordinates (c0 innermost, c1, c2).
__device__ __forceinline__ void load_3d(std::uint32_t dst, const CUtensorMap* map, std::uint32_t bar, int c0, int c1,
                                        int c2) {
#if TG_TMA_ENABLED
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
#else
  __trap();
#endif
}

/// Starts copying `bytes` (a multiple of 16) contiguous bytes from global `src` into shared
/// address `dst` (both 16-byte aligned); the bytes count down `bar`.
__device__ __forceinline__ void load_bulk(std::uint32_t dst, const void* src, std::uint32_t bytes, std::uint32_t bar) {
#if TG_TMA_ENABLED
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(reinterpret_cast<std::uint64_t>(src)), "r"(bytes), "r"(bar)
               : "memory");
#else
  __trap();
#endif
}

/// Starts adding the box at shared address `src` (laid out as the 3-d tensor map `map`
/// says) element-wise to the box at element coordinates (c0 innermost, c1, c2) of the
/// tensor, in this thread's current bulk group; elements outside the tensor are skipped.
/// The source must have been written before a fence_proxy_async; commit the group and
/// wait for it (bulk_wait_read) before writing the source again.
__device__ __forceinline__ void reduce_add_3d(const CUtensorMap* map, std::uint32_t src, int c0, int c1, int c2) {
#if TG_TMA_ENABLED
  asm volatile("cp.reduce.async.bulk.tensor.3d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(
                   reinterpret_cast<std::uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1), "r"(c2)
               : "memory");
#else
  __trap();
#endif
}

/// Closes this thread's current bulk group (the reductions started since the last one).
__device__ __forceinline__ void bulk_commit() {
#if TG_TMA_ENABLED
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

/// Waits until at most N of this thread's bulk groups still read their shared sources.
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
#if TG_TMA_ENABLED
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}

/// Waits until at most N of this thread's bulk groups are incomplete (their writes done).
template <int N>
__device__ __forceinline__ void bulk_wait() {
#if TG_TMA_ENABLED
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/// Fetches the tensor map's descriptor into the cache ahead of the first load.
__device__ __forceinline__ void prefetch_map(const CUtensorMap* map) {
#if TG_TMA_ENABLED
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
#endif
}

}  // namespace tg::ops::tma
