// CUDA kernels of the element-wise family: one generic map kernel over the functors of
// math.h (16-byte vector loads/stores on contiguous operands and rows, strided broadcast
// inputs gathered a 16-byte chunk at a time, per-element reads on the unaligned rest; a
// GPU-only fast GELU for 16-bit types), and a two-phase
// deterministic sum for sum_to (16-byte column loads for 16-bit types).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "ops/common.h"
#include "ops/cuda_fast_math.cuh"
#include "ops/elementwise/kernels.h"
#include "ops/elementwise/math.h"
#include "ops/elementwise/plan.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

template <typename T>
using acc_t = typename acc_type<T>::type;

constexpr int kThreads = 256;

template <typename T, int N, int M>
struct MapPtrs {
  const T* in[N];
  T* out[M];  // null: not written
  bool vec_ok;                // every Contiguous input and every output is 16-byte aligned
  bool row_vec[N];            // Row input k can be read 16 bytes at a time
};

// One 16-byte chunk of T, moved with a single 128-bit load or store.
template <typename T>
struct Chunk {
  static constexpr int kLen = 16 / static_cast<int>(sizeof(T));
  uint4 raw;
  __device__ TG_INLINE T get(int u) const { return reinterpret_cast<const T*>(&raw)[u]; }
  __device__ TG_INLINE void set(int u, T v) { reinterpret_cast<T*>(&raw)[u] = v; }
};

template <typename T>
__device__ TG_INLINE Chunk<T> load_chunk(const T* p) {
  Chunk<T> c;
  c.raw = *reinterpret_cast<const uint4*>(p);
  return c;
}

template <typename T>
__device__ TG_INLINE void store_chunk(T* p, const Chunk<T>& c) {
  *reinterpret_cast<uint4*>(p) = c.raw;
}

__host__ __device__ TG_INLINE bool aligned16(const void* ptr) {
  return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0;
}

// Chunk <-> arithmetic-type conversions. 16-bit types use the hardware converts
// (cvt.rn.{bf16x2,f16x2}.f32: two elements per instruction, round to nearest even like
// core/half.h; only a NaN's payload may differ), where the portable conversions cost ~5
// integer ops per element (f16: branches on both sides), a quarter of bf16 gelu's budget.
template <typename T, typename A>
__device__ TG_INLINE void chunk_to_acc(const Chunk<T>& c, A (&v)[Chunk<T>::kLen]) {
  if constexpr (std::is_same_v<T, half>) {
    const auto* h = reinterpret_cast<const unsigned short*>(&c.raw);
#pragma unroll
    for (int j = 0; j < Chunk<T>::kLen; ++j) v[j] = gpu::to_f32<half>(h[j]);
  } else {
#pragma unroll
    for (int j = 0; j < Chunk<T>::kLen; ++j) v[j] = static_cast<A>(c.get(j));
  }
}

template <typename T, typename A>
__device__ TG_INLINE Chunk<T> acc_to_chunk(const A (&v)[Chunk<T>::kLen]) {
  Chunk<T> c;
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) {
    auto* w = reinterpret_cast<std::uint32_t*>(&c.raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) w[j] = gpu::pack2<T>(v[2 * j], v[2 * j + 1]);
  } else {
#pragma unroll
    for (int j = 0; j < Chunk<T>::kLen; ++j) c.set(j, T(v[j]));
  }
  return c;
}

// How the map kernel finds input k's element for output element i. Contig: every input
// has out's shape. Simple: no Strided input (contiguous, scalar or repeated-row reads):
// leaving out the general index unravelling keeps the kernel's registers low, which is
// what a bias add over [rows, cols] needs to keep enough loads in flight. General: any.
enum class MapKind { Contig, Simple, General };

template <MapKind K, int N>
__device__ TG_INLINE std::int64_t input_offset(const MapPlan<N>& plan, int k, std::int64_t i) {
  if constexpr (K == MapKind::Contig) {
    return i;
  } else if constexpr (K == MapKind::Simple) {
    switch (plan.in[k].mode) {
      case InputMode::Contiguous: return i;
      case InputMode::Scalar: return 0;
      default: return mod_fast(i, plan.in[k].row_len);
    }
  } else {
    return plan.offset(k, i);
  }
}

