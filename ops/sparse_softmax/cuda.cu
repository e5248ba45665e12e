// CUDA kernels of the block-sparse softmax family.
//
// A logical row is one bs-long segment per active block of its block-row (the layout's
// CSR row_offsets); all rows of a block-row have the same blocks.
//
// Default plan, "staged rows" (fwd_staged, bwd_staged), for block sizes >= 16 and rows of
// at most kStageMaxBytes of staged data (forward: x, plus 1 byte per element of a mask;
// backward: y and dy; so 24576 f32 / 49152 bf16 elements forward, 12288 / 24576
// backward): a CTA of 256 threads (128 where that leaves a thread under 64 bytes to stage
// on average; staged_threads.h) takes R
// rows of one block-row, copies them (and the mask's bytes) into shared memory with 16-byte
// cp.async, reduces each row from there (max, then sum of exponentials: two reads of
// shared memory, no global re-read), and writes the output in memory order. Why not the
// register plans below: those keep a row in 64 bytes of registers per thread, so the bytes
// a multiprocessor had in flight were capped by registers, a power-of-two group of threads
// per row left up to half of them idle on rows just past a power of two (most rows at
// density 0.25 / 0.5), and a thread loaded nothing while it reduced and wrote; the staged
// kernels keep up to ~200 KB per multiprocessor in flight with every thread copying.
// Exponentials are 2^(c * x - m) with c = scale * log2(e): one fma and one ex2.approx.ftz
// per element (f32 too: its error is a few ulp, like expf's), and without a mask and with
// c > 0 the max pass reads raw values (16-bit ones as pairs: one max.NaN.bf16x2 per two).
// Launches use programmatic dependent launch on sm_90.
//
// Other plans: the f32 backward of short rows (under ~1.5K elements on average) takes the
// slice kernel (measured faster there); block sizes < 16 the register plans (below);
// longer rows the two-pass kernels; the forward slice kernel only where the staged plan
// does not fit.
// The register plans walk a row in chunks of VEC elements: chunk u starts at row position
// q = u * VEC, i.e. in segment q / bs at offset q % bs (VEC <= bs, so a chunk never
// straddles two blocks). The plan is chosen from the longest row of the layout.
//
// Forward (memory-bound only when it spends few instructions per element: the old fused
// (max, sum) all-reduce cost two exponentials per combine and made it issue-bound):
//  (block sizes < 16 and rows beyond the staged plan's 96 KiB:)
//  - rows of <= 32 * P elements: a warp per row, each lane holding P <= fwd_max_p<T>()
//    elements (64 bytes of storage) in registers; rows of <= 512 * fwd_max_p<T>(): a block
//    per row, each thread holding fwd_max_p<T>() elements. Either way every load of the row
//    is issued first, then the row max is all-reduced, then each element takes one exp and
//    the sum is all-reduced, then the row is written: two cheap all-reductions (max, add)
//    instead of one whose combines take exponentials;
//  - longer rows: a block per row and two passes over global memory (online max and sum
//    of exp, then the output), the second pass mostly hitting L2.
// Backward: f32 rows of under ~1.5K elements on average at block size >= 32 (rows up to
// 256 * bwd_slice_p<T>()): slices of block-rows (bwd_slice); beyond the staged plan a warp
// per row up to kWarpMaxLen, a block per row (P <= 16, f64 8) up to kRegMaxLen, two passes
// beyond. Shorter rows than the longest leave threads idle.
// Loads and stores are 16-byte vectors when bs * sizeof(T) is a multiple of 16 and the
// data pointers (and the mask's) are 16-byte aligned, else scalar. Math in f32 (f64 for
// f64). 16-bit storage is converted in hardware (one shift or cvt per element on load, one
// cvt per pair on store: tg::bfloat16 / tg::half convert in software, which made the bf16
// kernels issue-bound at about 17 instructions per element), and 16-bit forwards take
// their exponentials from one ex2.approx (their results keep 8 or 11 bits).
// A mask with x's own layout (the common case) sits at x's flat indices: no per-chunk
// lookup of its block, which put two more dependent loads in front of every mask load.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "ops/cuda_pdl.cuh"
#include "ops/reduce/cuda_math.cuh"
#include "ops/sparse_softmax/kernels.h"
#include "ops/sparse_softmax/staged_threads.h"
#include "ops/sparse_softmax/two_pass.h"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using gpu::MaxSum;
using gpu::MaxSumOp;
using gpu::SumOp;

template <typename T>
using acc_t = typename acc_type<T>::type;

template <typename T>
constexpr bool kIs16 = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;

// N consecutive elements at p (aligned to N * sizeof(T)) as Acc.
template <int N, typename T, typename Acc>
__device__ __forceinline__ void load_vec(const T* p, Acc* out) {
  if constexpr (kIs16<T>) {
    if constexpr (N == 1) {
      out[0] = gpu::to_f32<T>(p[0].bits);
    } else {
      const gpu::Pack<std::uint32_t, N / 2> pk = *reinterpret_cast<const gpu::Pack<std::uint32_t, N / 2>*>(p);
#pragma unroll
      for (int k = 0; k < N / 2; ++k) gpu::unpack2<T>(pk.v[k], out[2 * k], out[2 * k + 1]);
    }
  } else {
    gpu::load_pack<N>(p, out);
  }
}

// N values stored as T at p (aligned to N * sizeof(T)), rounded to nearest even.
template <int N, typename T, typename Acc>
__device__ __forceinline__ void store_vec(T* p, const Acc* in) {
  if constexpr (kIs16<T>) {
    if constexpr (N == 1) {
      p[0] = T::from_bits(static_cast<std::uint16_t>(gpu::pack2<T>(in[0], 0.0f)));
    } else {
      gpu::Pack<std::uint32_t, N / 2> pk;
#pragma unroll
      for (int k = 0; k < N / 2; ++k) pk.v[k] = gpu::pack2<T>(in[2 * k], in[2 * k + 1]);
      *reinterpret_cast<gpu::Pack<std::uint32_t, N / 2>*>(p) = pk;
    }
  } else {
    gpu::store_pack<N>(p, in);
  }
}

constexpr int kWarpRows = 4;  // rows (warps) per block on the warp path
constexpr std::int64_t kWarpMaxLen = 1024;  // backward plans
constexpr std::int64_t kRegMaxLen = 4096;
constexpr int kBlockMaxThreads = 512;  // kRegMaxLen / the smallest P a block row may take
constexpr int kLongThreads = 512;
constexpr int kFwdBlockMaxThreads = 512;

// Elements per thread of the forward's register plans at most. 16-byte loads: 64 bytes of
// storage, i.e. four loads in flight per thread (16 f32, 32 bf16/f16, 8 f64; at most 32,
// one mask bit each); more would cost occupancy (the warp-per-2048 plan of a530dfa with
// 64 f32 per lane measured slower). Scalar loads (misaligned data): 8, whose flat indices
// the compiler keeps in registers next to the values.
template <typename T>
constexpr int fwd_max_p(bool vec) {
  return !vec ? 8 : 64 / static_cast<int>(sizeof(T)) < 32 ? 64 / static_cast<int>(sizeof(T)) : 32;
}

// Elements per thread on the block path: 16, 8 for f64 (whose registers count double).
template <typename T>
constexpr int block_max_p() {
  return sizeof(T) >= 8 ? 8 : 16;
}

// Where the rows are.
struct RowGeom {
  const std::int64_t* row_off;  // CSR offsets of the block-rows, [B * Mb + 1]
  std::int64_t rows;            // B * M
  std::int64_t M, Mb;
  int lg_bs;
};

// The element mask (data == nullptr: none).
struct MaskGeom {
  const std::uint8_t* data;    // mask blocks [nm, bs, bs]
  const std::int64_t* coords;  // x's block_coords [n, 3]
  const std::int64_t* index;   // the mask layout's block_index [B, Mb, Nb]
  std::int64_t Nb;
  bool same;                   // the mask has x's layout: its blocks are x's blocks
};

struct Row {
  std::int64_t br;      // b * Mb + r
  std::int64_t base;    // flat index of the row's first element
  std::int64_t chunks;  // VEC-element chunks in the row
};

