// CUDA kernels of the block-sparse row family.
//
// - Row reductions: G lanes per logical row, G = the vector units of one bs-long segment
//   (at most 32), so a warp reads 32 / G neighbouring rows, i.e. 512 contiguous bytes of a
//   block, and each lane owns the same unit of every segment of its row: at block 64 a
//   bf16 lane loads one unit per block, all of them (up to kUnroll) issued before any is
//   used. One warp per row left short rows (low density, 16-bit) with one or two
//   dependent loads per lane and the warp's start-up latency for 1 KB. Each lane keeps a
//   partial result; shuffles within the G lanes combine them (no atomics, so the result is
//   the same on every run).
//   Row sums take row_sum_stream_kernel where a warp's rows lie in one block row (the
//   usual case): the same lanes, persistent warps, offsets fetched a group ahead.
//   The lean row_reduce_lean_kernel keeps this layout with a branch-free, sub-64-register
//   lane and more lanes per row when rows are long; it runs f32 row_max (see row_reduce_t).
// - Column sums: one CUDA block per block-column, walking the CSC col_blocks; threads
//   own columns within the block, and a shared-memory pass adds the per-thread parts in
//   a fixed order.
//   row_max keeps, per lane, the maximum of each vector unit (one max per element) and the
//   first unit holding the lane's maximum, in registers; the position inside that unit is
//   found once at the end (a per-element arg-max test made it issue-bound; reading the unit
//   again put a dependent load at the end of every row).
// - Row maps (row_add and co.): a warp per output block like the outer broadcasts below,
//   where the block shape allows; else, and for the row_max backward, a grid-stride loop
//   over vector units of the output blocks, each unit finding its (b, r, c) in
//   block_coords.
// - Outer broadcasts: a warp per output block when a block-row is at most 32 units and the
//   block at least 32: (b, r, c) read once, each lane keeps its column's b values in
//   registers and writes its units down the rows, loading the a values of kOuterRows rows
//   at once. (A CUDA block per output block stored only two 16-byte units per thread per
//   chain of dependent loads at bf16 / block 64, and was latency-bound.) Wider block-rows
//   take a CUDA block per output block; smaller blocks take the map.
// 16-bit storage is converted in hardware (to_f32 / pack2): tg::bfloat16's rounding and
// tg::half's decode are software, several instructions per element.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/dtype.h"
#include "ops/cuda_fast_math.cuh"
#include "ops/sparse_rows/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

template <typename T>
using acc_t = typename acc_type<T>::type;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---- vector units ------------------------------------------------------------------------
template <int W> struct RawOf;
template <> struct RawOf<16> { using type = uint4; };
template <> struct RawOf<8> { using type = uint2; };
template <> struct RawOf<4> { using type = unsigned int; };
template <> struct RawOf<2> { using type = unsigned short; };

// W bytes of T moved with one load or store (W a multiple of sizeof(T)).
template <typename T, int W>
struct Pack {
  static constexpr int kLen = W / static_cast<int>(sizeof(T));
  typename RawOf<W>::type raw;
  __device__ __forceinline__ T get(int t) const { return reinterpret_cast<const T*>(&raw)[t]; }
  __device__ __forceinline__ void set(int t, T v) { reinterpret_cast<T*>(&raw)[t] = v; }
};

template <typename T, int W>
__device__ __forceinline__ Pack<T, W> load_pack(const T* p) {
  Pack<T, W> v;
  v.raw = *reinterpret_cast<const typename RawOf<W>::type*>(p);
  return v;
}

template <typename T, int W>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, W>& v) {
  *reinterpret_cast<typename RawOf<W>::type*>(p) = v.raw;
}

template <typename T>
constexpr bool kIs16 = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

// A stored T as its accumulation type.
template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T v) {
  if constexpr (kIs16<T>) return gpu::to_f32<T>(v.bits);
  else return static_cast<acc_t<T>>(v);
}

// Element t of a pack as the accumulation type.
template <typename T, int W>
__device__ __forceinline__ acc_t<T> elem_acc(const Pack<T, W>& p, int t) {
  return to_acc<T>(p.get(t));
}

// The pack of T holding v[0, kLen), rounded to nearest even.
template <typename T, int W>
__device__ __forceinline__ Pack<T, W> make_pack(const acc_t<T>* v) {
  Pack<T, W> p;
  if constexpr (kIs16<T> && W >= 4) {
    auto* words = reinterpret_cast<std::uint32_t*>(&p.raw);
#pragma unroll
    for (int t = 0; t < W / 4; ++t) words[t] = gpu::pack2<T>(v[2 * t], v[2 * t + 1]);
  } else if constexpr (kIs16<T>) {
    p.set(0, T::from_bits(static_cast<std::uint16_t>(gpu::pack2<T>(v[0], 0.0f))));
  } else {
#pragma unroll
    for (int t = 0; t < Pack<T, W>::kLen; ++t) p.set(t, static_cast<T>(v[t]));
  }
  return p;
}

int log2_exact(std::int64_t v) {
  int lg = 0;
  while ((std::int64_t(1) << lg) < v) ++lg;
  return lg;
}

// The widest unit (16, 8, 4 or 2 bytes, at least one element) dividing `unit_bytes` at
// which every non-null pointer is aligned.
int pick_width(std::int64_t unit_bytes, std::int64_t es, std::initializer_list<const void*> ptrs) {
  for (int w : {16, 8, 4, 2}) {
    if (w < es || unit_bytes % w != 0) continue;
    bool ok = true;
    for (const void* p : ptrs) ok = ok && (p == nullptr || reinterpret_cast<std::uintptr_t>(p) % w == 0);
    if (ok) return w;
  }
  return static_cast<int>(es);
}

// Calls f(std::integral_constant<int, W>) for the runtime width w (>= sizeof(T)).
template <typename T, typename F>
void with_width(int w, F&& f) {
  constexpr int es = static_cast<int>(sizeof(T));
  switch (w) {
    case 16: if constexpr (16 >= es) { f(std::integral_constant<int, 16>{}); return; } break;
    case 8: if constexpr (8 >= es) { f(std::integral_constant<int, 8>{}); return; } break;
    case 4: if constexpr (4 >= es) { f(std::integral_constant<int, 4>{}); return; } break;
    case 2: if constexpr (2 >= es) { f(std::integral_constant<int, 2>{}); return; } break;
    default: break;
  }
  TG_THROW(Error, "sparse_rows: internal error: unsupported vector width ", w, " for element size ", es);
}