// Input k of the chunk that starts at element e is a single 16-byte load (contiguous, or
// a row read that cannot wrap: row_len is a multiple of the chunk length).
template <MapKind K, typename T, int N, int M>
__device__ TG_INLINE bool chunk_readable(const MapPtrs<T, N, M>& p, const MapPlan<N>& plan, int k) {
  return K == MapKind::Contig || plan.in[k].mode == InputMode::Contiguous ||
         (plan.in[k].mode == InputMode::Row && p.row_vec[k]);
}

// A General map's Strided input k is read into a chunk like the others, with the chunk's
// other loads (before any math, so that its latency overlaps theirs): one index unravelling
// a chunk, not one an element (keeps the 52 General kernels' code, and their compile time,
// near the others'). The host vectorises General maps only when the innermost coalesced
// extent is a multiple of the chunk length, so the chunk's elements are one innermost stride
// apart: one load for a column broadcast (stride 0), one 16-byte load for an aligned run.
template <MapKind K, int N>
__device__ TG_INLINE bool gathered(const MapPlan<N>& plan, int k) {
  return K == MapKind::General && plan.in[k].mode == InputMode::Strided;
}

template <typename T, int N>
__device__ TG_INLINE Chunk<T> gather_chunk(const T* in, const MapPlan<N>& plan, int k, std::int64_t e) {
  const T* src = in + plan.offset(k, e);
  const std::int64_t step = plan.in[k].strides[plan.ndim - 1];
  if (step == 1 && aligned16(src)) return load_chunk(src);
  Chunk<T> c;
  if (step == 0) {
    const T v = *src;
#pragma unroll
    for (int j = 0; j < Chunk<T>::kLen; ++j) c.set(j, v);
  } else {
#pragma unroll
    for (int j = 0; j < Chunk<T>::kLen; ++j) c.set(j, src[j * step]);
  }
  return c;
}

// 16-byte chunks per thread per grid step: 2 for 16-bit types (both loaded before any
// math, so a thread keeps 32 bytes per input in flight while it computes: bf16 does twice
// the math per byte of f32), 1 for the rest (already at the copy rate).
template <typename T>
constexpr int kChunksPerThread = sizeof(T) == 2 ? 2 : 1;

// out[m][i] = f(inputs at i) for every i in [0, n).
template <typename T, typename F, MapKind K>
__global__ void __launch_bounds__(kThreads)
    map_kernel(MapPtrs<T, F::kIn, F::kOut> p, MapPlan<F::kIn> plan, std::int64_t n, F f) {
  using A = acc_t<T>;
  constexpr int N = F::kIn, M = F::kOut, V = Chunk<T>::kLen, U = kChunksPerThread<T>;
  const std::int64_t nvec = p.vec_ok ? n / V : 0;
  // Block b owns chunks [b * U * blockDim, (b + 1) * U * blockDim) of each grid step;
  // chunk u of a thread is u * blockDim past its first (coalesced for every u).
  const std::int64_t block_span = static_cast<std::int64_t>(blockDim.x) * U;
  const std::int64_t grid_span = static_cast<std::int64_t>(gridDim.x) * block_span;

  for (std::int64_t v0 = static_cast<std::int64_t>(blockIdx.x) * block_span + threadIdx.x; v0 < nvec;
       v0 += grid_span) {
    // Every 16-byte load of the thread first, then the math.
    Chunk<T> raw[U][N];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t e = (v0 + static_cast<std::int64_t>(u) * blockDim.x) * V;
      if (u == 0 || e < nvec * V) {  // chunk 0 is in range (v0 < nvec)
#pragma unroll
        for (int k = 0; k < N; ++k) {
          if (chunk_readable<K>(p, plan, k)) {
            raw[u][k] = load_chunk(p.in[k] + input_offset<K>(plan, k, e));
          } else if (gathered<K>(plan, k)) {
            raw[u][k] = gather_chunk(p.in[k], plan, k, e);
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t e = (v0 + static_cast<std::int64_t>(u) * blockDim.x) * V;
      if (u > 0 && e >= nvec * V) break;
      A x[N][V];
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if (chunk_readable<K>(p, plan, k) || gathered<K>(plan, k)) {
          chunk_to_acc(raw[u][k], x[k]);
        } else if (plan.in[k].mode == InputMode::Scalar) {
          const A sv = static_cast<A>(p.in[k][0]);
#pragma unroll
          for (int j = 0; j < V; ++j) x[k][j] = sv;
        } else {  // a Row input that is not 16-byte readable (Strided ones are gathered)
          constexpr MapKind KR = K == MapKind::General ? MapKind::Simple : K;
#pragma unroll
          for (int j = 0; j < V; ++j) x[k][j] = static_cast<A>(p.in[k][input_offset<KR>(plan, k, e + j)]);
        }
      }
      A y[M][V];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        A xi[N], yi[M];
#pragma unroll
        for (int k = 0; k < N; ++k) xi[k] = x[k][j];
        f(xi, yi);
#pragma unroll
        for (int m = 0; m < M; ++m) y[m][j] = yi[m];
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (p.out[m]) store_chunk(p.out[m] + e, acc_to_chunk<T>(y[m]));
      }
    }
  }

  // The tail after the last full chunk (or everything when not aligned).
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = nvec * V + tid; i < n; i += stride) {
    A xi[N], yi[M];
#pragma unroll
    for (int k = 0; k < N; ++k) xi[k] = static_cast<A>(p.in[k][input_offset<K>(plan, k, i)]);
    f(xi, yi);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (p.out[m]) p.out[m][i] = T(yi[m]);
    }
  }
}

