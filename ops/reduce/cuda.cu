// CUDA kernels of the reduce family. Full reductions go through cub::DeviceReduce (temp
// storage from the caching pool); last-dim reductions use one warp per short row and one
// block per long row, with 16-byte loads where the rows are aligned (16-bit sums: one warp
// per row up to 8192 elements, several loads in flight per lane).
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "ops/reduce/cuda_math.cuh"
#include "ops/reduce/kernels.h"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using gpu::ArgMax;
using gpu::ArgMaxOp;
using gpu::SumOp;

template <typename T, typename Acc>
struct ToAcc {
  __host__ __device__ Acc operator()(const T& v) const { return static_cast<Acc>(v); }
};

template <typename T, typename Acc>
struct ToArgMax {
  const T* p;
  __host__ __device__ ArgMax<Acc> operator()(std::int64_t i) const { return {static_cast<Acc>(p[i]), i}; }
};

template <typename T, typename Acc>
__global__ void finalize_sum_kernel(const Acc* acc, std::int64_t n, bool mean, T* out) {
  const Acc s = n > 0 ? acc[0] : Acc(0);
  out[0] = static_cast<T>(mean ? s / static_cast<Acc>(n) : s);  // mean of nothing: 0 / 0 = nan
}

template <typename T, typename Acc>
__global__ void finalize_argmax_kernel(const ArgMax<Acc>* r, T* out, std::int64_t* index) {
  out[0] = static_cast<T>(r->v);
  index[0] = r->i;
}

void reduce_all_cuda(const Tensor& x, ReduceKind kind, const Tensor& out, const Tensor& index) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = x.numel();
  TG_DISPATCH_FLOATING(x.dtype(), "reduce", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* px = x.data<scalar_t>();
    if (kind == ReduceKind::Max) {
      Tensor best = tg::empty(Shape{static_cast<std::int64_t>((sizeof(ArgMax<Acc>) + 7) / 8)},
                              {.dtype = DType::i64, .device = dev});
      auto* pb = static_cast<ArgMax<Acc>*>(best.data_ptr());
      auto in = thrust::make_transform_iterator(thrust::make_counting_iterator<std::int64_t>(0),
                                                ToArgMax<scalar_t, Acc>{px});
      // init comes last in the argmax order, so any real element replaces it.
      gpu::device_reduce(in, pb, n, ArgMaxOp{}, ArgMax<Acc>{gpu::neg_inf<Acc>(), INT64_MAX}, dev, stream);
      finalize_argmax_kernel<scalar_t, Acc><<<1, 1, 0, stream>>>(pb, out.data<scalar_t>(), index.data<std::int64_t>());
      TG_CUDA_CHECK_LAST();
      return;
    }
    Tensor acc = tg::empty(Shape{1}, {.dtype = dtype_of<Acc>(), .device = dev});
    if (n > 0) {
      auto in = thrust::make_transform_iterator(px, ToAcc<scalar_t, Acc>{});
      gpu::device_reduce(in, acc.data<Acc>(), n, SumOp{}, Acc(0), dev, stream);
    }
    finalize_sum_kernel<scalar_t, Acc>
        <<<1, 1, 0, stream>>>(acc.data<Acc>(), n, kind == ReduceKind::Mean, out.data<scalar_t>());
    TG_CUDA_CHECK_LAST();
  });
}

constexpr int kWarpRowsPerBlock = 8;    // rows per block on the warp-per-row path
constexpr std::int64_t kWarpMaxCols = 1024;