unsigned grid_for(std::int64_t work_items, int device) {
  const std::int64_t want = (work_items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(want, cuda::multiprocessor_count(device) * 32)));
}

// ---- row reductions ----------------------------------------------------------------------
// (va, ia) comes before (vb, ib) in the order that picks the first maximal element: an
// index < 0 means "no element"; nan above everything; larger first; lower index on ties.
template <typename A>
__device__ __forceinline__ bool before(A va, std::int64_t ia, A vb, std::int64_t ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  const bool na = va != va, nb = vb != vb;
  if (na != nb) return na;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

constexpr int kUnroll = 8;  // vector loads in flight per lane

// Row `row` is taken by the 2^lg_g lanes of global thread ids row * 2^lg_g + [0, 2^lg_g);
// lane gl of them reduces units gl, gl + 2^lg_g, ... of the row (lg_g <= lg_units, so
// always the same unit of each segment).
template <typename T, int W, bool kMax>
__global__ void __launch_bounds__(kThreads)
    row_reduce_kernel(const T* __restrict__ x, const std::int64_t* __restrict__ row_off, std::int64_t rows,
                      std::int64_t M, std::int64_t Mb, int lg_bs, int lg_units, int lg_g, T* __restrict__ out,
                      std::int64_t* __restrict__ index) {
  using A = acc_t<T>;
  using P = Pack<T, W>;
  constexpr int V = P::kLen;
  const std::int64_t gtid = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (((gtid & ~std::int64_t(31)) >> lg_g) >= rows) return;  // whole warps leave together
  const int g = 1 << lg_g;
  const int gl = static_cast<int>(threadIdx.x) & (g - 1);
  const std::int64_t row = gtid >> lg_g;
  const bool live = row < rows;  // lanes past the last row reduce an empty row
  const std::int64_t bs = std::int64_t(1) << lg_bs;
  const std::int64_t b = live ? row / M : 0, R = row - b * M, r = R >> lg_bs, i = R & (bs - 1);
  const std::int64_t k0 = live ? row_off[b * Mb + r] : 0, k1 = live ? row_off[b * Mb + r + 1] : 0;
  const std::int64_t total = (k1 - k0) << lg_units;  // vector units in the row
  const std::int64_t umask = (std::int64_t(1) << lg_units) - 1;
  // Flat data index of the first element of unit u.
  auto elem = [&](std::int64_t u) { return ((k0 + (u >> lg_units)) * bs + i) * bs + (u & umask) * V; };

  A s = 0;
  A m = -static_cast<A>(INFINITY);  // max: the lane's maximum so far
  std::int64_t best = -1;           // max: flat index of the first unit holding it (then of the element)
  P bp{};                           // max: that unit
  auto consume = [&](const P& p, std::int64_t u) {
    if constexpr (kMax) {
      A um = elem_acc<T, W>(p, 0);
#pragma unroll
      for (int t = 1; t < V; ++t) um = gpu::nan_max_fast(um, elem_acc<T, W>(p, t));
      // the lane's units come in increasing index order: keep the first of equal maxima
      if (best < 0 || (um != um && m == m) || um > m) {
        m = um;
        best = elem(u);
        bp = p;
      }
    } else {
#pragma unroll
      for (int t = 0; t < V; ++t) s += elem_acc<T, W>(p, t);
    }
  };
  for (std::int64_t u = gl; u < total; u += kUnroll * g) {
    P p[kUnroll];
#pragma unroll
    for (int q = 0; q < kUnroll; ++q)
      if (u + q * g < total) p[q] = load_pack<T, W>(x + elem(u + q * g));
#pragma unroll
    for (int q = 0; q < kUnroll; ++q)
      if (u + q * g < total) consume(p[q], u + q * g);
  }

  if constexpr (kMax) {
    if (best >= 0) {  // the first element of the best unit equal to m (a nan when m is nan)
      int hit = V - 1;
      A hv = m;
#pragma unroll
      for (int t = V - 1; t >= 0; --t) {
        const A v = elem_acc<T, W>(bp, t);
        if (v == m || (v != v && m != m)) {
          hit = t;
          hv = v;  // +0 and -0 compare equal: report the element's own value
        }
      }
      best += hit;
      m = hv;
    }
    for (int off = g >> 1; off > 0; off >>= 1) {
      const A om = __shfl_xor_sync(kFullMask, m, off);
      const std::int64_t ob = __shfl_xor_sync(kFullMask, best, off);
      if (before(om, ob, m, best)) {
        m = om;
        best = ob;
      }
    }
    if (gl == 0 && live) {
      out[row] = static_cast<T>(m);
      index[row] = best;
    }
  } else {
    for (int off = g >> 1; off > 0; off >>= 1) s += __shfl_xor_sync(kFullMask, s, off);
    if (gl == 0 && live) out[row] = static_cast<T>(s);
  }
}

// ---- row reductions, lean version (f32 row_max; see row_reduce_t) -----------------------
// The version above spends 80-86 registers on row_max (two CUDA blocks per SM, half the
// loads in flight of row_sum), branches per unit on the arg-max update and does 64-bit
// index arithmetic per load. This one keeps every lane branch-free and under 64
// registers: units past the row's end load a neutral value instead of guarding the
// consumer; the arg-max update is a select; addresses are one wide multiply-add off the
// row's base; the row's position is 32-bit. The host also widens the lane group past one
// segment's units when rows are long (see lanes_per_row), so that a lane has all loads of
// a typical row in flight in one round. (Sum and 16-bit variants measured slower and were
// removed: the host runs this kernel for f32 row_max only.)
constexpr int kLeanUnroll = 8;  // vector loads in flight per lane

/// The nan-propagating maximum of the elements of p, in the accumulation type.
template <typename T, int W>
__device__ __forceinline__ acc_t<T> unit_max(const Pack<T, W>& p) {
  acc_t<T> m = elem_acc<T, W>(p, 0);
#pragma unroll
  for (int t = 1; t < Pack<T, W>::kLen; ++t) m = gpu::nan_max_fast(m, elem_acc<T, W>(p, t));
  return m;
}

/// The pack at p when `pred`, else zeros, as one predicated load: a branch around each load
/// let the compiler move the address arithmetic of every load into its own branch.
template <typename T, int W>
__device__ __forceinline__ Pack<T, W> load_pack_if(bool pred, const T* p) {
  Pack<T, W> v;
  const int on = pred;
  if constexpr (W == 16) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    asm("{\n .reg .pred q;\n setp.ne.s32 q, %5, 0;\n @q ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n}"
        : "+r"(a), "+r"(b), "+r"(c), "+r"(d)
        : "l"(p), "r"(on));
    v.raw = make_uint4(a, b, c, d);
  } else if constexpr (W == 8) {
    unsigned a = 0, b = 0;
    asm("{\n .reg .pred q;\n setp.ne.s32 q, %3, 0;\n @q ld.global.nc.v2.u32 {%0, %1}, [%2];\n}"
        : "+r"(a), "+r"(b)
        : "l"(p), "r"(on));
    v.raw = make_uint2(a, b);
  } else if constexpr (W == 4) {
    unsigned a = 0;
    asm("{\n .reg .pred q;\n setp.ne.s32 q, %2, 0;\n @q ld.global.nc.u32 %0, [%1];\n}" : "+r"(a) : "l"(p), "r"(on));
    v.raw = a;
  } else {
    unsigned short a = 0;
    asm("{\n .reg .pred q;\n setp.ne.s32 q, %2, 0;\n @q ld.global.nc.u16 %0, [%1];\n}" : "+h"(a) : "l"(p), "r"(on));
    v.raw = a;
  }
  return v;
}

