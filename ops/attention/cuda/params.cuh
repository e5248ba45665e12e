// What every attention kernel knows about one call, and the per-element rules of
// attention.h shared by all of them: which keys a query sees, the score transform
// (scale, bias, soft cap) and the dropout decision.
//
// Work is described by tile lists built on the host (work_lists.h): a CTA takes one item
// (a query tile of one head, or a key tile of one kv head) and walks its entries. Each entry
// carries flags saying which per-element checks its tile needs; a tile without flags (and
// a call without lens, segments or element mask) is entirely visible and checks nothing.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/entry.h"
#include "ops/attention/dropout_rule.h"
#include "ops/attention/cuda/ptx.cuh"
#include "runtime/philox.h"

namespace tg::ops::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

/// lse of a query row in log2 units for P = 2^(x - L): +inf (P = 0) for rows outside the
/// extent and for rows without probability mass.
__device__ __forceinline__ float lse_log2(float lse, bool in_range) {
  return (in_range && lse != -INFINITY) ? lse * kLog2e : INFINITY;
}

/// Device pointers and scalars of one attention call. Optional pointers are null when absent.
struct Params {
  int bhq = 0, bhkv = 0, group = 1, heads = 1, sq = 0, sk = 0;
  float scale = 1.f, scale_log2 = 1.f;   ///< scale, scale · log2(e)
  float softcap = 0.f, inv_softcap = 0.f;  ///< 0: off
  int causal = 0, wl = -1, wr = -1;        ///< window bounds, < 0: unbounded (clamped to the extents)
  bool elem_checks = false;                ///< lens, segments or an element mask present
  const std::int64_t* q_lens = nullptr;
  const std::int64_t* k_lens = nullptr;
  const std::int64_t* seg_q = nullptr;
  const std::int64_t* seg_k = nullptr;
  // element mask (true = excluded): block_index [bhq, mask_mb, mask_nb], data [n, bs, bs]
  const std::int64_t* mask_index = nullptr;
  const std::uint8_t* mask_data = nullptr;
  int mask_lg = 0, mask_mb = 0, mask_nb = 0;
  // additive bias (q's dtype): same layout description
  const std::int64_t* bias_index = nullptr;
  const void* bias_data = nullptr;
  int bias_lg = 0, bias_mb = 0, bias_nb = 0;
  // pattern [bhq, pat_qb, pat_kb] and the block of every query / key position
  const std::uint8_t* pat = nullptr;
  int pat_qb = 0, pat_kb = 0;
  const std::int32_t* q_blk = nullptr;
  const std::int32_t* k_blk = nullptr;
  int q_lg = -1, k_lg = -1;  ///< log2 of uniform pattern block sizes (>= 16), -1 when variable
  const float* sinks = nullptr;  ///< [heads]
  bool dropout = false;
  bool drop_groups = false;  ///< sk % 8 == 0: 8 consecutive keys of a row share a Philox block
  std::uint32_t drop_threshold = 0;
  float drop_scale = 1.f;  ///< 1 / (1 - p), 1 without dropout
  std::uint64_t seed = 0, offset = 0;
  /// Dropout's decisions drawn ahead (keep_units.cuh's layout), or null: the Hopper forward
  /// and kv pass read them instead of drawing Philox blocks themselves.
  std::uint32_t* keep = nullptr;
  int keep_qt = 0, keep_kc = 0;
};

/// A tile list on the device: item order[x] (a CTA's work) owns entries[off[item] .. off[item + 1]).
struct TileList {
  const std::int32_t* order = nullptr;
  const std::int32_t* off = nullptr;
  const std::int32_t* entries = nullptr;
  int num_m = 0;  ///< query tiles per head
  int num_n = 0;  ///< key tiles per kv head

  /// 1 / num_m for query_tile: compute it once, outside a kernel's loop.
  __device__ __forceinline__ float inv_num_m() const { return __frcp_rn(static_cast<float>(num_m)); }

