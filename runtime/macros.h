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