/// Word-wise p = take ? q : p (a select, not a branch).
template <typename T, int W>
__device__ __forceinline__ void select_pack(bool take, Pack<T, W>& p, const Pack<T, W>& q) {
  if constexpr (W >= 4) {
    auto* d = reinterpret_cast<std::uint32_t*>(&p.raw);
    const auto* s = reinterpret_cast<const std::uint32_t*>(&q.raw);
#pragma unroll
    for (int t = 0; t < W / 4; ++t) d[t] = take ? s[t] : d[t];
  } else {
    p.raw = take ? q.raw : p.raw;
  }
}

// Row `row` is taken by the 2^lg_g lanes of global thread ids row * 2^lg_g + [0, 2^lg_g);
// lane gl of them reduces units gl, gl + 2^lg_g, ... of the row, a unit u lying in block
// u >> lg_units of the row at unit u & (2^lg_units - 1) of its segment (2^lg_g may exceed
// the units of a segment: then the lanes of a row span several blocks).
template <typename T, int W>
__global__ void __launch_bounds__(kThreads, 4)
    row_reduce_lean_kernel(const T* __restrict__ x, const std::int64_t* __restrict__ row_off, std::int64_t rows,
                           int lg_bs, int lg_units, int lg_g, T* __restrict__ out, std::int64_t* __restrict__ index) {
  using A = acc_t<T>;
  using P = Pack<T, W>;
  constexpr int V = P::kLen;
  const std::int64_t gtid = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (((gtid & ~std::int64_t(31)) >> lg_g) >= rows) return;  // whole warps leave together
  const int g = 1 << lg_g;
  const int gl = static_cast<int>(threadIdx.x) & (g - 1);
  const std::int64_t row = gtid >> lg_g;
  const bool live = row < rows;  // lanes past the last row reduce an empty row
  // M is a multiple of bs: row >> lg_bs is the global block-row b * Mb + r
  const std::int64_t br = live ? row >> lg_bs : 0;
  const int i = static_cast<int>(row) & ((1 << lg_bs) - 1);
  const std::int64_t k0 = live ? row_off[br] : 0, k1 = live ? row_off[br + 1] : 0;
  const int total = static_cast<int>(k1 - k0) << lg_units;  // vector units in the row
  const int umask = (1 << lg_units) - 1;
  const int bs2 = 1 << (2 * lg_bs);
  const T* xr = x + (((k0 << lg_bs) + i) << lg_bs);  // row i of block k0
  auto at = [&](int u) { return xr + static_cast<std::int64_t>(u >> lg_units) * bs2 + (u & umask) * V; };

  A m = -static_cast<A>(INFINITY);  // the lane's maximum so far
  int bu = -1;                      // the first of the lane's units holding it
  P bp{};                           // that unit
  for (int u0 = gl; u0 < total; u0 += kLeanUnroll * g) {
    P p[kLeanUnroll];
    // past the end: zeros, which are never taken as the maximum below
#pragma unroll
    for (int q = 0; q < kLeanUnroll; ++q) p[q] = load_pack_if<T, W>(u0 + q * g < total, at(u0 + q * g));
#pragma unroll
    for (int q = 0; q < kLeanUnroll; ++q) {
      const int u = u0 + q * g;
      const A um = unit_max<T, W>(p[q]);
      // units come in increasing order: a later unit wins only with a larger value, or a
      // nan over a number; the first unit is always taken
      const bool take = (u < total) & ((bu < 0) | (!(um <= m) & (m == m)));
      m = take ? um : m;
      bu = take ? u : bu;
      select_pack<T, W>(take, bp, p[q]);
    }
  }

  int pos = -1;  // the position in the row (u * V + element) of the lane's first maximal element
  if (bu >= 0) {  // the first element of the best unit equal to m (a nan when m is nan)
    int hit = V - 1;
    A hv = m;
#pragma unroll
    for (int t = V - 1; t >= 0; --t) {
      const A v = elem_acc<T, W>(bp, t);
      if (v == m || (v != v && m != m)) {
        hit = t;
        hv = v;  // +0 and -0 compare equal: report the element's own value
      }
    }
    pos = bu * V + hit;
    m = hv;
  }
  for (int off = g >> 1; off > 0; off >>= 1) {
    const A om = __shfl_xor_sync(kFullMask, m, off);
    const int op = __shfl_xor_sync(kFullMask, pos, off);
    if (before(om, static_cast<std::int64_t>(op), m, static_cast<std::int64_t>(pos))) {
      m = om;
      pos = op;
    }
  }
  if (gl == 0 && live) {
    out[row] = static_cast<T>(m);
    // pos = block (within the row) * bs + column, as u * V + t with bs / V units per segment
    const std::int64_t flat = ((((k0 + (pos >> lg_bs)) << lg_bs) + i) << lg_bs) + (pos & ((1 << lg_bs) - 1));
    index[row] = pos < 0 ? -1 : flat;
  }
}

/// log2 of the lanes per row of row_reduce_lean_kernel: at least one segment's units (at
/// most 32), widened while an average row would give a lane more than half of
/// kLeanUnroll units, so that rows up to twice the average load in one round.
int lanes_per_row(const Layout& l, int lg_units) {
  int lg_g = std::min(lg_units, 5);
  const std::int64_t block_rows = l.batch() * l.block_rows();
  if (block_rows == 0) return lg_g;
  // average units per row, rounded up: n_blocks * units-per-segment / block rows
  const std::int64_t avg = ((l.n_blocks() << lg_units) + block_rows - 1) / block_rows;
  while (lg_g < 5 && avg > (std::int64_t(kLeanUnroll / 2) << lg_g)) ++lg_g;
  return lg_g;
}

