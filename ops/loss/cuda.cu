// CUDA kernels of the loss family.
//
// cross_entropy: one fused row kernel (online log-sum-exp in one read of the row, then the
// row's loss) writing the per-row log-sum-exp (kept for backward) and loss; then one block
// sums the row losses in a fixed order (deterministic) into the mean, counts the rows that
// are not ignored (on the device: the host never waits) and reports the range of their
// targets (ops/index_check). mse_loss reduces (a − b)² with cub::DeviceReduce.
#include <climits>
#include <memory>

#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "ops/index_check/range_report.cuh"
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
      // An out-of-range target is reported by the range check; here it only must not be
      // used as an address.
      loss[row] = (t == ignore_index || t < 0 || t >= classes) ? Acc(0) : l - static_cast<Acc>(xr[t]);
    }
  }
}

// One block: count = the rows whose target is not ignore_index, out = Σ loss / count (0
// when count == 0), summed in a fixed order (deterministic), and the smallest and largest
// counted target reported for the range check. `summed` rows have a loss (0 when C == 0).
template <typename T, typename Acc, typename I>
__global__ void __launch_bounds__(kMeanThreads)
    mean_kernel(const Acc* __restrict__ loss, std::int64_t summed, const I* __restrict__ target, std::int64_t n,
                std::int64_t ignore_index, T* __restrict__ out, std::int64_t* __restrict__ count_out,
                range::RangeSink rs) {
  __shared__ Acc smem[32];
  __shared__ std::int64_t cnt_smem[32];
  Acc s = 0;
  for (std::int64_t i = threadIdx.x; i < summed; i += blockDim.x) s += loss[i];
  std::int64_t cnt = 0;
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const auto t = static_cast<long long>(target[i]);
    if (t == ignore_index) continue;
    ++cnt;
    lo = min(lo, t);
    hi = max(hi, t);
  }
  s = gpu::block_allreduce(s, SumOp{}, smem);
  cnt = gpu::block_allreduce(cnt, SumOp{}, cnt_smem);
  range::publish_range<kMeanThreads>(lo, hi, rs);
  if (threadIdx.x == 0) {
    out[0] = static_cast<T>(cnt > 0 ? s / static_cast<Acc>(cnt) : Acc(0));
    count_out[0] = cnt;
  }
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
                            const Tensor& out, const Tensor& lse, const Tensor& count, const RangeVerdict& verdict) {
  const Device dev = logits.device();
  tg::cuda::DeviceGuard guard(dev.index);
  const Stream st = tg::current_stream(dev);
  cudaStream_t stream = tg::cuda::stream_of(st);
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  auto lease = std::make_unique<range::RangeLease>(dev);
  TG_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    Tensor loss = tg::empty(Shape{n}, {.dtype = dtype_of<Acc>(), .device = dev});
    // No class to sum over: every counted row is out of range (the range check reports
    // it), every loss 0.
    const std::int64_t summed = classes > 0 ? n : 0;
    const auto launch = [&](const auto* t) {
      using I = std::remove_cv_t<std::remove_pointer_t<decltype(t)>>;
      if (summed > 0) {
        const T* x = logits.data<T>();
        if (gpu::vec_ok(16, classes, sizeof(T), {x})) {
          launch_ce_rows<T, I, gpu::max_vec<T>()>(x, t, n, classes, ignore_index, lse.data<Acc>(), loss.data<Acc>(),
                                                  stream);
        } else {
          launch_ce_rows<T, I, 1>(x, t, n, classes, ignore_index, lse.data<Acc>(), loss.data<Acc>(), stream);
        }
      }
      mean_kernel<T, Acc, I><<<1, kMeanThreads, 0, stream>>>(loss.data<Acc>(), summed, t, n, ignore_index,
                                                             out.data<T>(), count.data<std::int64_t>(), lease->sink(1));
      TG_CUDA_CHECK_LAST();
    };
    if (target.dtype() == DType::i64) launch(target.data<std::int64_t>());
    else launch(target.data<std::int32_t>());
  });
  range::RangeLease::defer(std::move(lease), st, verdict);
}

template <typename T, typename I>
__global__ void cross_entropy_bwd_kernel_impl(const T* __restrict__ x, const I* __restrict__ target,
                                              const typename acc_type<T>::type* __restrict__ lse,
                                              const T* __restrict__ grad, std::int64_t rows, std::int64_t classes,
                                              std::int64_t ignore_index, const std::int64_t* __restrict__ count_p,
                                              T* __restrict__ dx) {
  using Acc = typename acc_type<T>::type;
  const std::int64_t count = *count_p;
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
                            std::int64_t ignore_index, const Tensor& count_t, const Tensor& dlogits) {
  const std::int64_t* count = count_t.data<std::int64_t>();
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