// Row b * M + R lies in block-row b * Mb + R / bs (M = Mb * bs): no division needed.
template <int VEC>
__device__ __forceinline__ Row locate(const RowGeom& g, std::int64_t row) {
  const std::int64_t br = row >> g.lg_bs, i = row & ((std::int64_t(1) << g.lg_bs) - 1);
  const std::int64_t k0 = g.row_off[br], k1 = g.row_off[br + 1];
  return {br, ((k0 << g.lg_bs) + i) << g.lg_bs, ((k1 - k0) << g.lg_bs) / VEC};
}

// Flat data index of the first element of chunk u of the row.
template <int VEC>
__device__ __forceinline__ std::int64_t chunk_at(const Row& row, std::int64_t u, int lg_bs) {
  const std::int64_t q = u * VEC;
  return row.base + ((q >> lg_bs) << (2 * lg_bs)) + (q & ((std::int64_t(1) << lg_bs) - 1));
}

// Bit t set when element t of the chunk at flat index e is excluded by the mask. The
// mask block holding it sits at the same in-block offset, (mk - k) blocks away. Its VEC
// bytes are read with one load: VEC > 1 only when the mask data is 16-byte aligned, and e
// is a multiple of VEC.
template <int VEC>
__device__ __forceinline__ unsigned chunk_mask(const MaskGeom& mg, const Row& row, std::int64_t e, int lg_bs) {
  const std::uint8_t* p = mg.data + e;
  if (!mg.same) {
    const std::int64_t k = e >> (2 * lg_bs);
    const std::int64_t mk = mg.index[row.br * mg.Nb + mg.coords[3 * k + 2]];
    if (mk < 0) return 0u;
    p += (mk - k) << (2 * lg_bs);
  }
  const gpu::Pack<std::uint8_t, VEC> pk = *reinterpret_cast<const gpu::Pack<std::uint8_t, VEC>*>(p);
  unsigned bits = 0;
#pragma unroll
  for (int t = 0; t < VEC; ++t) bits |= (pk.v[t] != 0 ? 1u : 0u) << t;
  return bits;
}

struct MaxNanOp {
  template <typename A>
  __device__ __forceinline__ A operator()(const A& a, const A& b) const {
    return gpu::nan_max_fast(a, b);
  }
};

// exp(z - m) for a row max m that is not -inf (so z = -inf gives 0 without a test);
// through one ex2.approx for 16-bit storage, whose results keep 8 or 11 bits.
template <typename T, typename Acc>
__device__ __forceinline__ Acc exp_shifted(Acc z, Acc m) {
  if constexpr (kIs16<T>) return gpu::ex2_approx((z - m) * 1.4426950408889634f);
  else return gpu::acc_exp(z - m);
}

// exp(a - m) with exp(-inf - m) = 0 even when m is -inf too (gpu::exp_sub), the 16-bit
// way where T is 16-bit.
template <typename T, typename Acc>
__device__ __forceinline__ Acc exp_sub_t(Acc a, Acc m) {
  if constexpr (kIs16<T>) return a == gpu::neg_inf<Acc>() ? Acc(0) : exp_shifted<T>(a, m);
  else return gpu::exp_sub(a, m);
}

using gpu::row_allreduce;
using gpu::row_range;

// ---- register-resident rows --------------------------------------------------------------
// Thread `tid` of the row's nt threads owns chunks c * nt + tid for c < P / VEC (a warp's
// 16-byte loads cover 512 consecutive bytes).

// Forward: chunks past the row's end are neither loaded, computed nor stored. Every load
// of the row is issued before any math; then two all-reductions: the max (one max per
// element), and after one exp per element the sum.
template <typename T, int VEC, int P, bool WARP, bool MASKED>
__device__ __forceinline__ void fwd_reg(const T* __restrict__ x, T* __restrict__ y, const RowGeom& g,
                                        const MaskGeom& mg, acc_t<T> scale) {
  using Acc = acc_t<T>;
  constexpr int CH = P / VEC;
  static_assert(P % VEC == 0 && P <= 32, "P must be a multiple of VEC and at most 32 (one mask bit each)");
  __shared__ Acc smem[32];
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : static_cast<int>(blockDim.x);
  const Acc ninf = gpu::neg_inf<Acc>();
  std::int64_t row, step;
  row_range<WARP>(row, step);
  for (; row < g.rows; row += step) {
    const Row rw = locate<VEC>(g, row);
    if (rw.chunks == 0) continue;  // no blocks: nothing to write (uniform over the row's threads)
    // Chunk c of this thread: in the row? and its flat index (recomputed where needed:
    // holding CH 64-bit indices would cost registers that the values need).
    auto in = [&](int c) { return static_cast<std::int64_t>(c) * nt + tid < rw.chunks; };
    auto e = [&](int c) { return chunk_at<VEC>(rw, static_cast<std::int64_t>(c) * nt + tid, g.lg_bs); };
    Acc v[P];
#pragma unroll
    for (int c = 0; c < CH; ++c)
      if (in(c)) load_vec<VEC>(x + e(c), v + c * VEC);
    unsigned excl = 0;  // bit i: element i excluded by the mask
    if constexpr (MASKED) {
#pragma unroll
      for (int c = 0; c < CH; ++c)
        if (in(c)) excl |= chunk_mask<VEC>(mg, rw, e(c), g.lg_bs) << (c * VEC);
    }
    Acc mt = ninf;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (!in(c)) continue;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int i = c * VEC + k;
        v[i] = MASKED && ((excl >> i) & 1u) ? ninf : v[i] * scale;
        mt = gpu::nan_max_fast(mt, v[i]);
      }
    }
    const Acc m = row_allreduce<WARP>(mt, MaxNanOp{}, smem);
    if (m == ninf) {  // every element -inf or excluded: zeros (uniform over the row's threads)
#pragma unroll
      for (int c = 0; c < CH; ++c) {
        if (!in(c)) continue;
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[c * VEC + k] = Acc(0);
        store_vec<VEC>(y + e(c), v + c * VEC);
      }
      continue;
    }
    Acc st = 0;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (!in(c)) continue;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        v[c * VEC + k] = exp_shifted<T>(v[c * VEC + k], m);
        st += v[c * VEC + k];
      }
    }
    // s >= 1 (the max gives exp(0)) unless m is +inf or nan, when s is nan and so is every
    // included output, as on the CPU.
    const Acc inv = Acc(1) / row_allreduce<WARP>(st, SumOp{}, smem);
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (!in(c)) continue;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int i = c * VEC + k;
        v[i] = MASKED && ((excl >> i) & 1u) ? Acc(0) : v[i] * inv;
      }
      store_vec<VEC>(y + e(c), v + c * VEC);
    }
  }
}

// Backward: chunks past the row's end are padding (0) and are not stored.
template <typename T, int VEC, int P, bool WARP>
__device__ __forceinline__ void bwd_reg(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                        const RowGeom& g, acc_t<T> scale) {
  using Acc = acc_t<T>;
  constexpr int CH = P / VEC;
  static_assert(P % VEC == 0, "P must be a multiple of VEC");
  __shared__ Acc smem[32];
  const int tid = threadIdx.x;
  const int nt = WARP ? 32 : static_cast<int>(blockDim.x);
  std::int64_t row, step;
  row_range<WARP>(row, step);
  for (; row < g.rows; row += step) {
    const Row rw = locate<VEC>(g, row);
    if (rw.chunks == 0) continue;
    Acc a[P], b[P];  // y, dy
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const std::int64_t u = static_cast<std::int64_t>(c) * nt + tid;
      if (u < rw.chunks) {
        const std::int64_t e = chunk_at<VEC>(rw, u, g.lg_bs);
        load_vec<VEC>(y + e, a + c * VEC);
        load_vec<VEC>(dy + e, b + c * VEC);
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) a[c * VEC + k] = b[c * VEC + k] = Acc(0);
      }
    }
    Acc s = 0;
#pragma unroll
    for (int i = 0; i < P; ++i) s += a[i] != Acc(0) ? a[i] * b[i] : Acc(0);
    s = row_allreduce<WARP>(s, SumOp{}, smem);
#pragma unroll
    for (int i = 0; i < P; ++i) a[i] = a[i] != Acc(0) ? scale * a[i] * (b[i] - s) : Acc(0);
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const std::int64_t u = static_cast<std::int64_t>(c) * nt + tid;
      if (u < rw.chunks) store_vec<VEC>(dx + chunk_at<VEC>(rw, u, g.lg_bs), a + c * VEC);
    }
  }
}