// Blocks for map_kernel over n elements: one grid step covers everything (a grid-stride
// loop covers sizes beyond the cap).
template <typename T>
unsigned map_blocks(std::int64_t n, bool vec_ok) {
  constexpr int V = Chunk<T>::kLen, U = kChunksPerThread<T>;
  const std::int64_t chunk_threads = (n / V + U - 1) / U;
  const std::int64_t work = vec_ok ? std::max<std::int64_t>(chunk_threads, n % V) : n;
  return static_cast<unsigned>(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, 1 << 20));
}

template <typename T, typename F>
void launch_map(Device device, const MapPlan<F::kIn>& plan, const std::array<const T*, F::kIn>& in,
                const std::array<T*, F::kOut>& out, std::int64_t n, const F& f) {
  if (n == 0) return;
  constexpr int V = Chunk<T>::kLen;
  MapPtrs<T, F::kIn, F::kOut> p{};
  p.vec_ok = true;
  bool strided = false;
  for (int k = 0; k < F::kIn; ++k) {
    p.in[k] = in[static_cast<std::size_t>(k)];
    if (plan.in[k].mode == InputMode::Contiguous) p.vec_ok = p.vec_ok && aligned16(p.in[k]);
    p.row_vec[k] = plan.in[k].mode == InputMode::Row && plan.in[k].row_len % V == 0 && aligned16(p.in[k]);
    strided = strided || plan.in[k].mode == InputMode::Strided;
  }
  for (int m = 0; m < F::kOut; ++m) {
    p.out[m] = out[static_cast<std::size_t>(m)];
    if (p.out[m]) p.vec_ok = p.vec_ok && aligned16(p.out[m]);
  }
  // A chunk of V elements must not cross an innermost-dim boundary of the strided inputs.
  if (strided && (plan.ndim == 0 || plan.sizes[plan.ndim - 1] % V != 0)) p.vec_ok = false;
  const unsigned blocks = map_blocks<T>(n, p.vec_ok);
  tg::cuda::DeviceGuard guard(device.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(device.index);
  if (plan.all_contiguous) {
    map_kernel<T, F, MapKind::Contig><<<blocks, kThreads, 0, stream>>>(p, plan, n, f);
  } else if (!strided) {
    map_kernel<T, F, MapKind::Simple><<<blocks, kThreads, 0, stream>>>(p, plan, n, f);
  } else {
    map_kernel<T, F, MapKind::General><<<blocks, kThreads, 0, stream>>>(p, plan, n, f);
  }
  TG_CUDA_CHECK_LAST();
}

// A map whose N inputs and M outputs all have one shape (only the Contig instantiation).
template <typename T, typename F>
void launch_contig_map(Device device, const std::array<const T*, F::kIn>& in, const std::array<T*, F::kOut>& out,
                       std::int64_t n, const F& f) {
  if (n == 0) return;
  MapPtrs<T, F::kIn, F::kOut> p{};
  p.vec_ok = true;
  for (int k = 0; k < F::kIn; ++k) {
    p.in[k] = in[static_cast<std::size_t>(k)];
    p.vec_ok = p.vec_ok && aligned16(p.in[k]);
  }
  for (int m = 0; m < F::kOut; ++m) {
    p.out[m] = out[static_cast<std::size_t>(m)];
    if (p.out[m]) p.vec_ok = p.vec_ok && aligned16(p.out[m]);
  }
  tg::cuda::DeviceGuard guard(device.index);
  map_kernel<T, F, MapKind::Contig>
      <<<map_blocks<T>(n, p.vec_ok), kThreads, 0, tg::cuda::current_cuda_stream(device.index)>>>(p, MapPlan<F::kIn>{},
                                                                                                 n, f);
  TG_CUDA_CHECK_LAST();
}

// ---- GELU (erf form) for 16-bit storage -----------------------------------------------
// erff costs ~25 instructions per element; at 2 bytes per element that made the bf16 gelu
// kernels instruction-bound (54% / 59% of the copy rate). For bf16/f16 the GPU evaluates
//   Phi(x) = 1 - q (x >= 0) or q (x < 0),   q = Phi(-|x|) = erfc(|x| / sqrt2) / 2,
// with the erfc of Numerical Recipes (erfcc: a Chebyshev fit, relative error < 1.2e-7 for
// every z >= 0 in exact arithmetic):
//   erfc(z) = t exp(-z^2 + P(t)),   t = 1 / (1 + z / 2),   P of degree 9,
// P's coefficients pre-multiplied by log2(e) (and the 1/2 of q folded in) so that the
// exponential is a single ex2: ~16 FMA-pipe ops and 2 MUFU ops per element, no branch.
// Checked in emulated f32 against mpmath: gelu's relative error <= 7.3e-7 for x >= -3 and
// q's relative error <= 8e-6 everywhere (the erf formula of the CPU reference loses every
// digit of Phi below x = -3, where 1 + erf cancels; the absolute differences are < 1e-8).
// f32 and f64 keep the library erf (CPU parity at 1e-5); the CPU keeps exact erf.
using gpu::ex2_approx;
__device__ TG_INLINE float rcp_approx(float x) {  // 1/x, <= 1 ulp; 1/inf = 0
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

constexpr double kLog2e = 1.4426950408889634074;
// erfcc's coefficients c0..c9 times log2(e); c0 also carries log2(1/2) = -1.
constexpr float kQ0 = static_cast<float>(-1.26551223 * kLog2e - 1.0);
constexpr float kQ1 = static_cast<float>(1.00002368 * kLog2e);
constexpr float kQ2 = static_cast<float>(0.37409196 * kLog2e);
constexpr float kQ3 = static_cast<float>(0.09678418 * kLog2e);
constexpr float kQ4 = static_cast<float>(-0.18628806 * kLog2e);
constexpr float kQ5 = static_cast<float>(0.27886807 * kLog2e);
constexpr float kQ6 = static_cast<float>(-1.13520398 * kLog2e);
constexpr float kQ7 = static_cast<float>(1.48851587 * kLog2e);
constexpr float kQ8 = static_cast<float>(-0.82215223 * kLog2e);
constexpr float kQ9 = static_cast<float>(0.17087277 * kLog2e);
constexpr float kHalfInvSqrt2 = static_cast<float>(0.5 * ew::kInvSqrt2);
constexpr float kMinusHalfLog2e = static_cast<float>(-0.5 * kLog2e);

/// q = Phi(-|x|), the lower tail of the standard normal (nan for nan, 0 for +-inf).
__device__ TG_INLINE float normal_lower_tail(float x) {
  const float t = rcp_approx(fmaf(fabsf(x), kHalfInvSqrt2, 1.0f));
  float p = kQ9;
  p = fmaf(p, t, kQ8);
  p = fmaf(p, t, kQ7);
  p = fmaf(p, t, kQ6);
  p = fmaf(p, t, kQ5);
  p = fmaf(p, t, kQ4);
  p = fmaf(p, t, kQ3);
  p = fmaf(p, t, kQ2);
  p = fmaf(p, t, kQ1);
  p = fmaf(p, t, kQ0);
  // log2 of q: -x^2/2 * log2(e) + P(t); ex2 of -inf (|x| = inf or huge) is 0.
  return t * ex2_approx(fmaf(x * x, kMinusHalfLog2e, p));
}

/// Phi(x) from the lower tail: no cancellation for negative x.
__device__ TG_INLINE float normal_cdf_fast(float x) {
  const float q = normal_lower_tail(x);
  return x >= 0.0f ? 1.0f - q : q;  // nan: q (nan)
}

struct GeluErfFastFwd {
  static constexpr int kIn = 1, kOut = 1;
  float s;  // unused (the unary functors' common shape)
  __device__ TG_INLINE void operator()(const float* x, float* y) const { y[0] = x[0] * normal_cdf_fast(x[0]); }
};

struct GeluErfFastBwd {  // inputs: x, grad_out
  static constexpr int kIn = 2, kOut = 1;
  float s;
  __device__ TG_INLINE void operator()(const float* x, float* y) const {
    const float v = x[0];
    const float pdf = ex2_approx(v * v * kMinusHalfLog2e) * static_cast<float>(ew::kInvSqrt2Pi);
    y[0] = x[1] * (normal_cdf_fast(v) + v * pdf);  // inf * 0 = nan at |x| = inf, as on the CPU
  }
};

// The functors of unary op OP for storage type T: the shared math of math.h, except GELU
// (erf) on 16-bit types.
template <UnaryOp OP, typename T>
struct UnaryFunctors {
  using Fwd = ew::UnaryFwd<OP, acc_t<T>>;
  using Bwd = ew::UnaryBwd<OP, acc_t<T>>;
};
template <typename T>
  requires(sizeof(T) == 2)
struct UnaryFunctors<UnaryOp::GeluErf, T> {
  using Fwd = GeluErfFastFwd;
  using Bwd = GeluErfFastBwd;
};

template <UnaryOp OP, typename T>
void unary_fwd_t(const Tensor& x, const Tensor& out, double s) {
  if constexpr (OP == UnaryOp::Copy) {
    // Copy is the only unary op that may broadcast (broadcast_to); the others always
    // get equal shapes, so only their contiguous kernel is instantiated.
    auto plan = make_map_plan<1>(out.shape(), {x.shape()}, unary_op_name(OP));
    launch_map<T>(out.device(), plan, {cptr<T>(x)}, {mptr<T>(out)}, out.numel(), ew::UnaryFwd<OP, acc_t<T>>{0});
  } else {
    // The other ops always get equal shapes: only the contiguous kernel is instantiated.
    using F = typename UnaryFunctors<OP, T>::Fwd;
    launch_contig_map<T>(out.device(), {cptr<T>(x)}, {mptr<T>(out)}, out.numel(),
                         F{static_cast<acc_t<T>>(s)});
  }
}

void unary_fwd_cuda(UnaryOp op, const Tensor& x, const Tensor& out, double s) {
  TG_DISPATCH_FLOATING(out.dtype(), unary_op_name(op), [&] {
    with_op(op, [&](auto o) { unary_fwd_t<decltype(o)::value, scalar_t>(x, out, s); });
  });
}

template <UnaryOp OP, typename T>
void unary_bwd_t(const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  // saved, grad_out and grad_in share one shape
  using F = typename UnaryFunctors<OP, T>::Bwd;
  launch_contig_map<T>(gi.device(), {cptr<T>(saved), cptr<T>(g)}, {mptr<T>(gi)}, gi.numel(),
                       F{static_cast<acc_t<T>>(s)});
}

void unary_bwd_cuda(UnaryOp op, const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  TG_DISPATCH_FLOATING(gi.dtype(), unary_op_name(op), [&] {
    with_op(op, [&](auto o) { unary_bwd_t<decltype(o)::value, scalar_t>(saved, g, gi, s); });
  });
}

template <BinaryOp OP, typename T>
void binary_fwd_t(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto plan = make_map_plan<2>(out.shape(), {a.shape(), b.shape()}, binary_op_name(OP));
  launch_map<T>(out.device(), plan, {cptr<T>(a), cptr<T>(b)}, {mptr<T>(out)}, out.numel(),
                ew::BinaryFwd<OP, acc_t<T>>{});
}

void binary_fwd_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), binary_op_name(op), [&] {
    with_op(op, [&](auto o) { binary_fwd_t<decltype(o)::value, scalar_t>(a, b, out); });
  });
}

