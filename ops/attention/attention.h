// Block-sparse flash attention (OPS.md "Flash attention").
//
// q [B·Hq, Sq, D], k [B·Hkv, Sk, D], v [B·Hkv, Sk, Dv], all of one floating dtype (f32,
// bf16, f16; f64 on the CPU) and one device. Query head h of batch b is row bh = b·Hq + h;
// it reads kv row bh / (Hq / Hkv) (GQA/MQA). An AttentionPattern says which (query block,
// key block) pairs are visited; the options further hide single keys. For query i of row bh
// and key j, with t = scale · q_i·k_j + bias_ij and s_ij = softcap > 0 ? softcap·tanh(t /
// softcap) : t, over the visible keys V_i:
//   o_i = Σ_{j∈V_i} keep_ij/(1-p) · exp(s_ij − lse_i) · v_j,
//   lse_i = log(Σ_{j∈V_i} exp(s_ij) + [sinks] exp(sink_h)).
// A query with no visible key gives o_i = 0 (never nan) and lse_i = −inf (sink_h with sinks).
// Key j is visible to query i iff: its (query block, key block) pair is in the pattern;
// causal: j <= i; window: i − left <= j <= i + right (a negative bound is unbounded);
// i < q_lens[b] and j < k_lens[b] (when given); seg_q[b, i] == seg_k[b, j] (when given);
// mask_ij is false or absent (when given). keep_ij is Philox dropout (always 1 for p = 0):
// element index ((bh · Sq + i) · Sk + j), 16 random bits a decision (ops/attention/dropout_rule.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "core/block_sparse.h"
#include "core/tensor.h"

namespace tg {

/// Which (query block, key block) pairs attention visits. A value type; copies share data.
/// Block boundaries: query block r covers rows [q_starts[r], q_starts[r+1]), key block c
/// covers keys [k_starts[c], k_starts[c+1]). Uniform block sizes are the common case;
/// variable ones come from per-block size arrays.
class AttentionPattern {
 public:
  AttentionPattern() = default;
  /// From a mask [P, Sq/bq, Sk/bk] (bool or any integer/floating, non-zero = visited) with
  /// P = 1 (shared by every batch·head) or B·Hq; bq, bk powers of two on both backends (CUDA
  /// kernels tile on their own; 16-128 are the usual sizes). Throws ShapeError (rank),
  /// ValueError (block sizes).
  static AttentionPattern uniform(const Tensor& mask, std::int64_t bq, std::int64_t bk);
  /// From a square-block Layout [P, Sq/bs, Sk/bs] (bq = bk = bs).
  static AttentionPattern from_layout(const Layout& layout);
  /// Variable block sizes: mask [P, q_sizes.size(), k_sizes.size()]; the sizes are positive
  /// and sum to Sq and Sk. Throws ShapeError / ValueError naming the offending entry.
  static AttentionPattern variable(const Tensor& mask, std::vector<std::int64_t> q_sizes,
                                   std::vector<std::int64_t> k_sizes);
  /// Every pair visited: P = 1, blocks of `block` (the last block may be shorter).
  static AttentionPattern dense(std::int64_t sq, std::int64_t sk, std::int64_t block = 64);

