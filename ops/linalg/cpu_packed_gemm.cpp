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

#if defined(__x86_64__)

bool cpu_has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

#define TG_GEMM_ROW(i)                              \
  {                                                 \
    const __m256 av = _mm256_broadcast_ss(a + (i)); \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);     \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);     \
  }

// c (mr x nr of a kMR x kNR tile, row stride ldc) = (accumulate ? c : 0) + the product of an
// A sliver (kc x kMR, k-major) and a B sliver (kc x kNR). Named accumulators, not arrays, and
// kept out of line: an array of vectors left in memory by the optimiser costs 3x here.
__attribute__((target("avx2,fma"), noinline)) void tile_6x16(Index kc, const float* __restrict a,
                                                             const float* __restrict b, float* c, Index ldc,
                                                             bool accumulate, int mr, int nr) {
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
    a += kMR;
    b += kNR;
  }
  alignas(32) float t[kMR][kNR];
  _mm256_store_ps(t[0], c00), _mm256_store_ps(t[0] + 8, c01), _mm256_store_ps(t[1], c10);
  _mm256_store_ps(t[1] + 8, c11), _mm256_store_ps(t[2], c20), _mm256_store_ps(t[2] + 8, c21);
  _mm256_store_ps(t[3], c30), _mm256_store_ps(t[3] + 8, c31), _mm256_store_ps(t[4], c40);
  _mm256_store_ps(t[4] + 8, c41), _mm256_store_ps(t[5], c50), _mm256_store_ps(t[5] + 8, c51);
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    if (nr == kNR) {
      __m256 x0 = _mm256_load_ps(t[i]), x1 = _mm256_load_ps(t[i] + 8);
      if (accumulate) {
        x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci));
        x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8));
      }
      _mm256_storeu_ps(ci, x0);
      _mm256_storeu_ps(ci + 8, x1);
    } else {
      for (int j = 0; j < nr; ++j) ci[j] = accumulate ? ci[j] + t[i][j] : t[i][j];
    }
  }
}
#undef TG_GEMM_ROW

#else

bool cpu_has_avx2_fma() { return false; }
// Never called: packed_sgemm_available() is false off x86-64.
void tile_6x16(Index, const float*, const float*, float*, Index, bool, int, int) {}

#endif

// Rows [i0, i0 + mc) and columns [p0, p0 + kc) of op(A) into slivers of kMR rows, each k-major
// (kc x kMR), rows past mc zero. Stored [k, m] (trans), a row of a holds one k step of every
// sliver: read once, in order.
void pack_a(const float* a, Index lda, bool trans, Index i0, Index mc, Index p0, Index kc, float* out) {
  const Index whole = mc / kMR * kMR;
  if (trans) {
    for (Index p = 0; p < kc; ++p) {
      const float* src = a + (p0 + p) * lda + i0;
      for (Index s = 0; s < whole; s += kMR) {
        float* op = out + s * kc + p * kMR;
        for (int q = 0; q < kMR; ++q) op[q] = src[s + q];
      }
    }
  } else {
    for (Index s = 0; s < whole; s += kMR) {
      float* o = out + s * kc;
      for (Index p = 0; p < kc; ++p)
        for (int q = 0; q < kMR; ++q) o[p * kMR + q] = a[(i0 + s + q) * lda + p0 + p];
    }
  }
  if (whole < mc) {  // the last, partial sliver
    const int r = static_cast<int>(mc - whole);
    float* o = out + whole * kc;
    for (Index p = 0; p < kc; ++p) {
      for (int q = 0; q < kMR; ++q) {
        const Index row = i0 + whole + q;
        o[p * kMR + q] = q >= r ? 0.f : trans ? a[(p0 + p) * lda + row] : a[row * lda + p0 + p];
      }
    }
  }
}