template <BinaryOp OP, typename T>
void binary_bwd_t(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga, const Tensor& gb) {
  auto plan = make_map_plan<3>(g.shape(), {a.shape(), b.shape(), g.shape()}, binary_op_name(OP));
  launch_map<T>(g.device(), plan, {cptr<T>(a), cptr<T>(b), cptr<T>(g)}, {mptr<T>(ga), mptr<T>(gb)}, g.numel(),
                ew::BinaryBwd<OP, acc_t<T>>{});
}

void binary_bwd_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga,
                     const Tensor& gb) {
  TG_DISPATCH_FLOATING(g.dtype(), binary_op_name(op), [&] {
    with_op(op, [&](auto o) { binary_bwd_t<decltype(o)::value, scalar_t>(a, b, g, ga, gb); });
  });
}

// ---- sum_to ---------------------------------------------------------------------------
// Blocks of 32 x 8 threads. Phase 1 sums chunk `blockIdx.y` of the reduced positions of
// a tile of outputs into partial[blockIdx.y][k] (or straight into out when there is one
// chunk); phase 2 adds the chunks in a fixed order. No atomics: deterministic.
//  - inner_reduced: each of the 8 warps owns one output; its lanes walk consecutive r
//    (adjacent in memory) and combine with shuffles.
//  - otherwise: the 32 lanes own 32 consecutive outputs (adjacent in memory); the 8 rows
//    of the block split the chunk and combine through shared memory.
constexpr int kSumX = 32, kSumY = 8;

