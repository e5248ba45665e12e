// CUDA kernels of the rope family. rope_shared_k (below) forms each (position, pair)
// item's sine and cosine once per CTA and applies them to many sequences' rows; rope_k is
// the general path (more than kThreads · kItems pairs a position, grids past its limits):
// a CTA takes a run of rows, their frequencies and positions formed once into shared memory
// (an f64 exp2, or the 64-bit divisions that find a row's sequence, per pair would make the
// kernel wait on them), and each (row, pair) then costs three f64 operations for the angle,
// one f32 sincos and the pair's loads and stores, which neighbouring threads make coalesced
// (pairs i and i + D/2, or 2i and 2i + 1). Columns past rotary_dim are copied.
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
constexpr int kItems = 8;                      // (position, pair) items a thread of rope_shared_k holds
constexpr std::int64_t kMinSequences = 8;      // sequences a CTA of rope_shared_k streams, at least

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

// Rotates the pair (a, b) by the angle of cosine c and sine sn into (oa, ob); both are read
// before either is written, so the output may be the input.
template <typename T>
__device__ __forceinline__ void rotate(const T* a, const T* b, typename acc_type<T>::type c,
                                       typename acc_type<T>::type sn, T* oa, T* ob) {
  const auto va = load(a), vb = load(b);
  store(oa, va * c - vb * sn);
  store(ob, va * sn + vb * c);
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
    rotate(x + row + ia, x + row + ib, c, sn, out + row + ia, out + row + ib);
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

// The same rotation where a (position, pair) item's sine and cosine serve every sequence:
// a CTA takes up to kThreads · kItems items (a run of positions, all pairs) of one group of
// sequences, forms their angles once into registers, then streams that block of rows of
// each of its sequences (a part of the group: the grid's y) through them. The trig costs
// ~40 instructions an item, which per element made the row kernel instruction-bound (37%
// of a copy at bf16); here it is paid once per CTA. A thread's items are runs of V
// neighbouring pairs: with split halves each half of a run is one access, with INTER (pairs
// interleaved) the run's 2V elements are one; the host picks V so that an access is 16 bytes
// where the layout allows (one load of 2 bytes per element kept the bf16 kernel at ~70% of a
// copy), else V = 1 (then g.interleaved decides the layout).
template <typename T, typename P, int V, bool INTER>
__global__ void __launch_bounds__(kThreads)
    rope_shared_k(const T* __restrict__ x, const P* __restrict__ positions, RopeGeometry g, int pos_per_cta, int nsplit,
                  T* __restrict__ out) {
  using Acc = typename acc_type<T>::type;
  struct alignas(sizeof(T) * V) Run {  // V elements of a half
    T v[V];
  };
  struct alignas(sizeof(T) * 2 * V) Pairs {  // V interleaved pairs
    T v[2 * V];
  };
  constexpr int K = kItems / V;  // runs a thread holds
  const int half = static_cast<int>(g.rotary_dim / 2), runs = half / V;
  const std::int64_t per_group = g.groups > 0 ? g.n / g.groups : g.n;
  const std::int64_t s0 = static_cast<std::int64_t>(blockIdx.x) * pos_per_cta;
  const int np = static_cast<int>(min(static_cast<std::int64_t>(pos_per_cta), g.s - s0));
  const std::int64_t grp = blockIdx.y / nsplit, part = blockIdx.y % nsplit;
  const std::int64_t chunk = (per_group + nsplit - 1) / nsplit;
  const std::int64_t n0 = grp * per_group + part * chunk, n1 = min(n0 + chunk, (grp + 1) * per_group);
  const int items = np * runs;
  Acc cs[K][V], sn[K][V];
  int ia[K], ib[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int e = threadIdx.x + k * kThreads;
    ia[k] = ib[k] = 0;
#pragma unroll
    for (int j = 0; j < V; ++j) cs[k][j] = Acc(1), sn[k][j] = Acc(0);
    if (e >= items) continue;
    const int lr = e / runs, i = (e - lr * runs) * V;
    const std::int64_t s = s0 + lr;
    const std::int64_t p =
        positions != nullptr ? static_cast<std::int64_t>(__ldg(positions + grp * g.s + s)) : g.offset + s;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      sincos_acc<T>(rope_math::reduced_angle(p, rope_math::frequency(i + j, g.rotary_dim, g.log2_base)), &sn[k][j],
                    &cs[k][j]);
      if (g.inverse) sn[k][j] = -sn[k][j];
    }
    ia[k] = lr * static_cast<int>(g.d) + (g.interleaved ? 2 * i : i);
    ib[k] = lr * static_cast<int>(g.d) + (g.interleaved ? 2 * i + 1 : i + half);
  }
  const int rest = static_cast<int>(g.d - g.rotary_dim);
  for (std::int64_t n = n0; n < n1; ++n) {
    const std::int64_t base = (n * g.s + s0) * g.d;
    const T* xr = x + base;
    T* orow = out + base;
    if constexpr (INTER) {
      Pairs r[K];
#pragma unroll
      for (int k = 0; k < K; ++k)
        if (threadIdx.x + k * kThreads < items) r[k] = *reinterpret_cast<const Pairs*>(xr + ia[k]);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (threadIdx.x + k * kThreads < items) {
          Pairs o;
#pragma unroll
          for (int j = 0; j < V; ++j)
            rotate(&r[k].v[2 * j], &r[k].v[2 * j + 1], cs[k][j], sn[k][j], &o.v[2 * j], &o.v[2 * j + 1]);
          *reinterpret_cast<Pairs*>(orow + ia[k]) = o;
        }
      }
    } else {
      Run ra[K], rb[K];
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (threadIdx.x + k * kThreads < items) {
          ra[k] = *reinterpret_cast<const Run*>(xr + ia[k]);
          rb[k] = *reinterpret_cast<const Run*>(xr + ib[k]);
        }
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (threadIdx.x + k * kThreads < items) {
          Run oa, ob;
#pragma unroll
          for (int j = 0; j < V; ++j) rotate(&ra[k].v[j], &rb[k].v[j], cs[k][j], sn[k][j], &oa.v[j], &ob.v[j]);
          *reinterpret_cast<Run*>(orow + ia[k]) = oa;
          *reinterpret_cast<Run*>(orow + ib[k]) = ob;
        }
      }
    }
    for (int e = threadIdx.x; e < np * rest; e += kThreads) {
      const int lr = e / rest, j = e - lr * rest;
      const std::int64_t off = static_cast<std::int64_t>(lr) * g.d + g.rotary_dim + j;
      orow[off] = xr[off];
    }
  }
}