// Columns [j0, j0 + kNR) (those below n) and rows [p0, p0 + kc) of op(B) into one sliver
// (kc x kNR, k-major), columns at or past n zero.
void pack_b(const float* b, Index ldb, bool trans, Index n, Index j0, Index p0, Index kc, float* out) {
  const int w = static_cast<int>(std::min<Index>(kNR, n - j0));
  if (trans) {  // b is [n, k]: each column of op(B) is a contiguous row of b
    for (int q = 0; q < w; ++q) {
      const float* src = b + (j0 + q) * ldb + p0;
      for (Index p = 0; p < kc; ++p) out[p * kNR + q] = src[p];
    }
    for (int q = w; q < kNR; ++q)
      for (Index p = 0; p < kc; ++p) out[p * kNR + q] = 0.f;
  } else {
    for (Index p = 0; p < kc; ++p) {
      const float* src = b + (p0 + p) * ldb + j0;
      float* op = out + p * kNR;
      for (int q = 0; q < w; ++q) op[q] = src[q];
      for (int q = w; q < kNR; ++q) op[q] = 0.f;
    }
  }
}

}  // namespace

bool packed_sgemm_available() {
  static const bool ok = cpu_has_avx2_fma();
  return ok;
}

void packed_sgemm(const float* a, const float* b, float* c, Index m, Index n, Index k, bool trans_a, bool trans_b) {
  const Index lda = trans_a ? m : k, ldb = trans_b ? k : n;
  // A blocks of equal height (a multiple of kMR, at most kMaxMC), as many as a multiple of the
  // threads where m allows, so that whole blocks share out evenly
  const Index threads = parallel_threads(), slivers_m = (m + kMR - 1) / kMR;
  Index mblocks = (m + kMaxMC - 1) / kMaxMC;
  mblocks = std::min(slivers_m, (mblocks + threads - 1) / threads * threads);
  const Index mc = ((m + mblocks - 1) / mblocks + kMR - 1) / kMR * kMR;
  // B panels of whole slivers over all of k, at most kPanelFloats (or one sliver)
  const Index panel = std::max<Index>(kNR, kPanelFloats / k / kNR * kNR);
  thread_local std::vector<float> b_store;
  for (Index j0 = 0; j0 < n; j0 += panel) {
    const Index slivers = (std::min(panel, n - j0) + kNR - 1) / kNR;
    float* bp = scratch(b_store, slivers * kNR * k);
    parallel_ranges(slivers, 1, [&](Index s0, Index s1) {
      for (Index s = s0; s < s1; ++s) pack_b(b, ldb, trans_b, n, j0 + s * kNR, 0, k, bp + s * kNR * k);
    });
    // A task is one A block against a run of the panel's slivers: all of them where there are
    // two blocks a thread, else runs that make about that many tasks (each task packs its A
    // block again)
    const Index want = std::min(slivers, mblocks >= 2 * threads ? 1 : (2 * threads + mblocks - 1) / mblocks);
    const Index run = (slivers + want - 1) / want, runs = (slivers + run - 1) / run;
    parallel_ranges(mblocks * runs, 1, [&](Index t0, Index t1) {
      thread_local std::vector<float> a_store;
      float* ap = scratch(a_store, mc * kKC);
      for (Index t = t0; t < t1; ++t) {
        const Index i0 = t / runs * mc, rows = std::min(mc, m - i0);
        const Index s0 = t % runs * run, s1 = std::min(slivers, s0 + run);
        if (rows <= 0) continue;
        // p0 in order, each tile owned by one task: every element's sum over k has one order
        // whatever the threads
        for (Index p0 = 0; p0 < k; p0 += kKC) {
          const Index kc = std::min(kKC, k - p0);
          pack_a(a, lda, trans_a, i0, rows, p0, kc, ap);
          for (Index s = s0; s < s1; ++s) {
            const Index j = j0 + s * kNR;
            const int nr = static_cast<int>(std::min<Index>(kNR, n - j));
            for (Index i = 0; i < rows; i += kMR) {
              const int mr = static_cast<int>(std::min<Index>(kMR, rows - i));
              tile_6x16(kc, ap + i * kc, bp + s * kNR * k + p0 * kNR, c + (i0 + i) * n + j, n, p0 > 0, mr, nr);
            }
          }
        }
      }
    });
  }
}

}  // namespace tg::ops
