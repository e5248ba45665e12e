#include "ops/linalg/cpu_packed_gemm.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tg::ops {
namespace {

using Index = std::int64_t;

// The register tile: 6 x 16 outputs are twelve 8-lane accumulators, which with the two B
// vectors and one broadcast A value fill the sixteen AVX2 registers. Per k step it issues 12
// FMAs for 2 loads and 6 broadcasts, enough to keep both FMA units busy.
constexpr int kMR = 6, kNR = 16;
// kKC: one step of a packed B sliver (kKC x kNR, 16 KiB) stays in L1 while the tile walks down
// the A block; kMaxMC: the packed A block (at most 120 x kKC, 120 KiB) stays in L2. The B panel
// is packed once over all of k, then read by every A block: kPanelFloats (8 MiB) bounds it and
// the scratch a calling thread keeps.
constexpr Index kKC = 256, kMaxMC = 120, kPanelFloats = Index{2} << 20;

// A 32-byte aligned scratch of at least n floats in v, which keeps it between calls.
float* scratch(std::vector<float>& v, Index n) {
  const auto need = static_cast<std::size_t>(n) + 8;
  if (v.size() < need) v.resize(need);
  const auto p = reinterpret_cast<std::uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 31) & ~std::uintptr_t{31});
}

// Where the register tile reads its kMR rows of op(A): row i's k step p at a + off[i] + p * step
// (a packed sliver: off = 0..5, step kMR; or the operand in place).
struct ARows {
  const float* a;
  Index off[kMR];
  Index step;
};

#if defined(__x86_64__)

bool cpu_has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

#define TG_GEMM_ROW(i)                               \
  {                                                  \
    const __m256 av = _mm256_broadcast_ss(a + o##i); \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);      \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);      \
  }

// c (mr x nr of a kMR x kNR tile, row stride ldc) = (accumulate ? c : 0) + the product of kc
// steps of A rows and a B sliver (kc x kNR, k-major), + bias[0, nr) on every row where bias is
// not null. Named accumulators, not arrays, and kept out of line: an array of vectors left in
// memory by the optimiser costs 3x here.
__attribute__((target("avx2,fma"), noinline)) void tile_6x16(Index kc, const ARows& ar, const float* __restrict b,
                                                             float* c, Index ldc, bool accumulate, const float* bias,
                                                             int mr, int nr) {
  const float* a = ar.a;
  const Index o0 = ar.off[0], o1 = ar.off[1], o2 = ar.off[2], o3 = ar.off[3], o4 = ar.off[4], o5 = ar.off[5];
  const Index step = ar.step;
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#pragma GCC unroll 4
  for (Index p = 0; p < kc; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * kNR), _MM_HINT_T0);
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    TG_GEMM_ROW(0);
    TG_GEMM_ROW(1);
    TG_GEMM_ROW(2);
    TG_GEMM_ROW(3);
    TG_GEMM_ROW(4);
    TG_GEMM_ROW(5);
    a += step;
    b += kNR;
  }
  alignas(32) float t[kMR][kNR];
  _mm256_store_ps(t[0], c00);
  _mm256_store_ps(t[0] + 8, c01);
  _mm256_store_ps(t[1], c10);
  _mm256_store_ps(t[1] + 8, c11);
  _mm256_store_ps(t[2], c20);
  _mm256_store_ps(t[2] + 8, c21);
  _mm256_store_ps(t[3], c30);
  _mm256_store_ps(t[3] + 8, c31);
  _mm256_store_ps(t[4], c40);
  _mm256_store_ps(t[4] + 8, c41);
  _mm256_store_ps(t[5], c50);
  _mm256_store_ps(t[5] + 8, c51);
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    if (nr == kNR) {
      __m256 x0 = _mm256_load_ps(t[i]), x1 = _mm256_load_ps(t[i] + 8);
      if (accumulate) {
        x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci));
        x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8));
      }
      if (bias != nullptr) {
        x0 = _mm256_add_ps(x0, _mm256_loadu_ps(bias));
        x1 = _mm256_add_ps(x1, _mm256_loadu_ps(bias + 8));
      }
      _mm256_storeu_ps(ci, x0);
      _mm256_storeu_ps(ci + 8, x1);
    } else {
      for (int j = 0; j < nr; ++j) {
        const float v = accumulate ? ci[j] + t[i][j] : t[i][j];
        ci[j] = bias != nullptr ? v + bias[j] : v;
      }
    }
  }
}
#undef TG_GEMM_ROW

