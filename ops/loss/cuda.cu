// CUDA kernels of the loss family.
//
// cross_entropy: one fused row kernel (online log-sum-exp in one read of the row, then the
// row's loss) writing the per-row log-sum-exp (kept for backward) and loss; then one block
// sums the row losses in a fixed order (deterministic) into the mean. mse_loss reduces
// (a − b)² with cub::DeviceReduce.
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "ops/loss/kernels.h"
#include "ops/reduce/cuda_math.cuh"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using gpu::MaxSum;
using gpu::MaxSumOp;
using gpu::SumOp;

constexpr int kWarpRows = 8;  // rows (warps) per block on the warp-per-row path
constexpr std::int64_t kWarpMaxCols = 1024;
constexpr int kMeanThreads = 1024;

// Rows of <= kWarpMaxCols classes: one warp each (block 32 x kWarpRows); longer rows: one
// 1-d block each. VEC > 1 only when every row is 16-byte aligned.
template <typename T, typename I, int VEC, bool WARP>
__global__ void cross_entropy_rows_kernel(const T* __restrict__ x, const I* __restrict__ target, std::int64_t rows,
                                          std::int64_t classes, std::int64_t ignore_index,
                                          typename acc_type<T>::type* __restrict__ lse,
                                          typename acc_type<T>::type* __restrict__ loss) {
  using Acc = typename acc_type<T>::type;
  __shared__ MaxSum<Acc> smem[32];
  const Acc ninf = gpu::neg_inf<Acc>();
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : static_cast<int>(blockDim.x);
  std::int64_t row = WARP ? static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y : blockIdx.x;
  const std::int64_t step = WARP ? static_cast<std::int64_t>(gridDim.x) * blockDim.y : gridDim.x;
  const std::int64_t nvec = classes / VEC;
  for (; row < rows; row += step) {
    const T* xr = x + row * classes;
    MaxSum<Acc> ms{ninf, Acc(0)};
    for (std::int64_t j = tid; j < nvec; j += nt) {
      Acc v[VEC];
      gpu::load_pack<VEC>(xr + j * VEC, v);
      Acc lm = ninf;
#pragma unroll
      for (int k = 0; k < VEC; ++k) lm = gpu::nan_max(lm, v[k]);
      const Acc nm = gpu::nan_max(ms.m, lm);
      Acc ls = 0;
#pragma unroll
      for (int k = 0; k < VEC; ++k) ls += gpu::exp_sub(v[k], nm);
      ms.s = ms.s * gpu::exp_sub(ms.m, nm) + ls;
      ms.m = nm;
    }
    if constexpr (WARP) ms = gpu::warp_allreduce(ms, MaxSumOp{});
    else ms = gpu::block_allreduce(ms, MaxSumOp{}, smem);
    if (tid == 0) {
      const Acc l = ms.m == ninf ? ninf : ms.m + gpu::acc_log(ms.s);
      lse[row] = l;
      const auto t = static_cast<std::int64_t>(target[row]);
      // Targets were range-checked on the host; the bound check only guards memory.
      loss[row] = (t == ignore_index || t < 0 || t >= classes) ? Acc(0) : l - static_cast<Acc>(xr[t]);
    }
  }
}

// out = Σ loss / count (0 when count == 0), summed by one block in a fixed order.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kMeanThreads)
    mean_kernel(const Acc* __restrict__ loss, std::int64_t n, std::int64_t count, T* __restrict__ out) {
  __shared__ Acc smem[32];
  Acc s = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += loss[i];
  s = gpu::block_allreduce(s, SumOp{}, smem);
  if (threadIdx.x == 0) out[0] = static_cast<T>(count > 0 ? s / static_cast<Acc>(count) : Acc(0));
}

template <typename T, typename I, int VEC>
void launch_ce_rows(const T* x, const I* t, std::int64_t rows, std::int64_t classes, std::int64_t ignore,
                    typename acc_type<T>::type* lse, typename acc_type<T>::type* loss, cudaStream_t stream) {
  if (classes <= kWarpMaxCols) {
    cross_entropy_rows_kernel<T, I, VEC, true>
        <<<gpu::grid_for(rows, kWarpRows), dim3(32, kWarpRows), 0, stream>>>(x, t, rows, classes, ignore, lse, loss);
  } else {
    const int threads = classes <= 8192 ? 256 : 512;
    cross_entropy_rows_kernel<T, I, VEC, false>
        <<<gpu::grid_for(rows, 1), threads, 0, stream>>>(x, t, rows, classes, ignore, lse, loss);
  }
  TG_CUDA_CHECK_LAST();
}

void cross_entropy_fwd_cuda(const Tensor& logits, const Tensor& target, std::int64_t ignore_index,
                            std::int64_t count, const Tensor& out, const Tensor& lse) {
  const Device dev = logits.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  TG_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    Tensor loss = tg::empty(Shape{n}, {.dtype = dtype_of<Acc>(), .device = dev});
    std::int64_t summed = n;
    if (n > 0 && classes > 0) {
      const T* x = logits.data<T>();
      const bool vec = gpu::vec_ok(16, classes, sizeof(T), {x});
      auto rows = [&](const auto* t) {
        using I = std::remove_cv_t<std::remove_pointer_t<decltype(t)>>;
        if (vec) launch_ce_rows<T, I, gpu::max_vec<T>()>(x, t, n, classes, ignore_index, lse.data<Acc>(),
                                                         loss.data<Acc>(), stream);
        else launch_ce_rows<T, I, 1>(x, t, n, classes, ignore_index, lse.data<Acc>(), loss.data<Acc>(), stream);
      };
      if (target.dtype() == DType::i64) rows(target.data<std::int64_t>());
      else rows(target.data<std::int32_t>());
    } else {
      // No class to sum over: every row was ignored (the host check saw to that), so
      // every row loss is 0 and count is 0.
      summed = 0;
    }
    mean_kernel<T, Acc><<<1, kMeanThreads, 0, stream>>>(loss.data<Acc>(), summed, count, out.data<T>());
    TG_CUDA_CHECK_LAST();
  });
}

