// CUDA kernel of the dropout family: each thread handles groups of 4 consecutive elements,
// one Philox block per group (the element-to-word mapping of philox::uniform), with one
// vector load and store per group where x and out are aligned to 4 elements.
#include <algorithm>
#include <cstdint>

#include "ops/dropout/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct alignas(sizeof(T) * 4) Pack4 {
  T v[4];
};

template <typename T, bool VEC>
__global__ void dropout_impl(const T* __restrict__ x, std::uint64_t n, std::uint32_t threshold,
                             typename acc_type<T>::type scale, std::uint64_t seed, std::uint64_t offset,
                             T* __restrict__ out) {
  using Acc = typename acc_type<T>::type;
  const std::uint64_t groups = (n + 3) / 4;
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t b = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < groups; b += stride) {
    const philox::U32x4 r = philox::block(seed, offset, b);
    const std::uint32_t w[4] = {r.x, r.y, r.z, r.w};
    const std::uint64_t i0 = b * 4;
    if (VEC && i0 + 4 <= n) {
      Pack4<T> p = *reinterpret_cast<const Pack4<T>*>(x + i0);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        p.v[k] = (w[k] >> 8) >= threshold ? static_cast<T>(static_cast<Acc>(p.v[k]) * scale) : static_cast<T>(Acc(0));
      *reinterpret_cast<Pack4<T>*>(out + i0) = p;
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const std::uint64_t i = i0 + static_cast<std::uint64_t>(k);
        if (i < n)
          out[i] = (w[k] >> 8) >= threshold ? static_cast<T>(static_cast<Acc>(x[i]) * scale) : static_cast<T>(Acc(0));
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
  const unsigned grid = static_cast<unsigned>(std::min<std::uint64_t>((groups + kThreads - 1) / kThreads, 1u << 16));
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