  bool defined() const { return mask_.defined(); }
  std::int64_t count() const;        ///< P (1 or B·Hq)
  std::int64_t q_blocks() const;     ///< number of query blocks
  std::int64_t k_blocks() const;     ///< number of key blocks
  std::int64_t sq() const;           ///< q_starts.back()
  std::int64_t sk() const;           ///< k_starts.back()
  /// Block boundaries (size q_blocks + 1 / k_blocks + 1, starting at 0).
  const std::vector<std::int64_t>& q_starts() const { return q_starts_; }
  const std::vector<std::int64_t>& k_starts() const { return k_starts_; }
  /// Uniform block sizes (0 when variable). When non-zero, every block has this size:
  /// sq() == q_blocks() · bq() (likewise for keys).
  std::int64_t bq() const { return bq_; }
  std::int64_t bk() const { return bk_; }
  /// The mask as bool [P, q_blocks, k_blocks] on the CPU, and its host bytes.
  const Tensor& mask() const { return mask_; }
  const std::vector<std::uint8_t>& mask_host() const { return *mask_host_; }
  /// Whether pair (row p of the pattern, query block r, key block c) is visited.
  bool visited(std::int64_t p, std::int64_t r, std::int64_t c) const;
  /// Fraction of visited (query, key) element pairs (over P·Sq·Sk).
  double density() const;
  /// A process-wide unique number of this pattern (copies share it; 0 when undefined):
  /// a key for caches of per-pattern work lists that cannot be confused with a later one.
  std::uint64_t id() const;
  /// The part of this pattern that queries [q_begin, q_end) and keys [k_begin, k_end) cover:
  /// the blocks those ranges touch, the first and last ones cut to the ranges (variable
  /// block sizes where cut), same P. For decoding with a KV cache, a new position p of a
  /// self-attention pattern over the whole context sees slice(p, p + 1, 0, p + 1). Throws
  /// ValueError (undefined pattern, ranges empty or outside [0, sq()] / [0, sk()]).
  AttentionPattern slice(std::int64_t q_begin, std::int64_t q_end, std::int64_t k_begin, std::int64_t k_end) const;
  /// The pattern with P = `count` rows: itself when count() == count, else a P = 1 pattern
  /// repeated. Remembered, so repeated calls return the same object (same id()). Throws
  /// ShapeError when count() is neither 1 nor `count`.
  AttentionPattern expanded(std::int64_t count) const;

 private:
  struct Memo;
  AttentionPattern(Tensor mask, std::vector<std::int64_t> q_starts, std::vector<std::int64_t> k_starts,
                   std::int64_t bq, std::int64_t bk);
  Tensor mask_;
  std::shared_ptr<const std::vector<std::uint8_t>> mask_host_;
  std::vector<std::int64_t> q_starts_, k_starts_;
  std::int64_t bq_ = 0, bk_ = 0;
  std::shared_ptr<Memo> memo_;  ///< id and the remembered expansion, shared by copies
};

/// The options of flash_attention; defaults are plain softmax attention over the pattern.
struct AttentionOptions {
  /// Scores are scale · q·k; default 1/sqrt(D).
  std::optional<double> scale{};
  /// Query heads Hq per batch (B = B·Hq / Hq). Needed to find b and h of a row for q_lens,
  /// k_lens, seg_q, seg_k and sinks; default: sinks.numel() when sinks are given, else
  /// B·Hq (B = 1).
  std::int64_t num_heads = 0;
  /// Key j visible to query i only when j <= i (top-left aligned, like PyTorch is_causal).
  bool causal = false;
  /// Sliding window: visible when i − window_left <= j <= i + window_right; < 0: unbounded.
  std::int64_t window_left = -1, window_right = -1;
  /// Valid lengths per batch (i64 or i32 [B], on the inputs' device or the CPU): queries
  /// i >= q_lens[b] output 0, keys j >= k_lens[b] are invisible. Undefined: all valid.
  Tensor q_lens{}, k_lens{};
  /// Segment (document) ids per position (i32/i64 [B, Sq] and [B, Sk]): a key is visible
  /// only within the query's segment. Both or neither.
  Tensor seg_q{}, seg_k{};
  /// Element mask, true = excluded: bool block-sparse [P, Sq, Sk] (P = 1 or B·Hq) of any
  /// block size dividing Sq and Sk, on q's device or the CPU; absent blocks exclude nothing.
  BlockSparseTensor mask{};
  /// A mask callback (bh, i, j) -> excluded, evaluated on the host for the visited pairs
  /// only, on every call, and applied like `mask` (attention_mask_from_fn builds that mask
  /// once, to pass as `mask` instead).
  std::function<bool(std::int64_t bh, std::int64_t i, std::int64_t j)> mask_fn{};
  /// Additive bias on the scores (before the soft cap), block-sparse [P, Sq, Sk] of q's
  /// dtype (or f32) on q's device, any block size dividing Sq and Sk; absent blocks add 0.
  /// P = B·Hq (a bias per batch·head), Hq (per head, shared by the batches: row b·Hq + h
  /// reads h, e.g. relative-position biases) or 1 (shared by every row). Differentiable:
  /// its gradient has the bias's layout, summed over the rows that share it.
  BlockSparseTensor bias{};
  /// Logits soft cap c > 0: s = c·tanh(t / c). 0: off.
  double softcap = 0.0;
  /// Attention sinks: one logit per query head (f32 or q's dtype, [Hq], on q's device)
  /// added to every softmax denominator. Differentiable.
  Tensor sinks{};
  /// Dropout on the probabilities (Philox, same mask on CPU and CUDA; p resolved to 1/65536,
  /// see the file comment); p in [0, 1).
  double dropout_p = 0.0;
  std::uint64_t seed = 0, offset = 0;
  /// With dropout and a gradient to compute, whether the forward may keep its keep/drop
  /// decisions for the backward, which then reads them instead of drawing them again (CUDA,
  /// Hopper kernels, Sk a multiple of 8). They take one bit per element of each head's
  /// Sq x Sk rectangle (Sq·Sk/8 bytes a head; 2 MiB at S 4096), held until the backward
  /// runs or the graph is dropped. The gradients are the same either way; false saves the
  /// memory and draws them again in the backward (slower).
  bool keep_dropout_mask = true;
  /// Bit-identical gradients run to run (no floating-point atomics in the backward).
  bool deterministic = false;
};

/// Output and row log-sum-exp.
struct AttentionResult {
  Tensor out;  ///< [B·Hq, Sq, Dv], q's dtype
  Tensor lse;  ///< [B·Hq, Sq], f32 (f64 for f64); not differentiable (never requires grad)
};

/// Block-sparse flash attention (see the file comment for the exact definition).
/// Differentiable in q, k, v, options.bias and options.sinks (once: the backward itself
/// records nothing, so there is no double backward). Errors: ShapeError (ranks,
/// B·Hq not a multiple of B·Hkv, D/Dv mismatches, pattern extent != Sq x Sk, P not 1 or
/// B·Hq (bias: not 1, Hq or B·Hq), lens/segments/mask/bias/sinks shapes), DTypeError,
/// DeviceError, ValueError (options out of range). Every message names flash_attention,
/// the argument, expected and given.
Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionPattern& pattern,
                       const AttentionOptions& options = {});
