// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define TG_HOST_DEVICE __host__ __device__
#define TG_DEVICE __device__
#define TG_INLINE __forceinline__
#else
#define TG_HOST_DEVICE
#define TG_DEVICE
#define TG_INLINE inline
#endif

// Keeps the next loop rolled in device code (a loop over a runtime dim count, where
// unrolled copies only cost compile time and instruction cache); no effect on the host.
#if defined(__CUDA_ARCH__)
#define TG_DEVICE_NO_UNROLL _Pragma("unroll 1")
#else
#define TG_DEVICE_NO_UNROLL
#endif
