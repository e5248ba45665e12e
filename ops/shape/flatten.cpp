#include "ops/shape/flatten.h"

#include <vector>

#include "ops/common.h"
#include "ops/shape/shape_ops.h"

namespace tg {

namespace {
// The product of all dims but the last two.
std::int64_t leading_numel(const Shape& s) {
  std::int64_t n = 1;
  for (int d = 0; d + 2 < s.ndim(); ++d) n *= s[d];
  return n;
}
}  // namespace

std::pair<Tensor, Shape> flatten_to_3d(const Tensor& x) {
  ops::check_defined("flatten_to_3d", "x", x);
  TG_CHECK(x.dim() >= 2, ShapeError, "flatten_to_3d: x must have at least 2 dims [..., M, N], got shape ", x.shape());
  if (x.dim() == 3) return {x, x.shape()};
  return {reshape(x, {leading_numel(x.shape()), x.size(-2), x.size(-1)}), x.shape()};
}

Tensor unflatten(const Tensor& x3, const Shape& original_shape) {
  ops::check_ndim("unflatten", "x3", x3, 3);
  TG_CHECK(original_shape.ndim() >= 2, ShapeError,
           "unflatten: original_shape must have at least 2 dims [..., M, N], got ", original_shape);
  const std::int64_t lead = leading_numel(original_shape);
  TG_CHECK(x3.size(0) == lead, ShapeError, "unflatten: x3 must have batch ", lead,
           " (the product of the leading dims of original_shape ", original_shape, "), got x3 of shape ",
           x3.shape());
  std::vector<std::int64_t> dims(original_shape.dims().begin(), original_shape.dims().end() - 2);
  dims.push_back(x3.size(1));
  dims.push_back(x3.size(2));
  Shape out(std::move(dims));
  if (out == x3.shape()) return x3;
  return reshape(x3, out);
}

}  // namespace tg