template <typename T, typename I>
__global__ void cross_entropy_bwd_kernel_impl(const T* __restrict__ x, const I* __restrict__ target,
                                              const typename acc_type<T>::type* __restrict__ lse,
                                              const T* __restrict__ grad, std::int64_t rows, std::int64_t classes,
                                              std::int64_t ignore_index, std::int64_t count, T* __restrict__ dx) {
  using Acc = typename acc_type<T>::type;
  const Acc coef = count > 0 ? static_cast<Acc>(grad[0]) / static_cast<Acc>(count) : Acc(0);
  const std::int64_t n = rows * classes;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const std::int64_t r = i / classes;
    const std::int64_t c = i - r * classes;
    const auto t = static_cast<std::int64_t>(target[r]);
    if (t == ignore_index) {
      dx[i] = static_cast<T>(Acc(0));
    } else {
      const Acc p = gpu::acc_exp(static_cast<Acc>(x[i]) - lse[r]);
      dx[i] = static_cast<T>((p - (c == t ? Acc(1) : Acc(0))) * coef);
    }
  }
}

void cross_entropy_bwd_cuda(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad,
                            std::int64_t ignore_index, std::int64_t count, const Tensor& dlogits) {
  const Device dev = logits.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  TG_DISPATCH_FLOATING(logits.dtype(), "cross_entropy backward", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    const unsigned grid = gpu::grid_for(n * classes, 256);
    if (target.dtype() == DType::i64) {
      cross_entropy_bwd_kernel_impl<T, std::int64_t><<<grid, 256, 0, stream>>>(
          logits.data<T>(), target.data<std::int64_t>(), lse.data<Acc>(), grad.data<T>(), n, classes, ignore_index,
          count, dlogits.data<T>());
    } else {
      cross_entropy_bwd_kernel_impl<T, std::int32_t><<<grid, 256, 0, stream>>>(
          logits.data<T>(), target.data<std::int32_t>(), lse.data<Acc>(), grad.data<T>(), n, classes, ignore_index,
          count, dlogits.data<T>());
    }
    TG_CUDA_CHECK_LAST();
  });
}

template <typename T, typename Acc>
struct SquaredDiff {
  const T* a;
  const T* b;
  __host__ __device__ Acc operator()(std::int64_t i) const {
    const Acc d = static_cast<Acc>(a[i]) - static_cast<Acc>(b[i]);
    return d * d;
  }
};

template <typename T, typename Acc>
__global__ void mse_finalize_kernel(const Acc* sum, std::int64_t n, T* out) {
  const Acc s = n > 0 ? sum[0] : Acc(0);
  out[0] = static_cast<T>(s / static_cast<Acc>(n));  // n == 0: 0 / 0 = nan
}

void mse_fwd_cuda(const Tensor& a, const Tensor& b, const Tensor& out) {
  const Device dev = a.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = a.numel();
  TG_DISPATCH_FLOATING(a.dtype(), "mse_loss", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    Tensor sum = tg::empty(Shape{1}, {.dtype = dtype_of<Acc>(), .device = dev});
    if (n > 0) {
      auto in = thrust::make_transform_iterator(thrust::make_counting_iterator<std::int64_t>(0),
                                                SquaredDiff<T, Acc>{a.data<T>(), b.data<T>()});
      gpu::device_reduce(in, sum.data<Acc>(), n, SumOp{}, Acc(0), dev, stream);
    }
    mse_finalize_kernel<T, Acc><<<1, 1, 0, stream>>>(sum.data<Acc>(), n, out.data<T>());
    TG_CUDA_CHECK_LAST();
  });
}

template <typename T>
__global__ void mse_bwd_kernel_impl(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ grad,
                                    std::int64_t n, T* __restrict__ da, T* __restrict__ db) {
  using Acc = typename acc_type<T>::type;
  const Acc coef = Acc(2) * static_cast<Acc>(grad[0]) / static_cast<Acc>(n);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const Acc d = (static_cast<Acc>(a[i]) - static_cast<Acc>(b[i])) * coef;
    da[i] = static_cast<T>(d);
    db[i] = static_cast<T>(-d);
  }
}

void mse_bwd_cuda(const Tensor& a, const Tensor& b, const Tensor& grad, const Tensor& da, const Tensor& db) {
  const Device dev = a.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t n = a.numel();
  TG_DISPATCH_FLOATING(a.dtype(), "mse_loss backward", [&] {
    using T = scalar_t;
    mse_bwd_kernel_impl<T><<<gpu::grid_for(n, 256), 256, 0, stream>>>(a.data<T>(), b.data<T>(), grad.data<T>(), n,
                                                                      da.data<T>(), db.data<T>());
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(cross_entropy_fwd_kernel, CUDA, &cross_entropy_fwd_cuda);
TG_REGISTER_KERNEL(cross_entropy_bwd_kernel, CUDA, &cross_entropy_bwd_cuda);
TG_REGISTER_KERNEL(mse_fwd_kernel, CUDA, &mse_fwd_cuda);
TG_REGISTER_KERNEL(mse_bwd_kernel, CUDA, &mse_bwd_cuda);

}  // namespace tg::ops
