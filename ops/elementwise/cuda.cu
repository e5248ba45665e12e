// CUDA kernels of the element-wise family: one generic map kernel over the functors of
// math.h (16-byte vector loads/stores on contiguous operands, per-element broadcast
// reads otherwise), and a two-phase deterministic sum for sum_to.
#include <algorithm>
#include <array>
#include <cstdint>

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

// out[m][i] = f(inputs at i) for every i in [0, n). kContig: every input has out's
// shape (no plan lookups at all, the fast path of equal shapes).
template <typename T, typename F, bool kContig>
__global__ void __launch_bounds__(kThreads)
    map_kernel(MapPtrs<T, F::kIn, F::kOut> p, MapPlan<F::kIn> plan, std::int64_t n, F f) {
  using A = acc_t<T>;
  constexpr int N = F::kIn, M = F::kOut, V = Chunk<T>::kLen;
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t nvec = p.vec_ok ? n / V : 0;

  for (std::int64_t v = tid; v < nvec; v += stride) {
    const std::int64_t e = v * V;
    A x[N][V];
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (kContig || plan.in[k].mode == InputMode::Contiguous) {
        const Chunk<T> c = load_chunk(p.in[k] + e);
#pragma unroll
        for (int u = 0; u < V; ++u) x[k][u] = static_cast<A>(c.get(u));
      } else if (plan.in[k].mode == InputMode::Scalar) {
        const A s = static_cast<A>(p.in[k][0]);
#pragma unroll
        for (int u = 0; u < V; ++u) x[k][u] = s;
      } else if (plan.in[k].mode == InputMode::Row && p.row_vec[k]) {
        // row_len is a multiple of V, so the chunk does not wrap.
        const Chunk<T> c = load_chunk(p.in[k] + mod_fast(e, plan.in[k].row_len));
#pragma unroll
        for (int u = 0; u < V; ++u) x[k][u] = static_cast<A>(c.get(u));
      } else {
#pragma unroll
        for (int u = 0; u < V; ++u) x[k][u] = static_cast<A>(p.in[k][plan.offset(k, e + u)]);
      }
    }
    Chunk<T> y[M];
#pragma unroll
    for (int u = 0; u < V; ++u) {
      A xi[N], yi[M];
#pragma unroll
      for (int k = 0; k < N; ++k) xi[k] = x[k][u];
      f(xi, yi);
#pragma unroll
      for (int m = 0; m < M; ++m) y[m].set(u, T(yi[m]));
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (p.out[m]) store_chunk(p.out[m] + e, y[m]);
    }
  }

  // The tail after the last full chunk (or everything when not aligned).
  for (std::int64_t i = nvec * V + tid; i < n; i += stride) {
    A xi[N], yi[M];
#pragma unroll
    for (int k = 0; k < N; ++k) xi[k] = static_cast<A>(p.in[k][kContig ? i : plan.offset(k, i)]);
    f(xi, yi);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (p.out[m]) p.out[m][i] = T(yi[m]);
    }
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0; }

template <typename T, typename F>
void launch_map(Device device, const MapPlan<F::kIn>& plan, const std::array<const T*, F::kIn>& in,
                const std::array<T*, F::kOut>& out, std::int64_t n, const F& f) {
  if (n == 0) return;
  constexpr int V = Chunk<T>::kLen;
  MapPtrs<T, F::kIn, F::kOut> p{};
  p.vec_ok = true;
  for (int k = 0; k < F::kIn; ++k) {
    p.in[k] = in[static_cast<std::size_t>(k)];
    if (plan.in[k].mode == InputMode::Contiguous) p.vec_ok = p.vec_ok && aligned16(p.in[k]);
    p.row_vec[k] = plan.in[k].mode == InputMode::Row && plan.in[k].row_len % V == 0 && aligned16(p.in[k]);
  }
  for (int m = 0; m < F::kOut; ++m) {
    p.out[m] = out[static_cast<std::size_t>(m)];
    if (p.out[m]) p.vec_ok = p.vec_ok && aligned16(p.out[m]);
  }
  // One chunk per thread (a grid-stride loop covers sizes beyond the cap).
  const std::int64_t work = p.vec_ok ? std::max<std::int64_t>(n / V, n % V) : n;
  const unsigned blocks = static_cast<unsigned>(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, 1 << 20));
  tg::cuda::DeviceGuard guard(device.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(device.index);
  if (plan.all_contiguous) {
    map_kernel<T, F, true><<<blocks, kThreads, 0, stream>>>(p, plan, n, f);
  } else {
    map_kernel<T, F, false><<<blocks, kThreads, 0, stream>>>(p, plan, n, f);
  }
  TG_CUDA_CHECK_LAST();
}

