#include "nn/attention.h"

#include "ops/linalg/linear.h"
#include "ops/shape/heads.h"
#include "ops/shape/shape_ops.h"
#include "runtime/rng_replay.h"

namespace tg::nn {

namespace {

// A dropout stream apart from the weight initialisation streams of the same seed.
constexpr std::uint64_t kDropoutSeedSalt = 0x9e3779b97f4a7c15ull;

}  // namespace

MultiHeadAttention::MultiHeadAttention(std::int64_t d_model_, std::int64_t num_heads_, MultiHeadAttentionOptions opts)
    : Module("MultiHeadAttention"),
      d_model(d_model_),
      num_heads(num_heads_),
      num_kv_heads(opts.num_kv_heads ? opts.num_kv_heads : num_heads_),
      head_dim(0),
      options(std::move(opts)) {
  if (d_model <= 0 || num_heads <= 0 || d_model % num_heads != 0) {
    TG_THROW(ShapeError, "MultiHeadAttention: num_heads must be positive and divide d_model, got d_model = ", d_model,
             ", num_heads = ", num_heads);
  }
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    TG_THROW(ShapeError, "MultiHeadAttention: num_kv_heads must be positive and divide num_heads = ", num_heads,
             ", got ", num_kv_heads);
  }
  if (!(options.dropout >= 0.0 && options.dropout < 1.0)) {
    TG_THROW(ValueError, "MultiHeadAttention: dropout must be in [0, 1), got ", options.dropout);
  }
  head_dim = d_model / num_heads;
  if (options.rope) {
    const RopeOptions& r = *options.rope;
    if (r.offset != 0 || r.positions.defined()) {
      TG_THROW(ValueError, "MultiHeadAttention: rope.offset and rope.positions are set by the module from the ",
               "sequence positions; expected 0 and undefined, got offset ", r.offset,
               r.positions.defined() ? " and a positions tensor" : "");
    }
    const std::int64_t rd = r.rotary_dim == 0 ? head_dim : r.rotary_dim;
    if (rd < 0 || rd > head_dim || rd % 2 != 0) {
      TG_THROW(ShapeError, "MultiHeadAttention: rope.rotary_dim must be even and in [0, head_dim = ", head_dim,
               "] (0: all of head_dim), got ", r.rotary_dim);
    }
  }
  const std::int64_t kv_dim = num_kv_heads * head_dim;
  const TensorOptions t{.dtype = options.tensor.dtype, .device = options.tensor.device};
  const std::uint64_t s = options.seed * 8;
  if (options.fused_qkv) {
    qkv = register_module("qkv", std::make_shared<Linear>(d_model, d_model + 2 * kv_dim, options.bias, t, s + 1));
  } else {
    q = register_module("q", std::make_shared<Linear>(d_model, d_model, options.bias, t, s + 2));
    k = register_module("k", std::make_shared<Linear>(d_model, kv_dim, options.bias, t, s + 3));
    v = register_module("v", std::make_shared<Linear>(d_model, kv_dim, options.bias, t, s + 4));
  }
  proj = register_module("proj", std::make_shared<Linear>(d_model, d_model, options.bias, t, s + 5));
}

Tensor MultiHeadAttention::forward(const Tensor& x, const AttentionPattern& pattern, const AttentionOptions& call) {
  if (!x.defined() || x.dim() != 3 || x.size(2) != d_model) {
    TG_THROW(ShapeError, "MultiHeadAttention: x must have shape [B, S, d_model = ", d_model, "], got ",
             x.defined() ? x.shape().str() : std::string("an undefined tensor"));
  }
  std::vector<Tensor> h = project_heads(x, 0);
  return attend(h[0], h[1], h[2], x.size(0), pattern.defined() ? pattern : options.pattern, call);
}

std::vector<Tensor> MultiHeadAttention::project_heads(const Tensor& x, std::int64_t first_position) {
  const std::int64_t H = num_heads, Hkv = num_kv_heads, dh = head_dim;
  // [B, S, d_model + 2·kv_dim] -> [B·H, S, dh], [B·Hkv, S, dh] twice, one copy each
  std::vector<Tensor> h = qkv ? split_heads(qkv->forward(x), {H, Hkv, Hkv}, dh)
                              : std::vector<Tensor>{split_heads(q->forward(x), {H}, dh)[0],
                                                    split_heads(k->forward(x), {Hkv}, dh)[0],
                                                    split_heads(v->forward(x), {Hkv}, dh)[0]};
  if (options.rope) {
    RopeOptions r = *options.rope;
    r.offset = first_position;
    h[0] = rope(h[0], r);
    h[1] = rope(h[1], r);
  }
  return h;
}

