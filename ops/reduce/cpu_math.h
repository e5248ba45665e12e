// Host-side numeric helpers shared by the CPU kernels of the reduce, softmax and loss
// families: pairwise summation and the nan-aware comparisons that define max / argmax.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace tg::ops::cpu {

/// Sum of f(i) for i in [begin, end) in Acc, by pairwise (cascade) summation: the rounding
/// error grows with log(n) rather than n, so a CPU sum of millions of f32 values stays
/// close to the CUDA tree reduction it is compared with.
template <typename Acc, typename F>
Acc pairwise_sum(std::int64_t begin, std::int64_t end, const F& f) {
  constexpr std::int64_t kLeaf = 128;
  const std::int64_t n = end - begin;
  if (n <= kLeaf) {
    Acc s = 0;
    for (std::int64_t i = begin; i < end; ++i) s += f(i);
    return s;
  }
  const std::int64_t mid = begin + n / 2;
  return pairwise_sum<Acc>(begin, mid, f) + pairwise_sum<Acc>(mid, end, f);
}

/// max(a, b) where a nan wins (nan propagates through max).
template <typename Acc>
inline Acc nan_max(Acc a, Acc b) {
  return (std::isnan(a) || a > b) ? a : b;
}

/// exp(a - m), with exp(-inf - m) = 0 even when m is -inf too (an all -inf row).
template <typename Acc>
inline Acc exp_sub(Acc a, Acc m) {
  return a == -std::numeric_limits<Acc>::infinity() ? Acc(0) : std::exp(a - m);
}

/// True when (va, ia) comes before (vb, ib) in the argmax order: larger value first, nan
/// above everything, and the lower index first among equal values. A total order, so any
/// reduction order finds the same (first maximal) element.
template <typename Acc>
inline bool argmax_before(Acc va, std::int64_t ia, Acc vb, std::int64_t ib) {
  const bool na = std::isnan(va), nb = std::isnan(vb);
  if (na != nb) return na;
  if (!na && va != vb) return va > vb;
  return ia < ib;
}

}  // namespace tg::ops::cpu
