// Losses: validation, output allocation, dispatch, autograd recording.
#include "ops/loss/loss.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/loss/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(cross_entropy_fwd_kernel, CrossEntropyFwdFn)
TG_DEFINE_KERNEL(cross_entropy_bwd_kernel, CrossEntropyBwdFn)
TG_DEFINE_KERNEL(mse_fwd_kernel, MseFwdFn)
TG_DEFINE_KERNEL(mse_bwd_kernel, MseBwdFn)
}  // namespace ops

namespace {

// The check of the counted targets' range [lo, hi] against C classes; on failure it names
// the first bad target (reading target on the host: only then).
ops::RangeVerdict target_verdict(const Tensor& target, std::int64_t classes, std::int64_t ignore_index) {
  const char* note = ops::deferred_check_note(target.device());
  return [target, classes, ignore_index, note](std::int64_t lo, std::int64_t hi) {
    if (lo >= 0 && hi < classes) return;  // also lo > hi: no counted row
    const std::vector<std::int64_t> t = target.to_vector<std::int64_t>();
    for (std::size_t r = 0; r < t.size(); ++r) {
      const std::int64_t v = t[r];
      if (v != ignore_index && (v < 0 || v >= classes)) {
        TG_THROW(ValueError, "cross_entropy: target[", r, "] = ", v, " is out of range for C = ", classes,
                 " classes (expected 0 <= target < ", classes, ", or ignore_index = ", ignore_index, ")", note);
      }
    }
    TG_THROW(ValueError, "cross_entropy: targets must lie in [0, ", classes, ") or equal ignore_index = ",
             ignore_index, ", got values in [", lo, ", ", hi, "]", note);
  };
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, std::int64_t ignore_index) {
  constexpr const char* op = "cross_entropy";
  ops::check_floating(op, "logits", logits);
  ops::check_ndim(op, "logits", logits, 2);
  ops::check_defined(op, "target", target);
  TG_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32, DTypeError, op,
           ": target must have dtype i64 or i32, got ", target.dtype());
  TG_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), ShapeError, op, ": target must have shape [",
           logits.size(0), "] (one class index per row of logits ", logits.shape(), "), got ", target.shape());
  ops::check_same_device(op, "logits", logits, "target", target);

  const std::int64_t n = logits.size(0);
  const DType acc = logits.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = ops::empty_like(logits, Shape{}, logits.dtype());
  Tensor lse = ops::empty_like(logits, Shape{n}, acc);
  Tensor count = ops::empty_like(logits, Shape{1}, DType::i64);
  const Tensor td = target.detach();
  ops::cross_entropy_fwd_kernel()(logits.device())(logits, td, ignore_index, out, lse, count,
                                                  target_verdict(td, logits.size(1), ignore_index));
  if (autograd::needs_grad({logits})) {
    autograd::record(op, {logits}, {out}, [ld = logits.detach(), td, lse, count, ignore_index](const std::vector<Tensor>& g) {
      Tensor dl = ops::empty_like(ld);
      if (dl.numel() > 0) ops::cross_entropy_bwd_kernel()(ld.device())(ld, td, lse, g[0], ignore_index, count, dl);
      return std::vector<Tensor>{dl};
    });
  }
  return out;
}

Tensor mse_loss(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "mse_loss";
  ops::check_floating(op, "a", a);
  ops::check_floating(op, "b", b);
  ops::check_same_dtype(op, "a", a, "b", b);
  ops::check_same_device(op, "a", a, "b", b);
  TG_CHECK(a.shape() == b.shape(), ShapeError, op, ": a and b must have the same shape, got ", a.shape(), " and ",
           b.shape());
  Tensor out = ops::empty_like(a, Shape{}, a.dtype());
  ops::mse_fwd_kernel()(a.device())(a, b, out);
  if (autograd::needs_grad({a, b})) {
    autograd::record(op, {a, b}, {out}, [ad = a.detach(), bd = b.detach()](const std::vector<Tensor>& g) {
      Tensor da = ops::empty_like(ad), db = ops::empty_like(bd);
      if (da.numel() > 0) ops::mse_bwd_kernel()(ad.device())(ad, bd, g[0], da, db);
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

}  // namespace tg