// At most 64 registers per thread (the register plans need about 50): 1024 threads per SM.
template <typename T, int VEC, int P, bool MASKED>
__global__ void __launch_bounds__(32 * kWarpRows, 8)
    fwd_warp(const T* x, T* y, RowGeom g, MaskGeom mg, acc_t<T> scale) {
  fwd_reg<T, VEC, P, true, MASKED>(x, y, g, mg, scale);
}
template <typename T, int VEC, int P, bool MASKED>
__global__ void __launch_bounds__(kFwdBlockMaxThreads, 2)
    fwd_block(const T* x, T* y, RowGeom g, MaskGeom mg, acc_t<T> scale) {
  fwd_reg<T, VEC, P, false, MASKED>(x, y, g, mg, scale);
}
template <typename T, int VEC, int P>
__global__ void __launch_bounds__(32 * kWarpRows)
    bwd_warp(const T* y, const T* dy, T* dx, RowGeom g, acc_t<T> scale) {
  bwd_reg<T, VEC, P, true>(y, dy, dx, g, scale);
}
template <typename T, int VEC, int P>
__global__ void __launch_bounds__(kBlockMaxThreads)
    bwd_block(const T* y, const T* dy, T* dx, RowGeom g, acc_t<T> scale) {
  bwd_reg<T, VEC, P, false>(y, dy, dx, g, scale);
}

int log2_exact(std::int64_t v) {
  int lg = 0;
  while ((std::int64_t(1) << lg) < v) ++lg;
  return lg;
}

// ---- slices of a block-row (f32 backward of short rows): threads per row from the row's own length
// All rows of a block-row have the same blocks, so a CUDA block that takes a slice of the
// rows of one block-row (bs >= kSliceRows) knows their length before loading anything and
// gives each row the fewest threads (a power of two) whose P elements hold it: every
// thread's registers are full whatever the longest row of the layout is. The warp and block
// plans size the threads for the longest row, which at density 0.25 left half of them
// idle (rows of ~8 active blocks, the longest ~16), and a row's group is a few lanes of a
// warp when the row is short. Rows go in waves of kSliceThreads / tr. A slice is
// kSliceRows rows, fewer when that would leave fewer than kSliceBlocksPerSm CUDA blocks per
// multiprocessor (16 x 512 x 8192 has 8192 rows: 256 blocks of 32 rows would fill half of
// the H200's resident slots, unevenly).

constexpr int kSliceThreads = 256;
constexpr int kSliceRows = 32;
constexpr int kSliceBlocksPerSm = 8;

// log2 of the rows per slice for the layout (block size >= kSliceRows).
int slice_lg_rows(const Layout& l, int device) {
  const std::int64_t want = std::int64_t(kSliceBlocksPerSm) * cuda::multiprocessor_count(device);
  const std::int64_t rows = l.batch() * l.rows();
  int lg = log2_exact(kSliceRows);
  while (lg > 0 && (rows >> lg) < want) --lg;
  return lg;
}

// v reduced over the tr threads (a power of two) of consecutive ids holding one row; every
// one of them gets the result. tr <= 32: shuffles within the group; else, after the
// warp's, the tr / 32 warps' results through smem (tr is the same for the whole CUDA block,
// so its barriers are reached by all threads).
template <typename V, typename Op>
__device__ __forceinline__ V group_allreduce(V v, Op op, int tr, V* smem) {
  for (int o = (tr < 32 ? tr : 32) >> 1; o > 0; o >>= 1) v = op(v, gpu::shfl_xor(v, o));
  if (tr > 32) {
    const int warp = static_cast<int>(threadIdx.x) >> 5, nw = tr >> 5, w0 = warp & ~(nw - 1);
    __syncthreads();  // the previous call's reads of smem are done
    if ((threadIdx.x & 31) == 0) smem[warp] = v;
    __syncthreads();
    v = smem[w0];
    for (int w = 1; w < nw; ++w) v = op(v, smem[w0 + w]);
  }
  return v;
}

// Backward in slices: CUDA block q takes rows [s * 2^lg_slice, (s + 1) * 2^lg_slice) of
// block-row q / slices, s = q % slices (slices = bs / 2^lg_slice), P elements of y and of
// dy per thread.
template <typename T>
constexpr int bwd_slice_p() {
  return sizeof(T) >= 8 ? 8 : 16;
}

template <typename T, int VEC, int P>
__global__ void __launch_bounds__(kSliceThreads, 4)
    bwd_slice(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, RowGeom g, acc_t<T> scale,
              int lg_slice) {
  using Acc = acc_t<T>;
  constexpr int CH = P / VEC;
  static_assert(P % VEC == 0, "P must be a multiple of VEC");
  __shared__ Acc smem[kSliceThreads / 32];
  const int slice_rows = 1 << lg_slice, lg_slices = g.lg_bs - lg_slice;
  const std::int64_t br = blockIdx.x >> lg_slices;
  const int i_begin = static_cast<int>(blockIdx.x & ((1u << lg_slices) - 1)) << lg_slice;
  const std::int64_t k0 = g.row_off[br], k1 = g.row_off[br + 1];
  if (k0 == k1) return;  // the whole CUDA block leaves
  const std::int64_t chunks = ((k1 - k0) << g.lg_bs) / VEC;
  int tr = 1;
  while (static_cast<std::int64_t>(tr) * CH < chunks) tr <<= 1;  // the host checked tr <= kSliceThreads
  const int tid = static_cast<int>(threadIdx.x) & (tr - 1), grp = static_cast<int>(threadIdx.x) / tr;
  const int rows_per_wave = kSliceThreads / tr;
  for (int i0 = i_begin; i0 < i_begin + slice_rows; i0 += rows_per_wave) {
    const int i = i0 + grp;
    const Row rw{br, ((k0 << g.lg_bs) + i) << g.lg_bs, i < i_begin + slice_rows ? chunks : 0};
    auto in = [&](int c) { return static_cast<std::int64_t>(c) * tr + tid < rw.chunks; };
    auto e = [&](int c) { return chunk_at<VEC>(rw, static_cast<std::int64_t>(c) * tr + tid, g.lg_bs); };
    Acc a[P], b[P];  // y, dy; 0 past the row's end
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (in(c)) {
        load_vec<VEC>(y + e(c), a + c * VEC);
        load_vec<VEC>(dy + e(c), b + c * VEC);
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) a[c * VEC + k] = b[c * VEC + k] = Acc(0);
      }
    }
    Acc st = 0;
#pragma unroll
    for (int q = 0; q < P; ++q) st += a[q] != Acc(0) ? a[q] * b[q] : Acc(0);
    const Acc sum = group_allreduce(st, SumOp{}, tr, smem);
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (!in(c)) continue;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int q = c * VEC + k;
        a[q] = a[q] != Acc(0) ? scale * a[q] * (b[q] - sum) : Acc(0);
      }
      store_vec<VEC>(dx + e(c), a + c * VEC);
    }
  }
}

// ---- long rows: a block per row, two passes ----------------------------------------------

