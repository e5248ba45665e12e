// CUDA kernels of the copy family.
#include <algorithm>
#include <cstdint>

#include "ops/copy/cast.h"
#include "ops/copy/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

template <typename Src, typename Dst>
__global__ void cast_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = cast_value<Dst>(src[i]);
  }
}

void cast_cuda(const Tensor& src, const Tensor& dst) {
  const std::int64_t n = src.numel();
  if (n == 0) return;
  tg::cuda::DeviceGuard guard(src.device().index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(src.device().index);
  constexpr int kThreads = 256;
  // Grid-stride loop: a capped grid still covers any numel; 1<<16 blocks fill every SM.
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, 1 << 16));
  TG_DISPATCH_ALL(src.dtype(), "to_dtype", [&] {
    using src_t = scalar_t;
    TG_DISPATCH_ALL(dst.dtype(), "to_dtype", [&] {
      using dst_t = scalar_t;
      cast_kernel<src_t, dst_t><<<blocks, kThreads, 0, stream>>>(static_cast<const src_t*>(src.data_ptr()),
                                                                 static_cast<dst_t*>(dst.data_ptr()), n);
      TG_CUDA_CHECK_LAST();
    });
  });
}

}  // namespace

TG_REGISTER_KERNEL(cast_dtype, CUDA, &cast_cuda);

}  // namespace tg::ops