// ---- row sums, streaming version --------------------------------------------------------
// Row sums where a warp's rows lie in one block row (32 / G rows of G lanes, G = the units
// of a segment): the warp reads its block row's offsets once (one broadcast load), so every
// lane has the same block count and no lane diverges; each lane's units are one pointer
// and a constant stride of a block (no per-load index arithmetic); the
// warps are persistent and fetch their next group's offsets while the current group's
// loads are in flight, so that only the first group waits for them. row_reduce_kernel
// spent ~80 instructions a 16-byte unit on 64-bit index arithmetic and waited for the
// offsets of every row before its first load.
template <typename T, int W, int KU>
__global__ void __launch_bounds__(kThreads)
    row_sum_stream_kernel(const T* __restrict__ x, const std::int64_t* __restrict__ row_off, std::int64_t groups,
                          int lg_bs, int lg_g, T* __restrict__ out) {
  using A = acc_t<T>;
  using P = Pack<T, W>;
  constexpr int V = P::kLen;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int gl = lane & ((1 << lg_g) - 1);
  const int rows_per_warp = 32 >> lg_g;
  const std::int64_t bs2 = std::int64_t(1) << (2 * lg_bs);
  const std::int64_t nwarps = static_cast<std::int64_t>(gridDim.x) * kWarps;
  std::int64_t grp = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (grp >= groups) return;
  auto block_row = [&](std::int64_t g) { return (g * rows_per_warp) >> lg_bs; };
  std::int64_t k0 = __ldg(row_off + block_row(grp)), k1 = __ldg(row_off + block_row(grp) + 1);
  for (; grp < groups; grp += nwarps) {
    const std::int64_t nxt = grp + nwarps;
    std::int64_t n0 = 0, n1 = 0;
    if (nxt < groups) {
      n0 = __ldg(row_off + block_row(nxt));
      n1 = __ldg(row_off + block_row(nxt) + 1);
    }
    const std::int64_t row = grp * rows_per_warp + (lane >> lg_g);
    const std::int64_t i = row & ((std::int64_t(1) << lg_bs) - 1);
    const T* p = x + (((k0 << lg_bs) + i) << lg_bs) + gl * V;
    const int nb = static_cast<int>(k1 - k0);
    A s0 = 0, s1 = 0;
    for (int b = 0; b < nb; b += KU) {
      P v[KU];
#pragma unroll
      for (int q = 0; q < KU; ++q)
        if (b + q < nb) v[q] = load_pack<T, W>(p + (b + q) * bs2);
#pragma unroll
      for (int q = 0; q < KU; ++q) {
        if (b + q >= nb) continue;
        if constexpr (kIs16<T> && W >= 4) {
          const auto* words = reinterpret_cast<const std::uint32_t*>(&v[q].raw);
#pragma unroll
          for (int t = 0; t < W / 4; ++t) {
            float lo, hi;
            gpu::unpack2<T>(words[t], lo, hi);
            s0 += lo;
            s1 += hi;
          }
        } else {
#pragma unroll
          for (int t = 0; t < V; ++t) (t & 1 ? s1 : s0) += elem_acc<T, W>(v[q], t);
        }
      }
    }
    A s = s0 + s1;
    for (int off = (1 << lg_g) >> 1; off > 0; off >>= 1) s += __shfl_xor_sync(kFullMask, s, off);
    if (gl == 0) out[row] = static_cast<T>(s);
    k0 = n0;
    k1 = n1;
  }
}

template <typename T>
void row_reduce_t(const Tensor& data, const Layout& l, RowReduce kind, const Tensor& out, const Tensor& index) {
  const Device dev = out.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const std::int64_t bs = l.block_size(), es = static_cast<std::int64_t>(sizeof(T));
  const std::int64_t rows = l.batch() * l.rows();
  const T* x = static_cast<const T*>(data.data_ptr());
  const std::int64_t* row_off = l.tables(dev).row_offsets.data<std::int64_t>();
  const int w = pick_width(bs * es, es, {x});
  const int lg_bs = log2_exact(bs), lg_units = log2_exact(bs * es / w);
  // Measured on an H200 (bench_sparse_rows, block 64, density 0.25 / 0.5 / 1.0, % of a
  // same-size copy): the lean kernel lifts f32 row_max from 62 / 75 / 89 to 65 / 84 / 100
  // but drops bf16 row_sum (66 -> 38 at 0.25) and row_max (45 -> 22) and is level for f32
  // row_sum, so it runs f32 row_max only.
  const bool lean = sizeof(T) == 4 && kind == RowReduce::Max;
  // The streaming sum, where a warp's rows (32 / units of a segment) lie in one block row.
  if (kind == RowReduce::Sum && lg_units <= 5 && (32 >> lg_units) <= bs && rows > 0) {
    const int lg_g = lg_units;
    const std::int64_t groups = rows >> (5 - lg_g);
    with_width<T>(w, [&](auto wc) {
      constexpr int W = decltype(wc)::value;
      // Loads in flight a lane: 4 for 16-bit data (47 registers, five CTAs an SM), 8 for
      // wider elements. Measured on an H200 at block 64, density 0.25, % of a same-size
      // copy: bf16 80% with 8 (64 registers, four CTAs) and 86% with 4; f32 93% with 8
      // and 89% with 4.
      constexpr int KU = sizeof(T) == 2 ? 4 : 8;
      const auto kernel = row_sum_stream_kernel<T, W, KU>;
      static const int per_sm = [&] {
        int n = 0;
        TG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, 0));
        return n;
      }();
      const std::int64_t want = (groups + kWarps - 1) / kWarps;
      const std::int64_t cap = static_cast<std::int64_t>(std::max(per_sm, 1)) * cuda::multiprocessor_count(dev.index);
      kernel<<<static_cast<unsigned>(std::min(want, cap)), kThreads, 0, st>>>(x, row_off, groups, lg_bs, lg_g,
                                                                              out.data<T>());
      TG_CUDA_CHECK_LAST();
    });
    return;
  }
  const int lg_g = lean ? lanes_per_row(l, lg_units) : std::min(lg_units, 5);
  const std::int64_t threads = rows << lg_g;
  const unsigned grid = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  with_width<T>(w, [&](auto wc) {
    constexpr int W = decltype(wc)::value;
    if constexpr (sizeof(T) == 4) {
      if (lean) {
        row_reduce_lean_kernel<T, W><<<grid, kThreads, 0, st>>>(x, row_off, rows, lg_bs, lg_units, lg_g,
                                                                      out.data<T>(), index.data<std::int64_t>());
        TG_CUDA_CHECK_LAST();
        return;
      }
    }
    if (kind == RowReduce::Max) {
      row_reduce_kernel<T, W, true><<<grid, kThreads, 0, st>>>(x, row_off, rows, l.rows(), l.block_rows(), lg_bs,
                                                                lg_units, lg_g, out.data<T>(),
                                                                index.data<std::int64_t>());
    } else {
      row_reduce_kernel<T, W, false><<<grid, kThreads, 0, st>>>(x, row_off, rows, l.rows(), l.block_rows(), lg_bs,
                                                                 lg_units, lg_g, out.data<T>(), nullptr);
    }
    TG_CUDA_CHECK_LAST();
  });
}

