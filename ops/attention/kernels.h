// Kernel slots of flash attention. The public functions (attention.cpp) validate every
// argument and normalise the options into an AttentionProblem, so a kernel sees only:
// contiguous q/k/v/o of one floating dtype on one device, a pattern expanded to P = B·Hq
// rows, and optional tensors already on the kernel's device in the dtypes stated below.
#pragma once

#include <cstdint>

#include "core/block_sparse.h"
#include "ops/attention/attention.h"
#include "ops/dispatch.h"

namespace tg::ops {

struct AttentionProblem {
  std::int64_t bhq = 0, bhkv = 0;  ///< B·Hq, B·Hkv (bhq % bhkv == 0; kv row = bh / (bhq / bhkv))
  std::int64_t batch = 1, heads = 1;  ///< B and Hq (bhq == batch · heads): b = bh / Hq, h = bh % Hq
  std::int64_t sq = 0, sk = 0, d = 0, dv = 0;
  double scale = 1.0;
  double softcap = 0.0;  ///< 0: off
  bool causal = false;
  std::int64_t window_left = -1, window_right = -1;  ///< < 0: unbounded
  /// count() == bhq (expanded), sq()/sk() equal to sq/sk. Host data; a backend builds its
  /// own work lists from it (and may cache them keyed by the pattern object's identity).
  AttentionPattern pattern;
  Tensor q_lens, k_lens;  ///< i64 [B] on the kernel's device, or undefined
  Tensor seg_q, seg_k;    ///< i64 [B, Sq] / [B, Sk] on the kernel's device, or undefined
  /// Element mask (bool data, layout [bhq, sq/bs, sk/bs]) on the kernel's device, or
  /// undefined. mask_fn has already been folded into it.
  BlockSparseTensor mask;
  /// Additive bias (q's dtype, layout [bhq, sq/bs, sk/bs]) on the kernel's device, or undefined.
  BlockSparseTensor bias;
  Tensor sinks;  ///< f32 [Hq] (f64 when q is f64) on the kernel's device, or undefined
  double dropout_p = 0.0;
  std::uint32_t dropout_threshold = 0;  ///< attention_dropout_threshold(p) (dropout_rule.h)
  std::uint64_t seed = 0, offset = 0;
  bool deterministic = false;
};

/// Forward: writes o [bhq, sq, dv] (q's dtype) and lse [bhq, sq] (f32; f64 for f64) as
/// defined in attention.h. All extents > 0. With `keep_mask` (dropout on, a backward to
/// come) a kernel may return the dropout decisions it drew, for the same backend's backward
/// to read: a tensor on its device in a layout of the backend's own (about one bit an element
/// of the Sq x Sk rectangle a row), defined for the visible elements. Otherwise, and when it
/// keeps nothing, it returns an undefined tensor.
using AttentionFwdFn = Tensor(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionProblem& p,
                              const Tensor& o, const Tensor& lse, bool keep_mask);
TG_DECLARE_KERNEL(attention_fwd_kernel, AttentionFwdFn);

/// Backward: given o, lse of the forward and do (q's dtype, [bhq, sq, dv]), writes dq
/// [bhq, sq, d], dk [bhkv, sk, d], dv [bhkv, sk, dv] (q's dtype; dk/dv summed over the
/// query heads sharing a kv row), and when defined: dbias (bias's dtype, the bias's block
/// data shape) and dsinks (sinks' dtype: f32, f64 for f64, [Hq]). Every output is fully
/// overwritten. `keep`: what the forward returned (may be undefined); a kernel may read the
/// decisions from it instead of drawing them.
using AttentionBwdFn = void(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                            const Tensor& dout, const AttentionProblem& p, const Tensor& dq, const Tensor& dk,
                            const Tensor& dv, const Tensor& dbias, const Tensor& dsinks, const Tensor& keep);
TG_DECLARE_KERNEL(attention_bwd_kernel, AttentionBwdFn);

}  // namespace tg::ops