template <typename T, bool kInner, bool kFinal>
__global__ void __launch_bounds__(kSumX* kSumY)
    sum_to_phase1(const T* __restrict__ x, SumToPlan plan, std::int64_t chunk, T* __restrict__ out,
                  acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * chunk;
  const std::int64_t r1 = min(plan.n_red, r0 + chunk);
  if constexpr (kInner) {
    const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kSumY + ty;
    if (k >= plan.n_out) return;  // whole warp leaves together
    const T* base = x + plan.koff(k);
    A acc = 0;
    for (std::int64_t r = r0 + tx; r < r1; r += kSumX) acc += static_cast<A>(base[plan.roff(r)]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (tx == 0) {
      if (kFinal) {
        out[k] = T(acc);
      } else {
        partial[static_cast<std::int64_t>(blockIdx.y) * plan.n_out + k] = acc;
      }
    }
  } else {
    __shared__ A smem[kSumY][kSumX];
    const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kSumX + tx;
    A acc = 0;
    if (k < plan.n_out) {
      const T* base = x + plan.koff(k);
      for (std::int64_t r = r0 + ty; r < r1; r += kSumY) acc += static_cast<A>(base[plan.roff(r)]);
    }
    smem[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && k < plan.n_out) {
      A s = 0;
#pragma unroll
      for (int j = 0; j < kSumY; ++j) s += smem[j][tx];
      if (kFinal) {
        out[k] = T(s);
      } else {
        partial[static_cast<std::int64_t>(blockIdx.y) * plan.n_out + k] = s;
      }
    }
  }
}

// Column sums of 16-bit x whose outputs are adjacent in memory (one kept dim of stride
// 1, e.g. a bias gradient [rows, cols] -> [cols]): each lane owns V = 8 adjacent outputs
// and reads them with one 16-byte load per reduced position (the scalar kernel's 2-byte
// loads left bf16 load-instruction-bound at 75% of the copy rate). The 8 warps of a
// block take every 8th position of the block's chunk, kUnroll loads in flight each, and
// combine through shared memory in a fixed order: deterministic.
// Launched only when n_out % V == 0, x is 16-byte aligned and every reduced stride is a
// multiple of V (every chunk stays aligned).
template <typename T, bool kFinal>
__global__ void __launch_bounds__(kSumX* kSumY)
    sum_to_cols_vec(const T* __restrict__ x, SumToPlan plan, std::int64_t chunk, T* __restrict__ out,
                    acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  constexpr int V = Chunk<T>::kLen;
  constexpr int kUnroll = 4;
  __shared__ A smem[kSumY][V][kSumX];  // [warp][output within the lane][lane]: no bank conflicts
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * chunk;
  const std::int64_t r1 = min(plan.n_red, r0 + chunk);
  const std::int64_t k0 = (static_cast<std::int64_t>(blockIdx.x) * kSumX + tx) * V;  // the lane's first output
  A acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0;
  if (k0 < plan.n_out) {
    const T* base = x + k0;
    std::int64_t r = r0 + ty;
    for (; r + (kUnroll - 1) * kSumY < r1; r += kUnroll * kSumY) {
      Chunk<T> c[kUnroll];
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) c[i] = load_chunk(base + plan.roff(r + i * kSumY));
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) {
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += static_cast<A>(c[i].get(j));
      }
    }
    for (; r < r1; r += kSumY) {
      const Chunk<T> c = load_chunk(base + plan.roff(r));
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] += static_cast<A>(c.get(j));
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) smem[ty][j][tx] = acc[j];
  __syncthreads();
  // Thread (ty, tx) finishes output j = ty of lane tx (kSumY == V: one output per thread).
  static_assert(kSumY == V, "one output per thread in the final step");
  const std::int64_t k = k0 + ty;
  if (k < plan.n_out) {
    A s = 0;
#pragma unroll
    for (int w = 0; w < kSumY; ++w) s += smem[w][ty][tx];
    if (kFinal) {
      out[k] = T(s);
    } else {
      partial[static_cast<std::int64_t>(blockIdx.y) * plan.n_out + k] = s;
    }
  }
}

