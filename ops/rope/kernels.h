// Kernel slots of the rope family. Every kernel receives validated, allocated tensors.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"
#include "runtime/macros.h"

namespace tg::ops {

/// What a rope kernel needs besides the tensors: x viewed as [N, S, D].
struct RopeGeometry {
  std::int64_t n = 0, s = 0, d = 0;
  std::int64_t rotary_dim = 0;  ///< even, in [2, d]
  std::int64_t groups = 0;      ///< rows of positions (0: positions undefined, offset + s)
  std::int64_t offset = 0;
  double log2_base = 0;  ///< log2(base)
  bool interleaved = false;
  bool inverse = false;  ///< rotate by −θ (the backward)
};

/// out = the rotation of x (see tg::rope) for every row; positions is undefined or an
/// i32 / i64 [groups, S] tensor on x's device. N·S·D > 0.
using RopeFn = void(const Tensor& x, const Tensor& positions, const RopeGeometry& g, const Tensor& out);
TG_DECLARE_KERNEL(rope_kernel, RopeFn);

}  // namespace tg::ops
