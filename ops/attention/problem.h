// Validation of flash_attention's arguments and their normalisation into the
// AttentionProblem the kernels see.
#pragma once

#include <cstdint>
#include <functional>

#include "ops/attention/kernels.h"

namespace tg::ops {

/// A validated attention call: the problem for the kernels (holding detached tensors) and
/// the differentiable tensors the kernels read for bias and sinks (converted from the
/// user's, so that gradients flow back through the conversion), undefined when absent.
struct PreparedAttention {
  AttentionProblem problem;
  Tensor bias_data;  ///< q's dtype, the block data of problem.bias
  Tensor sinks;      ///< f32 [Hq] (f64 for f64)
};

/// The element mask [bhq, Sq, Sk] (bool, block-sparse, on the CPU) that excludes (bh, i, j)
/// inside the visited pairs of `pattern` (already expanded to bhq rows) where `user` (a bool
/// element mask on the CPU with P = 1 or bhq rows, or undefined) or `fn` (or empty) says
/// so; only blocks excluding something are kept. Arguments already validated.
BlockSparseTensor fold_mask(const AttentionPattern& pattern, const BlockSparseTensor& user,
                            const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& fn,
                            std::int64_t bhq);

/// Checks every argument of flash_attention (see attention.h for the rules and errors) and
/// builds the problem: the pattern expanded to P = B·Hq, lens and segments as i64 on q's
/// device, mask_fn folded into an element mask expanded to B·Hq, bias in q's dtype.
PreparedAttention prepare_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionPattern& pattern,
                                    const AttentionOptions& options);

}  // namespace tg::ops
