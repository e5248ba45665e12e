// BlockMap: where each block of a source grid goes under the whole-block moves of this
// family (repeat, repeat_interleave, split, merge). Shared by the CPU and CUDA kernels, so
// both backends compute the same destinations from the same arithmetic.
#pragma once

#include <cstdint>

#include "runtime/macros.h"

namespace tg::ops {

struct BlockMap {
  enum Kind : int { Repeat = 0, RepeatInterleave = 1, SplitCols = 2, SplitRows = 3, MergeCols = 4, MergeRows = 5 };
  int kind = Repeat;
  // Source block grid.
  std::int64_t B = 0, Mb = 0, Nb = 0;
  // Repeat: (rB, rM, rN); RepeatInterleave: (r, -, -); split/merge: (P, -, -).
  std::int64_t p0 = 1, p1 = 1, p2 = 1;
  // Destination block grid.
  std::int64_t oB = 0, oMb = 0, oNb = 0;

  /// Destinations per source block (each source block has `copies` distinct destinations,
  /// and no two (source, copy) pairs share one).
  TG_HOST_DEVICE std::int64_t copies() const {
    if (kind == Repeat) return p0 * p1 * p2;
    if (kind == RepeatInterleave) return p0;
    return 1;
  }

  /// Flat destination block (ob * oMb + oR) * oNb + oC of copy `c` of source block (b, R, C).
  /// I: the integer type of the arithmetic (CUDA kernels use int when the grids fit).
  template <typename I = std::int64_t>
  TG_HOST_DEVICE I dest(I b, I R, I C, I c) const {
    const I P = static_cast<I>(p0);
    I ob = b, oR = R, oC = C;
    switch (kind) {
      case Repeat: {
        const I r1 = static_cast<I>(p1), r2 = static_cast<I>(p2);
        const I rb = c / (r1 * r2), rm = (c / r2) % r1, rn = c % r2;
        ob = rb * static_cast<I>(B) + b;
        oR = rm * static_cast<I>(Mb) + R;
        oC = rn * static_cast<I>(Nb) + C;
        break;
      }
      case RepeatInterleave:
        ob = b * P + c;
        break;
      case SplitCols:
        ob = b * P + C / static_cast<I>(oNb);
        oC = C % static_cast<I>(oNb);
        break;
      case SplitRows:
        ob = b * P + R / static_cast<I>(oMb);
        oR = R % static_cast<I>(oMb);
        break;
      case MergeCols:
        ob = b / P;
        oC = (b % P) * static_cast<I>(Nb) + C;
        break;
      case MergeRows:
        ob = b / P;
        oR = (b % P) * static_cast<I>(Mb) + R;
        break;
      default:
        break;
    }
    return (ob * static_cast<I>(oMb) + oR) * static_cast<I>(oNb) + oC;
  }
};

}  // namespace tg::ops
