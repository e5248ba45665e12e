// CUDA kernel of the dropout family: each group of 4 consecutive elements takes one Philox
// block (the element-to-word mapping of philox::uniform), with one vector load and store
// per group where x and out are aligned to 4 elements. A thread loads kGroups groups, a grid
// stride apart, before it computes any: one 8-byte (16-bit types) load in flight a thread
// left the kernel at ~1.5 TB/s on 12 MiB tensors. 16-bit values convert in hardware (the
// same round-to-nearest-even as the CPU's: masks, and finite values, match bit for bit).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/cuda_fast_math.cuh"
#include "ops/dropout/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;
constexpr int kGroups = 4;  // groups of 4 elements in flight a thread

template <typename T>
struct alignas(sizeof(T) * 4) Pack4 {
  T v[4];
};

template <typename T>
constexpr bool kIs16 = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

// Element k of a group kept (scaled) or zeroed by Philox word w[k], as the CPU kernel does.
template <typename T, typename Acc>
__device__ __forceinline__ void apply(Pack4<T>& p, const philox::U32x4& r, std::uint32_t threshold, Acc scale) {
  const std::uint32_t w[4] = {r.x, r.y, r.z, r.w};
  if constexpr (kIs16<T>) {
    float f[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = (w[k] >> 8) >= threshold ? gpu::to_f32<T>(p.v[k].bits) * scale : 0.f;
#pragma unroll
    for (int k = 0; k < 4; k += 2) {
      const std::uint32_t two = gpu::pack2<T>(f[k], f[k + 1]);
      p.v[k] = T::from_bits(static_cast<std::uint16_t>(two & 0xffffu));
      p.v[k + 1] = T::from_bits(static_cast<std::uint16_t>(two >> 16));
    }
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      p.v[k] = (w[k] >> 8) >= threshold ? static_cast<T>(static_cast<Acc>(p.v[k]) * scale) : static_cast<T>(Acc(0));
  }
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads) dropout_impl(const T* __restrict__ x, std::uint64_t n, std::uint32_t threshold,
                                                         typename acc_type<T>::type scale, std::uint64_t seed,
                                                         std::uint64_t offset, T* __restrict__ out) {
  using Acc = typename acc_type<T>::type;
  const std::uint64_t groups = (n + 3) / 4;
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t b0 = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b0 < groups;
       b0 += kGroups * stride) {
    const std::uint64_t last = b0 + (kGroups - 1) * stride;  // this round's last group
    if (VEC && (last + 1) * 4 <= n) {
      Pack4<T> p[kGroups];
#pragma unroll
      for (int u = 0; u < kGroups; ++u) p[u] = *reinterpret_cast<const Pack4<T>*>(x + (b0 + u * stride) * 4);
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const std::uint64_t b = b0 + u * stride;
        apply<T, Acc>(p[u], philox::block(seed, offset, b), threshold, scale);
        *reinterpret_cast<Pack4<T>*>(out + b * 4) = p[u];
      }
    } else {
      for (int u = 0; u < kGroups; ++u) {
        const std::uint64_t b = b0 + u * stride, i0 = b * 4;
        if (b >= groups) break;
        Pack4<T> p;
#pragma unroll
        for (int k = 0; k < 4; ++k) p.v[k] = i0 + k < n ? x[i0 + k] : T(Acc(0));
        apply<T, Acc>(p, philox::block(seed, offset, b), threshold, scale);
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (i0 + k < n) out[i0 + k] = p.v[k];
      }
    }
  }
}

void dropout_cuda(const Tensor& x, std::uint32_t threshold, double scale, std::uint64_t seed, std::uint64_t offset,
                  const Tensor& out) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::uint64_t n = static_cast<std::uint64_t>(x.numel());
  const std::uint64_t groups = (n + 3) / 4;
  const std::uint64_t per_cta = static_cast<std::uint64_t>(kThreads) * kGroups;
  const unsigned grid = static_cast<unsigned>(std::min<std::uint64_t>((groups + per_cta - 1) / per_cta, 1u << 16));
  TG_DISPATCH_FLOATING(x.dtype(), "dropout", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const Acc s = static_cast<Acc>(scale);
    const bool vec = reinterpret_cast<std::uintptr_t>(px) % sizeof(Pack4<T>) == 0 &&
                     reinterpret_cast<std::uintptr_t>(po) % sizeof(Pack4<T>) == 0;
    if (vec) dropout_impl<T, true><<<grid, kThreads, 0, stream>>>(px, n, threshold, s, seed, offset, po);
    else dropout_impl<T, false><<<grid, kThreads, 0, stream>>>(px, n, threshold, s, seed, offset, po);
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(dropout_kernel, CUDA, &dropout_cuda);

}  // namespace tg::ops
