// PTX wrappers of the Hopper warpgroup MMA (wgmma) used by wgmma_kernel.cuh: shared-memory
// matrix descriptors, the fences and group waits, and m64nNk16 multiply-accumulates with
// f32 accumulators in registers. The instructions exist only on sm_90a: every wrapper is
// empty (the MMA one traps) when a translation unit is also compiled for another
// architecture, and the host never launches those kernels there (cuda.cu).
// Include only from wgmma_kernel.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/half.h"

namespace tg::ops::spmm::wg {

/// Descriptor of an operand tile in shared memory in the 128-byte-swizzled layout: `addr`
/// the shared-window byte address of its first (1024-byte aligned) swizzle atom, or of a
/// k offset inside one; `lbo` / `sbo` the leading / stride byte offsets (multiples of 16).
/// Fields: bits 0-13 addr >> 4, 16-29 lbo >> 4, 32-45 sbo >> 4, 49-51 base offset (0:
/// atoms are 1024-byte aligned), 62-63 swizzle mode (1: 128 bytes).
__device__ __forceinline__ std::uint64_t make_desc(std::uint32_t addr, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((addr >> 4) & 0x3FFFu) | (static_cast<std::uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<std::uint64_t>((sbo >> 4) & 0x3FFFu) << 32) | (std::uint64_t{1} << 62);
}

/// Makes this thread's earlier generic-proxy writes to shared memory (cp.async, stores)
/// visible to the async proxy that wgmma reads through; call before the barrier that
/// publishes them.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// Orders earlier register and shared-memory accesses before the wgmmas that follow.
__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/// Closes the group of wgmmas issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/// Waits until at most N committed wgmma groups of this warpgroup are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

/// Tells the compiler that the accumulators may change under it (an in-flight wgmma
/// writes them): no read is moved across this point and no copy is kept in other
/// registers.
template <int R>
__device__ __forceinline__ void fence_acc(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x 64] += A[64 x 16] * B[16 x 64]; TY is the PTX element type (a string literal).
#define TG_WGMMA_M64N64(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
      "}, %32, %33, p, 1, 1, %35, %36;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB))

// D[64 x 128] += A[64 x 16] * B[16 x 128]; TY is the PTX element type (a string literal).
#define TG_WGMMA_M64N128(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" \
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
      "}, %64, %65, p, 1, 1, %67, %68;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB))

/// d[64 x N] += op(A)[64 x 16] · op(B)[16 x N] for the warpgroup, A and B read through the
/// descriptors da / db; TA = 1: A is M-major in shared memory (else K-major), TB = 1: B is
/// N-major (else K-major). d is the standard fragment: d[4j .. 4j+3] of thread (warp w,
/// lane l) hold rows 16w + l/4 (+8 for the last two), columns 8j + 2(l%4) and +1.
template <typename E, int N, int TA, int TB>
__device__ __forceinline__ void wgmma(float (&d)[N / 2], std::uint64_t da, std::uint64_t db) {
  static_assert(N == 64 || N == 128, "wgmma: n64 or n128");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (N == 64) {
    if constexpr (std::is_same_v<E, bfloat16>)
      TG_WGMMA_M64N64("bf16");
    else
      TG_WGMMA_M64N64("f16");
  } else {
    if constexpr (std::is_same_v<E, bfloat16>)
      TG_WGMMA_M64N128("bf16");
    else
      TG_WGMMA_M64N128("f16");
  }
#else
  __trap();
#endif
}

#undef TG_WGMMA_M64N64
#undef TG_WGMMA_M64N128

}  // namespace tg::ops::spmm::wg