template <typename T, int VEC>
__global__ void __launch_bounds__(kLongThreads)
    fwd_long(const T* __restrict__ x, T* __restrict__ y, RowGeom g, MaskGeom mg, acc_t<T> scale) {
  using Acc = acc_t<T>;
  __shared__ MaxSum<Acc> smem[32];
  const Acc ninf = gpu::neg_inf<Acc>();
  for (std::int64_t row = blockIdx.x; row < g.rows; row += gridDim.x) {
    const Row rw = locate<VEC>(g, row);
    if (rw.chunks == 0) continue;
    MaxSum<Acc> ms{ninf, Acc(0)};
    for (std::int64_t u = threadIdx.x; u < rw.chunks; u += blockDim.x) {
      const std::int64_t e = chunk_at<VEC>(rw, u, g.lg_bs);
      Acc v[VEC];
      load_vec<VEC>(x + e, v);
      const unsigned bits = mg.data ? chunk_mask<VEC>(mg, rw, e, g.lg_bs) : 0u;
      Acc lm = ninf;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        v[k] = (bits >> k) & 1u ? ninf : v[k] * scale;
        lm = gpu::nan_max(lm, v[k]);
      }
      const Acc nm = gpu::nan_max(ms.m, lm);
      Acc ls = 0;
#pragma unroll
      for (int k = 0; k < VEC; ++k) ls += exp_sub_t<T>(v[k], nm);
      ms.s = ms.s * exp_sub_t<T>(ms.m, nm) + ls;
      ms.m = nm;
    }
    ms = gpu::block_allreduce(ms, MaxSumOp{}, smem);
    const Acc m = ms.m;
    const Acc inv = m == ninf ? Acc(0) : Acc(1) / ms.s;
    for (std::int64_t u = threadIdx.x; u < rw.chunks; u += blockDim.x) {
      const std::int64_t e = chunk_at<VEC>(rw, u, g.lg_bs);
      Acc v[VEC];
      load_vec<VEC>(x + e, v);
      const unsigned bits = mg.data ? chunk_mask<VEC>(mg, rw, e, g.lg_bs) : 0u;
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[k] = (bits >> k) & 1u ? Acc(0) : exp_sub_t<T>(v[k] * scale, m) * inv;
      store_vec<VEC>(y + e, v);
    }
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kLongThreads)
    bwd_long(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, RowGeom g, acc_t<T> scale) {
  using Acc = acc_t<T>;
  __shared__ Acc smem[32];
  for (std::int64_t row = blockIdx.x; row < g.rows; row += gridDim.x) {
    const Row rw = locate<VEC>(g, row);
    if (rw.chunks == 0) continue;
    Acc s = 0;
    for (std::int64_t u = threadIdx.x; u < rw.chunks; u += blockDim.x) {
      const std::int64_t e = chunk_at<VEC>(rw, u, g.lg_bs);
      Acc a[VEC], b[VEC];
      load_vec<VEC>(y + e, a);
      load_vec<VEC>(dy + e, b);
#pragma unroll
      for (int k = 0; k < VEC; ++k) s += a[k] != Acc(0) ? a[k] * b[k] : Acc(0);
    }
    s = gpu::block_allreduce(s, SumOp{}, smem);
    for (std::int64_t u = threadIdx.x; u < rw.chunks; u += blockDim.x) {
      const std::int64_t e = chunk_at<VEC>(rw, u, g.lg_bs);
      Acc a[VEC], b[VEC];
      load_vec<VEC>(y + e, a);
      load_vec<VEC>(dy + e, b);
#pragma unroll
      for (int k = 0; k < VEC; ++k) a[k] = a[k] != Acc(0) ? scale * a[k] * (b[k] - s) : Acc(0);
      store_vec<VEC>(dx + e, a);
    }
  }
}

// ---- staged rows (the default plan) ------------------------------------------------------
// The rows of one block-row share their blocks, and a slice of R consecutive rows of it is
// one contiguous piece of R * bs elements per block (pieces bs * bs apart). A CTA takes one
// such slice: every thread copies 16-byte chunks of it into shared memory with cp.async
// (the whole slice in flight at once, no thread idle whatever the row length, no
// registers held), then a group of kStageThreads / R threads per row reduces it from shared
// memory, and every thread writes 16-byte chunks of the output in the slice's memory order.
// Shared memory, not registers, bounds the bytes in flight: the register plans above held
// 64 bytes per thread, half of it idle where a row's length was just past a power of two,
// and read nothing while they reduced and wrote. Shared memory keeps the pieces in memory
// order ([block][row][column]); a row's chunk q sits in piece q / (bs / V).

template <typename T>
constexpr int kLgV = sizeof(T) == 2 ? 3 : sizeof(T) == 4 ? 2 : 1;  // 16-byte chunks: 2^kLgV elements

// Threads of a staged CTA: 256, or 128 where a slice holds few bytes per thread (the
// per-CTA start-up, staging setup and reductions are a fixed cost; with 256 threads on
// slices of ~2K elements, one 16-byte chunk a thread, ncu counted ~52 instructions an
// element and the SMs issuing 3.4 instructions a cycle). LG_NT below is log2 of it.
constexpr int kStageThreads = 256;
constexpr int kStageMaxRows = 32;          // rows per CTA at most: a group of >= 8 threads per row (4 at 128)
constexpr std::int64_t kStageMinBs = 16;   // a piece holds whole 16-byte chunks at every dtype
// Bytes of rows a CTA stages, at most kStageTargetBytes where rows allow (8 CTAs of 256
// threads fit a multiprocessor), and at most kStageMaxBytes for a single row (longer rows
// take the two-pass kernels).
constexpr std::int64_t kStageTargetBytes = 24 << 10;
constexpr std::int64_t kStageMaxBytes = 96 << 10;
// CTAs per multiprocessor that registers must allow (32 registers per thread; f64 64), so
// that shared memory, not registers, bounds them.
template <typename T, int LG_NT>
constexpr int kStageMinCtas = (sizeof(T) >= 8 ? 4 : 8) * kStageThreads >> LG_NT;
// CTAs per multiprocessor the grid should give at least, when rows allow: several waves, so
// that the reads of some CTAs overlap the writes of others.
constexpr std::int64_t kStageCtasPerSm = 16;

// Where a CTA's slice is and how shared memory is split.
struct StageGeom {
  const std::int64_t* row_off;  // CSR offsets of the block-rows, [B * Mb + 1]
  int lg_bs, lg_r;              // block size and rows per CTA, log2 (lg_r <= lg_bs)
  int buf2;                     // byte offset of the second buffer (mask bytes or dy)
  int map;                      // byte offset of the mask blocks of the pieces (other layout)
};

// The CTA's slice: rows i0 .. i0 + R - 1 of block-row br, which holds blocks k0 .. k0 + nb - 1.
struct Slice {
  std::int64_t br, k0;
  std::int64_t g0;  // flat index of its first element (block k0, in-block row i0, column 0)
  int nb, i0;
};

// Programmatic dependent launch (ops/cuda_pdl.cuh; see launch_staged): wait for the previous
// grid of the stream before the first global access, and let the next one be scheduled meanwhile.
__device__ __forceinline__ void pdl_wait_and_allow() {
  gpu::pdl_wait();
  gpu::pdl_allow();
}

// The slice of this CTA: R = 2^lg_r rows of a block-row per CTA, block-row after block-row.
__device__ __forceinline__ Slice slice_of(const StageGeom& g) {
  const int lg_slices = g.lg_bs - g.lg_r;
  const std::int64_t br = blockIdx.x >> lg_slices;
  const int i0 = static_cast<int>(blockIdx.x & ((1u << lg_slices) - 1)) << g.lg_r;
  const std::int64_t k0 = g.row_off[br], k1 = g.row_off[br + 1];
  return {br, k0, ((k0 << g.lg_bs) + i0) << g.lg_bs, static_cast<int>(k1 - k0), i0};
}

// Offset from the slice's first element of its element e in memory order (pieces of
// 2^lg_piece elements, 2^lg_bs2 apart). 32 bits suffice: the offset is below len * bs for
// staged rows of len <= kStageMaxBytes / 2 elements and bs <= len a power of two, so below
// 49152 * 32768 < 2^31.
__device__ __forceinline__ int piece_off(int e, int lg_piece, int lg_bs2) {
  return ((e >> lg_piece) << lg_bs2) + (e & ((1 << lg_piece) - 1));
}

// 16 bytes from global to shared memory without a register round trip; zeros where !valid
// (src is not read then).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
// Waits for this thread's cp.async copies (a barrier then makes every thread's visible).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Copies the n elements of a slice (n a multiple of 16 / sizeof(E)) into dst, where
// src(e) is the address of element e or nullptr (zeros: a piece with no mask block).
// VEC: 16 bytes per cp.async, src(e) 16-byte aligned for every chunk; else one element at a
// time through registers (misaligned data, not the case to make fast).
template <bool VEC, int NT, typename E, typename Src>
__device__ __forceinline__ void stage(E* dst, int n, const E* any, Src src) {
  if constexpr (VEC) {
    constexpr int V = 16 / static_cast<int>(sizeof(E));
#pragma unroll 4
    for (int e = static_cast<int>(threadIdx.x) * V; e < n; e += NT * V) {
      const E* p = src(e);
      cp_async16(dst + e, p ? p : any, p != nullptr);
    }
  } else {
#pragma unroll 4
    for (int e = static_cast<int>(threadIdx.x); e < n; e += NT) {
      const E* p = src(e);
      dst[e] = p ? *p : E{};
    }
  }
}