  /// Of an entry of a key tile's list (kv head kv, `group` heads per kv head): the query
  /// row bh (batch · head) and the first query i0 of the query tile of `rows` it names.
  /// `inv` is inv_num_m(): x / num_m by the reciprocal, corrected by one step (x / num_m <
  /// group, so the estimate is off by at most one), where the integer division took ~25
  /// instructions of every kv-pass step.
  __device__ __forceinline__ int2 query_tile(int entry, int kv, int group, int rows, float inv) const {
    const int x = entry >> kFlagBits;
    int q = static_cast<int>(__fmul_rz(static_cast<float>(x), inv));
    int r = x - q * num_m;
    const int under = r < 0, over = r >= num_m;
    q += over - under;
    r += (under - over) * num_m;
    return make_int2(kv * group + q, r * rows);
  }
};

/// Whether key j is visible to query i of row bh (batch b) under the checks `flags` asks for
/// (plus lens, segments and mask when the call has them).
__device__ __forceinline__ bool visible(const Params& p, int flags, int bh, int b, int i, int j) {
  if (flags & kCheckPattern) {
    if (i >= p.sq || j >= p.sk) return false;
    if (!p.pat[(static_cast<std::int64_t>(bh) * p.pat_qb + p.q_blk[i]) * p.pat_kb + p.k_blk[j]]) return false;
  }
  if (flags & kCheckGeometry) {
    if (p.causal && j > i) return false;
    if (p.wl >= 0 && j < i - p.wl) return false;
    if (p.wr >= 0 && j > i + p.wr) return false;
  }
  if (p.elem_checks) {
    if (i >= p.sq || j >= p.sk) return false;
    if (p.q_lens && i >= p.q_lens[b]) return false;
    if (p.k_lens && j >= p.k_lens[b]) return false;
    if (p.seg_q && p.seg_q[static_cast<std::int64_t>(b) * p.sq + i] != p.seg_k[static_cast<std::int64_t>(b) * p.sk + j])
      return false;
    if (p.mask_data) {
      const std::int64_t blk =
          p.mask_index[(static_cast<std::int64_t>(bh) * p.mask_mb + (i >> p.mask_lg)) * p.mask_nb + (j >> p.mask_lg)];
      const int low = (1 << p.mask_lg) - 1;
      if (blk >= 0 && p.mask_data[(((blk << p.mask_lg) + (i & low)) << p.mask_lg) + (j & low)]) return false;
    }
  }
  return true;
}

/// The bias at (bh, i, j); 0 outside the extents or in an absent block.
template <typename T>
__device__ __forceinline__ float bias_at(const Params& p, int bh, int i, int j) {
  if (i >= p.sq || j >= p.sk) return 0.f;
  const std::int64_t blk =
      p.bias_index[(static_cast<std::int64_t>(bh) * p.bias_mb + (i >> p.bias_lg)) * p.bias_nb + (j >> p.bias_lg)];
  if (blk < 0) return 0.f;
  const int low = (1 << p.bias_lg) - 1;
  return static_cast<float>(static_cast<const T*>(p.bias_data)[(((blk << p.bias_lg) + (i & low)) << p.bias_lg) + (j & low)]);
}

/// Where the bias element (bh, i, j) lives in the block data, or -1 (absent block or outside).
__device__ __forceinline__ std::int64_t bias_slot(const Params& p, int bh, int i, int j) {
  if (i >= p.sq || j >= p.sk) return -1;
  const std::int64_t blk =
      p.bias_index[(static_cast<std::int64_t>(bh) * p.bias_mb + (i >> p.bias_lg)) * p.bias_nb + (j >> p.bias_lg)];
  if (blk < 0) return -1;
  const int low = (1 << p.bias_lg) - 1;
  return (((blk << p.bias_lg) + (i & low)) << p.bias_lg) + (j & low);
}

/// The score s of attention.h from the raw dot product q·k, with bias and soft cap;
/// `dsdt` receives ds/dt (1 without a soft cap).
template <typename T>
__device__ __forceinline__ float general_score(const Params& p, float dot, int bh, int i, int j, float& dsdt) {
  float t = dot * p.scale;
  if (p.bias_data) t += bias_at<T>(p, bh, i, j);
  dsdt = 1.f;
  if (p.softcap > 0.f) {
    const float th = gpu::tanh_approx(t * p.inv_softcap);
    dsdt = 1.f - th * th;
    t = p.softcap * th;
  }
  return t;
}

