// embedding: validation (indices checked on their device, ops/index_check), output allocation, dispatch,
// autograd recording.
#include "ops/embedding/embedding.h"

#include <sstream>
#include <vector>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/embedding/kernels.h"
#include "ops/index_check/kernels.h"
#include "ops/factory/factory.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(embedding_fwd_kernel, EmbeddingFwdFn)
TG_DEFINE_KERNEL(embedding_bwd_kernel, EmbeddingBwdFn)
}  // namespace ops

namespace {

// "[i, j, k]": the position of flat element `flat` in a tensor of `shape`.
std::string position_of(std::int64_t flat, const Shape& shape) {
  std::vector<std::int64_t> pos(static_cast<std::size_t>(shape.ndim()));
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    const std::int64_t e = shape[d];
    pos[static_cast<std::size_t>(d)] = e > 0 ? flat % e : 0;
    flat = e > 0 ? flat / e : 0;
  }
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < pos.size(); ++i) os << (i ? ", " : "") << pos[i];
  os << "]";
  return os.str();
}

// The check of the indices' range [lo, hi] against V rows; on failure it names the first
// index outside [0, V) (reading indices on the host: only then).
ops::RangeVerdict index_verdict(const Tensor& indices, std::int64_t V) {
  const char* note = ops::deferred_check_note(indices.device());
  return [indices, V, note](std::int64_t lo, std::int64_t hi) {
    if (lo >= 0 && hi < V) return;
    const std::vector<std::int64_t> idx = indices.to_vector<std::int64_t>();
    for (std::size_t i = 0; i < idx.size(); ++i) {
      if (idx[i] < 0 || idx[i] >= V) {
        TG_THROW(ValueError, "embedding: indices", position_of(static_cast<std::int64_t>(i), indices.shape()), " = ",
                 idx[i], " is out of range for a weight with V = ", V, " rows (expected 0 <= index < ", V,
                 "; indices has shape ", indices.shape(), ")", note);
      }
    }
  };
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  ops::check_floating("embedding", "weight", weight);
  ops::check_ndim("embedding", "weight", weight, 2);
  ops::check_defined("embedding", "indices", indices);
  TG_CHECK(indices.dtype() == DType::i32 || indices.dtype() == DType::i64, DTypeError,
           "embedding: indices must have dtype i32 or i64, got ", indices.dtype());
  ops::check_same_device("embedding", "weight", weight, "indices", indices);
  const std::int64_t V = weight.size(0), D = weight.size(1), n = indices.numel();
  // Checked on the indices' device (the kernels never read outside weight meanwhile).
  if (n > 0) {
    const Tensor id = indices.detach();
    ops::index_range_kernel()(indices.device())(id, index_verdict(id, V));
  }

  std::vector<std::int64_t> dims = indices.shape().dims();
  dims.push_back(D);
  Tensor out = ops::empty_like(weight, Shape(std::move(dims)), weight.dtype());
  if (n > 0 && D > 0) ops::embedding_fwd_kernel()(weight.device())(weight, indices, n, V, D, out);

  if (autograd::needs_grad({weight})) {
    autograd::record("embedding", {weight, indices}, {out},
                     [idx = indices.detach(), n, V, D](const std::vector<Tensor>& g) {
                       Tensor dw;
                       if (n > 0 && V > 0 && D > 0) {
                         dw = ops::empty_like(g[0], Shape{V, D}, g[0].dtype());
                         ops::embedding_bwd_kernel()(g[0].device())(g[0], idx, n, V, D, dw);
                       } else {
                         dw = zeros({V, D}, {.dtype = g[0].dtype(), .device = g[0].device()});
                       }
                       return std::vector<Tensor>{dw, Tensor()};
                     });
  }
  return out;
}

}  // namespace tg
