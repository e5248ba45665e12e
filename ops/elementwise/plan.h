// How the inputs of an element-wise map are read, shared by the CPU and CUDA kernels.
// Outputs are contiguous with the map's shape; each input is read in one of four ways:
// contiguously (same shape), as one broadcast element, as a trailing row repeated over the
// leading dims ([N] against [..., N]), or through general broadcast strides over at most
// kMaxMapDims coalesced dims.
#pragma once

#include <array>
#include <cstdint>

#include "core/shape.h"
#include "runtime/macros.h"

namespace tg::ops {

inline constexpr int kMaxMapDims = 8;

enum class InputMode : int { Contiguous, Scalar, Row, Strided };

struct InputPlan {
  InputMode mode = InputMode::Contiguous;
  std::int64_t row_len = 1;                  ///< Row: the repeated row's length
  std::int64_t strides[kMaxMapDims] = {};    ///< Strided: element strides per coalesced dim (0 = broadcast)
};

/// i % m, with a 32-bit division when both fit (64-bit division is several times slower
/// on GPUs, and this runs per element on broadcast paths).
TG_HOST_DEVICE TG_INLINE std::int64_t mod_fast(std::int64_t i, std::int64_t m) {
  if (((i | m) >> 32) == 0) return static_cast<std::uint32_t>(i) % static_cast<std::uint32_t>(m);
  return i % m;
}

template <int N>
struct MapPlan {
  int ndim = 0;                            ///< coalesced dims (Strided inputs only)
  std::int64_t sizes[kMaxMapDims] = {};    ///< their extents, outermost first
  InputPlan in[N];
  bool all_contiguous = true;

  /// Element offset in input k of output element i.
  TG_HOST_DEVICE TG_INLINE std::int64_t offset(int k, std::int64_t i) const {
    const InputPlan& p = in[k];
    switch (p.mode) {
      case InputMode::Contiguous: return i;
      case InputMode::Scalar: return 0;
      case InputMode::Row: return mod_fast(i, p.row_len);
      default: break;
    }
    std::int64_t off = 0;
    TG_DEVICE_NO_UNROLL
    for (int d = ndim - 1; d >= 0; --d) {
      const std::int64_t q = ((i | sizes[d]) >> 32) == 0
                                 ? static_cast<std::uint32_t>(i) / static_cast<std::uint32_t>(sizes[d])
                                 : i / sizes[d];
      off += (i - q * sizes[d]) * p.strides[d];
      i = q;
    }
    return off;
  }
};

/// The plan for reading inputs of `in_shapes` (each broadcastable to `out`) as `out`.
/// Throws tg::ShapeError naming `op` when the strided inputs need more than kMaxMapDims
/// dims after coalescing. Does not check broadcastability (callers have).
template <int N>
MapPlan<N> make_map_plan(const Shape& out, const std::array<Shape, N>& in_shapes, const char* op);

/// How sum_to reads x: output element k and reduced position r address
/// x[koff(k) + roff(r)]. Kept and reduced dims are each coalesced.
struct SumToPlan {
  int nk = 0, nr = 0;
  std::int64_t ksizes[kMaxMapDims] = {}, kstrides[kMaxMapDims] = {};
  std::int64_t rsizes[kMaxMapDims] = {}, rstrides[kMaxMapDims] = {};
  std::int64_t n_out = 1;  ///< output elements
  std::int64_t n_red = 1;  ///< elements summed into each
  /// True when x's innermost dim is reduced (consecutive r are adjacent in memory);
  /// otherwise consecutive k are (or the reduction is over nothing).
  bool inner_reduced = false;

  TG_HOST_DEVICE TG_INLINE static std::int64_t unravel(std::int64_t i, int n, const std::int64_t* sizes,
                                                       const std::int64_t* strides) {
    if (n == 0) return 0;
    if (n == 1) return i * strides[0];  // the common case: no division at all
    std::int64_t off = 0;
    for (int d = n - 1; d >= 0; --d) {
      const std::int64_t q = i / sizes[d];
      off += (i - q * sizes[d]) * strides[d];
      i = q;
    }
    return off;
  }
  TG_HOST_DEVICE TG_INLINE std::int64_t koff(std::int64_t k) const { return unravel(k, nk, ksizes, kstrides); }
  TG_HOST_DEVICE TG_INLINE std::int64_t roff(std::int64_t r) const { return unravel(r, nr, rsizes, rstrides); }
};

/// The plan for summing x of shape `x` down to `out` (out broadcastable to x, at most as
/// many dims). Throws tg::ShapeError naming `op` beyond kMaxMapDims coalesced dims.
SumToPlan make_sum_to_plan(const Shape& x, const Shape& out, const char* op);

}  // namespace tg::ops
