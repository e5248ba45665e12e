// A small GPT for the training example: token + position embeddings (a learned table, or
// rotary embeddings of the attention's queries and keys), pre-norm (LayerNorm or RMSNorm)
// transformer blocks whose self-attention follows a block-sparse pattern (sliding window
// + global blocks, built with the pattern builders) through nn::MultiHeadAttention, i.e.
// block-sparse flash attention that reads only the pattern's blocks, an MLP that is dense
// or block-sparse (nn::BlockSparseLinear: only the active weight blocks are stored and
// multiplied), and a linear head.
#pragma once

#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
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
  double dropout = 0.0;       ///< residual dropout: attention and MLP outputs before the residual add
  double attn_dropout = 0.0;  ///< dropout on the attention probabilities (MultiHeadAttention's option)
  double mlp_density = 1.0;     ///< below 1: each MLP weight keeps this fraction of its blocks
  std::int64_t mlp_block = 32;  ///< block size of the block-sparse MLP weights
  bool recompute = false;       ///< activation checkpointing: keep only each block's input for backward
  bool rope = false;            ///< rotary position embeddings in attention instead of a learned table
  bool rms_norm = false;        ///< RMSNorm instead of LayerNorm
  bool swiglu = false;          ///< a gated SwiGLU MLP (hidden ~8d/3, no biases) instead of 4d with GELU
  tg::DType dtype = tg::DType::f32;
  tg::Device device = tg::Device::cpu();
};

/// The [1, T/bs, T/bs] block pattern: causal local window + global leading blocks.
inline tg::Layout attention_pattern(const Config& c, std::int64_t T) {
  tg::Layout local = tg::causal_window_pattern(1, T, c.block, (c.window_blocks + 1) * c.block);
  tg::Layout global = tg::global_local_pattern(1, T, c.block, c.global_blocks * c.block, 0, /*causal=*/true);
  return tg::pattern_union(local, global);
}

/// A module with pre-norms of the configured kind.
class WithNorms : public tg::nn::Module {
 public:
  using Module::Module;

 protected:
  /// Registers the norm `name`, LayerNorm or RMSNorm (its parameters keep the name either way).
  std::function<tg::Tensor(const tg::Tensor&)> make_norm(const std::string& name, const Config& c,
                                                         const tg::TensorOptions& o) {
    if (c.rms_norm) {
      auto n = register_module(name, std::make_shared<tg::nn::RMSNorm>(c.d_model, 1e-5, true, o));
      return [n](const tg::Tensor& x) { return n->forward(x); };
    }
    auto n = register_module(name, std::make_shared<tg::nn::LayerNorm>(c.d_model, 1e-5, o));
    return [n](const tg::Tensor& x) { return n->forward(x); };
  }
};

class Block : public WithNorms {
 public:
  Block(const Config& c, std::uint64_t seed) : WithNorms("Block") {
    tg::TensorOptions o{.dtype = c.dtype, .device = c.device};
    norm1 = make_norm("ln1", c, o);
    attn = register_module("attn", std::make_shared<tg::nn::MultiHeadAttention>(
                                        c.d_model, c.heads,
                                        tg::nn::MultiHeadAttentionOptions{
                                            .dropout = c.attn_dropout,
                                            .causal = true,
                                            .rope = c.rope ? std::optional<tg::RopeOptions>(tg::RopeOptions{})
                                                           : std::nullopt,
                                            .tensor = o,
                                            .seed = seed}));
    norm2 = make_norm("ln2", c, o);
    if (c.swiglu) {
      // LLaMA's width: 2/3 of 4d (the same parameters as the 4d MLP), rounded up to 32.
      const std::int64_t hidden = (8 * c.d_model / 3 + 31) / 32 * 32;
      swiglu = register_module("mlp", std::make_shared<tg::nn::SwiGLU>(c.d_model, hidden, false, o, seed + 2));
    } else if (c.mlp_density < 1.0) {
      // A random layout per weight (seeded per layer), the same on every device.
      const std::int64_t d = c.d_model / c.mlp_block, h = 4 * d;
      sparse_fc = register_module("fc", std::make_shared<tg::nn::BlockSparseLinear>(
                                            tg::random_layout(1, h, d, c.mlp_block, c.mlp_density, seed + 5), true, o,
                                            seed + 2));
      sparse_out = register_module("out", std::make_shared<tg::nn::BlockSparseLinear>(
                                              tg::random_layout(1, d, h, c.mlp_block, c.mlp_density, seed + 6), true,
                                              o, seed + 3));
    } else {
      fc = register_module("fc", std::make_shared<tg::nn::Linear>(c.d_model, 4 * c.d_model, true, o, seed + 2));
      out = register_module("out", std::make_shared<tg::nn::Linear>(4 * c.d_model, c.d_model, true, o, seed + 3));
    }
    drop = register_module("drop", std::make_shared<tg::nn::Dropout>(c.dropout, seed + 4));
  }