// One row per warp (WARP: block = 32 x kWarpRowsPerBlock) or per block (1-d block, a
// multiple of 32). VEC > 1 only when cols % VEC == 0 and x is 16-byte aligned.
template <typename T, int VEC, bool WARP, bool MAX>
__global__ void reduce_rows_kernel_impl(const T* __restrict__ x, std::int64_t rows, std::int64_t cols, bool mean,
                                        T* __restrict__ out, std::int64_t* __restrict__ index) {
  using Acc = typename acc_type<T>::type;
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : blockDim.x;
  std::int64_t row = WARP ? static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y : blockIdx.x;
  const std::int64_t row_step = WARP ? static_cast<std::int64_t>(gridDim.x) * blockDim.y : gridDim.x;
  const std::int64_t nvec = cols / VEC;
  for (; row < rows; row += row_step) {
    const T* xr = x + row * cols;
    if constexpr (MAX) {
      __shared__ ArgMax<Acc> smem[32];
      ArgMax<Acc> best{gpu::neg_inf<Acc>(), INT64_MAX};
      for (std::int64_t j = tid; j < nvec; j += nt) {
        Acc v[VEC];
        gpu::load_pack<VEC>(xr + j * VEC, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) best = ArgMaxOp{}(best, ArgMax<Acc>{v[k], j * VEC + k});
      }
      if constexpr (WARP) best = gpu::warp_allreduce(best, ArgMaxOp{});
      else best = gpu::block_allreduce(best, ArgMaxOp{}, smem);
      if (tid == 0) {
        out[row] = static_cast<T>(best.v);
        index[row] = best.i;
      }
    } else {
      __shared__ Acc smem[32];
      Acc s = 0;
#pragma unroll 4
      for (std::int64_t j = tid; j < nvec; j += nt) {
        Acc v[VEC];
        gpu::load_pack<VEC>(xr + j * VEC, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) s += v[k];
      }
      if constexpr (WARP) s = gpu::warp_allreduce(s, SumOp{});
      else s = gpu::block_allreduce(s, SumOp{}, smem);
      if (tid == 0) out[row] = static_cast<T>(mean ? s / static_cast<Acc>(cols) : s);
    }
  }
}

// Sum/mean of 16-bit rows (16-byte aligned, cols % 8 == 0, cols <= kWarp16MaxCols): one
// warp per row, each lane issuing kBatch 16-byte loads before adding any of them. The
// block path (one 256-thread block per 4 KB bf16 row of 2048: one load per thread, then a
// block all-reduce) was latency-bound at 59-67% of the copy rate.
constexpr std::int64_t kWarp16MaxCols = 8192;

template <typename T>
__global__ void __launch_bounds__(32 * kWarpRowsPerBlock)
    sum_rows_warp16(const T* __restrict__ x, std::int64_t rows, std::int64_t cols, bool mean, T* __restrict__ out) {
  static_assert(sizeof(T) == 2, "16-bit types only");
  constexpr int V = 8;       // elements per 16-byte load
  constexpr int kBatch = 8;  // loads in flight per lane: a 2048-element row in one batch
  const int lane = threadIdx.x;
  const std::int64_t nvec = cols / V;
  for (std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<std::int64_t>(gridDim.x) * blockDim.y) {
    const T* xr = x + row * cols;
    float s = 0;
    for (std::int64_t j0 = lane; j0 < nvec; j0 += 32 * kBatch) {
      gpu::Pack<T, V> pk[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const std::int64_t j = j0 + b * 32;
        if (j < nvec) pk[b] = *reinterpret_cast<const gpu::Pack<T, V>*>(xr + j * V);
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (j0 + b * 32 < nvec) {
#pragma unroll
          for (int k = 0; k < V; ++k) s += static_cast<float>(pk[b].v[k]);
        }
      }
    }
    s = gpu::warp_allreduce(s, SumOp{});
    if (lane == 0) out[row] = static_cast<T>(mean ? s / static_cast<float>(cols) : s);
  }
}

template <typename T, int VEC, bool MAX>
void launch_rows(const T* x, std::int64_t rows, std::int64_t cols, bool mean, T* out, std::int64_t* index,
                 cudaStream_t stream) {
  if (cols <= kWarpMaxCols) {
    const dim3 block(32, kWarpRowsPerBlock);
    reduce_rows_kernel_impl<T, VEC, true, MAX>
        <<<gpu::grid_for(rows, kWarpRowsPerBlock), block, 0, stream>>>(x, rows, cols, mean, out, index);
  } else {
    const int threads = cols <= 16384 ? 256 : 512;
    reduce_rows_kernel_impl<T, VEC, false, MAX>
        <<<gpu::grid_for(rows, 1), threads, 0, stream>>>(x, rows, cols, mean, out, index);
  }
  TG_CUDA_CHECK_LAST();
}