#else

bool cpu_has_avx2_fma() { return false; }
// Never called: packed_sgemm_available() is false off x86-64.
void tile_6x16(Index, const ARows&, const float*, float*, Index, bool, const float*, int, int) {}

#endif

// One operand as the packing reads it: op(X) with its k extent cut into pieces of `seg`, piece
// q at ptrs[q] (row-major, leading dimension ld; transposed when trans).
struct View {
  const float* const* ptrs;
  Index seg, ld;
  bool trans;
};

// Calls f(piece base, first k of the piece, k offset in [p0, p0 + kc), length) for the
// pieces of `v` that the k range [p0, p0 + kc) crosses, in order.
template <typename F>
void for_pieces(const View& v, Index p0, Index kc, F&& f) {
  for (Index p = p0; p < p0 + kc;) {
    const Index q = p / v.seg, local = p - q * v.seg, len = std::min(v.seg - local, p0 + kc - p);
    f(v.ptrs[q], local, p - p0, len);
    p += len;
  }
}

// Rows [i0, i0 + mc) and columns [p0, p0 + kc) of op(A) into slivers of kMR rows, each k-major
// (kc x kMR), rows past mc zero. Stored [k, m] (trans), a row of a holds one k step of every
// sliver: read once, in order.
void pack_a(const View& v, Index i0, Index mc, Index p0, Index kc, float* out) {
  const Index whole = mc / kMR * kMR, ld = v.ld;
  for_pieces(v, p0, kc, [&](const float* a, Index l0, Index off, Index len) {
    if (v.trans) {
      for (Index p = 0; p < len; ++p) {
        const float* src = a + (l0 + p) * ld + i0;
        for (Index s = 0; s < whole; s += kMR) {
          float* op = out + s * kc + (off + p) * kMR;
          for (int q = 0; q < kMR; ++q) op[q] = src[s + q];
        }
      }
    } else {
      for (Index s = 0; s < whole; s += kMR) {
        float* o = out + s * kc + off * kMR;
        for (Index p = 0; p < len; ++p)
          for (int q = 0; q < kMR; ++q) o[p * kMR + q] = a[(i0 + s + q) * ld + l0 + p];
      }
    }
    if (whole < mc) {  // the last, partial sliver
      const int r = static_cast<int>(mc - whole);
      float* o = out + whole * kc + off * kMR;
      for (Index p = 0; p < len; ++p) {
        for (int q = 0; q < kMR; ++q) {
          const Index row = i0 + whole + q;
          o[p * kMR + q] = q >= r ? 0.f : v.trans ? a[(l0 + p) * ld + row] : a[row * ld + l0 + p];
        }
      }
    }
  });
}