// Bit t set when mask byte t of the V at p (V-byte aligned) is non-zero.
template <int V>
__device__ __forceinline__ unsigned excl_bits(const std::uint8_t* p) {
  const gpu::Pack<std::uint8_t, V> pk = *reinterpret_cast<const gpu::Pack<std::uint8_t, V>*>(p);
  unsigned bits = 0;
#pragma unroll
  for (int t = 0; t < V; ++t) bits |= (pk.v[t] != 0 ? 1u : 0u) << t;
  return bits;
}

// 2^v: one ex2.approx.ftz for f32 (a few ulp; results under 2^-126, far below any
// probability that matters, flush to 0), exp2 for f64.
__device__ __forceinline__ float exp2_acc(float v) { return gpu::ex2_approx(v); }
__device__ __forceinline__ double exp2_acc(double v) { return exp2(v); }
__device__ __forceinline__ float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) { return fma(a, b, c); }

// Two maxima of 16-bit pairs in one instruction, a nan on either side giving nan.
template <typename T>
__device__ __forceinline__ std::uint32_t max2_nan(std::uint32_t a, std::uint32_t b) {
  std::uint32_t d;
  if constexpr (std::is_same_v<T, bfloat16>) asm("max.NaN.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  else asm("max.NaN.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// Running nan-propagating max of unscaled values, 16 bytes at a time: with c > 0 the max of
// c * x is c times the max of x (rounding is monotonic), so the max pass need not scale.
// 16-bit storage stays packed: one max.NaN per two elements, converted once at the end.
template <typename T, bool = kIs16<T>>
struct RawMax {
  acc_t<T> v = gpu::neg_inf<acc_t<T>>();
  __device__ __forceinline__ void add(const T* p) {
    constexpr int V = 1 << kLgV<T>;
    acc_t<T> a[V];
    load_vec<V>(p, a);
#pragma unroll
    for (int k = 0; k < V; ++k) v = gpu::nan_max_fast(v, a[k]);
  }
  __device__ __forceinline__ acc_t<T> get() const { return v; }
};
template <typename T>
struct RawMax<T, true> {
  std::uint32_t w = std::is_same_v<T, bfloat16> ? 0xff80ff80u : 0xfc00fc00u;  // (-inf, -inf)
  __device__ __forceinline__ void add(const T* p) {
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    w = max2_nan<T>(w, max2_nan<T>(max2_nan<T>(q.x, q.y), max2_nan<T>(q.z, q.w)));
  }
  __device__ __forceinline__ float get() const {
    float lo, hi;
    gpu::unpack2<T>(w, lo, hi);
    return gpu::nan_max_fast(lo, hi);
  }
};

// Overwrites the elements of the staged 16-byte chunk at p whose bit is set with -inf.
template <typename T>
__device__ __forceinline__ void hide_excluded(T* p, unsigned bits) {
  constexpr int V = 1 << kLgV<T>;
  using U = std::conditional_t<sizeof(T) == 2, std::uint16_t,
                               std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>;
  constexpr U kNegInf = sizeof(T) == 8                ? U(0xfff0000000000000ull)
                        : sizeof(T) == 4              ? U(0xff800000u)
                        : std::is_same_v<T, bfloat16> ? U(0xff80u)
                                                      : U(0xfc00u);  // f16
  auto* q = reinterpret_cast<gpu::Pack<U, V>*>(p);
  gpu::Pack<U, V> pk = *q;
#pragma unroll
  for (int k = 0; k < V; ++k) pk.v[k] = (bits >> k) & 1u ? kNegInf : pk.v[k];
  *q = pk;
}

// Row r of the slice as this thread sees it in the reductions: chunks t, t + G, ... of the
// row, each V elements (16 bytes) of one segment.
struct RowPart {
  int r, t, lg_g;  // row, thread in the row's group, group size log2
  int nq;          // chunks in the row
  int lg_cps;      // chunks per segment, log2
  int lg_r, lg_bs;
  int lg_v;         // elements per chunk, log2
  // element index in the staged buffer of chunk q of the row
  __device__ __forceinline__ int at(int q) const {
    return ((((q >> lg_cps) << lg_r) + r) << lg_bs) + ((q & ((1 << lg_cps) - 1)) << lg_v);
  }
};

template <typename T, int LG_NT>
__device__ __forceinline__ RowPart row_part(const StageGeom& g, int nb) {
  const int lg_g = LG_NT - g.lg_r, tid = static_cast<int>(threadIdx.x);
  const int lg_cps = g.lg_bs - kLgV<T>;
  return {tid >> lg_g, tid & ((1 << lg_g) - 1), lg_g, nb << lg_cps, lg_cps, g.lg_r, g.lg_bs, kLgV<T>};
}

// Forward. x's slice is staged (and the mask's, where MASKED: the mask blocks of the
// pieces come from the mask layout's block_index unless it is x's layout); per row, the max
// of c * x over included elements (c = scale * log2(e)), then the sum of 2^(c * x - m), both
// from shared memory; then y = 2^(c * x - m) / sum in memory order. A row whose max is -inf
// keeps m = 0 and 1 / sum = 0: its included elements are all -inf (2^-inf * 0 = 0).
template <typename T, bool VEC, bool MASKED, int LG_NT>
__global__ void __launch_bounds__(1 << LG_NT, kStageMinCtas<T, LG_NT>)
    fwd_staged(const T* __restrict__ x, T* __restrict__ y, StageGeom g, MaskGeom mg, bool mvec, acc_t<T> c) {
  using Acc = acc_t<T>;
  constexpr int V = 1 << kLgV<T>, NT = 1 << LG_NT;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ Acc red[NT / 32];
  __shared__ Acc st_m[kStageMaxRows], st_inv[kStageMaxRows];
  const Acc ninf = gpu::neg_inf<Acc>();
  pdl_wait_and_allow();
  const Slice s = slice_of(g);
  if (s.nb == 0) return;  // no blocks: nothing to write (the whole CTA leaves)
  const int lg_piece = g.lg_r + g.lg_bs, lg_bs2 = 2 * g.lg_bs, n = s.nb << lg_piece;
  T* xs = reinterpret_cast<T*>(smem);
  std::uint8_t* ms = smem + g.buf2;
  const T* xg = x + s.g0;
  stage<VEC, NT>(xs, n, x, [&](int e) { return xg + piece_off(e, lg_piece, lg_bs2); });
  if constexpr (MASKED) {
    std::int64_t* mk = reinterpret_cast<std::int64_t*>(smem + g.map);
    if (!mg.same) {
      for (int k = static_cast<int>(threadIdx.x); k < s.nb; k += NT)
        mk[k] = mg.index[s.br * mg.Nb + mg.coords[3 * (s.k0 + k) + 2]];
      __syncthreads();
    }
    auto src = [&](int e) -> const std::uint8_t* {
      const int k = e >> lg_piece;
      const std::int64_t b = mg.same ? s.k0 + k : mk[k];
      return b < 0 ? nullptr : mg.data + ((((b << g.lg_bs) + s.i0) << g.lg_bs) + (e & ((1 << lg_piece) - 1)));
    };
    if (mvec) stage<true, NT>(ms, n, mg.data, src);
    else stage<false, NT>(ms, n, mg.data, src);
  }
  cp_async_wait_all();
  __syncthreads();

  const RowPart rp = row_part<T, LG_NT>(g, s.nb);
  const int G = 1 << rp.lg_g;
  // With c > 0 a mask is applied once: the max pass overwrites the excluded elements of
  // its own chunks with -inf (2^(c * -inf - m) = 0), so that the later passes read the row
  // as an unmasked one (the output pass, by other threads, after a barrier), except in rows
  // whose max is +inf or nan. Per element the mask test cost as much as the rest of a
  // pass, three times.
  const bool hide = MASKED && c > Acc(0);
  Acc m = ninf;
  if (!MASKED && c > Acc(0)) {
    RawMax<T> rm;
#pragma unroll 4
    for (int q = rp.t; q < rp.nq; q += G) rm.add(xs + rp.at(q));
    m = c * rm.get();
  } else if (hide) {
    RawMax<T> rm;
#pragma unroll 2
    for (int q = rp.t; q < rp.nq; q += G) {
      const int e = rp.at(q);
      const unsigned bits = excl_bits<V>(ms + e);
      if (bits != 0u) hide_excluded(xs + e, bits);
      rm.add(xs + e);
    }
    m = c * rm.get();
  } else {
#pragma unroll 2
    for (int q = rp.t; q < rp.nq; q += G) {
      const int e = rp.at(q);
      Acc a[V];
      load_vec<V>(xs + e, a);
      const unsigned bits = MASKED ? excl_bits<V>(ms + e) : 0u;
#pragma unroll
      for (int k = 0; k < V; ++k) m = gpu::nan_max_fast(m, (bits >> k) & 1u ? ninf : a[k] * c);
    }
  }
  m = group_allreduce(m, MaxNanOp{}, G, red);
  const Acc mz = m == ninf ? Acc(0) : m;
  Acc sum = 0;
#pragma unroll 2
  for (int q = rp.t; q < rp.nq; q += G) {
    const int e = rp.at(q);
    Acc a[V];
    load_vec<V>(xs + e, a);
    const unsigned bits = MASKED && !hide ? excl_bits<V>(ms + e) : 0u;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const Acc p = exp2_acc(fma_acc(a[k], c, -mz));
      sum += (bits >> k) & 1u ? Acc(0) : p;
    }
  }
  // sum >= 1 (the max gives 2^0) unless m is -inf (unused then), +inf or nan (then every
  // included output is nan, as on the CPU)
  sum = group_allreduce(sum, SumOp{}, G, red);
  if (rp.t == 0) {
    st_m[rp.r] = mz;
    st_inv[rp.r] = m == ninf ? Acc(0) : Acc(1) / sum;
  }
  __syncthreads();

  T* yg = y + s.g0;
  const int rmask = (1 << g.lg_r) - 1;
#pragma unroll 2
  for (int e = static_cast<int>(threadIdx.x) * V; e < n; e += NT * V) {
    const int r = (e >> g.lg_bs) & rmask;
    const Acc mm = st_m[r], inv = st_inv[r];
    Acc a[V];
    load_vec<V>(xs + e, a);
    // a row whose max is +inf or nan has nan outputs, where hidden elements would be nan
    // too (2^-inf * nan): its excluded elements are found by their bits
    const bool by_bits = MASKED && (!hide || !(mm <= std::numeric_limits<Acc>::max()));
    const unsigned bits = by_bits ? excl_bits<V>(ms + e) : 0u;
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] = (bits >> k) & 1u ? Acc(0) : exp2_acc(fma_acc(a[k], c, -mm)) * inv;
    T* p = yg + piece_off(e, lg_piece, lg_bs2);
    if constexpr (VEC) {
      store_vec<V>(p, a);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) store_vec<1>(p + k, a + k);
    }
  }
}