Tensor MultiHeadAttention::forward_cached(const Tensor& x, KVCache& cache, const AttentionPattern& pattern,
                                          const AttentionOptions& call) {
  if (!x.defined() || x.dim() != 3 || x.size(2) != d_model || x.size(1) == 0) {
    TG_THROW(ShapeError, "MultiHeadAttention::forward_cached: x must have shape [B, s >= 1, d_model = ", d_model,
             "], got ", x.defined() ? x.shape().str() : std::string("an undefined tensor"));
  }
  const std::int64_t B = x.size(0), s = x.size(1), past = cache.length();
  if (past > 0 && (cache.k.size(0) != B * num_kv_heads || cache.k.size(2) != head_dim || !cache.v.defined() ||
                   cache.v.shape() != cache.k.shape())) {
    TG_THROW(ShapeError, "MultiHeadAttention::forward_cached: the cache holds keys ", cache.k.shape(), " and values ",
             cache.v.defined() ? cache.v.shape().str() : std::string("none"), ", expected [B·Hkv = ",
             B * num_kv_heads, ", length, head_dim = ", head_dim, "] for both (a cache of another batch or module?)");
  }
  if (past > 0 && (call.window_left >= 0 || call.window_right >= 0)) {
    TG_THROW(ValueError, "MultiHeadAttention::forward_cached: window_left / window_right are positions of the ",
             "call's own queries (top-left aligned) and do not shift with the cache (length ", past,
             "); give the window as the pattern's blocks or a mask_fn instead");
  }
  std::vector<Tensor> h = project_heads(x, past);
  Tensor kh = past > 0 ? cat({cache.k, h[1]}, 1) : h[1];
  Tensor vh = past > 0 ? cat({cache.v, h[2]}, 1) : h[2];
  AttentionOptions o = call;
  const bool causal = o.causal || options.causal;
  o.causal = false;
  if (causal) {
    if (past == 0) {
      o.causal = true;  // square: top-left and bottom-right alignment agree
    } else if (s > 1) {
      // New position i (absolute past + i) sees keys j <= past + i. One new position sees
      // every key, so needs no rule.
      auto user = call.mask_fn;
      o.mask_fn = [past, user](std::int64_t bh, std::int64_t i, std::int64_t j) {
        return j > past + i || (user && user(bh, i, j));
      };
    }
  }
  // Not the constructor's pattern: that one covers whole sequences, not these rows.
  Tensor out = attend(h[0], kh, vh, B, pattern, o, /*module_causal=*/false);
  // Only now: a call that threw (a pattern of the wrong extent) leaves the cache as it was.
  cache.k = kh.detach();
  cache.v = vh.detach();
  return out;
}

Tensor MultiHeadAttention::forward_cross(const Tensor& x, const Tensor& memory, const AttentionPattern& pattern,
                                         const AttentionOptions& call) {
  const auto shape_of = [](const Tensor& t) { return t.defined() ? t.shape().str() : std::string("an undefined tensor"); };
  if (!x.defined() || x.dim() != 3 || x.size(2) != d_model) {
    TG_THROW(ShapeError, "MultiHeadAttention::forward_cross: x must have shape [B, Sq, d_model = ", d_model, "], got ",
             shape_of(x));
  }
  if (!memory.defined() || memory.dim() != 3 || memory.size(2) != d_model || memory.size(0) != x.size(0)) {
    TG_THROW(ShapeError, "MultiHeadAttention::forward_cross: memory must have shape [B = ", x.size(0),
             ", Sk, d_model = ", d_model, "], got ", shape_of(memory));
  }
  const std::int64_t B = x.size(0), H = num_heads, Hkv = num_kv_heads, dh = head_dim;
  Tensor qh, kh, vh;
  if (qkv) {
    // The fused weight's rows [0, d_model) project queries, the rest keys and values.
    const auto rows = [&](const Tensor& t, std::int64_t a, std::int64_t b) {
      return t.defined() ? slice(t, 0, a, b) : Tensor();
    };
    const std::int64_t n = qkv->weight.size(0);
    const auto project = [&](const Tensor& in, std::int64_t a, std::int64_t b) {
      Tensor y = linear(reshape(in, {in.size(0) * in.size(1), d_model}), rows(qkv->weight, a, b), rows(qkv->bias, a, b));
      return reshape(y, {in.size(0), in.size(1), b - a});
    };
    qh = split_heads(project(x, 0, d_model), {H}, dh)[0];
    std::vector<Tensor> kv = split_heads(project(memory, d_model, n), {Hkv, Hkv}, dh);
    kh = kv[0];
    vh = kv[1];
  } else {
    qh = split_heads(q->forward(x), {H}, dh)[0];
    kh = split_heads(k->forward(memory), {Hkv}, dh)[0];
    vh = split_heads(v->forward(memory), {Hkv}, dh)[0];
  }
  return attend(qh, kh, vh, B, pattern, call);
}

Tensor MultiHeadAttention::attend(const Tensor& qh, const Tensor& kh, const Tensor& vh, std::int64_t B,
                                  const AttentionPattern& pattern, const AttentionOptions& call, bool module_causal) {
  AttentionPattern pat = pattern;
  if (!pat.defined()) {
    // Kept between calls: the same object lets backends reuse their per-pattern work lists.
    const std::int64_t sq = qh.size(1), sk = kh.size(1);
    if (!dense_.defined() || dense_.sq() != sq || dense_.sk() != sk) dense_ = AttentionPattern::dense(sq, sk, 64);
    pat = dense_;
  }
  AttentionOptions o = call;
  o.num_heads = num_heads;
  o.causal = o.causal || (module_causal && options.causal);
  if (is_training() && options.dropout > 0 && o.dropout_p == 0) {
    o.dropout_p = options.dropout;
    o.seed = options.seed ^ kDropoutSeedSalt;
    o.offset = next_rng_offset(dropout_offset_);
  }
  Tensor out = flash_attention(qh, kh, vh, pat, o);  // [B·H, Sq, dh]
  return proj->forward(merge_heads(out, B));
}

}  // namespace tg::nn