// ---- column sums -------------------------------------------------------------------------
// Block (b, c) of the grid sums block-column c of batch b. Thread t owns column
// j = t % tj (+ multiples of tj when bs > tj) and rows i = t / tj + multiples of 256 / tj.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    col_sum_kernel(const T* __restrict__ x, const std::int64_t* __restrict__ col_off,
                   const std::int64_t* __restrict__ col_blocks, std::int64_t Nb, std::int64_t N, std::int64_t bs,
                   int tj, T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ A part[kThreads];
  const std::int64_t bc = blockIdx.x;  // b * Nb + c
  const std::int64_t b = bc / Nb, c = bc - b * Nb;
  const std::int64_t q0 = col_off[bc], q1 = col_off[bc + 1];
  const int t = static_cast<int>(threadIdx.x), j = t % tj, y = t / tj, ys = kThreads / tj;
  for (std::int64_t jc = 0; jc < bs; jc += tj) {
    A s = 0;
    for (std::int64_t q = q0; q < q1; ++q) {
      const T* blk = x + col_blocks[q] * bs * bs + jc + j;
      for (std::int64_t i = y; i < bs; i += ys) s += to_acc<T>(blk[i * bs]);
    }
    part[t] = s;
    __syncthreads();
    if (y == 0) {
      A tot = 0;
      for (int yy = 0; yy < ys; ++yy) tot += part[yy * tj + j];
      out[b * N + c * bs + jc + j] = static_cast<T>(tot);
    }
    __syncthreads();
  }
}

template <typename T>
void col_sum_t(const Tensor& data, const Layout& l, const Tensor& out) {
  const Device dev = out.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const LayoutTables& tab = l.tables(dev);
  const std::int64_t bs = l.block_size();
  const int tj = static_cast<int>(std::min<std::int64_t>(bs, kThreads));
  const unsigned grid = static_cast<unsigned>(l.batch() * l.block_cols());
  col_sum_kernel<T><<<grid, kThreads, 0, st>>>(static_cast<const T*>(data.data_ptr()),
                                               tab.col_offsets.data<std::int64_t>(),
                                               tab.col_blocks.data<std::int64_t>(), l.block_cols(), l.cols(), bs, tj,
                                               out.data<T>());
  TG_CUDA_CHECK_LAST();
}

// ---- maps over the output blocks ---------------------------------------------------------
// out[e] for each vector unit of out [n, bs, bs]; f(pack, e0, row, col) fills the unit
// that starts at flat index e0, in logical row `row` (b * M + ...) and column `col`.
template <typename T, int W, typename F>
__global__ void __launch_bounds__(kThreads)
    block_map_kernel(T* __restrict__ out, std::int64_t units, const std::int64_t* __restrict__ coords, int lg_bs,
                     std::int64_t M, std::int64_t N, F f) {
  constexpr int V = Pack<T, W>::kLen;
  const std::int64_t bs = std::int64_t(1) << lg_bs;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t u = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < units; u += stride) {
    const std::int64_t e0 = u * V;
    const std::int64_t k = e0 >> (2 * lg_bs);
    const std::int64_t rem = e0 & (bs * bs - 1);
    const std::int64_t i = rem >> lg_bs, j0 = rem & (bs - 1);
    const std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    Pack<T, W> p;
    f(p, e0, b * M + r * bs + i, b * N + c * bs + j0);
    store_pack<T, W>(out + e0, p);
  }
}

template <typename T, int W, RowMapOp Op, bool kHasX>
struct RowMapF {
  const T* x;
  const T* v;
  acc_t<T> alpha;
  __device__ __forceinline__ void operator()(Pack<T, W>& p, std::int64_t e0, std::int64_t row, std::int64_t) const {
    using A = acc_t<T>;
    const A s = alpha * to_acc<T>(v[row]);
    Pack<T, W> xv;
    if constexpr (kHasX) xv = load_pack<T, W>(x + e0);
    A y[Pack<T, W>::kLen];
#pragma unroll
    for (int t = 0; t < Pack<T, W>::kLen; ++t) {
      const A xe = kHasX ? elem_acc<T, W>(xv, t) : A(0);
      if constexpr (Op == RowMapOp::Add) y[t] = xe + s;
      else if constexpr (Op == RowMapOp::Mul) y[t] = xe * s;
      else y[t] = xe / s;
    }
    p = make_pack<T, W>(y);
  }
};

template <typename T, int W>
struct OuterF {
  const T* a;
  const T* b;
  acc_t<T> alpha_b;
  __device__ __forceinline__ void operator()(Pack<T, W>& p, std::int64_t, std::int64_t row, std::int64_t col) const {
    using A = acc_t<T>;
    const A av = a ? to_acc<T>(a[row]) : A(0);
    Pack<T, W> bv;
    if (b) bv = load_pack<T, W>(b + col);
    A y[Pack<T, W>::kLen];
#pragma unroll
    for (int t = 0; t < Pack<T, W>::kLen; ++t) y[t] = av + alpha_b * (b ? elem_acc<T, W>(bv, t) : A(0));
    p = make_pack<T, W>(y);
  }
};