template <typename T>
__global__ void sum_to_phase2(const acc_t<T>* __restrict__ partial, std::int64_t n_out, int chunks,
                              T* __restrict__ out) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n_out; k += stride) {
    acc_t<T> s = 0;
    for (int c = 0; c < chunks; ++c) s += partial[static_cast<std::int64_t>(c) * n_out + k];
    out[k] = T(s);
  }
}

// Phase 2 for many chunks: a warp per output, lane l adding chunks l, l + 32, ... in order,
// then a fixed shuffle tree (deterministic). A thread per output walking 256 chunks was
// latency-bound: ~10 us of a bias gradient [16384, 384] -> [384] that moves 12.6 MB.
template <typename T>
__global__ void sum_to_phase2_warps(const acc_t<T>* __restrict__ partial, std::int64_t n_out, int chunks,
                                    T* __restrict__ out) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const std::int64_t warps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (std::int64_t k = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; k < n_out;
       k += warps) {
    acc_t<T> s = 0;
#pragma unroll 8
    for (int c = lane; c < chunks; c += 32) s += partial[static_cast<std::int64_t>(c) * n_out + k];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[k] = T(s);
  }
}

// Adds the `chunks` rows of partial [chunks, n_out] into out.
template <typename T>
void sum_to_phase2_launch(const acc_t<T>* partial, std::int64_t n_out, std::int64_t chunks, T* out,
                          cudaStream_t stream) {
  if (chunks >= 32) {
    const unsigned blocks =
        static_cast<unsigned>(std::clamp<std::int64_t>((n_out * 32 + kThreads - 1) / kThreads, 1, 1 << 20));
    sum_to_phase2_warps<T><<<blocks, kThreads, 0, stream>>>(partial, n_out, static_cast<int>(chunks), out);
  } else {
    const unsigned blocks = static_cast<unsigned>(std::clamp<std::int64_t>((n_out + kThreads - 1) / kThreads, 1, 1 << 20));
    sum_to_phase2<T><<<blocks, kThreads, 0, stream>>>(partial, n_out, static_cast<int>(chunks), out);
  }
  TG_CUDA_CHECK_LAST();
}

