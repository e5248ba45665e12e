// CUDA kernels of the embedding family: a grid-stride row gather (16-byte vectors when
// rows are aligned) and a scatter-add of gradient rows with atomicAdd: directly into
// dweight for f32/f64, through an f32 buffer converted at the end for bf16/f16.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/embedding/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(std::int64_t work) {
  return static_cast<unsigned>(std::min<std::int64_t>((work + kThreads - 1) / kThreads, 1 << 16));
}

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// out[i, j*VEC .. +VEC) = weight[idx[i], j*VEC .. +VEC). Rows outside [0, V) (excluded by
// the host check) are written as zeros rather than read out of bounds.
template <typename T, typename I, int VEC>
__global__ void emb_fwd(const T* __restrict__ w, const I* __restrict__ idx, std::int64_t n, std::int64_t V,
                        std::int64_t D, T* __restrict__ out) {
  const std::int64_t dv = D / VEC;
  const std::int64_t total = n * dv;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const std::int64_t i = e / dv, j = e - i * dv;
    const auto row = static_cast<std::int64_t>(idx[i]);
    Pack<T, VEC> p{};
    if (row >= 0 && row < V) p = *reinterpret_cast<const Pack<T, VEC>*>(w + row * D + j * VEC);
    *reinterpret_cast<Pack<T, VEC>*>(out + i * D + j * VEC) = p;
  }
}

template <typename T, typename I, typename A>
__global__ void emb_bwd_scatter(const T* __restrict__ g, const I* __restrict__ idx, std::int64_t n, std::int64_t V,
                                std::int64_t D, A* __restrict__ acc) {
  const std::int64_t total = n * D;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const std::int64_t i = e / D, c = e - i * D;
    const auto row = static_cast<std::int64_t>(idx[i]);
    if (row >= 0 && row < V) atomicAdd(acc + row * D + c, static_cast<A>(g[e]));
  }
}

template <typename T>
__global__ void emb_convert(const float* __restrict__ acc, std::int64_t m, T* __restrict__ out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < m; e += stride)
    out[e] = static_cast<T>(acc[e]);
}

template <typename F>
void with_index_type(const Tensor& indices, F&& f) {
  if (indices.dtype() == DType::i32) f(indices.data<std::int32_t>());
  else f(indices.data<std::int64_t>());
}

void embedding_fwd_cuda(const Tensor& weight, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                        const Tensor& out) {
  const Device dev = weight.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(weight.dtype(), "embedding", [&] {
    using T = scalar_t;
    constexpr int V16 = static_cast<int>(16 / sizeof(T));
    const T* w = weight.data<T>();
    T* o = out.data<T>();
    const bool vec = D % V16 == 0 && reinterpret_cast<std::uintptr_t>(w) % 16 == 0 &&
                     reinterpret_cast<std::uintptr_t>(o) % 16 == 0;
    with_index_type(indices, [&](const auto* idx) {
      using I = std::remove_cv_t<std::remove_pointer_t<decltype(idx)>>;
      if (vec) emb_fwd<T, I, V16><<<grid_for(n * (D / V16)), kThreads, 0, stream>>>(w, idx, n, V, D, o);
      else emb_fwd<T, I, 1><<<grid_for(n * D), kThreads, 0, stream>>>(w, idx, n, V, D, o);
      TG_CUDA_CHECK_LAST();
    });
  });
}

template <typename T>
void embedding_bwd_typed(const Tensor& grad, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                         const Tensor& dweight, cudaStream_t stream) {
  using A = typename acc_type<T>::type;
  const std::int64_t m = V * D;
  const T* g = grad.data<T>();
  Tensor buf;  // f32 accumulator for bf16/f16, from the caching pool
  A* acc = nullptr;
  if constexpr (std::is_same_v<T, A>) {
    acc = dweight.data<T>();
  } else {
    buf = tg::empty(Shape{V, D}, {.dtype = DType::f32, .device = grad.device()});
    acc = buf.data<float>();
  }
  TG_CUDA_CHECK(cudaMemsetAsync(acc, 0, static_cast<std::size_t>(m) * sizeof(A), stream));
  with_index_type(indices, [&](const auto* idx) {
    using I = std::remove_cv_t<std::remove_pointer_t<decltype(idx)>>;
    emb_bwd_scatter<T, I, A><<<grid_for(n * D), kThreads, 0, stream>>>(g, idx, n, V, D, acc);
    TG_CUDA_CHECK_LAST();
  });
  if constexpr (!std::is_same_v<T, A>) {
    emb_convert<T><<<grid_for(m), kThreads, 0, stream>>>(acc, m, dweight.data<T>());
    TG_CUDA_CHECK_LAST();
  }
}

void embedding_bwd_cuda(const Tensor& grad, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                        const Tensor& dweight) {
  const Device dev = grad.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(grad.dtype(), "embedding",
                       [&] { embedding_bwd_typed<scalar_t>(grad, indices, n, V, D, dweight, stream); });
}

}  // namespace

TG_REGISTER_KERNEL(embedding_fwd_kernel, CUDA, &embedding_fwd_cuda);
TG_REGISTER_KERNEL(embedding_bwd_kernel, CUDA, &embedding_bwd_cuda);

}  // namespace tg::ops
