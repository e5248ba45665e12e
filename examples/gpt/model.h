// A small GPT for the training example: token + position embeddings, pre-LayerNorm
// transformer blocks whose self-attention follows a block-sparse pattern (sliding window
// + global blocks, built with the pattern builders), and a linear head.
//
// The attention is evaluated densely with the pattern expanded to an additive element
// mask (-inf outside the active blocks and above the diagonal); the block-sparse kernels
// replace this once they exist, with the same semantics.
#pragma once

#include <cmath>
#include <memory>
#include <vector>

#include "tilegrad.h"

namespace gpt {

struct Config {
  std::int64_t vocab = 256;
  std::int64_t ctx = 128;
  std::int64_t d_model = 128;
  std::int64_t heads = 4;
  std::int64_t layers = 2;
  std::int64_t block = 32;          ///< attention block size
  std::int64_t window_blocks = 2;   ///< local window, in blocks, besides the diagonal block
  std::int64_t global_blocks = 1;   ///< leading key blocks every query sees
  double dropout = 0.0;
  tg::DType dtype = tg::DType::f32;
  tg::Device device = tg::Device::cpu();
};

/// The [1, T/bs, T/bs] block pattern: causal local window + global leading blocks.
inline tg::Layout attention_pattern(const Config& c, std::int64_t T) {
  tg::Layout local = tg::causal_window_pattern(1, T, c.block, (c.window_blocks + 1) * c.block);
  tg::Layout global = tg::global_local_pattern(1, T, c.block, c.global_blocks * c.block, 0, /*causal=*/true);
  return tg::pattern_union(local, global);
}

/// Additive mask [T, T]: 0 where (query i, key j) is in an active block and j <= i, else -inf.
inline tg::Tensor attention_mask(const tg::Layout& pattern, std::int64_t T, tg::DType dtype, tg::Device dev) {
  std::vector<float> m(static_cast<std::size_t>(T * T));
  const std::int64_t bs = pattern.block_size();
  for (std::int64_t i = 0; i < T; ++i)
    for (std::int64_t j = 0; j < T; ++j)
      m[static_cast<std::size_t>(i * T + j)] = (j <= i && pattern.active(0, i / bs, j / bs)) ? 0.0f : -INFINITY;
  return tg::from_vector(m, {T, T}, {.dtype = dtype, .device = dev});
}

class Block : public tg::nn::Module {
 public:
  Block(const Config& c, std::uint64_t seed) : Module("Block"), c_(c) {
    tg::TensorOptions o{.dtype = c.dtype, .device = c.device};
    ln1 = register_module("ln1", std::make_shared<tg::nn::LayerNorm>(c.d_model, 1e-5, o));
    qkv = register_module("qkv", std::make_shared<tg::nn::Linear>(c.d_model, 3 * c.d_model, true, o, seed));
    proj = register_module("proj", std::make_shared<tg::nn::Linear>(c.d_model, c.d_model, true, o, seed + 1));
    ln2 = register_module("ln2", std::make_shared<tg::nn::LayerNorm>(c.d_model, 1e-5, o));
    fc = register_module("fc", std::make_shared<tg::nn::Linear>(c.d_model, 4 * c.d_model, true, o, seed + 2));
    out = register_module("out", std::make_shared<tg::nn::Linear>(4 * c.d_model, c.d_model, true, o, seed + 3));
    drop = register_module("drop", std::make_shared<tg::nn::Dropout>(c.dropout, seed + 4));
  }

  /// x [B, T, d] -> [B, T, d]; mask [T, T] additive.
  tg::Tensor forward(const tg::Tensor& x, const tg::Tensor& mask) {
    x_shape_ = x.shape();
    tg::Tensor h = x + drop->forward(proj->forward(attention(ln1->forward(x), mask)));
    return h + drop->forward(out->forward(tg::gelu(fc->forward(ln2->forward(h)), tg::GeluApprox::Tanh)));
  }

