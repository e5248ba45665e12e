#include "nn/attention.h"

#include "ops/shape/heads.h"

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
  const std::int64_t B = x.size(0), S = x.size(1), H = num_heads, Hkv = num_kv_heads, dh = head_dim;
  Tensor qh, kh, vh;
  if (qkv) {
    // [B, S, d_model + 2·kv_dim] -> [B·H, S, dh], [B·Hkv, S, dh] twice, one copy each
    std::vector<Tensor> parts = split_heads(qkv->forward(x), {H, Hkv, Hkv}, dh);
    qh = parts[0];
    kh = parts[1];
    vh = parts[2];
  } else {
    qh = split_heads(q->forward(x), {H}, dh)[0];
    kh = split_heads(k->forward(x), {Hkv}, dh)[0];
    vh = split_heads(v->forward(x), {Hkv}, dh)[0];
  }
  AttentionPattern pat = pattern.defined() ? pattern : options.pattern;
  if (!pat.defined()) {
    // Kept between calls: the same object lets backends reuse their per-pattern work lists.
    if (!dense_.defined() || dense_.sq() != S) dense_ = AttentionPattern::dense(S, S, 64);
    pat = dense_;
  }
  AttentionOptions o = call;
  o.num_heads = H;
  o.causal = o.causal || options.causal;
  if (is_training() && options.dropout > 0 && o.dropout_p == 0) {
    o.dropout_p = options.dropout;
    o.seed = options.seed ^ kDropoutSeedSalt;
    o.offset = dropout_offset_++;
  }
  Tensor out = flash_attention(qh, kh, vh, pat, o);  // [B·H, S, dh]
  return proj->forward(merge_heads(out, B));
}

}  // namespace tg::nn
