// dropout: validation, output allocation, dispatch, autograd recording.
#include "ops/dropout/dropout.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/dropout/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(dropout_kernel, DropoutFn)
}  // namespace ops

Tensor dropout(const Tensor& x, double p, std::uint64_t seed, std::uint64_t offset) {
  ops::check_floating("dropout", "x", x);
  TG_CHECK(p >= 0.0 && p < 1.0, ValueError, "dropout: p must be in [0, 1), got ", p);  // also rejects nan
  if (p == 0.0) return x;
  const std::uint32_t threshold = ops::dropout_threshold(p);
  const double scale = 1.0 / (1.0 - p);
  Tensor out = ops::empty_like(x);
  if (out.numel() > 0) ops::dropout_kernel()(x.device())(x, threshold, scale, seed, offset, out);
  if (autograd::needs_grad({x})) {
    // The mask is recomputed from (seed, offset): the gradient is dropped and scaled alike.
    autograd::record("dropout", {x}, {out}, [p, seed, offset](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{dropout(g[0], p, seed, offset)};
    });
  }
  return out;
}

}  // namespace tg
