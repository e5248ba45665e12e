// The CPU backend's own f32 GEMM for x86-64 CPUs with AVX2 and FMA: operands packed into
// panels that stay in the caches, a 6 x 16 register tile, both cores through OpenMP.
#pragma once

#include <cstdint>

namespace tg::ops {

/// Whether this CPU can run packed_sgemm (x86-64 with AVX2 and FMA, checked at run time: the
/// kernel is compiled for those instructions whatever the build's target).
bool packed_sgemm_available();

/// c [m, n] (row-major, contiguous) = op(a) · op(b), all f32: op(a) is a [m, k] (row-major),
/// or its transpose when a is stored [k, m] (`trans_a`); likewise op(b) from b [k, n] or
/// [n, k]. m, n, k >= 1; c must not overlap a or b. Every element of c is summed over k in
/// the same order whatever the number of threads, so results do not depend on it.
/// Precondition: packed_sgemm_available() (the caller checks).
void packed_sgemm(const float* a, const float* b, float* c, std::int64_t m, std::int64_t n, std::int64_t k,
                  bool trans_a, bool trans_b);

}  // namespace tg::ops