void reduce_rows_cuda(const Tensor& x, std::int64_t rows, std::int64_t cols, ReduceKind kind, const Tensor& out,
                      const Tensor& index) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  TG_DISPATCH_FLOATING(x.dtype(), "reduce", [&] {
    using T = scalar_t;
    constexpr int V = gpu::max_vec<T>();
    const T* px = x.data<T>();
    T* po = out.data<T>();
    std::int64_t* pi = index.defined() ? index.data<std::int64_t>() : nullptr;
    const bool mean = kind == ReduceKind::Mean;
    const bool vec = gpu::vec_ok(16, cols, sizeof(T), {px});
    if constexpr (sizeof(T) == 2) {
      if (vec && kind != ReduceKind::Max && cols <= kWarp16MaxCols) {
        const dim3 block(32, kWarpRowsPerBlock);
        sum_rows_warp16<T><<<gpu::grid_for(rows, kWarpRowsPerBlock), block, 0, stream>>>(px, rows, cols, mean, po);
        TG_CUDA_CHECK_LAST();
        return;
      }
    }
    if (kind == ReduceKind::Max) {
      if (vec) launch_rows<T, V, true>(px, rows, cols, mean, po, pi, stream);
      else launch_rows<T, 1, true>(px, rows, cols, mean, po, pi, stream);
    } else {
      if (vec) launch_rows<T, V, false>(px, rows, cols, mean, po, pi, stream);
      else launch_rows<T, 1, false>(px, rows, cols, mean, po, pi, stream);
    }
  });
}

template <typename T>
__global__ void expand_kernel(const T* __restrict__ g, std::int64_t n, std::int64_t cols,
                              typename acc_type<T>::type factor, T* __restrict__ dx) {
  using Acc = typename acc_type<T>::type;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dx[i] = static_cast<T>(static_cast<Acc>(g[i / cols]) * factor);
  }
}

void expand_cuda(const Tensor& g, std::int64_t cols, double factor, const Tensor& dx) {
  const Device dev = dx.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = dx.numel();
  TG_DISPATCH_FLOATING(dx.dtype(), "reduce backward", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    expand_kernel<scalar_t><<<gpu::grid_for(n, 256), 256, 0, stream>>>(g.data<scalar_t>(), n, cols,
                                                                       static_cast<Acc>(factor), dx.data<scalar_t>());
    TG_CUDA_CHECK_LAST();
  });
}

template <typename T>
__global__ void scatter_kernel(const T* __restrict__ g, const std::int64_t* __restrict__ index, std::int64_t n,
                               std::int64_t cols, T* __restrict__ dx) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t r = i / cols;
    dx[i] = (i - r * cols == index[r]) ? g[r] : static_cast<T>(0.0f);
  }
}

void scatter_cuda(const Tensor& g, const Tensor& index, std::int64_t cols, const Tensor& dx) {
  const Device dev = dx.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = dx.numel();
  TG_DISPATCH_FLOATING(dx.dtype(), "max backward", [&] {
    scatter_kernel<scalar_t><<<gpu::grid_for(n, 256), 256, 0, stream>>>(
        g.data<scalar_t>(), index.data<std::int64_t>(), n, cols, dx.data<scalar_t>());
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(reduce_all_kernel, CUDA, &reduce_all_cuda);
TG_REGISTER_KERNEL(reduce_rows_kernel, CUDA, &reduce_rows_cuda);
TG_REGISTER_KERNEL(reduce_expand_kernel, CUDA, &expand_cuda);
TG_REGISTER_KERNEL(reduce_scatter_kernel, CUDA, &scatter_cuda);

}  // namespace tg::ops