template <typename T>
const T* cptr(const Tensor& t) {
  return static_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <UnaryOp OP, typename T>
void unary_fwd_t(const Tensor& x, const Tensor& out, double s) {
  if constexpr (OP == UnaryOp::Copy) {
    // Copy is the only unary op that may broadcast (broadcast_to); the others always
    // get equal shapes, so only their contiguous kernel is instantiated.
    auto plan = make_map_plan<1>(out.shape(), {x.shape()}, unary_op_name(OP));
    launch_map<T>(out.device(), plan, {cptr<T>(x)}, {mptr<T>(out)}, out.numel(), ew::UnaryFwd<OP, acc_t<T>>{0});
  } else {
    MapPlan<1> plan;
    using F = ew::UnaryFwd<OP, acc_t<T>>;
    const F f{static_cast<acc_t<T>>(s)};
    // Same body as launch_map, but with only the contiguous instantiation.
    constexpr int V = Chunk<T>::kLen;
    const std::int64_t n = out.numel();
    MapPtrs<T, 1, 1> p{};
    p.in[0] = cptr<T>(x);
    p.out[0] = mptr<T>(out);
    p.vec_ok = aligned16(p.in[0]) && aligned16(p.out[0]);
    p.row_vec[0] = false;
    const std::int64_t work = p.vec_ok ? std::max<std::int64_t>(n / V, n % V) : n;
    const unsigned blocks =
        static_cast<unsigned>(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, 1 << 20));
    tg::cuda::DeviceGuard guard(out.device().index);
    map_kernel<T, F, true><<<blocks, kThreads, 0, tg::cuda::current_cuda_stream(out.device().index)>>>(p, plan, n, f);
    TG_CUDA_CHECK_LAST();
  }
}

template <typename T>
void unary_fwd_switch(UnaryOp op, const Tensor& x, const Tensor& out, double s) {
  switch (op) {
#define TG_CASE(name)                         \
  case UnaryOp::name:                         \
    unary_fwd_t<UnaryOp::name, T>(x, out, s); \
    break;
    TG_FOR_EACH_UNARY_OP(TG_CASE)
#undef TG_CASE
  }
}

void unary_fwd_cuda(UnaryOp op, const Tensor& x, const Tensor& out, double s) {
  TG_DISPATCH_FLOATING(out.dtype(), unary_op_name(op), [&] { unary_fwd_switch<scalar_t>(op, x, out, s); });
}

template <UnaryOp OP, typename T>
void unary_bwd_t(const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  MapPlan<2> plan;  // saved, grad_out and grad_in share one shape
  using F = ew::UnaryBwd<OP, acc_t<T>>;
  const F f{static_cast<acc_t<T>>(s)};
  constexpr int V = Chunk<T>::kLen;
  const std::int64_t n = gi.numel();
  MapPtrs<T, 2, 1> p{};
  p.in[0] = cptr<T>(saved);
  p.in[1] = cptr<T>(g);
  p.out[0] = mptr<T>(gi);
  p.vec_ok = aligned16(p.in[0]) && aligned16(p.in[1]) && aligned16(p.out[0]);
  const std::int64_t work = p.vec_ok ? std::max<std::int64_t>(n / V, n % V) : n;
  const unsigned blocks = static_cast<unsigned>(std::clamp<std::int64_t>((work + kThreads - 1) / kThreads, 1, 1 << 20));
  tg::cuda::DeviceGuard guard(gi.device().index);
  map_kernel<T, F, true><<<blocks, kThreads, 0, tg::cuda::current_cuda_stream(gi.device().index)>>>(p, plan, n, f);
  TG_CUDA_CHECK_LAST();
}

