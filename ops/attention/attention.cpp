// flash_attention: output allocation, dispatch and autograd recording (the checks and the
// normalisation of the options live in problem.cpp).
#include "ops/attention/attention.h"

#include <array>
#include <limits>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "ops/attention/problem.h"
#include "ops/common.h"
#include "ops/elementwise/elementwise.h"
#include "ops/factory/factory.h"
#include "ops/shape/shape_ops.h"
#include "ops/sparse_convert/sparse_convert.h"
#include "ops/sparse_nn/sparse_nn.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(attention_fwd_kernel, AttentionFwdFn)
TG_DEFINE_KERNEL(attention_bwd_kernel, AttentionBwdFn)
}  // namespace ops

namespace {

constexpr const char* kOp = "flash_attention";

DType lse_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

// Kernels need every extent positive; without keys every query row is empty.
bool has_work(const ops::AttentionProblem& p) { return p.bhq > 0 && p.sq > 0 && p.sk > 0; }

// Outputs when no key exists: o = 0 and lse = -inf, or the row's sink logit.
void fill_keyless(const ops::AttentionProblem& p, const Tensor& o, const Tensor& lse) {
  NoGradGuard ng;
  copy_bytes(o, zeros(o.shape(), {.dtype = o.dtype(), .device = o.device()}));
  if (p.sinks.defined()) {
    Tensor s = broadcast_to(reshape(p.sinks.to(lse.dtype()), {1, p.heads, 1}), {p.batch, p.heads, p.sq});
    copy_bytes(lse, s);
  } else {
    copy_bytes(lse, full(lse.shape(), -std::numeric_limits<double>::infinity(), {.dtype = lse.dtype(), .device = lse.device()}));
  }
}

Tensor zeros_as(const Tensor& t) { return zeros(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }

}  // namespace

AttentionResult flash_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionPattern& pattern, const AttentionOptions& options) {
  ops::PreparedAttention prep = ops::prepare_attention(q, k, v, pattern, options);
  const ops::AttentionProblem& p = prep.problem;
  AttentionResult r;
  r.out = ops::empty_like(q, {p.bhq, p.sq, p.dv}, q.dtype());
  r.lse = ops::empty_like(q, {p.bhq, p.sq}, lse_dtype(q.dtype()));
  const std::vector<Tensor> inputs{q, k, v, prep.bias_data, prep.sinks};
  const bool grad = autograd::needs_grad(inputs);
  Tensor keep;  // the forward's dropout decisions, when it kept them for the backward
  if (has_work(p)) {
    keep = ops::attention_fwd_kernel()(q.device())(q, k, v, p, r.out, r.lse,
                                                   grad && p.dropout_p > 0.0 && options.keep_dropout_mask);
  } else if (r.out.numel() > 0) {
    fill_keyless(p, r.out, r.lse);
  }
  if (grad) {
    const bool need_bias = prep.bias_data.defined() && prep.bias_data.requires_grad();
    const bool need_sinks = prep.sinks.defined() && prep.sinks.requires_grad();
    const std::array<bool, 3> need{q.requires_grad(), k.requires_grad(), v.requires_grad()};
    autograd::record(kOp, inputs, {r.out},
                     [p, need, need_bias, need_sinks, qd = q.detach(), kd = k.detach(), vd = v.detach(),
                      od = r.out.detach(), lse = r.lse, keep](const std::vector<Tensor>& g) {
                       Tensor dout = g[0].dtype() == qd.dtype() ? g[0] : g[0].to(qd.dtype());
                       Tensor dq = ops::empty_like(qd), dk = ops::empty_like(kd), dv = ops::empty_like(vd);
                       Tensor dbias = need_bias ? ops::empty_like(p.bias.data()) : Tensor();
                       Tensor dsinks = need_sinks ? ops::empty_like(p.sinks) : Tensor();
                       if (has_work(p)) {
                         ops::attention_bwd_kernel()(qd.device())(qd, kd, vd, od, lse, dout, p, dq, dk, dv, dbias,
                                                                  dsinks, keep);
                       } else {
                         // No key: the output is constant (0), so every gradient is 0.
                         dq = zeros_as(dq), dk = zeros_as(dk), dv = zeros_as(dv);
                         if (dbias.defined()) dbias = zeros_as(dbias);
                         if (dsinks.defined()) dsinks = zeros_as(dsinks);
                       }
                       return std::vector<Tensor>{need[0] ? dq : Tensor(), need[1] ? dk : Tensor(),
                                                  need[2] ? dv : Tensor(), dbias, dsinks};
                     });
  }
  return r;
}

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionPattern& pattern,
                       const AttentionOptions& options) {
  return flash_attention_with_lse(q, k, v, pattern, options).out;
}

BlockSparseTensor attention_mask_from_fn(const AttentionPattern& pattern, std::int64_t bhq,
                                         const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& fn) {
  constexpr const char* op = "attention_mask_from_fn";
  if (!pattern.defined()) TG_THROW(ValueError, op, ": argument pattern: expected a defined pattern, got an undefined one");
  if (!fn) TG_THROW(ValueError, op, ": argument fn: expected a callable, got an empty std::function");
  if (bhq < 1) TG_THROW(ValueError, op, ": argument bhq: expected B·Hq >= 1, got ", bhq);
  if (pattern.count() != 1 && pattern.count() != bhq) {
    TG_THROW(ShapeError, op, ": argument pattern: expected 1 or bhq = ", bhq, " rows, got ", pattern.count());
  }
  return ops::fold_mask(pattern.expanded(bhq), BlockSparseTensor(), fn, bhq);
}

Tensor flash_attention(const BlockSparseTensor& q, const BlockSparseTensor& k, const BlockSparseTensor& v,
                       const AttentionPattern& pattern, const AttentionOptions& options) {
  for (auto [arg, x] : {std::pair<const char*, const BlockSparseTensor*>{"q", &q}, {"k", &k}, {"v", &v}}) {
    check_block_sparse(kOp, arg, *x);
    if (!is_row_striped(x->layout())) {
      TG_THROW(LayoutError, kOp, ": ", arg,
               " must have a row-striped layout (each block-row empty or full), got a layout of shape [",
               x->layout().batch(), ", ", x->layout().block_rows(), ", ", x->layout().block_cols(), "] with ",
               x->layout().n_blocks(), " active blocks that leaves some block-rows partly active");
    }
  }
  return flash_attention(to_dense(q), to_dense(k), to_dense(v), pattern, options);
}

}  // namespace tg
