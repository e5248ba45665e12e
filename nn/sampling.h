// Choosing the next token from a language model's logits: greedy, temperature, top-k,
// nucleus (top-p) and min-p sampling, reproducible from a (seed, offset) pair.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tg::nn {

/// How sample_tokens() picks a token from each row of logits. The filters apply in this
/// order to the tempered distribution softmax(logits / temperature): top_k, then min_p, then
/// top_p; what is kept is renormalised and sampled. Each filter keeps at least the most
/// likely token, and ties are broken towards the lower token index.
struct SamplingOptions {
  /// Divides the logits; 0 picks the most likely token (greedy; the filters and the random
  /// draw are then irrelevant). Below 1 sharpens, above 1 flattens.
  double temperature = 1.0;
  /// Keep only the k most likely tokens; 0: all.
  std::int64_t top_k = 0;
  /// Keep the fewest most likely tokens whose probabilities sum to at least top_p, in (0, 1];
  /// 1: all.
  double top_p = 1.0;
  /// Keep tokens at least min_p times as likely as the most likely one, in [0, 1]; 0: all.
  double min_p = 0.0;
  /// Row r draws philox(seed, offset, r) (53 random bits): the same tokens on every device
  /// and run; use a new offset per step.
  std::uint64_t seed = 0, offset = 0;
};

/// One token per row of logits [..., V] (f32, f64, bf16 or f16, any device): i64 [...] on
/// logits' device (a 0-d tensor for a single row [V]). Not differentiable (the choice has no
/// gradient). The rows are copied to the host and chosen there in f64: a decoder's rows are
/// small, and this keeps the choice bit-identical across backends. -inf logits are never
/// chosen; a +inf logit always is (the first, if several). Errors: ValueError (undefined
/// logits, V == 0, temperature < 0 or not finite, top_k < 0, top_p outside (0, 1], min_p
/// outside [0, 1], a row that holds a NaN or is all -inf), DTypeError (non-floating logits). Each message names
/// sample_tokens, the argument, expected and given.
Tensor sample_tokens(const Tensor& logits, const SamplingOptions& options = {});

}  // namespace tg::nn