// Backward: y's and dy's slices staged; per row ss = scale * sum(y * dy over y != 0) from
// shared memory; then dx = y * (scale * dy - ss) where y != 0, else 0, in memory order.
template <typename T, bool VEC, int LG_NT>
__global__ void __launch_bounds__(1 << LG_NT, kStageMinCtas<T, LG_NT>)
    bwd_staged(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, StageGeom g, acc_t<T> scale) {
  using Acc = acc_t<T>;
  constexpr int V = 1 << kLgV<T>, NT = 1 << LG_NT;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ Acc red[NT / 32];
  __shared__ Acc st_s[kStageMaxRows];
  pdl_wait_and_allow();
  const Slice s = slice_of(g);
  if (s.nb == 0) return;
  const int lg_piece = g.lg_r + g.lg_bs, lg_bs2 = 2 * g.lg_bs, n = s.nb << lg_piece;
  T* ys = reinterpret_cast<T*>(smem);
  T* ds = reinterpret_cast<T*>(smem + g.buf2);
  const T* yg = y + s.g0;
  const T* dg = dy + s.g0;
  stage<VEC, NT>(ys, n, y, [&](int e) { return yg + piece_off(e, lg_piece, lg_bs2); });
  stage<VEC, NT>(ds, n, dy, [&](int e) { return dg + piece_off(e, lg_piece, lg_bs2); });
  cp_async_wait_all();
  __syncthreads();

  const RowPart rp = row_part<T, LG_NT>(g, s.nb);
  const int G = 1 << rp.lg_g;
  Acc sum = 0;
#pragma unroll 2
  for (int q = rp.t; q < rp.nq; q += G) {
    const int e = rp.at(q);
    Acc a[V], b[V];
    load_vec<V>(ys + e, a);
    load_vec<V>(ds + e, b);
#pragma unroll
    for (int k = 0; k < V; ++k) sum = fma_acc(a[k], a[k] != Acc(0) ? b[k] : Acc(0), sum);
  }
  sum = group_allreduce(sum, SumOp{}, G, red);
  if (rp.t == 0) st_s[rp.r] = scale * sum;
  __syncthreads();

  T* og = dx + s.g0;
  const int rmask = (1 << g.lg_r) - 1;
#pragma unroll 2
  for (int e = static_cast<int>(threadIdx.x) * V; e < n; e += NT * V) {
    const Acc ss = st_s[(e >> g.lg_bs) & rmask];
    Acc a[V], b[V];
    load_vec<V>(ys + e, a);
    load_vec<V>(ds + e, b);
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] = a[k] != Acc(0) ? a[k] * fma_acc(scale, b[k], -ss) : Acc(0);
    T* p = og + piece_off(e, lg_piece, lg_bs2);
    if constexpr (VEC) {
      store_vec<V>(p, a);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) store_vec<1>(p + k, a + k);
    }
  }
}

// ---- launch ------------------------------------------------------------------------------

// Longest logical row of the layout, in elements (from the host CSR table, built once).
std::int64_t max_row_len(const Layout& l) {
  const std::int64_t* off = l.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  std::int64_t m = 0;
  for (std::int64_t q = 0; q < l.batch() * l.block_rows(); ++q) m = std::max(m, off[q + 1] - off[q]);
  return m * l.block_size();
}

enum class PlanKind { Warp, Block, Long };

struct Plan {
  PlanKind kind;
  int p;        // elements per thread (register paths)
  int threads;  // per row
};

// Forward: a warp per row while 32 lanes of fwd_max_p<T>(vec) elements hold it (the fewest
// elements per lane that do), else a block of such threads per row up to
// kFwdBlockMaxThreads of them, else two passes.
template <typename T>
Plan fwd_plan_for(std::int64_t len, bool vec) {
  const int pmax = fwd_max_p<T>(vec);
  if (len <= 32 * pmax) {
    int p = 1;
    while (p * 32 < len) p *= 2;
    return {PlanKind::Warp, p, 32};
  }
  if (len <= std::int64_t(kFwdBlockMaxThreads) * pmax)
    return {PlanKind::Block, pmax, static_cast<int>(((len + pmax - 1) / pmax + 31) / 32 * 32)};
  return {PlanKind::Long, 0, kLongThreads};
}

// Backward: a warp per row up to kWarpMaxLen, a block per row (at most 256 threads, f64
// 512) up to kRegMaxLen, else two passes.
template <typename T>
Plan plan_for(std::int64_t len) {
  if (len <= kWarpMaxLen) {
    int p = 1;
    while (p * 32 < len) p *= 2;
    return {PlanKind::Warp, p, 32};
  }
  if (len <= kRegMaxLen) {
    // fewest elements per thread that keep the block at <= 256 threads (f64: 512)
    int p = 4;
    while (p < block_max_p<T>() && (len + p - 1) / p > 256) p *= 2;
    return {PlanKind::Block, p, static_cast<int>(((len + p - 1) / p + 31) / 32 * 32)};
  }
  return {PlanKind::Long, 0, kLongThreads};
}

// Calls f(std::integral_constant<int, P>) for the runtime p.
template <typename F>
void with_p(int p, F&& f) {
  switch (p) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    default: return f(std::integral_constant<int, 32>{});
  }
}

RowGeom row_geom(const Layout& l, const LayoutTables& tab) {
  return {tab.row_offsets.data<std::int64_t>(), l.batch() * l.rows(), l.rows(), l.block_rows(),
          log2_exact(l.block_size())};
}

