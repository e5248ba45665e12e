// Reductions over all elements or over the last dim. Floating dtypes; accumulation in f32
// (f64 for f64) whatever the storage dtype. Differentiable.
#pragma once

#include "core/tensor.h"

namespace tg {

/// Sum of all elements: a 0-d tensor of x's dtype. Empty x gives 0.
Tensor sum(const Tensor& x);
/// Mean of all elements (nan for empty x).
Tensor mean(const Tensor& x);
/// Max of all elements; gradient to the first maximal element. Throws tg::ShapeError for empty x.
Tensor max(const Tensor& x);

/// Sum over dim `dim` (only the last dim, -1 or ndim-1, is supported: tg::ShapeError otherwise);
/// keepdim keeps it with extent 1.
Tensor sum(const Tensor& x, int dim, bool keepdim = false);
Tensor mean(const Tensor& x, int dim, bool keepdim = false);
/// Max over the last dim; gradient to the first maximal element of each row.
/// Throws tg::ShapeError when that dim has extent 0.
Tensor max(const Tensor& x, int dim, bool keepdim = false);

}  // namespace tg
