// CUDA kernel of the rope family. A CTA takes a run of rows; their frequencies and positions
// are formed once into shared memory (an f64 exp2, or the 64-bit divisions that find a
// row's sequence, per pair would make the kernel wait on them), and each (row, pair) then
// costs three f64 operations for the angle, one f32 sincos and the pair's loads and stores,
// which neighbouring threads make coalesced (pairs i and i + D/2, or 2i and 2i + 1).
// Columns past rotary_dim are copied.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "ops/cuda_fast_math.cuh"
#include "ops/rope/angle.h"
#include "ops/rope/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;
constexpr int kWorkPerCta = 4096;              // (row, pair) items a CTA takes, at least one row
constexpr std::int64_t kMaxHalf = 4096;        // pairs whose frequencies fit the shared table (32 KiB)
constexpr std::int64_t kMaxRowsPerCta = 1024;  // positions staged per CTA (8 KiB)

template <typename T>
constexpr bool kIs16 = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

template <typename T>
__device__ __forceinline__ typename acc_type<T>::type load(const T* p) {
  if constexpr (kIs16<T>)
    return gpu::to_f32<T>(p->bits);
  else
    return *p;
}

template <typename T>
__device__ __forceinline__ void store(T* p, typename acc_type<T>::type v) {
  if constexpr (kIs16<T>)
    p->bits = static_cast<std::uint16_t>(gpu::pack2<T>(v, 0.f) & 0xffffu);
  else
    *p = v;
}

template <typename T>
__device__ __forceinline__ void sincos_acc(double angle, typename acc_type<T>::type* s, typename acc_type<T>::type* c) {
  if constexpr (std::is_same_v<T, double>)
    sincos(angle, s, c);
  else
    sincosf(static_cast<float>(angle), s, c);
}

template <typename T, typename P>
__global__ void __launch_bounds__(kThreads) rope_k(const T* __restrict__ x, const P* __restrict__ positions,
                                                   RopeGeometry g, int rows_per_cta, T* __restrict__ out) {
  using Acc = typename acc_type<T>::type;
  extern __shared__ double freq[];  // [half] frequencies, then [rows_per_cta] positions
  std::int64_t* pos = reinterpret_cast<std::int64_t*>(freq + g.rotary_dim / 2);
  const int half = static_cast<int>(g.rotary_dim / 2);
  const std::int64_t rows = g.n * g.s, per_group = g.groups > 0 ? g.n / g.groups : 1;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * rows_per_cta;
  const int nr = static_cast<int>(min(static_cast<std::int64_t>(rows_per_cta), rows - r0));
  for (int i = threadIdx.x; i < half; i += kThreads) freq[i] = rope_math::frequency(i, g.rotary_dim, g.log2_base);
  // A row's position once per row: the 64-bit divisions stay out of the per-pair loop.
  for (int lr = threadIdx.x; lr < nr; lr += kThreads) {
    const std::int64_t r = r0 + lr, n = r / g.s, s = r - n * g.s;
    pos[lr] =
        positions != nullptr ? static_cast<std::int64_t>(__ldg(positions + n / per_group * g.s + s)) : g.offset + s;
  }
  __syncthreads();
  const int items = nr * half;
  for (int e = threadIdx.x; e < items; e += kThreads) {
    const int lr = e / half, i = e - lr * half;
    Acc sn, c;
    sincos_acc<T>(rope_math::reduced_angle(pos[lr], freq[i]), &sn, &c);
    if (g.inverse) sn = -sn;
    const int ia = g.interleaved ? 2 * i : i, ib = g.interleaved ? 2 * i + 1 : i + half;
    const std::int64_t row = (r0 + lr) * g.d;
    const Acc va = load(x + row + ia), vb = load(x + row + ib);
    store(out + row + ia, va * c - vb * sn);
    store(out + row + ib, va * sn + vb * c);
  }
  const int rest = static_cast<int>(g.d - g.rotary_dim);
  if (rest > 0) {
    for (int e = threadIdx.x; e < nr * rest; e += kThreads) {
      const int lr = e / rest, j = e - lr * rest;
      const std::int64_t off = (r0 + lr) * g.d + g.rotary_dim + j;
      out[off] = x[off];
    }
  }
}

void rope_cuda(const Tensor& x, const Tensor& positions, const RopeGeometry& g, const Tensor& out) {
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t half = g.rotary_dim / 2, rows = g.n * g.s;
  TG_CHECK(half <= kMaxHalf, ShapeError, "rope: rotary_dim must be at most ", 2 * kMaxHalf, " on CUDA, got ",
           g.rotary_dim);
  const int rows_per_cta =
      static_cast<int>(std::clamp<std::int64_t>(kWorkPerCta / std::max(half, g.d - g.rotary_dim), 1, kMaxRowsPerCta));
  const std::int64_t grid = (rows + rows_per_cta - 1) / rows_per_cta;
  TG_CHECK(grid <= 0x7fffffff, ShapeError, "rope: x ", x.shape(), " has too many rows for one launch");
  const std::size_t smem =
      static_cast<std::size_t>(half) * sizeof(double) + static_cast<std::size_t>(rows_per_cta) * sizeof(std::int64_t);
  TG_DISPATCH_FLOATING(x.dtype(), "rope", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    if (!positions.defined()) {
      rope_k<T, std::int64_t>
          <<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(px, nullptr, g, rows_per_cta, po);
    } else if (positions.dtype() == DType::i64) {
      rope_k<T, std::int64_t><<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(
          px, positions.data<std::int64_t>(), g, rows_per_cta, po);
    } else {
      rope_k<T, std::int32_t><<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(
          px, positions.data<std::int32_t>(), g, rows_per_cta, po);
    }
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(rope_kernel, CUDA, &rope_cuda);

}  // namespace tg::ops
