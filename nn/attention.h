// Multi-head self- and cross-attention on block-sparse flash attention, with grouped kv
// heads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "nn/linear.h"
#include "nn/module.h"
#include "ops/attention/attention.h"
#include "ops/rope/rope.h"

namespace tg::nn {

struct MultiHeadAttentionOptions {
  /// kv heads (GQA / MQA); 0: num_heads. Must divide num_heads.
  std::int64_t num_kv_heads = 0;
  /// One [(H + 2·Hkv)·Dh, d_model] projection ("qkv") instead of three ("q", "k", "v").
  bool fused_qkv = true;
  /// Biases on the projections.
  bool bias = true;
  /// Dropout on the attention probabilities in training mode.
  double dropout = 0.0;
  /// Keys after the query are invisible.
  bool causal = false;
  /// Block pattern used when forward gets none ([1 or B·H, S/bq, S/bk]); undefined: all pairs.
  AttentionPattern pattern = {};
  /// Rotary position embedding of the queries and keys of each head (tg::rope over head_dim,
  /// its base, rotary_dim and pair convention), applied after the projections: position s
  /// of a forward() sequence is s, and forward_cached() continues from the cache's length
  /// (so the cached keys keep their rotation). Its offset must be 0 and its positions
  /// undefined (the module sets both). forward_cross() does not rotate.
  std::optional<RopeOptions> rope{};
  /// dtype / device of the parameters.
  TensorOptions tensor = {};
  /// Seeds the initial weights and the dropout masks.
  std::uint64_t seed = 0;
};

/// Keys and values of the positions a MultiHeadAttention has seen, for incremental
/// decoding (MultiHeadAttention::forward_cached). Empty at first; one per layer and batch.
struct KVCache {
  Tensor k, v;  ///< [B·Hkv, length, head_dim], detached; undefined while empty
  std::int64_t length() const { return k.defined() ? k.size(1) : 0; }
  void clear() { k = v = Tensor(); }
};

class MultiHeadAttention : public Module {
 public:
  /// Head dim Dh = d_model / num_heads. Throws ShapeError when num_heads does not divide
  /// d_model or num_kv_heads does not divide num_heads, ValueError for dropout outside
  /// [0, 1).
  MultiHeadAttention(std::int64_t d_model, std::int64_t num_heads, MultiHeadAttentionOptions options = {});

  /// Self-attention of x [B, S, d_model] -> [B, S, d_model]: projections, heads as rows
  /// [B·H, S, Dh] (row b·H + h), flash_attention over `pattern` (else the constructor's,
  /// else every pair), the output projection. `options` passes the other attention
  /// options (bias, sinks, lens, window, ...); the module sets num_heads, ORs in its causal
  /// flag, and in training mode with options.dropout_p == 0 applies its own dropout with a
  /// fresh Philox offset per call. Throws ShapeError for an x of another shape, then as
  /// flash_attention.
  Tensor forward(const Tensor& x, const AttentionPattern& pattern = AttentionPattern(),
                 const AttentionOptions& options = {});
  Tensor operator()(const Tensor& x, const AttentionPattern& pattern = AttentionPattern(),
                    const AttentionOptions& options = {}) {
    return forward(x, pattern, options);
  }
  /// Cross-attention of queries from x [B, Sq, d_model] over keys and values from memory
  /// [B, Sk, d_model] (an encoder's output) -> [B, Sq, d_model]: the same weights as
  /// forward (with fused_qkv, the q rows of the qkv projection read x and its k and v rows
  /// read memory), `pattern` over [Sq, Sk] (else every pair; the constructor's pattern is
  /// for self-attention and not used here), options and dropout as in forward. Throws
  /// ShapeError for x or memory of another shape (batch or d_model), then as
  /// flash_attention.
  Tensor forward_cross(const Tensor& x, const Tensor& memory, const AttentionPattern& pattern = AttentionPattern(),
                       const AttentionOptions& options = {});

  /// Self-attention of new positions x [B, s, d_model] that follow the cache's `length`
  /// ones: their keys and values are appended to `cache`, and their queries attend to all
  /// cached keys over `pattern` (query rows for the s new positions, key columns for all
  /// length + s: e.g. the last block row of the full pattern, with the last blocks cut
  /// short; else every pair). With the causal option a new position sees the keys up to
  /// its own (bottom-right aligned). Row by row the result equals forward() on the whole
  /// sequence with the matching pattern: generation without recomputing the past. The
  /// cache is detached (no gradient reaches earlier calls). Throws ShapeError (x, or a
  /// cache of another batch · kv heads or head dim), ValueError (window options with a
  /// non-empty cache: they do not shift; use the pattern or mask_fn), then as
  /// flash_attention.
  Tensor forward_cached(const Tensor& x, KVCache& cache, const AttentionPattern& pattern = AttentionPattern(),
                        const AttentionOptions& options = {});

  std::int64_t d_model, num_heads, num_kv_heads, head_dim;
  MultiHeadAttentionOptions options;
  /// fused_qkv: qkv set, q/k/v null; otherwise the reverse.
  std::shared_ptr<Linear> qkv, q, k, v, proj;

 private:
  /// The heads of x [B, S, d_model]: q [B·H, S, Dh], k and v [B·Hkv, S, Dh].
  std::vector<Tensor> project_heads(const Tensor& x, std::int64_t first_position);
  /// flash_attention of heads qh [B·H, Sq, Dh], kh / vh [B·Hkv, Sk, Dh] over `pattern`
  /// (else every pair), the module's options applied (its causal flag only when
  /// `module_causal`), merged and projected: [B, Sq, d_model].
  Tensor attend(const Tensor& qh, const Tensor& kh, const Tensor& vh, std::int64_t B, const AttentionPattern& pattern,
                const AttentionOptions& call, bool module_causal = true);

  std::uint64_t dropout_offset_ = 0;
  AttentionPattern dense_;  ///< the all-pairs pattern of the last (Sq, Sk)
};

}  // namespace tg::nn