// Rows [p0, p1) of op(B)'s columns [j0, j0 + slivers * kNR) (those below n) into the slivers
// of a panel (sliver s at out + s * k * kNR, k-major), columns at or past n zero. Stored
// [n, k] (trans), each sliver column is a contiguous row of b; stored [k, n], each row of b
// feeds every sliver: read once, in order.
void pack_b(const View& v, Index n, Index j0, Index slivers, Index k, Index p0, Index p1, float* out) {
  const Index ld = v.ld;
  for_pieces(v, p0, p1 - p0, [&](const float* b, Index l0, Index off, Index len) {
    const Index kp = p0 + off;  // the piece's first k step in the panel
    if (v.trans) {
      for (Index s = 0; s < slivers; ++s) {
        const Index j = j0 + s * kNR;
        const int w = static_cast<int>(std::min<Index>(kNR, n - j));
        float* o = out + s * k * kNR + kp * kNR;
        for (int q = 0; q < w; ++q) {
          const float* src = b + (j + q) * ld + l0;
          for (Index p = 0; p < len; ++p) o[p * kNR + q] = src[p];
        }
        for (int q = w; q < kNR; ++q)
          for (Index p = 0; p < len; ++p) o[p * kNR + q] = 0.f;
      }
      return;
    }
    for (Index p = 0; p < len; ++p) {
      const float* src = b + (l0 + p) * ld + j0;
      for (Index s = 0; s < slivers; ++s) {
        const int w = static_cast<int>(std::min<Index>(kNR, n - j0 - s * kNR));
        float* op = out + s * k * kNR + (kp + p) * kNR;
        for (int q = 0; q < w; ++q) op[q] = src[s * kNR + q];
        for (int q = w; q < kNR; ++q) op[q] = 0.f;
      }
    }
  });
}

// The shape of one product and where its operands and output are.
struct Product {
  View a, b;
  float* c;  // row-major, n columns
  Index n, k;
  bool accumulate;    // c += the product (else c = it)
  const float* bias;  // [n] added to every row with the first k steps (or null)
  // op(A) read in place rather than packed: where few B slivers share each A element, packing
  // it costs about as much as its products
  bool a_in_place;
};

// Whether a product of n columns reads op(A) in place (two slivers or fewer).
bool a_in_place(Index n) { return n <= 2 * kNR; }

// Rows [i0, i0 + rows) of c against slivers [s0, s1) of the B panel at column j0 (packed over
// all of k in bp), all of k; `ap` holds an A block (unless A is read in place). Every element's
// sum over k runs in k's order, whatever the threads and blocks.
void block_product(const Product& x, const float* bp, Index j0, Index s0, Index s1, Index i0, Index rows, float* ap) {
  if (x.a_in_place) {
    for (Index i = 0; i < rows; i += kMR) {
      const int mr = static_cast<int>(std::min<Index>(kMR, rows - i));
      for (Index s = s0; s < s1; ++s) {
        const Index j = j0 + s * kNR;
        const int nr = static_cast<int>(std::min<Index>(kNR, x.n - j));
        for_pieces(x.a, 0, x.k, [&](const float* a, Index l0, Index off, Index len) {
          ARows ar{};
          ar.a = x.a.trans ? a + l0 * x.a.ld : a + l0;
          ar.step = x.a.trans ? x.a.ld : 1;
          for (int q = 0; q < kMR; ++q) {
            const Index row = i0 + i + (q < mr ? q : 0);  // rows past the tile repeat its first
            ar.off[q] = x.a.trans ? row : row * x.a.ld;
          }
          const bool first = !x.accumulate && off == 0;
          tile_6x16(len, ar, bp + s * kNR * x.k + off * kNR, x.c + (i0 + i) * x.n + j, x.n, !first,
                    first && x.bias != nullptr ? x.bias + j : nullptr, mr, nr);
        });
      }
    }
    return;
  }
  for (Index p0 = 0; p0 < x.k; p0 += kKC) {
    const Index kc = std::min(kKC, x.k - p0);
    pack_a(x.a, i0, rows, p0, kc, ap);
    for (Index s = s0; s < s1; ++s) {
      const Index j = j0 + s * kNR;
      const int nr = static_cast<int>(std::min<Index>(kNR, x.n - j));
      for (Index i = 0; i < rows; i += kMR) {
        const int mr = static_cast<int>(std::min<Index>(kMR, rows - i));
        const ARows ar{ap + i * kc, {0, 1, 2, 3, 4, 5}, kMR};
        const bool first = !x.accumulate && p0 == 0;
        tile_6x16(kc, ar, bp + s * kNR * x.k + p0 * kNR, x.c + (i0 + i) * x.n + j, x.n, !first,
                  first && x.bias != nullptr ? x.bias + j : nullptr, mr, nr);
      }
    }
  }
}

