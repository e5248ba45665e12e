// Kernel slots of the embedding family. Every kernel receives validated, allocated
// tensors; `indices` (i32 or i64, any shape, read flat) holds only values in [0, V).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// out[i, :] = weight[indices[i], :] for i < n, with weight [V, D] and out viewed as
/// [n, D] (n > 0, D > 0).
using EmbeddingFwdFn = void(const Tensor& weight, const Tensor& indices, std::int64_t n, std::int64_t V,
                            std::int64_t D, const Tensor& out);
TG_DECLARE_KERNEL(embedding_fwd_kernel, EmbeddingFwdFn);

/// dweight[v, :] = sum of grad[i, :] over every i < n with indices[i] == v (0 for rows no
/// index selects); grad viewed as [n, D], dweight [V, D] of grad's dtype, fully written
/// (n > 0, V > 0, D > 0). Sums in f32 (f64 for f64); on CUDA with atomics, so the order
/// of the additions (and the last bits of a sum of many rows) may vary from run to run.
using EmbeddingBwdFn = void(const Tensor& grad, const Tensor& indices, std::int64_t n, std::int64_t V,
                            std::int64_t D, const Tensor& dweight);
TG_DECLARE_KERNEL(embedding_bwd_kernel, EmbeddingBwdFn);

}  // namespace tg::ops