/// The same, also returning the row log-sum-exp.
AttentionResult flash_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionPattern& pattern, const AttentionOptions& options = {});
/// A mask callback evaluated once: the element mask that options.mask_fn = fn stands for,
/// as a bool block-sparse [B·Hq, Sq, Sk] on the CPU (fn(bh, i, j) == true: excluded),
/// built over the visited pairs of `pattern` (P = 1 or B·Hq rows, expanded to `bhq` =
/// B·Hq) only. A CUDA kernel cannot call a host function, so mask_fn is folded like this on
/// the host on every flash_attention call; build the mask once with this function and pass
/// it as options.mask (moved to the GPU once) when it does not change between calls.
/// Errors: ValueError (undefined pattern, empty fn, bhq < 1), ShapeError (pattern rows
/// neither 1 nor bhq). Each message names attention_mask_from_fn and the argument.
BlockSparseTensor attention_mask_from_fn(const AttentionPattern& pattern, std::int64_t bhq,
                                         const std::function<bool(std::int64_t bh, std::int64_t i, std::int64_t j)>& fn);

/// Block-sparse q, k, v with row-striped layouts (see sparse_nn.h): absent rows read as 0
/// (an absent query row still attends, with scores 0 + bias). Returns the dense output.
/// Throws LayoutError for layouts that are not row-striped, then as the dense version.
Tensor flash_attention(const BlockSparseTensor& q, const BlockSparseTensor& k, const BlockSparseTensor& v,
                       const AttentionPattern& pattern, const AttentionOptions& options = {});

}  // namespace tg
