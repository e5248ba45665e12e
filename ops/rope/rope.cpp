// rope: validation, output allocation, dispatch, autograd recording.
#include "ops/rope/rope.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/rope/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(rope_kernel, RopeFn)
}  // namespace ops

namespace {

// The rotation by +θ (or −θ) of a validated x with resolved positions; records the
// backward, the opposite rotation of the gradient.
Tensor rope_apply(const Tensor& x, const Tensor& positions, const ops::RopeGeometry& g) {
  Tensor out = ops::empty_like(x);
  if (out.numel() > 0) ops::rope_kernel()(x.device())(x.detach(), positions, g, out);
  if (autograd::needs_grad({x})) {
    autograd::record("rope", {x}, {out}, [positions, g](const std::vector<Tensor>& grads) {
      ops::RopeGeometry back = g;
      back.inverse = !g.inverse;
      return std::vector<Tensor>{rope_apply(grads[0], positions, back)};
    });
  }
  return out;
}

}  // namespace

Tensor rope(const Tensor& x, const RopeOptions& options) {
  ops::check_floating("rope", "x", x);
  TG_CHECK(x.dim() >= 2, ShapeError, "rope: x must have at least 2 dims [..., S, D], got shape ", x.shape());
  const std::int64_t D = x.size(x.dim() - 1), S = x.size(x.dim() - 2);
  const std::int64_t N = S == 0 || D == 0 ? 0 : x.numel() / (S * D);
  const std::int64_t rd = options.rotary_dim == 0 ? D : options.rotary_dim;
  TG_CHECK(rd >= 0 && rd <= D && rd % 2 == 0, ShapeError, "rope: rotary_dim must be even and in [0, D = ", D,
           "] (0: all of D), got ", options.rotary_dim, options.rotary_dim == 0 ? " (D is odd)" : "");
  TG_CHECK(std::isfinite(options.base) && options.base > 0, ValueError, "rope: base must be finite and > 0, got ",
           options.base);

  Tensor pos;
  std::int64_t groups = 0;
  if (options.positions.defined()) {
    const Tensor& p = options.positions;
    TG_CHECK(p.dtype() == DType::i32 || p.dtype() == DType::i64, DTypeError,
             "rope: positions must have dtype i32 or i64, got ", p.dtype());
    TG_CHECK((p.dim() == 1 && p.size(0) == S) || (p.dim() == 2 && p.size(1) == S), ShapeError,
             "rope: positions must be [S] or [G, S] with S = ", S, ", got shape ", p.shape());
    groups = p.dim() == 1 ? 1 : p.size(0);
    TG_CHECK(groups > 0 && (N == 0 || N % groups == 0), ShapeError, "rope: positions' G = ", groups,
             " must divide the number of sequences N = ", N, " of x ", x.shape());
    TG_CHECK(p.device() == x.device() || p.device().is_cpu(), DeviceError, "rope: positions must be on x's device (",
             x.device(), ") or the CPU, got ", p.device());
    pos = p.detach().to(x.device());
  }
  if (rd == 0) return x;  // nothing turns (D == 0 or rotary_dim 0 of an empty last dim)

  const ops::RopeGeometry g{.n = N,
                            .s = S,
                            .d = D,
                            .rotary_dim = rd,
                            .groups = groups,
                            .offset = options.offset,
                            .log2_base = std::log2(options.base),
                            .interleaved = options.interleaved,
                            .inverse = false};
  return rope_apply(x, pos, g);
}

}  // namespace tg
