// Attention pattern builders: layouts [BH, ceil(Sq/bs), ceil(Sk/bs)] marking the (query
// block, key block) pairs that attention visits. A block is active iff it contains at
// least one (query, key) element pair the rule allows. Query i and key j are token
// positions; `bs` the block size (a power of two). Host-side, no gradient.
// Every builder throws ShapeError for negative bh / sequence lengths and LayoutError for a
// block size that is not a power of two; the other errors are listed per builder.
#pragma once

#include <cstdint>
#include <vector>

#include "core/layout.h"

namespace tg {

/// Causal: key j visible to query i iff j <= i. With `valid_lengths` (one per batch-head,
/// or empty), positions >= the length are excluded as queries and as keys.
/// Errors: ShapeError (valid_lengths not one per batch-head), ValueError (a length outside
/// [0, max(seq_q, seq_k)]).
Layout causal_pattern(std::int64_t bh, std::int64_t seq_q, std::int64_t seq_k, std::int64_t bs,
                      const std::vector<std::int64_t>& valid_lengths = {});
/// Sliding window: j visible to i iff i - left <= j <= i + right. ValueError: left or right < 0.
Layout sliding_window_pattern(std::int64_t bh, std::int64_t seq_q, std::int64_t seq_k, std::int64_t bs,
                              std::int64_t left, std::int64_t right);
/// Causal window: i - window < j <= i (the last `window` tokens including i).
/// ValueError: window < 1.
Layout causal_window_pattern(std::int64_t bh, std::int64_t seq, std::int64_t bs, std::int64_t window);
/// Strided: every query block attends to its own block and to every key block c with
/// c % stride == stride - 1 (the "summary" blocks of Sparse-Transformer-style patterns).
/// ValueError: stride < 1.
Layout strided_pattern(std::int64_t bh, std::int64_t seq_q, std::int64_t seq_k, std::int64_t bs,
                       std::int64_t stride);
/// Global + local (Longformer/BigBird): the first `global_tokens` tokens attend to and are
/// attended by everything; others see keys within `window` tokens on either side.
/// With `causal`, additionally j <= i. ValueError: global_tokens or window < 0.
Layout global_local_pattern(std::int64_t bh, std::int64_t seq, std::int64_t bs, std::int64_t global_tokens,
                            std::int64_t window, bool causal = false);
/// Each block active with probability `density` (seeded; the same everywhere).
/// ValueError: density outside [0, 1].
Layout random_pattern(std::int64_t bh, std::int64_t seq_q, std::int64_t seq_k, std::int64_t bs, double density,
                      std::uint64_t seed);
/// Blocks active in a or b / in both. Throws LayoutError when a layout is undefined or
/// shapes or block sizes differ.
Layout pattern_union(const Layout& a, const Layout& b);
Layout pattern_intersection(const Layout& a, const Layout& b);

}  // namespace tg