template <typename T, int W>
struct RowMaxBwdF {
  const T* g;
  const std::int64_t* index;
  __device__ __forceinline__ void operator()(Pack<T, W>& p, std::int64_t e0, std::int64_t row, std::int64_t) const {
    const std::int64_t hit = index[row] - e0;  // position of the row's maximum in this unit
    const T gv = g[row];  // copied, not converted
#pragma unroll
    for (int t = 0; t < Pack<T, W>::kLen; ++t) p.set(t, hit == t ? gv : static_cast<T>(0.0f));
  }
};

// Everything a map launch needs besides the functor.
template <typename T>
struct MapCtx {
  T* out;
  std::int64_t units;
  const std::int64_t* coords;
  int lg_bs;
  std::int64_t M, N;
  unsigned grid;
  cudaStream_t stream;
};

template <typename T, int W, typename F>
void run_map(const MapCtx<T>& c, F f) {
  block_map_kernel<T, W><<<c.grid, kThreads, 0, c.stream>>>(c.out, c.units, c.coords, c.lg_bs, c.M, c.N, f);
  TG_CUDA_CHECK_LAST();
}

// Picks the vector width for `out` and the operands `ptrs` read at its vector units, and
// calls body(std::integral_constant<int, W>, MapCtx) to launch with a functor.
template <typename T, typename Body>
void launch_map(const Layout& l, const Tensor& out, std::initializer_list<const void*> ptrs, Body&& body) {
  const Device dev = out.device();
  tg::cuda::DeviceGuard guard(dev.index);
  const std::int64_t bs = l.block_size(), es = static_cast<std::int64_t>(sizeof(T));
  int w = pick_width(bs * es, es, {out.data_ptr()});
  for (const void* p : ptrs) w = std::min(w, pick_width(bs * es, es, {p}));
  MapCtx<T> ctx{out.data<T>(), 0, l.tables(dev).block_coords.data<std::int64_t>(), log2_exact(bs), l.rows(),
                l.cols(), 0, tg::cuda::current_cuda_stream(dev.index)};
  with_width<T>(w, [&](auto wc) {
    constexpr int W = decltype(wc)::value;
    ctx.units = out.numel() / Pack<T, W>::kLen;
    ctx.grid = grid_for(ctx.units, dev.index);
    body(wc, ctx);
  });
}

// Rows per step of a lane in the warp-per-block kernels: their loads are issued together.
constexpr int kOuterRows = 8;

// A warp needs a block of at least 32 units and a block-row of at most 32 (lane t owns
// column unit t % upr at rows t / upr + multiples of 32 / upr).
bool warp_per_block(std::int64_t bs, std::int64_t upr) { return upr <= 32 && bs * upr >= 32; }

// The row map by a warp per output block (grid-stride over the blocks), lanes laid out as
// in outer_warp_kernel: (b, r) read once per block, then kOuterRows units of x and values of
// v per step. The per-unit map looked up the block of every unit and kept one load in
// flight per thread.
template <typename T, int W, RowMapOp Op, bool kHasX>
__global__ void __launch_bounds__(kThreads)
    row_map_warp_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ v, acc_t<T> alpha,
                        std::int64_t n_blocks, const std::int64_t* __restrict__ coords, int lg_bs, int lg_upr,
                        std::int64_t M) {
  using A = acc_t<T>;
  constexpr int V = Pack<T, W>::kLen;
  const int bs = 1 << lg_bs;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int j0 = (lane & ((1 << lg_upr) - 1)) * V;
  const int i0 = lane >> lg_upr, istep = 32 >> lg_upr;
  const std::int64_t nwarps = static_cast<std::int64_t>(gridDim.x) * kWarps;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; k < n_blocks;
       k += nwarps) {
    const T* vrow = v + coords[3 * k] * M + coords[3 * k + 1] * bs;
    const std::int64_t base = (k << (2 * lg_bs)) + j0;
    for (int ib = i0; ib < bs; ib += kOuterRows * istep) {
      A s[kOuterRows];
      Pack<T, W> xv[kOuterRows];
#pragma unroll
      for (int q = 0; q < kOuterRows; ++q) {
        const int i = ib + q * istep;
        if (i < bs) {
          s[q] = alpha * to_acc<T>(vrow[i]);
          if constexpr (kHasX) xv[q] = load_pack<T, W>(x + base + (static_cast<std::int64_t>(i) << lg_bs));
        }
      }
#pragma unroll
      for (int q = 0; q < kOuterRows; ++q) {
        const int i = ib + q * istep;
        if (i >= bs) break;
        A y[V];
#pragma unroll
        for (int t = 0; t < V; ++t) {
          const A xe = kHasX ? elem_acc<T, W>(xv[q], t) : A(0);
          if constexpr (Op == RowMapOp::Add) y[t] = xe + s[q];
          else if constexpr (Op == RowMapOp::Mul) y[t] = xe * s[q];
          else y[t] = xe / s[q];
        }
        store_pack<T, W>(out + base + (static_cast<std::int64_t>(i) << lg_bs), make_pack<T, W>(y));
      }
    }
  }
}

template <typename T>
void row_map_t(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& l, const Tensor& out) {
  const T* xp = x.defined() ? x.data<T>() : nullptr;
  const T* vp = v.data<T>();
  const acc_t<T> al = static_cast<acc_t<T>>(alpha);
  launch_map<T>(l, out, {xp}, [&](auto wc, const MapCtx<T>& ctx) {
    constexpr int W = decltype(wc)::value;
    const std::int64_t bs = l.block_size(), upr = bs / Pack<T, W>::kLen, n = l.n_blocks();
    if (warp_per_block(bs, upr)) {
      const unsigned grid = static_cast<unsigned>(
          std::min<std::int64_t>((n + kWarps - 1) / kWarps, cuda::multiprocessor_count(out.device().index) * 16));
      auto go = [&](auto kernel) {
        kernel<<<grid, kThreads, 0, ctx.stream>>>(ctx.out, xp, vp, al, n, ctx.coords, ctx.lg_bs, log2_exact(upr),
                                                  ctx.M);
        TG_CUDA_CHECK_LAST();
      };
      if (!xp) return go(row_map_warp_kernel<T, W, RowMapOp::Add, false>);
      switch (op) {
        case RowMapOp::Add: return go(row_map_warp_kernel<T, W, RowMapOp::Add, true>);
        case RowMapOp::Mul: return go(row_map_warp_kernel<T, W, RowMapOp::Mul, true>);
        case RowMapOp::Div: return go(row_map_warp_kernel<T, W, RowMapOp::Div, true>);
      }
      return;
    }
    if (!xp) {
      run_map<T, W>(ctx, RowMapF<T, W, RowMapOp::Add, false>{xp, vp, al});
      return;
    }
    switch (op) {
      case RowMapOp::Add: run_map<T, W>(ctx, RowMapF<T, W, RowMapOp::Add, true>{xp, vp, al}); break;
      case RowMapOp::Mul: run_map<T, W>(ctx, RowMapF<T, W, RowMapOp::Mul, true>{xp, vp, al}); break;
      case RowMapOp::Div: run_map<T, W>(ctx, RowMapF<T, W, RowMapOp::Div, true>{xp, vp, al}); break;
    }
  });
}