// ---- launch: staged rows -------------------------------------------------------------------

struct StagePlan {
  int lg_r;           // rows per CTA, log2; -1: the staged plan does not apply
  std::int64_t smem;  // dynamic shared memory per CTA, bytes
  int lg_nt;          // threads per CTA, log2 (7 or 8)
};

// Bytes a thread of a 256-thread CTA stages at least, on average, for that size to be
// chosen (staged_threads.h). Measured on an H200 over 16 x 2048², 16 x 512 x 8192, blocks
// 32-128, densities 0.25-1, f32 and bf16, forward, masked forward and backward: below 64
// bytes (8 f32 or 16 bf16 elements of one stream) 128-thread CTAs ran 5-16 points of copy
// rate faster; at 64 and above 256 threads ran up to 11 points faster (all but one case).
constexpr std::int64_t kStageMinBytesPerThread = 64;

// The staged plan for rows of at most `len` elements taking `elem_bytes` of shared memory
// each (plus `extra` per CTA): the most rows per CTA (a power of two, <= bs, <=
// kStageMaxRows) within kStageTargetBytes that leave kStageCtasPerSm CTAs per
// multiprocessor; one row per CTA up to kStageMaxBytes; none for blocks under kStageMinBs.
StagePlan stage_plan(const Layout& l, std::int64_t len, std::int64_t elem_bytes, std::int64_t extra, int device) {
  const std::int64_t bs = l.block_size(), row = len * elem_bytes, rows = l.batch() * l.rows();
  if (bs < kStageMinBs || len <= 0 || row + extra > kStageMaxBytes || rows > std::numeric_limits<int>::max())
    return {-1, 0, 8};
  const std::int64_t want = kStageCtasPerSm * cuda::multiprocessor_count(device);
  const std::int64_t max_rows = std::min<std::int64_t>(bs, kStageMaxRows);
  int lg = 0;
  while ((std::int64_t(2) << lg) <= max_rows && (row << (lg + 1)) + extra <= kStageTargetBytes &&
         (rows >> (lg + 1)) >= want)
    ++lg;
  int lg_nt = 8;
  if (const int forced = staged_threads(); forced != 0) {
    lg_nt = forced == 128 ? 7 : 8;
  } else {
    // the average row's staged bytes times the slice's rows, per thread of a 256-thread CTA
    const std::int64_t block_rows = l.batch() * l.block_rows();
    if ((l.n_blocks() * bs * elem_bytes) << lg < kStageMinBytesPerThread * kStageThreads * block_rows) lg_nt = 7;
  }
  return {lg, (row << lg) + extra, lg_nt};
}

// 16-byte vectors apply where every pointer is 16-byte aligned (bs * sizeof(T) >= 16 keeps
// every chunk aligned from there).
bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Launches a staged kernel with programmatic stream serialisation where the device has it
// (sm_90: the launch and the first CTAs overlap the previous kernel's tail; every staged
// kernel waits for that kernel before touching global memory). Sets, once per device, the
// kernel's shared memory limit to kStageMaxBytes and asks for the largest carveout, so that
// as many CTAs fit a multiprocessor as its shared memory allows.
template <auto Kernel, typename... Args>
void launch_staged(unsigned grid, int threads, std::int64_t smem, cudaStream_t st, int device, Args... args) {
  static std::atomic<std::uint64_t> ready{0};  // bit d: attributes set on device d
  const std::uint64_t bit = std::uint64_t(1) << (device & 63);
  if ((ready.load(std::memory_order_acquire) & bit) == 0) {
    TG_CUDA_CHECK(
        cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kStageMaxBytes)));
    TG_CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       static_cast<int>(cudaSharedmemCarveoutMaxShared)));
    ready.fetch_or(bit, std::memory_order_release);
  }
  gpu::launch_pdl(true, Kernel, dim3(grid), dim3(static_cast<unsigned>(threads)), static_cast<std::size_t>(smem), st,
                  device, args...);
}

// Calls f(std::integral_constant<int, L>) for log2 of the staged threads, 7 or 8.
template <typename F>
void with_lg_nt(int lg_nt, F&& f) {
  if (lg_nt == 7) f(std::integral_constant<int, 7>{});
  else f(std::integral_constant<int, 8>{});
}

// The staged forward where it applies (see stage_plan); false: use the other plans.
template <typename T>
bool fwd_staged_launch(const T* xp, T* yp, const Layout& l, const LayoutTables& tab, const MaskGeom& mg,
                       std::int64_t len, double scale, const Device& dev, cudaStream_t st) {
  using Acc = acc_t<T>;
  const bool masked = mg.data != nullptr;
  // the mask block of every piece of a slice, where the mask has a layout of its own
  const std::int64_t map = masked && !mg.same ? len / l.block_size() * std::int64_t(sizeof(std::int64_t)) : 0;
  const StagePlan sp = stage_plan(l, len, std::int64_t(sizeof(T)) + (masked ? 1 : 0), map, dev.index);
  if (sp.lg_r < 0) return false;
  const std::int64_t buf = (len << sp.lg_r) * std::int64_t(sizeof(T));
  const StageGeom g{tab.row_offsets.data<std::int64_t>(), log2_exact(l.block_size()), sp.lg_r, static_cast<int>(buf),
                    static_cast<int>(buf + (masked ? len << sp.lg_r : 0))};
  const unsigned grid = static_cast<unsigned>((l.batch() * l.rows()) >> sp.lg_r);
  const bool vec = aligned16(xp) && aligned16(yp), mvec = masked && aligned16(mg.data);
  // softmax(scale * x) = 2^(c * x - max) / sum with c = scale * log2(e): one fma and one
  // ex2 per exponential
  const Acc c = static_cast<Acc>(scale * 1.4426950408889634074);
  const int d = dev.index;
  with_lg_nt(sp.lg_nt, [&](auto nt) {
    constexpr int L = decltype(nt)::value;
    if (masked) {
      if (vec) launch_staged<fwd_staged<T, true, true, L>>(grid, 1 << L, sp.smem, st, d, xp, yp, g, mg, mvec, c);
      else launch_staged<fwd_staged<T, false, true, L>>(grid, 1 << L, sp.smem, st, d, xp, yp, g, mg, mvec, c);
    } else {
      if (vec) launch_staged<fwd_staged<T, true, false, L>>(grid, 1 << L, sp.smem, st, d, xp, yp, g, mg, mvec, c);
      else launch_staged<fwd_staged<T, false, false, L>>(grid, 1 << L, sp.smem, st, d, xp, yp, g, mg, mvec, c);
    }
  });
  TG_CUDA_CHECK_LAST();
  return true;
}

// The staged backward where it applies; false: use the other plans.
template <typename T>
bool bwd_staged_launch(const T* yp, const T* gp, T* op, const Layout& l, const LayoutTables& tab, std::int64_t len,
                       double scale, const Device& dev, cudaStream_t st) {
  const StagePlan sp = stage_plan(l, len, 2 * std::int64_t(sizeof(T)), 0, dev.index);
  if (sp.lg_r < 0) return false;
  const std::int64_t buf = (len << sp.lg_r) * std::int64_t(sizeof(T));
  const StageGeom g{tab.row_offsets.data<std::int64_t>(), log2_exact(l.block_size()), sp.lg_r, static_cast<int>(buf),
                    static_cast<int>(2 * buf)};
  const unsigned grid = static_cast<unsigned>((l.batch() * l.rows()) >> sp.lg_r);
  const acc_t<T> sc = static_cast<acc_t<T>>(scale);
  const bool vec = aligned16(yp) && aligned16(gp) && aligned16(op);
  with_lg_nt(sp.lg_nt, [&](auto nt) {
    constexpr int L = decltype(nt)::value;
    if (vec) launch_staged<bwd_staged<T, true, L>>(grid, 1 << L, sp.smem, st, dev.index, yp, gp, op, g, sc);
    else launch_staged<bwd_staged<T, false, L>>(grid, 1 << L, sp.smem, st, dev.index, yp, gp, op, g, sc);
  });
  TG_CUDA_CHECK_LAST();
  return true;
}