template <typename T, bool kInner>
void sum_to_launch(const Tensor& x, const Tensor& out, const SumToPlan& plan, cudaStream_t stream) {
  using A = acc_t<T>;
  const std::int64_t per_block = kInner ? kSumY : kSumX;
  const std::int64_t out_blocks = (plan.n_out + per_block - 1) / per_block;
  // Enough blocks to fill the GPU (~2048 of 256 threads), chunks of at least 1024 positions.
  const std::int64_t want = std::max<std::int64_t>(1, 2048 / out_blocks);
  const std::int64_t chunks = std::clamp<std::int64_t>(std::min(want, plan.n_red / 1024), 1, 65535);
  const std::int64_t chunk = (plan.n_red + chunks - 1) / chunks;
  TG_CHECK(out_blocks <= 0x7fffffff, ShapeError, "sum_to: too many outputs (", plan.n_out, ")");
  const dim3 grid(static_cast<unsigned>(out_blocks), static_cast<unsigned>(chunks));
  const dim3 block(kSumX, kSumY);
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (chunks == 1) {
    sum_to_phase1<T, kInner, true><<<grid, block, 0, stream>>>(px, plan, chunk, po, nullptr);
    TG_CUDA_CHECK_LAST();
    return;
  }
  // Temporary partial sums come from the caching pool.
  Tensor partial = empty({chunks, plan.n_out}, {.dtype = dtype_of<A>(), .device = x.device()});
  A* pp = static_cast<A*>(partial.data_ptr());
  sum_to_phase1<T, kInner, false><<<grid, block, 0, stream>>>(px, plan, chunk, po, pp);
  TG_CUDA_CHECK_LAST();
  sum_to_phase2_launch<T>(pp, plan.n_out, chunks, po, stream);
}

