// The CPU backend's own f32 GEMM for x86-64 CPUs with AVX2 and FMA: operands packed into
// panels that stay in the caches, a 6 x 16 register tile, both cores through OpenMP.
#pragma once

#include <cstdint>

namespace tg::ops {

/// Whether this CPU can run packed_sgemm (x86-64 with AVX2 and FMA, checked at run time: the
/// kernel is compiled for those instructions whatever the build's target).
bool packed_sgemm_available();

/// c [m, n] (row-major, contiguous) = op(a) · op(b) (+ bias [n] on every row where bias is not
/// null, added to the sums of the first 256 k steps), all f32: op(a) is a [m, k] (row-major), or its
/// transpose when a is stored [k, m] (`trans_a`); likewise op(b) from b [k, n] or [n, k].
/// m, n, k >= 1; c must not overlap a, b or bias. Every element of c is summed over k in the
/// same order whatever the number of threads, so results do not depend on it.
/// Precondition: packed_sgemm_available() (the caller checks).
void packed_sgemm(const float* a, const float* b, float* c, std::int64_t m, std::int64_t n, std::int64_t k,
                  bool trans_a, bool trans_b, const float* bias = nullptr);

/// One operand of packed_sgemm_pieces: op(X) whose k extent is `pieces` runs of `seg` (>= 1),
/// run q read from ptrs[q]: row-major with leading dimension `ld`, op(X) = X, or the
/// transpose of what is stored when `trans` (as packed_sgemm's trans_a / trans_b).
struct PackedPieces {
  const float* const* ptrs;
  std::int64_t pieces, seg, ld;
  bool trans;
};

/// c [m, n] (row-major, contiguous) = (accumulate ? c : 0) + Σ_q op(a_q) · op(b_q) over the
/// pieces (a.pieces == b.pieces >= 1, a.seg == b.seg): one product over the concatenated k,
/// on the calling thread (for kernels that spread their own products over the cores), each
/// element summed over k in order. Precondition: packed_sgemm_available().
void packed_sgemm_pieces(const PackedPieces& a, const PackedPieces& b, float* c, std::int64_t m, std::int64_t n,
                         bool accumulate);

}  // namespace tg::ops
