// Conversions between tensors and Eigen matrices. Header-only, so that tilegrad's public
// headers need Eigen only where a program includes this file.
#pragma once

#include <Eigen/Core>
#include <vector>

#include "core/tensor.h"

namespace tg {

/// A [rows, cols] tensor holding a copy of `m` (any storage order), with m's scalar type
/// (float, double, int32, int64) unless `opts.dtype` says otherwise.
template <typename Derived>
Tensor from_eigen(const Eigen::MatrixBase<Derived>& m, TensorOptions opts = {.dtype = dtype_of<typename Derived::Scalar>()}) {
  using S = typename Derived::Scalar;
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = m;
  std::vector<S> v(rm.data(), rm.data() + rm.size());
  return from_vector(v, {static_cast<std::int64_t>(rm.rows()), static_cast<std::int64_t>(rm.cols())}, opts);
}

/// A row-major Eigen matrix copy of a 2-d tensor (any device, converted to S's dtype).
/// Throws tg::ShapeError unless t is 2-d (a 1-d tensor becomes a column vector).
template <typename S = float>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> to_eigen(const Tensor& t) {
  if (t.dim() != 1 && t.dim() != 2) TG_THROW(ShapeError, "to_eigen: expected a 1-d or 2-d tensor, got shape ", t.shape());
  const std::int64_t rows = t.size(0), cols = t.dim() == 2 ? t.size(1) : 1;
  std::vector<S> v = t.to_vector<S>();
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data()[i] = v[static_cast<std::size_t>(i)];
  return m;
}

}  // namespace tg