// The B panels of x: whole slivers over all of k, at most kPanelFloats (or one sliver).
Index panel_columns(Index k) { return std::max<Index>(kNR, kPanelFloats / k / kNR * kNR); }

thread_local std::vector<float> t_b_store, t_a_store;

}  // namespace

bool packed_sgemm_available() {
  static const bool ok = cpu_has_avx2_fma();
  return ok;
}

void packed_sgemm(const float* a, const float* b, float* c, Index m, Index n, Index k, bool trans_a, bool trans_b,
                  const float* bias) {
  const float* const pa[1] = {a};
  const float* const pb[1] = {b};
  const Product x{.a = {pa, k, trans_a ? m : k, trans_a},
                  .b = {pb, k, trans_b ? k : n, trans_b},
                  .c = c,
                  .n = n,
                  .k = k,
                  .accumulate = false,
                  .bias = bias,
                  .a_in_place = a_in_place(n)};
  // A blocks of equal height (a multiple of kMR, at most kMaxMC), as many as a multiple of the
  // threads where m allows, so that whole blocks share out evenly
  const Index threads = parallel_threads(), slivers_m = (m + kMR - 1) / kMR;
  Index mblocks = (m + kMaxMC - 1) / kMaxMC;
  mblocks = std::min(slivers_m, (mblocks + threads - 1) / threads * threads);
  const Index mc = ((m + mblocks - 1) / mblocks + kMR - 1) / kMR * kMR;
  const Index panel = panel_columns(k);
  for (Index j0 = 0; j0 < n; j0 += panel) {
    const Index slivers = (std::min(panel, n - j0) + kNR - 1) / kNR;
    float* bp = scratch(t_b_store, slivers * kNR * k);
    // the panel packed over k ranges (kKC steps) in parallel
    parallel_ranges(k, kKC, [&](Index p0, Index p1) { pack_b(x.b, n, j0, slivers, k, p0, p1, bp); });
    // A task is one A block against a run of the panel's slivers: all of them where there are
    // two blocks a thread, else runs that make about that many tasks (each task packs its A
    // block again)
    const Index want = std::min(slivers, mblocks >= 2 * threads ? 1 : (2 * threads + mblocks - 1) / mblocks);
    const Index run = (slivers + want - 1) / want, runs = (slivers + run - 1) / run;
    parallel_ranges(mblocks * runs, 1, [&](Index t0, Index t1) {
      float* ap = scratch(t_a_store, mc * kKC);
      for (Index t = t0; t < t1; ++t) {
        const Index i0 = t / runs * mc, rows = std::min(mc, m - i0);
        const Index s0 = t % runs * run;
        if (rows > 0) block_product(x, bp, j0, s0, std::min(slivers, s0 + run), i0, rows, ap);
      }
    });
  }
}

void packed_sgemm_pieces(const PackedPieces& a, const PackedPieces& b, float* c, Index m, Index n, bool accumulate) {
  const Index k = a.pieces * a.seg;
  const Product x{.a = {a.ptrs, a.seg, a.ld, a.trans},
                  .b = {b.ptrs, b.seg, b.ld, b.trans},
                  .c = c,
                  .n = n,
                  .k = k,
                  .accumulate = accumulate,
                  .bias = nullptr,
                  .a_in_place = a_in_place(n)};
  const Index panel = panel_columns(k);
  float* ap = scratch(t_a_store, kMaxMC * kKC);
  for (Index j0 = 0; j0 < n; j0 += panel) {
    const Index slivers = (std::min(panel, n - j0) + kNR - 1) / kNR;
    float* bp = scratch(t_b_store, slivers * kNR * k);
    pack_b(x.b, n, j0, slivers, k, 0, k, bp);
    for (Index i0 = 0; i0 < m; i0 += kMaxMC) block_product(x, bp, j0, 0, slivers, i0, std::min(kMaxMC, m - i0), ap);
  }
}

}  // namespace tg::ops