  /// x [B, T, d] -> [B, T, d]; attention visits the pattern's blocks (causal inside them).
  tg::Tensor forward(const tg::Tensor& x, const tg::AttentionPattern& pattern) {
    tg::Tensor h = x + drop->forward(attn->forward(norm1(x), pattern));
    return h + drop->forward(mlp(norm2(h)));
  }

  /// forward() for new positions that follow those in `cache` (generation, eval mode).
  tg::Tensor forward_cached(const tg::Tensor& x, const tg::AttentionPattern& pattern, tg::nn::KVCache& cache) {
    tg::Tensor h = x + drop->forward(attn->forward_cached(norm1(x), cache, pattern));
    return h + drop->forward(mlp(norm2(h)));
  }

  /// The MLP: d -> 4d, GELU, 4d -> d, dense or block-sparse; or SwiGLU.
  tg::Tensor mlp(const tg::Tensor& x) {
    if (swiglu) return swiglu->forward(x);
    if (sparse_fc) return sparse_out->forward(tg::gelu(sparse_fc->forward(x), tg::GeluApprox::Tanh));
    return out->forward(tg::gelu(fc->forward(x), tg::GeluApprox::Tanh));
  }

  std::function<tg::Tensor(const tg::Tensor&)> norm1, norm2;  ///< ln1 / ln2: LayerNorm or RMSNorm
  std::shared_ptr<tg::nn::MultiHeadAttention> attn;
  std::shared_ptr<tg::nn::Linear> fc, out;                             ///< dense MLP
  std::shared_ptr<tg::nn::BlockSparseLinear> sparse_fc, sparse_out;    ///< or block-sparse
  std::shared_ptr<tg::nn::SwiGLU> swiglu;                              ///< or gated
  std::shared_ptr<tg::nn::Dropout> drop;
};

class GPT : public WithNorms {
 public:
  explicit GPT(const Config& c) : WithNorms("GPT"), cfg(c) {
    tg::TensorOptions o{.dtype = c.dtype, .device = c.device};
    tok = register_module("tok", std::make_shared<tg::nn::Embedding>(c.vocab, c.d_model, o, 11));
    if (!c.rope) pos = register_module("pos", std::make_shared<tg::nn::Embedding>(c.ctx, c.d_model, o, 12));
    for (std::int64_t l = 0; l < c.layers; ++l)
      blocks.push_back(register_module("blocks." + std::to_string(l),
                                       std::make_shared<Block>(c, 100 + 10 * static_cast<std::uint64_t>(l))));
    ln_f = make_norm("ln_f", c, o);
    head = register_module("head", std::make_shared<tg::nn::Linear>(c.d_model, c.vocab, false, o, 13));
    // Small embeddings keep the initial logits near uniform.
    tg::NoGradGuard ng;
    tg::copy_bytes(tok->weight, tok->weight * 0.02);
    if (pos) tg::copy_bytes(pos->weight, pos->weight * 0.02);
  }