// The elements a thread holds in 8 consecutive n-tiles of an m16n8 accumulator, x = 4·nt + c
// (nt < 8, c < 4): (row + 8·(c >> 1), col + 8·nt + (c & 1)), given the thread's first
// row and column. The kernels' S tiles have queries as rows and keys as columns, the
// transposed ones (kv pass) keys as rows and queries as columns.
__device__ __forceinline__ void element_of(int x, bool transposed, int i0, int j0, int& i, int& j) {
  const int nt = x >> 2, c = x & 3;
  if (!transposed) {
    i = i0 + (c >> 1) * 8;
    j = j0 + nt * 8 + (c & 1);
  } else {
    i = i0 + nt * 8 + (c & 1);
    j = j0 + (c >> 1) * 8;
  }
}

/// general_score in log2 units (s · log2 e) for the N <= 32 elements a thread holds
/// (element_of layout from rows i0, keys j0), in place: -inf where bit x of vis is clear,
/// and ds/dt in dsdt when kDsdt. The choices that are the same for the whole call (a bias? a soft cap?) are made once for
/// the N elements, not per element: per element they were branches around loads that the
/// compiler could not flatten (~35 instructions an element where the transform itself is a
/// few). Bias loads of invisible elements stay in bounds (bias_at checks), so every load is
/// issued at once.
template <typename T, bool kTransposed, bool kDsdt, int N = 32>
__device__ __forceinline__ void general_scores_log2(const Params& p, float (&s)[N], std::uint32_t vis, int bh, int i0,
                                                    int j0, float (&dsdt)[kDsdt ? N : 1]) {
  static_assert(N <= 32, "one 32-bit visibility word");
  if (p.bias_data == nullptr && !(p.softcap > 0.f)) {  // dropout alone: one multiply an element
#pragma unroll
    for (int x = 0; x < N; ++x) s[x] = (vis >> x) & 1u ? s[x] * p.scale_log2 : -INFINITY;
    if constexpr (kDsdt) {
#pragma unroll
      for (int x = 0; x < N; ++x) dsdt[x] = 1.f;
    }
    return;
  }
#pragma unroll
  for (int x = 0; x < N; ++x) s[x] *= p.scale;
  if (p.bias_data) {
#pragma unroll
    for (int x = 0; x < N; ++x) {
      int i, j;
      element_of(x, kTransposed, i0, j0, i, j);
      s[x] += bias_at<T>(p, bh, i, j);
    }
  }
  if (p.softcap > 0.f) {
#pragma unroll
    for (int x = 0; x < N; ++x) {
      const float th = gpu::tanh_approx(s[x] * p.inv_softcap);
      if constexpr (kDsdt) dsdt[x] = 1.f - th * th;
      s[x] = p.softcap * th;
    }
  } else if constexpr (kDsdt) {
#pragma unroll
    for (int x = 0; x < N; ++x) dsdt[x] = 1.f;
  }
#pragma unroll
  for (int x = 0; x < N; ++x) s[x] = (vis >> x) & 1u ? s[x] * kLog2e : -INFINITY;
}

/// Bit x set when element x < count (see element_of) is visible. Out of line and not unrolled: the
/// checks are long and run only on the tiles that need them.
static __device__ __noinline__ std::uint32_t visible_bits(const Params& p, int flags, int bh, int b, int i0, int j0,
                                                          bool transposed, int count) {
  std::uint32_t bits = 0;
#pragma unroll 1
  for (int x = 0; x < count; ++x) {
    int i, j;
    element_of(x, transposed, i0, j0, i, j);
    if (visible(p, flags, bh, b, i, j)) bits |= 1u << x;
  }
  return bits;
}