// out block k = (b, r, c): out[k, i, j] = a[b * M + r * bs + i] + alpha_b * bv[b * N + c * bs + j]
// (a or bv null: 0). A CUDA block per output block (grid-stride over the blocks); needs
// upr = bs / V units per block-row with kThreads % upr == 0 and bs * upr >= kThreads, so
// that thread t always writes column unit t % upr, at rows t / upr + multiples of
// kThreads / upr: its alpha_b * bv values stay in registers for the whole block, and its
// units take one (mostly broadcast) load of a each and no index lookups.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    outer_block_kernel(T* __restrict__ out, std::int64_t n_blocks, const std::int64_t* __restrict__ coords,
                       int lg_bs, int lg_upr, std::int64_t M, std::int64_t N, const T* __restrict__ a,
                       const T* __restrict__ bv, acc_t<T> alpha_b) {
  using A = acc_t<T>;
  constexpr int V = Pack<T, W>::kLen;
  const int bs = 1 << lg_bs;
  const int t = static_cast<int>(threadIdx.x);
  const int j0 = (t & ((1 << lg_upr) - 1)) * V;  // this thread's column
  const int i0 = t >> lg_upr, istep = kThreads >> lg_upr;
  for (std::int64_t k = blockIdx.x; k < n_blocks; k += gridDim.x) {
    const std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    A bvals[V];
    if (bv) {
      const Pack<T, W> p = load_pack<T, W>(bv + b * N + c * bs + j0);
#pragma unroll
      for (int q = 0; q < V; ++q) bvals[q] = alpha_b * elem_acc<T, W>(p, q);
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q) bvals[q] = A(0);
    }
    const T* arow = a ? a + b * M + r * bs : nullptr;
    T* o = out + (k << (2 * lg_bs)) + j0;
#pragma unroll 4
    for (int i = i0; i < bs; i += istep) {
      const A av = arow ? to_acc<T>(arow[i]) : A(0);
      A y[V];
#pragma unroll
      for (int q = 0; q < V; ++q) y[q] = av + bvals[q];
      store_pack<T, W>(o + (static_cast<std::int64_t>(i) << lg_bs), make_pack<T, W>(y));
    }
  }
}

// The same for a warp per output block (grid-stride over the blocks), for 32 / 2^lg_upr <=
// bs (every lane has rows) and 2^lg_upr <= 32: lane t writes column unit t % upr at rows
// t / upr + multiples of 32 / upr, kOuterRows of them per step with their a values
// loaded together.

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    outer_warp_kernel(T* __restrict__ out, std::int64_t n_blocks, const std::int64_t* __restrict__ coords,
                      int lg_bs, int lg_upr, std::int64_t M, std::int64_t N, const T* __restrict__ a,
                      const T* __restrict__ bv, acc_t<T> alpha_b) {
  using A = acc_t<T>;
  constexpr int V = Pack<T, W>::kLen;
  const int bs = 1 << lg_bs;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int j0 = (lane & ((1 << lg_upr) - 1)) * V;  // this lane's column
  const int i0 = lane >> lg_upr, istep = 32 >> lg_upr;
  const std::int64_t nwarps = static_cast<std::int64_t>(gridDim.x) * kWarps;
  for (std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; k < n_blocks;
       k += nwarps) {
    const std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
    A bvals[V];
    if (bv) {
      const Pack<T, W> p = load_pack<T, W>(bv + b * N + c * bs + j0);
#pragma unroll
      for (int q = 0; q < V; ++q) bvals[q] = alpha_b * elem_acc<T, W>(p, q);
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q) bvals[q] = A(0);
    }
    const T* arow = a ? a + b * M + r * bs : nullptr;
    T* o = out + (k << (2 * lg_bs)) + j0;
    for (int ib = i0; ib < bs; ib += kOuterRows * istep) {
      A av[kOuterRows];
#pragma unroll
      for (int q = 0; q < kOuterRows; ++q) {
        const int i = ib + q * istep;
        av[q] = arow && i < bs ? to_acc<T>(arow[i]) : A(0);
      }
#pragma unroll
      for (int q = 0; q < kOuterRows; ++q) {
        const int i = ib + q * istep;
        if (i >= bs) break;
        A y[V];
#pragma unroll
        for (int t = 0; t < V; ++t) y[t] = av[q] + bvals[t];
        store_pack<T, W>(o + (static_cast<std::int64_t>(i) << lg_bs), make_pack<T, W>(y));
      }
    }
  }
}

// The broadcast by a warp per output block, lean version (16-bit storage; 1-2 points of
// copy rate above outer_warp_kernel on an H200): the a values of the block's rows come in one coalesced load per 32 rows
// (lane l holds row 32 c + l of chunk c) and reach the lane writing a row by a shuffle, so
// a block waits for one round of loads (a and b together) after its coordinates, and the
// next block's coordinates are loaded while this one is written. (outer_warp_kernel loads
// the a values kOuterRows rows at a time between its stores: with a block per warp, three
// dependent round trips before the last store.) Same lane layout as outer_warp_kernel;
// needs bs <= 32 * kLeanChunks.
constexpr int kLeanChunks = 4;