 private:
  // Multi-head self-attention; heads are split with reshape/transpose of the last dims.
  tg::Tensor attention(const tg::Tensor& x, const tg::Tensor& mask) {
    const std::int64_t B = x.size(0), T = x.size(1), d = c_.d_model, H = c_.heads, Dh = d / H;
    tg::Tensor qkv_ = qkv->forward(x);  // [B, T, 3d]
    auto heads_t = [&](const tg::Tensor& t) {  // [B, T, d] -> [B*H, Dh, T]
      return tg::reshape(tg::transpose(t), {B * H, Dh, T});
    };
    tg::Tensor q = tg::transpose(heads_t(tg::slice(qkv_, -1, 0, d)));  // [B*H, T, Dh]
    tg::Tensor kt = heads_t(tg::slice(qkv_, -1, d, 2 * d));              // [B*H, Dh, T]
    tg::Tensor v = tg::transpose(heads_t(tg::slice(qkv_, -1, 2 * d, 3 * d)));
    tg::Tensor att = tg::softmax(tg::matmul(q, kt) + mask, 1.0 / std::sqrt(static_cast<double>(Dh)));
    tg::Tensor o = tg::matmul(att, v);                                   // [B*H, T, Dh]
    return tg::transpose(tg::reshape(tg::transpose(o), {B, d, T}));      // [B, T, d]
  }

  Config c_;
  tg::Shape x_shape_;

 public:
  std::shared_ptr<tg::nn::LayerNorm> ln1, ln2;
  std::shared_ptr<tg::nn::Linear> qkv, proj, fc, out;
  std::shared_ptr<tg::nn::Dropout> drop;
};

class GPT : public tg::nn::Module {
 public:
  explicit GPT(const Config& c) : Module("GPT"), cfg(c) {
    tg::TensorOptions o{.dtype = c.dtype, .device = c.device};
    tok = register_module("tok", std::make_shared<tg::nn::Embedding>(c.vocab, c.d_model, o, 11));
    pos = register_module("pos", std::make_shared<tg::nn::Embedding>(c.ctx, c.d_model, o, 12));
    for (std::int64_t l = 0; l < c.layers; ++l)
      blocks.push_back(register_module("blocks." + std::to_string(l),
                                       std::make_shared<Block>(c, 100 + 10 * static_cast<std::uint64_t>(l))));
    ln_f = register_module("ln_f", std::make_shared<tg::nn::LayerNorm>(c.d_model, 1e-5, o));
    head = register_module("head", std::make_shared<tg::nn::Linear>(c.d_model, c.vocab, false, o, 13));
    // Small embeddings keep the initial logits near uniform.
    tg::NoGradGuard ng;
    for (auto* e : {&tok->weight, &pos->weight}) tg::copy_bytes(*e, *e * 0.02);
  }

  /// idx [B, T] (i64, T <= ctx) -> logits [B, T, vocab].
  tg::Tensor forward(const tg::Tensor& idx) {
    const std::int64_t T = idx.size(1);
    if (T != mask_T_) {
      pattern = attention_pattern(cfg, T);
      mask_ = attention_mask(pattern, T, cfg.dtype, cfg.device);
      positions_ = tg::arange(T, {.dtype = tg::DType::i64, .device = cfg.device});
      mask_T_ = T;
    }
    tg::Tensor h = tok->forward(idx) + pos->forward(positions_);
    for (auto& b : blocks) h = b->forward(h, mask_);
    return head->forward(ln_f->forward(h));
  }

  Config cfg;
  tg::Layout pattern;
  std::shared_ptr<tg::nn::Embedding> tok, pos;
  std::vector<std::shared_ptr<Block>> blocks;
  std::shared_ptr<tg::nn::LayerNorm> ln_f;
  std::shared_ptr<tg::nn::Linear> head;

 private:
  std::int64_t mask_T_ = -1;
  tg::Tensor mask_, positions_;
};

}  // namespace gpt