  /// idx [B, T] (i64, T <= ctx) -> logits [B, T, vocab].
  tg::Tensor forward(const tg::Tensor& idx) {
    const std::int64_t T = idx.size(1);
    if (T != pattern_T_) {
      // A length that is not a multiple of the block size (generation) keeps the same
      // block membership: the last query and key blocks are just shorter.
      const std::int64_t nb = (T + cfg.block - 1) / cfg.block;
      pattern = attention_pattern(cfg, nb * cfg.block);
      if (T % cfg.block == 0) {
        attn_pattern_ = tg::AttentionPattern::from_layout(pattern);
      } else {
        std::vector<std::int64_t> sizes(static_cast<std::size_t>(nb), cfg.block);
        sizes.back() = T - (nb - 1) * cfg.block;
        attn_pattern_ = tg::AttentionPattern::variable(pattern.mask(), sizes, sizes);
      }
      positions_ = tg::arange(T, {.dtype = tg::DType::i64, .device = cfg.device});
      pattern_T_ = T;
    }
    tg::Tensor h = pos ? tok->forward(idx) + pos->forward(positions_) : tok->forward(idx);
    for (auto& b : blocks) {
      if (cfg.recompute && tg::grad_enabled()) {
        // Only the block's input is kept; backward runs the block again (same dropout masks).
        auto fn = [b, pattern = attn_pattern_](const tg::Tensor& t) { return b->forward(t, pattern); };
        h = tg::activation_checkpoint(fn, h, b->parameters());
      } else {
        h = b->forward(h, attn_pattern_);
      }
    }
    return head->forward(ln_f(h));
  }

  /// Logits [B, s, vocab] of new tokens idx [B, s] (i64) that follow the caches' positions
  /// (one KVCache per layer; empty ones start a sequence), the past not recomputed: row by
  /// row what forward() gives on the whole sequence. The total length must stay <= ctx.
  tg::Tensor forward_cached(const tg::Tensor& idx, std::vector<tg::nn::KVCache>& caches) {
    caches.resize(blocks.size());
    const std::int64_t past = caches.empty() ? 0 : caches[0].length(), end = past + idx.size(1);
    if (end > cfg.ctx) {
      throw tg::ValueError("GPT::forward_cached: " + std::to_string(end) + " positions exceed the context " +
                           std::to_string(cfg.ctx) + " (start a new cache)");
    }
    if (!full_pattern_.defined()) {
      full_pattern_ = tg::AttentionPattern::from_layout(
          attention_pattern(cfg, (cfg.ctx + cfg.block - 1) / cfg.block * cfg.block));
    }
    // What the new positions see of the whole context's pattern.
    const tg::AttentionPattern rows = full_pattern_.slice(past, end, 0, end);
    tg::Tensor positions = tg::arange(static_cast<double>(past), static_cast<double>(end), 1.0,
                                      {.dtype = tg::DType::i64, .device = cfg.device});
    tg::Tensor h = pos ? tok->forward(idx) + pos->forward(positions) : tok->forward(idx);
    for (std::size_t l = 0; l < blocks.size(); ++l) h = blocks[l]->forward_cached(h, rows, caches[l]);
    return head->forward(ln_f(h));
  }

  Config cfg;
  tg::Layout pattern;
  std::shared_ptr<tg::nn::Embedding> tok, pos;  ///< pos: none with rotary embeddings
  std::vector<std::shared_ptr<Block>> blocks;
  std::function<tg::Tensor(const tg::Tensor&)> ln_f;  ///< LayerNorm or RMSNorm
  std::shared_ptr<tg::nn::Linear> head;

 private:
  std::int64_t pattern_T_ = -1;
  tg::AttentionPattern full_pattern_;  ///< the pattern of a whole context, sliced by forward_cached
  tg::AttentionPattern attn_pattern_;
  tg::Tensor positions_;
};

}  // namespace gpt