// Elements of one 16-byte access, at most kItems.
template <typename T>
constexpr int kRun = static_cast<int>(16 / sizeof(T)) < kItems ? static_cast<int>(16 / sizeof(T)) : kItems;

// Whether rope_shared_k can take runs of whole 16-byte accesses (kRun<T> pairs of split halves,
// kRun<T> / 2 interleaved pairs): every row and every half a whole number of runs, both tensors
// aligned to an access.
template <typename T>
bool rope_runs_fit(const RopeGeometry& g, const void* x, const void* out) {
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % (kRun<T> * sizeof(T)) == 0; };
  const int pairs = g.interleaved ? kRun<T> / 2 : kRun<T>;
  return (g.rotary_dim / 2) % pairs == 0 && g.d % kRun<T> == 0 && aligned(x) && aligned(out);
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
  // rope_shared_k where a CTA's items hold every pair of a position and the grid fits.
  const std::int64_t groups = std::max<std::int64_t>(g.groups, 1), per_group = g.n / groups;
  const std::int64_t ppc =
      std::min<std::int64_t>(std::max<std::int64_t>(kThreads * kItems / std::max<std::int64_t>(half, 1), 1), g.s);
  const std::int64_t ctas_s = (g.s + ppc - 1) / ppc;
  const std::int64_t want = 8 * std::int64_t(tg::cuda::multiprocessor_count(dev.index));
  // Parts of a group: enough CTAs to fill the GPU, but at least kMinSequences sequences a CTA
  // where the group has them: a CTA forms 2048 angles (an f64 exp2 each) before it streams,
  // and with one or two sequences a CTA (96 of them on 16 runs of positions, the example's
  // shape) that took 39 us a call.
  const std::int64_t nsplit = std::clamp<std::int64_t>(
      std::min((want + ctas_s * groups - 1) / (ctas_s * groups), per_group / kMinSequences), 1, per_group);
  const bool shared = half <= kThreads * kItems && g.d * ppc < (std::int64_t(1) << 31) && groups * nsplit <= 65535 &&
                      ctas_s <= 0x7fffffff;
  TG_DISPATCH_FLOATING(x.dtype(), "rope", [&] {
    using T = scalar_t;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    if (shared) {
      const dim3 grid2(static_cast<unsigned>(ctas_s), static_cast<unsigned>(groups * nsplit));
      const int pp = static_cast<int>(ppc), ns = static_cast<int>(nsplit);
      const auto launch = [&]<int V, bool INTER>() {
        if (!positions.defined()) {
          rope_shared_k<T, std::int64_t, V, INTER><<<grid2, kThreads, 0, stream>>>(px, nullptr, g, pp, ns, po);
        } else if (positions.dtype() == DType::i64) {
          rope_shared_k<T, std::int64_t, V, INTER>
              <<<grid2, kThreads, 0, stream>>>(px, positions.data<std::int64_t>(), g, pp, ns, po);
        } else {
          rope_shared_k<T, std::int32_t, V, INTER>
              <<<grid2, kThreads, 0, stream>>>(px, positions.data<std::int32_t>(), g, pp, ns, po);
        }
      };
      if (!rope_runs_fit<T>(g, px, po))
        launch.template operator()<1, false>();
      else if (g.interleaved)
        launch.template operator()<kRun<T> / 2, true>();
      else
        launch.template operator()<kRun<T>, false>();
    } else if (!positions.defined()) {
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
