// The attention benchmarks' shape and patterns, shared by bench_attention (timings) and
// attention_lists (the tile lists those patterns give): batch 4 x 16 heads x S 4096; dense,
// causal, causal with dropout or a soft cap, causal window 1024, random 10% of 64-blocks, and a
// pattern of variable block sizes (block-causal). TG_BENCH_WINDOWS adds causal windows of other
// sizes (see extra_windows), TG_BENCH_BANDS bands of whole blocks (see bands).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tilegrad.h"

namespace tg_bench {

constexpr std::int64_t kBatch = 4, kHeads = 16, kSeq = 4096;

/// One benchmark case: a pattern for every head and the options.
struct Case {
  std::string name;
  tg::AttentionPattern pattern;
  tg::AttentionOptions options;
};

/// Attended (query, key) pairs of one head: the visited blocks' pairs that causal / window keep.
inline double attended_pairs(const tg::AttentionPattern& pat, const tg::AttentionOptions& o) {
  const auto& qs = pat.q_starts();
  const auto& ks = pat.k_starts();
  double pairs = 0;
  for (std::int64_t r = 0; r < pat.q_blocks(); ++r)
    for (std::int64_t c = 0; c < pat.k_blocks(); ++c) {
      if (!pat.visited(0, r, c)) continue;
      for (std::int64_t i = qs[static_cast<std::size_t>(r)]; i < qs[static_cast<std::size_t>(r) + 1]; ++i) {
        std::int64_t lo = ks[static_cast<std::size_t>(c)], hi = ks[static_cast<std::size_t>(c) + 1] - 1;
        if (o.causal) hi = std::min(hi, i);
        if (o.window_left >= 0) lo = std::max(lo, i - o.window_left);
        if (o.window_right >= 0) hi = std::min(hi, i + o.window_right);
        if (hi >= lo) pairs += static_cast<double>(hi - lo + 1);
      }
    }
  return pairs;
}

/// Whole numbers from 1 to max listed in the environment variable `var` (comma-separated, e.g.
/// "256,512,2048"); other entries are skipped with a message.
inline std::vector<std::int64_t> env_sizes(const char* var, std::int64_t max) {
  std::vector<std::int64_t> out;
  const char* env = std::getenv(var);
  if (env == nullptr) return out;
  std::stringstream list(env);
  for (std::string item; std::getline(list, item, ',');) {
    char* end = nullptr;
    const long long w = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || w < 1 || w > max) {
      std::fprintf(stderr, "%s: skipped '%s' (expected a whole number from 1 to %lld)\n", var, item.c_str(),
                   static_cast<long long>(max));
      continue;
    }
    out.push_back(w);
  }
  return out;
}

/// TG_BENCH_WINDOWS (e.g. "256,512,2048"): causal-window cases besides the 1024 one, whose items
/// (query and key tiles) see proportionally many tiles: timed side by side, a kernel's time
/// against its items' length gives its fixed cost an item (the intercept).
inline const std::vector<std::int64_t>& extra_windows() {
  static const std::vector<std::int64_t> sizes = env_sizes("TG_BENCH_WINDOWS", kSeq);
  return sizes;
}

/// TG_BENCH_BANDS (e.g. "5,9,17,33"): "band N of 64-blocks" cases, query block r visiting key
/// blocks r-N+1..r, whole blocks without causal or window options: the causal window of 64·(N-1)
/// keys has as many tiles an item, but two of them checked element by element (the diagonal and the
/// window's edge). Side by side, the difference is the checked tiles' extra cost, and the bands'
/// times against N the fixed cost an item without it.
inline const std::vector<std::int64_t>& bands() {
  static const std::vector<std::int64_t> sizes = env_sizes("TG_BENCH_BANDS", kSeq / 64);
  return sizes;
}

/// The cases in the order the benchmarks print them.
inline std::vector<Case> cases() {
  std::vector<Case> out;
  const tg::AttentionPattern dense = tg::AttentionPattern::dense(kSeq, kSeq, 128);
  out.push_back({"dense", dense, {}});
  tg::AttentionOptions causal;
  causal.causal = true;
  out.push_back({"causal", dense, causal});
  // the general transform (the training example's case: dropout; a soft cap without the RNG)
  tg::AttentionOptions drop = causal;
  drop.dropout_p = 0.1;
  drop.seed = 3;
  out.push_back({"causal, dropout 0.1", dense, drop});
  // the backward drawing the decisions again instead of reading the forward's (no mask memory)
  drop.keep_dropout_mask = false;
  out.push_back({"causal, dropout 0.1, redrawn", dense, drop});
  tg::AttentionOptions cap = causal;
  cap.softcap = 30;
  out.push_back({"causal, soft cap 30", dense, cap});
  tg::AttentionOptions window = causal;
  window.window_left = 1024;
  out.push_back({"causal window 1024", dense, window});
  for (const std::int64_t w : extra_windows()) {
    window.window_left = w;
    out.push_back({"causal window " + std::to_string(w), dense, window});
  }
  for (const std::int64_t n : bands()) {
    const std::int64_t nb = kSeq / 64;
    std::vector<bool> m(static_cast<std::size_t>(nb * nb));
    for (std::int64_t r = 0; r < nb; ++r)
      for (std::int64_t c = std::max<std::int64_t>(0, r - n + 1); c <= r; ++c)
        m[static_cast<std::size_t>(r * nb + c)] = true;
    out.push_back({"band " + std::to_string(n) + " of 64-blocks",
                   tg::AttentionPattern::uniform(tg::from_vector(m, {1, nb, nb}), 64, 64),
                   {}});
  }
  {
    const std::int64_t nb = kSeq / 64;
    std::mt19937_64 rng(42);
    std::vector<bool> m(static_cast<std::size_t>(nb * nb));
    for (std::size_t x = 0; x < m.size(); ++x) m[x] = rng() % 10 == 0;
    out.push_back(
        {"random 10% of 64-blocks", tg::AttentionPattern::uniform(tg::from_vector(m, {1, nb, nb}), 64, 64), {}});
  }
  {
    // block sizes of 64..512 (multiples of 64) summing to S, visited when block-causal
    std::mt19937_64 rng(7);
    std::vector<std::int64_t> sizes;
    std::int64_t left = kSeq;
    while (left > 0) {
      const std::int64_t s = std::min<std::int64_t>(left, 64 * static_cast<std::int64_t>(1 + rng() % 8));
      sizes.push_back(s);
      left -= s;
    }
    const std::int64_t nb = static_cast<std::int64_t>(sizes.size());
    std::vector<bool> m(static_cast<std::size_t>(nb * nb));
    for (std::int64_t r = 0; r < nb; ++r)
      for (std::int64_t c = 0; c <= r; ++c) m[static_cast<std::size_t>(r * nb + c)] = true;
    out.push_back({"variable blocks, block-causal",
                   tg::AttentionPattern::variable(tg::from_vector(m, {1, nb, nb}), sizes, sizes),
                   {}});
  }
  return out;
}

}  // namespace tg_bench