/// visible_bits for a tile only the causal / window geometry cuts (no pattern, extent or
/// per-element checks): element x is visible when d = i - j lies in [lo, hi] (causal: d >=
/// 0, left window: d <= wl, right window: d >= -wr), and d differs from element to element
/// by constants: one compare a bit, unrolled, where the general loop cost about
/// as much as the rest of the step.
__device__ __forceinline__ std::uint32_t geometry_bits(const Params& p, int i0, int j0, bool transposed, int count) {
  constexpr int kFar = 1 << 30;  // beyond any i - j (extents are below 2^30)
  int lo = -kFar, hi = kFar;
  if (p.causal) lo = 0;
  if (p.wr >= 0) lo = max(lo, -p.wr);
  if (p.wl >= 0) hi = min(hi, p.wl);
  const std::uint32_t span = static_cast<std::uint32_t>(hi - lo);
  const int base = i0 - j0 - lo;
  std::uint32_t bits = 0;
#pragma unroll
  for (int x = 0; x < count; ++x) {
    int i, j;
    element_of(x, transposed, 0, 0, i, j);  // offsets from (i0, j0): constants once unrolled
    bits |= (static_cast<std::uint32_t>(base + i - j) <= span ? 1u : 0u) << x;
  }
  return bits;
}

/// visible_bits without per-element options (no lens, segments or mask): the geometry by
/// geometry_bits, the pattern by one block lookup an element, unrolled (uniform blocks by
/// shifts, variable ones through the position -> block tables). The out-of-line general
/// loop cost more than the rest of a kernel step on the tiles that need checks. (Out of
/// line: inlined, its unrolled lookups raised the kernels' register counts by ~10.)
static __device__ __noinline__ std::uint32_t block_bits(const Params& p, int flags, int bh, int i0, int j0,
                                                        bool transposed, int count) {
  std::uint32_t bits = (flags & kCheckGeometry) ? geometry_bits(p, i0, j0, transposed, count) : ~0u;
  if (flags & kCheckPattern) {
    const std::uint8_t* pat = p.pat + static_cast<std::int64_t>(bh) * p.pat_qb * p.pat_kb;
    // element x's block pair, positions past the extents clamped to 0 (and invisible)
    auto sweep = [&](auto q_block, auto k_block) {
#pragma unroll
      for (int x = 0; x < count; ++x) {
        int i, j;
        element_of(x, transposed, i0, j0, i, j);
        const bool in = i < p.sq && j < p.sk;
        const bool on = in && pat[q_block(in ? i : 0) * p.pat_kb + k_block(in ? j : 0)];
        if (!on) bits &= ~(1u << x);
      }
    };
    if (p.q_lg >= 0 && p.k_lg >= 0)
      sweep([&](int i) { return i >> p.q_lg; }, [&](int j) { return j >> p.k_lg; });
    else
      sweep([&](int i) { return p.q_blk[i]; }, [&](int j) { return p.k_blk[j]; });
  }
  return count >= 32 ? bits : bits & ((1u << count) - 1u);
}

/// The visibility bits of a thread's elements (see element_of) in a tile with `flags`.
__device__ __forceinline__ std::uint32_t tile_bits(const Params& p, int flags, int bh, int b, int i0, int j0,
                                                   bool transposed, int count) {
  if (!p.elem_checks)
    return flags == kCheckGeometry ? geometry_bits(p, i0, j0, transposed, count)
                                   : block_bits(p, flags, bh, i0, j0, transposed, count);
  return visible_bits(p, flags, bh, b, i0, j0, transposed, count);
}

/// Dropout keep of one element.
__device__ __forceinline__ bool keep_one(const Params& p, int bh, int i, int j) {
  const std::uint64_t e = (static_cast<std::uint64_t>(bh) * static_cast<std::uint64_t>(p.sq) + static_cast<std::uint64_t>(i)) *
                              static_cast<std::uint64_t>(p.sk) +
                          static_cast<std::uint64_t>(j);
  return attention_keep(p.seed, p.offset, e, p.drop_threshold);
}

/// Bit x set when dropout keeps element x < count (see element_of).
static __device__ __noinline__ std::uint32_t keep_bits(const Params& p, int bh, int i0, int j0, bool transposed,
                                                       int count) {
  std::uint32_t bits = 0;
#pragma unroll 1
  for (int x = 0; x < count; ++x) {
    int i, j;
    element_of(x, transposed, i0, j0, i, j);
    if (keep_one(p, bh, i, j)) bits |= 1u << x;
  }
  return bits;
}

}  // namespace tg::ops::attn
