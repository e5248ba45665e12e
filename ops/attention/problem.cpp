// flash_attention's argument checks and the normalisation into an AttentionProblem.
#include "ops/attention/problem.h"

#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"
#include "ops/common.h"
#include "ops/attention/dropout_rule.h"
#include "ops/sparse_move/sparse_move.h"

namespace tg::ops {
namespace {

constexpr const char* kOp = "flash_attention";

void check_index_tensor(const char* arg, const Tensor& t, const Shape& want, const char* want_str, Device dev) {
  if (t.dtype() != DType::i32 && t.dtype() != DType::i64) {
    TG_THROW(DTypeError, kOp, ": ", arg, " must be i32 or i64, got ", t.dtype());
  }
  if (t.shape() != want) TG_THROW(ShapeError, kOp, ": ", arg, " must have shape ", want_str, " = ", want, ", got ", t.shape());
  if (t.device() != dev && !t.device().is_cpu()) {
    TG_THROW(DeviceError, kOp, ": ", arg, " must be on q's device (", dev, ") or the CPU, got ", t.device());
  }
}

Tensor to_index(const Tensor& t, Device dev) { return t.detach().to(DType::i64).to(dev); }

// The block-sparse tensor `x` (argument `arg`) must be [P, sq, sk] on q's device (the mask,
// allow_shared, may also be on the CPU).
void check_elementwise_operand(const char* arg, const BlockSparseTensor& x, std::int64_t sq, std::int64_t sk,
                               std::int64_t bhq, bool allow_shared, const Tensor& q) {
  check_block_sparse(kOp, arg, x);
  const Shape s = x.shape();
  const bool rows_ok = s[0] == bhq || (allow_shared && s[0] == 1);
  if (!rows_ok || s[1] != sq || s[2] != sk) {
    TG_THROW(ShapeError, kOp, ": ", arg, " must have the logical shape [", allow_shared ? "1 or " : "", "B·Hq, Sq, Sk] = [",
             allow_shared ? "1 or " : "", bhq, ", ", sq, ", ", sk, "], got ", s, " (block size ", x.block_size(), ")");
  }
  if (allow_shared && x.device().is_cpu()) return;
  check_same_device(kOp, "q", q, arg, x.data());
}

// The block size of a folded mask: the largest power of two (<= 64) dividing every block
// boundary of the pattern, so that each mask block lies inside one pattern pair.
std::int64_t fold_block_size(const AttentionPattern& pat) {
  std::int64_t g = 0;
  for (std::int64_t s : pat.q_starts()) g = std::gcd(g, s);
  for (std::int64_t s : pat.k_starts()) g = std::gcd(g, s);
  std::int64_t bs = 1;
  while (bs < 64 && g % (bs * 2) == 0) bs *= 2;
  return bs;
}

// Block index of every position: blk[i] = r for q_starts[r] <= i < q_starts[r + 1].
std::vector<std::int64_t> block_of(const std::vector<std::int64_t>& starts) {
  std::vector<std::int64_t> blk(static_cast<std::size_t>(starts.back()));
  for (std::size_t r = 0; r + 1 < starts.size(); ++r)
    for (std::int64_t i = starts[r]; i < starts[r + 1]; ++i) blk[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(r);
  return blk;
}

}  // namespace

// The element mask [bhq, sq, sk] (host) that excludes (bh, i, j) when the user's mask does
// or mask_fn(bh, i, j) is true; both are consulted only inside visited pattern pairs (the
// only places a kernel looks), and only blocks that exclude something are kept.
BlockSparseTensor fold_mask(const AttentionPattern& pat, const BlockSparseTensor& user,
                            const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& fn, std::int64_t bhq) {
  const std::int64_t sq = pat.sq(), sk = pat.sk();
  const std::int64_t bs = user.defined() ? user.block_size() : fold_block_size(pat);
  const std::int64_t Mb = sq / bs, Nb = sk / bs, Qb = pat.q_blocks(), Kb = pat.k_blocks();
  const std::vector<std::int64_t> qblk = block_of(pat.q_starts()), kblk = block_of(pat.k_starts());
  const std::uint8_t* visit = pat.mask_host().data();
  const std::int64_t* uidx = nullptr;
  const bool* udata = nullptr;
  std::int64_t urows = 1;
  if (user.defined()) {
    uidx = user.layout().tables(Device::cpu()).block_index.data<std::int64_t>();
    udata = user.data().data<bool>();
    urows = user.layout().batch();
  }
  auto idx = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  std::vector<bool> on(idx(bhq * Mb * Nb), false), data;
  std::vector<bool> blk(idx(bs * bs));
  for (std::int64_t bh = 0; bh < bhq; ++bh) {
    const std::uint8_t* vrow = visit + bh * Qb * Kb;
    const std::int64_t ub_base = (urows == 1 ? 0 : bh) * Mb * Nb;
    for (std::int64_t R = 0; R < Mb; ++R) {
      for (std::int64_t C = 0; C < Nb; ++C) {
        const std::int64_t i0 = R * bs, j0 = C * bs;
        bool any_visit = false;
        for (std::int64_t r = qblk[idx(i0)]; r <= qblk[idx(i0 + bs - 1)] && !any_visit; ++r)
          for (std::int64_t c = kblk[idx(j0)]; c <= kblk[idx(j0 + bs - 1)] && !any_visit; ++c) any_visit = vrow[r * Kb + c];
        if (!any_visit) continue;
        const std::int64_t ub = uidx ? uidx[ub_base + R * Nb + C] : -1;
        bool any = false;
        for (std::int64_t ii = 0; ii < bs; ++ii) {
          const std::int64_t i = i0 + ii;
          for (std::int64_t jj = 0; jj < bs; ++jj) {
            const std::int64_t j = j0 + jj;
            bool ex = false;
            if (vrow[qblk[idx(i)] * Kb + kblk[idx(j)]]) {
              ex = (ub >= 0 && udata[(ub * bs + ii) * bs + jj]) || (fn && fn(bh, i, j));
            }
            blk[idx(ii * bs + jj)] = ex;
            any = any || ex;
          }
        }
        if (!any) continue;
        on[idx((bh * Mb + R) * Nb + C)] = true;
        data.insert(data.end(), blk.begin(), blk.end());
      }
    }
  }
  Layout l(from_vector(on, {bhq, Mb, Nb}), bs);
  return BlockSparseTensor(from_vector(data, {l.n_blocks(), bs, bs}), l);
}

PreparedAttention prepare_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionPattern& pattern,
                                    const AttentionOptions& o) {
  // --- q, k, v ---------------------------------------------------------------------------
  for (auto [arg, t] : {std::pair<const char*, const Tensor*>{"q", &q}, {"k", &k}, {"v", &v}}) {
    check_floating(kOp, arg, *t);
    check_ndim(kOp, arg, *t, 3);
  }
  check_same_dtype(kOp, "q", q, "k", k);
  check_same_dtype(kOp, "q", q, "v", v);
  check_same_device(kOp, "q", q, "k", k);
  check_same_device(kOp, "q", q, "v", v);
  const Device dev = q.device();
  if (q.dtype() == DType::f64 && !dev.is_cpu()) {
    TG_THROW(DTypeError, kOp, ": f64 inputs are supported on the CPU only, got q of dtype f64 on ", dev);
  }
  const std::int64_t bhq = q.size(0), sq = q.size(1), d = q.size(2);
  const std::int64_t bhkv = k.size(0), sk = k.size(1), dv = v.size(2);
  if (k.size(2) != d) TG_THROW(ShapeError, kOp, ": k must have D = ", d, " (q's last extent), got shape ", k.shape());
  if (v.size(0) != bhkv || v.size(1) != sk) {
    TG_THROW(ShapeError, kOp, ": v must have shape [B·Hkv, Sk, Dv] = [", bhkv, ", ", sk, ", Dv] like k, got ", v.shape());
  }
  if (d == 0 || dv == 0) {
    TG_THROW(ShapeError, kOp, ": head dims must be positive, got D = ", d, " (q ", q.shape(), ") and Dv = ", dv, " (v ",
             v.shape(), ")");
  }
  if (bhkv == 0 ? bhq != 0 : (bhq == 0 || bhq % bhkv != 0)) {
    TG_THROW(ShapeError, kOp, ": q's B·Hq = ", bhq, " (dim 0) must be a positive multiple of k's B·Hkv = ", bhkv,
             " (GQA/MQA groups)");
  }

  // --- pattern ---------------------------------------------------------------------------
  if (!pattern.defined()) TG_THROW(ValueError, kOp, ": pattern is undefined");
  if (pattern.sq() != sq || pattern.sk() != sk) {
    TG_THROW(ShapeError, kOp, ": pattern must cover Sq x Sk = ", sq, " x ", sk, " (from q and k), got ", pattern.sq(),
             " x ", pattern.sk());
  }
  if (pattern.count() != 1 && pattern.count() != bhq) {
    TG_THROW(ShapeError, kOp, ": pattern must have P = 1 or B·Hq = ", bhq, " rows, got P = ", pattern.count());
  }

  // --- heads -----------------------------------------------------------------------------
  if (o.num_heads < 0) TG_THROW(ValueError, kOp, ": options.num_heads must be >= 0, got ", o.num_heads);
  std::int64_t heads = o.num_heads;
  if (heads == 0) heads = o.sinks.defined() ? o.sinks.numel() : bhq;
  if (bhq > 0 && (heads == 0 || bhq % heads != 0)) {
    TG_THROW(ShapeError, kOp, ": the number of query heads Hq = ", heads,
             o.num_heads ? " (options.num_heads)" : " (options.sinks.numel())", " must divide q's B·Hq = ", bhq);
  }
  if (bhq > 0 && heads % (bhq / bhkv) != 0) {
    TG_THROW(ShapeError, kOp, ": the number of query heads Hq = ", heads,
             " must be a multiple of the GQA group size B·Hq / B·Hkv = ", bhq / bhkv,
             " (a batch's query heads share that batch's kv heads)");
  }
  const std::int64_t batch = bhq > 0 ? bhq / heads : 0;

  AttentionProblem p;
  p.bhq = bhq;
  p.bhkv = bhkv;
  p.batch = batch;
  p.heads = heads;
  p.sq = sq;
  p.sk = sk;
  p.d = d;
  p.dv = dv;

  // --- scalar options --------------------------------------------------------------------
  p.scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));
  if (!std::isfinite(p.scale)) TG_THROW(ValueError, kOp, ": options.scale must be finite, got ", p.scale);
  if (!(o.softcap >= 0.0) || !std::isfinite(o.softcap)) {
    TG_THROW(ValueError, kOp, ": options.softcap must be finite and >= 0 (0: off), got ", o.softcap);
  }
  p.softcap = o.softcap;
  if (!(o.dropout_p >= 0.0 && o.dropout_p < 1.0)) {
    TG_THROW(ValueError, kOp, ": options.dropout_p must be in [0, 1), got ", o.dropout_p);
  }
  p.dropout_p = o.dropout_p;
  p.dropout_threshold = attention_dropout_threshold(o.dropout_p);
  p.seed = o.seed;
  p.offset = o.offset;
  p.causal = o.causal;
  p.window_left = o.window_left;
  p.window_right = o.window_right;
  p.deterministic = o.deterministic;

  // --- per-batch tensors -----------------------------------------------------------------
  if (o.q_lens.defined()) {
    check_index_tensor("options.q_lens", o.q_lens, {batch}, "[B]", dev);
    p.q_lens = to_index(o.q_lens, dev);
  }
  if (o.k_lens.defined()) {
    check_index_tensor("options.k_lens", o.k_lens, {batch}, "[B]", dev);
    p.k_lens = to_index(o.k_lens, dev);
  }
  if (o.seg_q.defined() != o.seg_k.defined()) {
    TG_THROW(ValueError, kOp, ": options.seg_q and options.seg_k must be given together, got only ",
             o.seg_q.defined() ? "seg_q" : "seg_k");
  }
  if (o.seg_q.defined()) {
    check_index_tensor("options.seg_q", o.seg_q, {batch, sq}, "[B, Sq]", dev);
    check_index_tensor("options.seg_k", o.seg_k, {batch, sk}, "[B, Sk]", dev);
    p.seg_q = to_index(o.seg_q, dev);
    p.seg_k = to_index(o.seg_k, dev);
  }

  // --- bias and sinks (differentiable) ---------------------------------------------------
  PreparedAttention out;
  if (o.bias.defined()) {
    check_block_sparse(kOp, "options.bias", o.bias);
    const Shape bshape = o.bias.shape();
    const std::int64_t rows = bshape[0];
    if ((rows != bhq && rows != heads && rows != 1) || bshape[1] != sq || bshape[2] != sk) {
      TG_THROW(ShapeError, kOp, ": options.bias must have the logical shape [P, Sq, Sk] with P = 1, Hq = ", heads,
               " or B·Hq = ", bhq, ", Sq = ", sq, ", Sk = ", sk, "; got ", bshape, " (block size ",
               o.bias.block_size(), ")");
    }
    check_same_device(kOp, "q", q, "options.bias", o.bias.data());
    const DType bt = o.bias.dtype();
    if (bt != q.dtype() && bt != DType::f32) {
      TG_THROW(DTypeError, kOp, ": options.bias must have q's dtype (", q.dtype(), ") or f32, got ", bt);
    }
    // A bias shared by every row (P = 1) or by the batches of a head (P = Hq; row b·Hq + h
    // reads head h) is repeated to B·Hq rows here, differentiably: its gradient is the sum
    // over the rows that read it. The kernels see one bias row per batch·head.
    const BlockSparseTensor full = rows == bhq ? o.bias : repeat(o.bias, {bhq / rows, 1, 1});
    out.bias_data = full.data().to(q.dtype());
    p.bias = BlockSparseTensor(out.bias_data.detach(), full.layout());
  }
  if (o.sinks.defined()) {
    check_floating(kOp, "options.sinks", o.sinks);
    if (o.sinks.dtype() != q.dtype() && o.sinks.dtype() != DType::f32) {
      TG_THROW(DTypeError, kOp, ": options.sinks must have q's dtype (", q.dtype(), ") or f32, got ", o.sinks.dtype());
    }
    if (o.sinks.shape() != Shape{heads}) {
      TG_THROW(ShapeError, kOp, ": options.sinks must have shape [Hq] = [", heads, "], got ", o.sinks.shape());
    }
    check_same_device(kOp, "q", q, "options.sinks", o.sinks);
    out.sinks = o.sinks.to(q.dtype() == DType::f64 ? DType::f64 : DType::f32);
    p.sinks = out.sinks.detach();
  }

  // --- pattern and element mask ----------------------------------------------------------
  if (o.mask.defined()) {
    check_elementwise_operand("options.mask", o.mask, sq, sk, bhq, true, q);
    check_dtype(kOp, "options.mask", o.mask.data(), DType::boolean);
  }
  if (bhq > 0) {
    p.pattern = pattern.expanded(bhq);
    const bool has_elements = sq > 0 && sk > 0;
    if (o.mask_fn && has_elements) {
      BlockSparseTensor user;
      if (o.mask.defined()) user = BlockSparseTensor(o.mask.data().detach().to(Device::cpu()), o.mask.layout());
      BlockSparseTensor folded = fold_mask(p.pattern, user, o.mask_fn, bhq);
      p.mask = BlockSparseTensor(folded.data().to(dev), folded.layout());
    } else if (o.mask.defined() && has_elements) {
      NoGradGuard ng;
      BlockSparseTensor m(o.mask.data().detach().to(dev), o.mask.layout());
      p.mask = m.layout().batch() == bhq ? m : repeat(m, {bhq, 1, 1});
    }
  } else {
    p.pattern = pattern;
  }
  out.problem = std::move(p);
  return out;
}

}  // namespace tg::ops
