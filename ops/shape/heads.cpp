// split_heads / merge_heads: validation, the strided-copy parameters, autograd.
#include "ops/shape/heads.h"

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/shape/kernels.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(shape_copy_4d, Copy4dFn)
}  // namespace ops

namespace {

// The copy between x [B, S, W] (columns [col, col + h·dh) of it) and t [B·h, S, dh] over
// the index space (b, j, s, e): `to_heads` reads x and writes t, else the reverse.
void copy_heads(const Tensor& x, const Tensor& t, std::int64_t col, std::int64_t h, std::int64_t dh, bool to_heads) {
  const std::int64_t B = x.size(0), S = x.size(1), W = x.size(2);
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(x.dtype()));
  if (B * S * h * dh == 0) return;
  ops::Copy4dParams p;
  p.n[0] = B;
  p.n[1] = h;
  p.n[2] = S;
  p.n[3] = dh * es;
  const std::int64_t wide[3] = {S * W * es, dh * es, W * es};          // x, by (b, j, s)
  const std::int64_t narrow[3] = {h * S * dh * es, S * dh * es, dh * es};  // t, by (b, j, s)
  for (int i = 0; i < 3; ++i) {
    p.src_stride[i] = to_heads ? wide[i] : narrow[i];
    p.dst_stride[i] = to_heads ? narrow[i] : wide[i];
  }
  (to_heads ? p.src_offset : p.dst_offset) = col * es;
  ops::shape_copy_4d()(x.device())(to_heads ? x : t, to_heads ? t : x, p);
}

}  // namespace

std::vector<Tensor> split_heads(const Tensor& x, const std::vector<std::int64_t>& heads, std::int64_t head_dim) {
  ops::check_defined("split_heads", "x", x);
  if (x.dim() != 3) TG_THROW(ShapeError, "split_heads: x must be 3-d [B, S, W], got shape ", x.shape());
  TG_CHECK(!heads.empty(), ValueError, "split_heads: heads must name at least one part, got none");
  if (head_dim <= 0) TG_THROW(ShapeError, "split_heads: head_dim must be positive, got ", head_dim);
  std::int64_t total = 0;
  for (std::size_t p = 0; p < heads.size(); ++p) {
    if (heads[p] <= 0) TG_THROW(ShapeError, "split_heads: heads[", p, "] must be positive, got ", heads[p]);
    total += heads[p];
  }
  if (total * head_dim != x.size(2)) {
    TG_THROW(ShapeError, "split_heads: x's last dim must be the sum of heads (", total, ") times head_dim (",
             head_dim, ") = ", total * head_dim, ", got shape ", x.shape());
  }
  const std::int64_t B = x.size(0), S = x.size(1);
  std::vector<Tensor> out;
  out.reserve(heads.size());
  std::int64_t col = 0;
  for (std::int64_t h : heads) {
    out.push_back(ops::empty_like(x, {B * h, S, head_dim}, x.dtype()));
    copy_heads(x, out.back(), col, h, head_dim, /*to_heads=*/true);
    col += h * head_dim;
  }
  if (autograd::needs_grad({x})) {
    autograd::record("split_heads", {x}, out, [heads, head_dim, shape = x.shape()](const std::vector<Tensor>& g) {
      // The parts tile the last dim, so every element of dx is written once.
      Tensor dx = ops::empty_like(g[0], shape, g[0].dtype());
      std::int64_t c = 0;
      for (std::size_t p = 0; p < heads.size(); ++p) {
        copy_heads(dx, g[p], c, heads[p], head_dim, /*to_heads=*/false);
        c += heads[p] * head_dim;
      }
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor merge_heads(const Tensor& x, std::int64_t batch) {
  ops::check_defined("merge_heads", "x", x);
  if (x.dim() != 3) TG_THROW(ShapeError, "merge_heads: x must be 3-d [B·h, S, Dh], got shape ", x.shape());
  if (batch <= 0 || x.size(0) % batch != 0) {
    TG_THROW(ShapeError, "merge_heads: batch must be positive and divide x.size(0) = ", x.size(0), ", got ", batch);
  }
  const std::int64_t h = x.size(0) / batch, S = x.size(1), dh = x.size(2);
  Tensor out = ops::empty_like(x, {batch, S, h * dh}, x.dtype());
  copy_heads(out, x, 0, h, dh, /*to_heads=*/false);
  if (autograd::needs_grad({x})) {
    autograd::record("merge_heads", {x}, {out}, [h, dh](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{split_heads(g[0], {h}, dh)[0]};
    });
  }
  return out;
}

}  // namespace tg