/// Blocks of sum_to_cols_vec<T> that are resident at once on `device` (read once per device).
template <typename T>
std::int64_t cols_vec_wave(int device) {
  static std::atomic<int> cache[64];  // blocks + 1; 0: not read yet
  std::atomic<int>& c = cache[device >= 0 && device < 64 ? device : 0];
  int n = c.load(std::memory_order_relaxed);
  if (n == 0) {
    int per_sm = 0;
    TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, sum_to_cols_vec<T, false>, kSumX * kSumY, 0));
    n = std::max(1, per_sm) * std::max(1, cuda::multiprocessor_count(device)) + 1;
    c.store(n, std::memory_order_relaxed);
  }
  return n - 1;
}

/// True when sum_to_cols_vec can sum x (16-bit T): outputs adjacent in x (one kept dim of
/// stride 1) in whole chunks, every chunk 16-byte aligned.
template <typename T>
bool cols_vec_ok(const SumToPlan& plan, const void* x) {
  constexpr int V = Chunk<T>::kLen;
  if (plan.inner_reduced || plan.nk != 1 || plan.kstrides[0] != 1) return false;
  if (plan.n_out % V != 0 || !aligned16(x)) return false;
  for (int d = 0; d < plan.nr; ++d) {
    if (plan.rstrides[d] % V != 0) return false;
  }
  return true;
}

template <typename T>
void sum_to_cols_vec_launch(const Tensor& x, const Tensor& out, const SumToPlan& plan, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int V = Chunk<T>::kLen;
  const std::int64_t out_blocks = (plan.n_out + kSumX * V - 1) / (kSumX * V);  // the last may be partial
  TG_CHECK(out_blocks <= 0x7fffffff, ShapeError, "sum_to: too many outputs (", plan.n_out, ")");
  // One wave of equally sized blocks (a second, partial wave would leave most SMs idle
  // at the end), at least 8 reduced positions per warp (two rounds of loads). (At least 32
  // a warp left a bias gradient [16384, 1152] at 320 blocks, 1.9 TB/s.)
  const std::int64_t wave = cols_vec_wave<T>(x.device().index);
  const std::int64_t chunks =
      std::clamp<std::int64_t>(std::min(wave / out_blocks, plan.n_red / (kSumY * 8)), 1, 65535);
  const std::int64_t chunk = (plan.n_red + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>(out_blocks), static_cast<unsigned>(chunks));
  const dim3 block(kSumX, kSumY);
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (chunks == 1) {
    sum_to_cols_vec<T, true><<<grid, block, 0, stream>>>(px, plan, chunk, po, nullptr);
    TG_CUDA_CHECK_LAST();
    return;
  }
  Tensor partial = empty({chunks, plan.n_out}, {.dtype = dtype_of<A>(), .device = x.device()});
  A* pp = static_cast<A*>(partial.data_ptr());
  sum_to_cols_vec<T, false><<<grid, block, 0, stream>>>(px, plan, chunk, po, pp);
  TG_CUDA_CHECK_LAST();
  sum_to_phase2_launch<T>(pp, plan.n_out, chunks, po, stream);
}

void sum_to_cuda(const Tensor& x, const Tensor& out) {
  const SumToPlan plan = make_sum_to_plan(x.shape(), out.shape(), "sum_to");
  if (plan.n_out == 0) return;
  tg::cuda::DeviceGuard guard(x.device().index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(x.device().index);
  TG_DISPATCH_FLOATING(x.dtype(), "sum_to", [&] {
    if constexpr (sizeof(scalar_t) == 2) {
      if (cols_vec_ok<scalar_t>(plan, x.data_ptr())) {
        sum_to_cols_vec_launch<scalar_t>(x, out, plan, stream);
        return;
      }
    }
    if (plan.inner_reduced) {
      sum_to_launch<scalar_t, true>(x, out, plan, stream);
    } else {
      sum_to_launch<scalar_t, false>(x, out, plan, stream);
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(unary_fwd, CUDA, &unary_fwd_cuda);
TG_REGISTER_KERNEL(unary_bwd, CUDA, &unary_bwd_cuda);
TG_REGISTER_KERNEL(binary_fwd, CUDA, &binary_fwd_cuda);
TG_REGISTER_KERNEL(binary_bwd, CUDA, &binary_bwd_cuda);
TG_REGISTER_KERNEL(sum_to_kernel, CUDA, &sum_to_cuda);

}  // namespace tg::ops