template <typename T>
void unary_bwd_switch(UnaryOp op, const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  switch (op) {
#define TG_CASE(name)                               \
  case UnaryOp::name:                               \
    unary_bwd_t<UnaryOp::name, T>(saved, g, gi, s); \
    break;
    TG_FOR_EACH_UNARY_OP(TG_CASE)
#undef TG_CASE
  }
}

void unary_bwd_cuda(UnaryOp op, const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  TG_DISPATCH_FLOATING(gi.dtype(), unary_op_name(op), [&] { unary_bwd_switch<scalar_t>(op, saved, g, gi, s); });
}

template <BinaryOp OP, typename T>
void binary_fwd_t(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto plan = make_map_plan<2>(out.shape(), {a.shape(), b.shape()}, binary_op_name(OP));
  launch_map<T>(out.device(), plan, {cptr<T>(a), cptr<T>(b)}, {mptr<T>(out)}, out.numel(),
                ew::BinaryFwd<OP, acc_t<T>>{});
}

template <typename T>
void binary_fwd_switch(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  switch (op) {
#define TG_CASE(name)                           \
  case BinaryOp::name:                          \
    binary_fwd_t<BinaryOp::name, T>(a, b, out); \
    break;
    TG_FOR_EACH_BINARY_OP(TG_CASE)
#undef TG_CASE
  }
}

void binary_fwd_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), binary_op_name(op), [&] { binary_fwd_switch<scalar_t>(op, a, b, out); });
}

template <BinaryOp OP, typename T>
void binary_bwd_t(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga, const Tensor& gb) {
  auto plan = make_map_plan<3>(g.shape(), {a.shape(), b.shape(), g.shape()}, binary_op_name(OP));
  launch_map<T>(g.device(), plan, {cptr<T>(a), cptr<T>(b), cptr<T>(g)}, {mptr<T>(ga), mptr<T>(gb)}, g.numel(),
                ew::BinaryBwd<OP, acc_t<T>>{});
}

template <typename T>
void binary_bwd_switch(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga,
                       const Tensor& gb) {
  switch (op) {
#define TG_CASE(name)                                 \
  case BinaryOp::name:                                \
    binary_bwd_t<BinaryOp::name, T>(a, b, g, ga, gb); \
    break;
    TG_FOR_EACH_BINARY_OP(TG_CASE)
#undef TG_CASE
  }
}

void binary_bwd_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga,
                     const Tensor& gb) {
  TG_DISPATCH_FLOATING(g.dtype(), binary_op_name(op), [&] { binary_bwd_switch<scalar_t>(op, a, b, g, ga, gb); });
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
  const unsigned blocks2 =
      static_cast<unsigned>(std::clamp<std::int64_t>((plan.n_out + kThreads - 1) / kThreads, 1, 1 << 20));
  sum_to_phase2<T><<<blocks2, kThreads, 0, stream>>>(pp, plan.n_out, static_cast<int>(chunks), po);
  TG_CUDA_CHECK_LAST();
}

void sum_to_cuda(const Tensor& x, const Tensor& out) {
  const SumToPlan plan = make_sum_to_plan(x.shape(), out.shape(), "sum_to");
  if (plan.n_out == 0) return;
  tg::cuda::DeviceGuard guard(x.device().index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(x.device().index);
  TG_DISPATCH_FLOATING(x.dtype(), "sum_to", [&] {
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