// Launches the forward's plan; MASKED: mg holds an element mask.
template <typename T, bool MASKED>
void fwd_launch(const Plan& plan, bool vec, const T* xp, T* yp, const RowGeom& g, const MaskGeom& mg, acc_t<T> sc,
                cudaStream_t st) {
  constexpr int MV = gpu::max_vec<T>();
  if (plan.kind == PlanKind::Long) {
    const unsigned grid = gpu::grid_for(g.rows, 1);
    if (vec) fwd_long<T, MV><<<grid, kLongThreads, 0, st>>>(xp, yp, g, mg, sc);
    else fwd_long<T, 1><<<grid, kLongThreads, 0, st>>>(xp, yp, g, mg, sc);
    return;
  }
  with_p(plan.p, [&](auto pc) {
    constexpr int P = decltype(pc)::value;
    constexpr int V = P < MV ? P : MV;
    // fwd_plan_for picks p <= fwd_max_p<T>(vec) on the warp path, p == it on the block path
    constexpr int PV = fwd_max_p<T>(true), PS = fwd_max_p<T>(false);
    if (plan.kind == PlanKind::Warp) {
      const dim3 block(32, kWarpRows);
      const unsigned grid = gpu::grid_for(g.rows, kWarpRows);
      if (vec) {
        if constexpr (P <= PV) fwd_warp<T, V, P, MASKED><<<grid, block, 0, st>>>(xp, yp, g, mg, sc);
      } else {
        if constexpr (P <= PS) fwd_warp<T, 1, P, MASKED><<<grid, block, 0, st>>>(xp, yp, g, mg, sc);
      }
    } else {
      const unsigned grid = gpu::grid_for(g.rows, 1);
      if (vec) {
        if constexpr (P == PV) fwd_block<T, V, P, MASKED><<<grid, plan.threads, 0, st>>>(xp, yp, g, mg, sc);
      } else {
        if constexpr (P == PS) fwd_block<T, 1, P, MASKED><<<grid, plan.threads, 0, st>>>(xp, yp, g, mg, sc);
      }
    }
  });
}

template <typename T>
void fwd_t(const Tensor& x, const Layout& l, const BlockSparseTensor& mask, double scale, const Tensor& y) {
  using Acc = acc_t<T>;
  const Device dev = x.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const LayoutTables& tab = l.tables(dev);
  const RowGeom g = row_geom(l, tab);
  MaskGeom mg{nullptr, nullptr, nullptr, l.block_cols(), false};
  if (mask.defined()) {
    mg.data = static_cast<const std::uint8_t*>(mask.data().data_ptr());
    mg.coords = tab.block_coords.data<std::int64_t>();
    mg.same = mask.layout() == l;
    if (!mg.same) mg.index = mask.layout().tables(dev).block_index.data<std::int64_t>();
  }
  const T* xp = static_cast<const T*>(x.data_ptr());
  T* yp = y.data<T>();
  // the mask's VEC bytes per chunk are read with one load too (chunk_mask)
  const bool vec = gpu::vec_ok(16, l.block_size(), sizeof(T), {xp, yp}) &&
                   (mg.data == nullptr || reinterpret_cast<std::uintptr_t>(mg.data) % 16 == 0);
  const Acc sc = static_cast<Acc>(scale);
  const std::int64_t len = max_row_len(l);
  const bool two_pass = force_two_pass();
  if (!two_pass && fwd_staged_launch<T>(xp, yp, l, tab, mg, len, scale, dev, st)) return;
  const Plan plan = two_pass ? Plan{PlanKind::Long, 0, kLongThreads} : fwd_plan_for<T>(len, vec);
  if (mg.data) fwd_launch<T, true>(plan, vec, xp, yp, g, mg, sc, st);
  else fwd_launch<T, false>(plan, vec, xp, yp, g, mg, sc, st);
  TG_CUDA_CHECK_LAST();
}

template <typename T>
void bwd_t(const Tensor& y, const Tensor& dy, const Layout& l, double scale, const Tensor& dx) {
  using Acc = acc_t<T>;
  constexpr int MV = gpu::max_vec<T>();
  const Device dev = y.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const LayoutTables& tab = l.tables(dev);
  const RowGeom g = row_geom(l, tab);
  const T* yp = static_cast<const T*>(y.data_ptr());
  const T* gp = static_cast<const T*>(dy.data_ptr());
  T* op = dx.data<T>();
  const bool vec = gpu::vec_ok(16, l.block_size(), sizeof(T), {yp, gp, op});
  const Acc sc = static_cast<Acc>(scale);
  const std::int64_t len = max_row_len(l);
  constexpr int PB = bwd_slice_p<T>();
  const bool two_pass = force_two_pass();
  const bool slice =
      !two_pass && l.block_size() >= kSliceRows && len <= std::int64_t(kSliceThreads) * (vec ? PB : 8);
  // f32 rows of under ~1.5K elements on average run faster on the slice kernel: 94-96% of
  // a same-size copy against 86-89% staged on an H200 (16 x 2048², blocks 64 / 128,
  // density 0.25 / 0.5); longer rows, and 16-bit ones everywhere, faster staged.
  const std::int64_t block_rows = l.batch() * l.block_rows();
  const bool short_f32 = std::is_same_v<T, float> && block_rows > 0 &&
                         l.n_blocks() * l.block_size() < 1536 * block_rows;
  if (!two_pass && !(slice && short_f32) && bwd_staged_launch<T>(yp, gp, op, l, tab, len, scale, dev, st)) return;
  if (slice) {
    const int lg_slice = slice_lg_rows(l, dev.index);
    const unsigned grid = static_cast<unsigned>((l.batch() * l.rows()) >> lg_slice);
    if (vec) bwd_slice<T, MV, PB><<<grid, kSliceThreads, 0, st>>>(yp, gp, op, g, sc, lg_slice);
    else bwd_slice<T, 1, 8><<<grid, kSliceThreads, 0, st>>>(yp, gp, op, g, sc, lg_slice);
    TG_CUDA_CHECK_LAST();
    return;
  }
  const Plan plan = two_pass ? Plan{PlanKind::Long, 0, kLongThreads} : plan_for<T>(len);
  if (plan.kind == PlanKind::Long) {
    const unsigned grid = gpu::grid_for(g.rows, 1);
    if (vec) bwd_long<T, MV><<<grid, kLongThreads, 0, st>>>(yp, gp, op, g, sc);
    else bwd_long<T, 1><<<grid, kLongThreads, 0, st>>>(yp, gp, op, g, sc);
    TG_CUDA_CHECK_LAST();
    return;
  }
  with_p(plan.p, [&](auto pc) {
    constexpr int P = decltype(pc)::value;
    constexpr int V = P < MV ? P : MV;
    if (plan.kind == PlanKind::Warp) {
      const dim3 block(32, kWarpRows);
      const unsigned grid = gpu::grid_for(g.rows, kWarpRows);
      if (vec) bwd_warp<T, V, P><<<grid, block, 0, st>>>(yp, gp, op, g, sc);
      else bwd_warp<T, 1, P><<<grid, block, 0, st>>>(yp, gp, op, g, sc);
    } else if constexpr (P >= 4 && P <= block_max_p<T>()) {
      const unsigned grid = gpu::grid_for(g.rows, 1);
      if (vec) bwd_block<T, V, P><<<grid, plan.threads, 0, st>>>(yp, gp, op, g, sc);
      else bwd_block<T, 1, P><<<grid, plan.threads, 0, st>>>(yp, gp, op, g, sc);
    }
  });
  TG_CUDA_CHECK_LAST();
}

void fwd_cuda(const Tensor& x, const Layout& l, const BlockSparseTensor& mask, double scale, const Tensor& y) {
  TG_DISPATCH_FLOATING(x.dtype(), "softmax", [&] { fwd_t<scalar_t>(x, l, mask, scale, y); });
}

void bwd_cuda(const Tensor& y, const Tensor& dy, const Layout& l, double scale, const Tensor& dx) {
  TG_DISPATCH_FLOATING(y.dtype(), "softmax_backward", [&] { bwd_t<scalar_t>(y, dy, l, scale, dx); });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_softmax_fwd_kernel, CUDA, &fwd_cuda);
TG_REGISTER_KERNEL(sparse_softmax_bwd_kernel, CUDA, &bwd_cuda);

}  // namespace tg::ops