template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    outer_warp_lean_kernel(T* __restrict__ out, std::int64_t n_blocks, const std::int64_t* __restrict__ coords,
                           int lg_bs, int lg_upr, std::int64_t M, std::int64_t N, const T* __restrict__ a,
                           const T* __restrict__ bv, acc_t<T> alpha_b) {
  using A = acc_t<T>;
  constexpr int V = Pack<T, W>::kLen;
  const int bs = 1 << lg_bs;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int j0 = (lane & ((1 << lg_upr) - 1)) * V;  // this lane's column
  const int i0 = lane >> lg_upr, istep = 32 >> lg_upr;
  const int chunk_rows = bs < 32 ? bs : 32;  // istep divides it: every lane writes as many rows
  const std::int64_t nwarps = static_cast<std::int64_t>(gridDim.x) * kWarps;
  std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (k >= n_blocks) return;  // whole warps
  std::int64_t b = coords[3 * k], r = coords[3 * k + 1], c = coords[3 * k + 2];
  while (true) {
    const std::int64_t kn = k + nwarps;
    std::int64_t nb = 0, nr = 0, nc = 0;
    if (kn < n_blocks) {
      nb = coords[3 * kn];
      nr = coords[3 * kn + 1];
      nc = coords[3 * kn + 2];
    }
    A av[kLeanChunks];
    const T* arow = a ? a + b * M + r * bs : nullptr;
#pragma unroll
    for (int q = 0; q < kLeanChunks; ++q) {
      const int i = q * 32 + lane;
      av[q] = arow && i < bs ? to_acc<T>(arow[i]) : A(0);
    }
    A bvals[V];
    if (bv) {
      const Pack<T, W> p = load_pack<T, W>(bv + b * N + c * bs + j0);
#pragma unroll
      for (int t = 0; t < V; ++t) bvals[t] = alpha_b * elem_acc<T, W>(p, t);
    } else {
#pragma unroll
      for (int t = 0; t < V; ++t) bvals[t] = A(0);
    }
    T* o = out + (k << (2 * lg_bs)) + j0;
#pragma unroll
    for (int q = 0; q < kLeanChunks; ++q) {
      if (q * 32 >= bs) break;  // the same for the whole warp
#pragma unroll 4
      for (int ii = i0; ii < chunk_rows; ii += istep) {
        const A ai = __shfl_sync(kFullMask, av[q], ii);
        A y[V];
#pragma unroll
        for (int t = 0; t < V; ++t) y[t] = ai + bvals[t];
        store_pack<T, W>(o + (static_cast<std::int64_t>(q * 32 + ii) << lg_bs), make_pack<T, W>(y));
      }
    }
    if (kn >= n_blocks) break;
    k = kn;
    b = nb;
    r = nr;
    c = nc;
  }
}

template <typename T>
void outer_t(const Tensor& a, const Tensor& b, double alpha_b, const Layout& l, const Tensor& out) {
  const T* ap = a.defined() ? a.data<T>() : nullptr;
  const T* bp = b.defined() ? b.data<T>() : nullptr;
  const acc_t<T> al = static_cast<acc_t<T>>(alpha_b);
  // b is read a unit at a time at col(e0), a multiple of the unit: only its base matters.
  launch_map<T>(l, out, {bp}, [&](auto wc, const MapCtx<T>& ctx) {
    constexpr int W = decltype(wc)::value;
    constexpr std::int64_t V = Pack<T, W>::kLen;
    const std::int64_t bs = l.block_size(), upr = bs / V;
    // 16-bit only: for f32 the per-block kernel below measured faster (H200, block 64,
    // density 0.25 / 0.5 / 1.0: 81 / 88 / 91% of copy against 76 / 81 / 90%).
    if (sizeof(T) <= 2 && warp_per_block(bs, upr)) {
      const std::int64_t n = l.n_blocks();
      const unsigned grid = static_cast<unsigned>(
          std::min<std::int64_t>((n + kWarps - 1) / kWarps, cuda::multiprocessor_count(out.device().index) * 16));
      if (bs <= 32 * kLeanChunks) {
        outer_warp_lean_kernel<T, W><<<grid, kThreads, 0, ctx.stream>>>(ctx.out, n, ctx.coords, ctx.lg_bs,
                                                                        log2_exact(upr), ctx.M, ctx.N, ap, bp, al);
      } else {
        outer_warp_kernel<T, W><<<grid, kThreads, 0, ctx.stream>>>(ctx.out, n, ctx.coords, ctx.lg_bs,
                                                                   log2_exact(upr), ctx.M, ctx.N, ap, bp, al);
      }
      TG_CUDA_CHECK_LAST();
      return;
    }
    if (kThreads % upr == 0 && bs * upr >= kThreads) {
      const std::int64_t n = l.n_blocks();
      const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(n, cuda::multiprocessor_count(out.device().index) * 16));
      outer_block_kernel<T, W><<<grid, kThreads, 0, ctx.stream>>>(ctx.out, n, ctx.coords, ctx.lg_bs,
                                                                  log2_exact(upr), ctx.M, ctx.N, ap, bp, al);
      TG_CUDA_CHECK_LAST();
      return;
    }
    run_map<T, W>(ctx, OuterF<T, W>{ap, bp, al});
  });
}

template <typename T>
void row_max_bwd_t(const Tensor& g, const Tensor& index, const Layout& l, const Tensor& dx) {
  const T* gp = g.data<T>();
  const std::int64_t* ip = index.data<std::int64_t>();
  launch_map<T>(l, dx, {}, [&](auto wc, const MapCtx<T>& ctx) {
    constexpr int W = decltype(wc)::value;
    run_map<T, W>(ctx, RowMaxBwdF<T, W>{gp, ip});
  });
}

// ---- registered entry points -------------------------------------------------------------
void row_reduce_cuda(const Tensor& data, const Layout& l, RowReduce kind, const Tensor& out, const Tensor& index) {
  TG_DISPATCH_FLOATING(data.dtype(), "row_reduce", [&] { row_reduce_t<scalar_t>(data, l, kind, out, index); });
}
void col_sum_cuda(const Tensor& data, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(data.dtype(), "col_sum", [&] { col_sum_t<scalar_t>(data, l, out); });
}
void row_map_cuda(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "row_map", [&] { row_map_t<scalar_t>(op, x, v, alpha, l, out); });
}
void outer_cuda(const Tensor& a, const Tensor& b, double alpha_b, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "broadcast", [&] { outer_t<scalar_t>(a, b, alpha_b, l, out); });
}
void row_max_bwd_cuda(const Tensor& g, const Tensor& index, const Layout& l, const Tensor& dx) {
  TG_DISPATCH_FLOATING(dx.dtype(), "row_max backward", [&] { row_max_bwd_t<scalar_t>(g, index, l, dx); });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_row_reduce_kernel, CUDA, &row_reduce_cuda);
TG_REGISTER_KERNEL(sparse_col_sum_kernel, CUDA, &col_sum_cuda);
TG_REGISTER_KERNEL(sparse_row_map_kernel, CUDA, &row_map_cuda);
TG_REGISTER_KERNEL(sparse_outer_kernel, CUDA, &outer_cuda);
TG_REGISTER_KERNEL(sparse_row_max_bwd_kernel, CUDA, &row_max_bwd_cuda);

}  // namespace tg::ops
