// CUDA kernels of the factory family. The random kernels call the same per-element
// functions as the CPU ones (random_math.h), so both give the same numbers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/copy/cast.h"
#include "ops/factory/kernels.h"
#include "ops/factory/random_math.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(std::int64_t n) {
  // Grid-stride loops: a capped grid covers any numel and fills every SM.
  return static_cast<unsigned>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, 1 << 16));
}

/// Runs f(i) for every i in [0, n) with a grid-stride loop.
template <typename F>
__global__ void for_each_index(std::int64_t n, F f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <typename F>
void launch(const Tensor& out, F f) {
  const std::int64_t n = out.numel();
  if (n == 0) return;
  tg::cuda::DeviceGuard guard(out.device().index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(out.device().index);
  for_each_index<<<grid_for(n), kThreads, 0, stream>>>(n, f);
  TG_CUDA_CHECK_LAST();
}

void fill_cuda(const Tensor& out, double value) {
  // All-zero bytes are 0 in every dtype: let the backend memset (but keep -0.0's sign bit).
  if (value == 0.0 && !std::signbit(value)) {
    runtime::Backend& b = runtime::backend(out.device());
    b.memset_zero(out.data_ptr(), out.nbytes(), b.current_stream(out.device()));
    return;
  }
  TG_DISPATCH_ALL(out.dtype(), "fill", [&] {
    const scalar_t v = cast_value<scalar_t>(value);
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    launch(out, [=] __device__(std::int64_t i) { p[i] = v; });
  });
}

void rand_uniform_cuda(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) {
  TG_DISPATCH_FLOATING(out.dtype(), "rand", [&] {
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    launch(out, [=] __device__(std::int64_t i) {
      p[i] = uniform_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), lo, hi);
    });
  });
}

void rand_normal_cuda(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) {
  TG_DISPATCH_FLOATING(out.dtype(), "randn", [&] {
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    launch(out, [=] __device__(std::int64_t i) {
      p[i] = normal_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), mean, std);
    });
  });
}

void rand_int_cuda(const Tensor& out, std::uint64_t seed, std::uint64_t offset, std::int64_t lo, std::int64_t hi) {
  TG_DISPATCH_ALL(out.dtype(), "randint", [&] {
    if constexpr (!std::is_same_v<scalar_t, bool>) {
      scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
      launch(out, [=] __device__(std::int64_t i) {
        p[i] = randint_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), lo, hi);
      });
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(fill, CUDA, &fill_cuda);
TG_REGISTER_KERNEL(rand_uniform, CUDA, &rand_uniform_cuda);
TG_REGISTER_KERNEL(rand_normal, CUDA, &rand_normal_cuda);
TG_REGISTER_KERNEL(rand_int, CUDA, &rand_int_cuda);

}  // namespace tg::ops
