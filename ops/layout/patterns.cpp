#include "ops/layout/patterns.h"

#include <algorithm>
#include <functional>

#include "ops/layout/builders.h"

namespace tg {

namespace {

void check(const char* op, std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs) {
  if (bh < 0 || sq < 0 || sk < 0) {
    TG_THROW(ShapeError, op, ": batch-heads and sequence lengths must be >= 0, got bh=", bh, ", seq_q=", sq,
             ", seq_k=", sk);
  }
  if (bs < 1 || (bs & (bs - 1))) TG_THROW(LayoutError, op, ": block size must be a power of two >= 1, got ", bs);
}

std::int64_t cdiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Marks block (r, c) active iff the rule allows some j in [klo, khi] for some query i of
// the block; `range(i)` gives the allowed key interval [lo, hi] of query i (lo > hi: none).
Layout from_ranges(std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs,
                   const std::function<std::pair<std::int64_t, std::int64_t>(std::int64_t b, std::int64_t i)>& range) {
  const std::int64_t Mb = cdiv(sq, bs), Nb = cdiv(sk, bs);
  std::vector<bool> m(static_cast<std::size_t>(bh * Mb * Nb), false);
  for (std::int64_t b = 0; b < bh; ++b)
    for (std::int64_t i = 0; i < sq; ++i) {
      auto [lo, hi] = range(b, i);
      lo = std::max<std::int64_t>(lo, 0);
      hi = std::min<std::int64_t>(hi, sk - 1);
      for (std::int64_t c = lo / bs; lo <= hi && c <= hi / bs; ++c)
        m[static_cast<std::size_t>((b * Mb + i / bs) * Nb + c)] = true;
    }
  return Layout(from_vector(m, {bh, Mb, Nb}), bs);
}

}  // namespace

Layout causal_pattern(std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs,
                      const std::vector<std::int64_t>& valid) {
  check("causal_pattern", bh, sq, sk, bs);
  if (!valid.empty() && static_cast<std::int64_t>(valid.size()) != bh) {
    TG_THROW(ShapeError, "causal_pattern: valid_lengths must have one entry per batch-head (", bh, "), got ",
             valid.size());
  }
  for (std::size_t b = 0; b < valid.size(); ++b) {
    if (valid[b] < 0 || valid[b] > std::max(sq, sk)) {
      TG_THROW(ValueError, "causal_pattern: valid_lengths[", b, "] must be in [0, ", std::max(sq, sk),
               "] (the longer sequence), got ", valid[b]);
    }
  }
  return from_ranges(bh, sq, sk, bs, [&](std::int64_t b, std::int64_t i) -> std::pair<std::int64_t, std::int64_t> {
    std::int64_t len = valid.empty() ? std::max(sq, sk) : valid[static_cast<std::size_t>(b)];
    if (i >= len) return {1, 0};
    return {0, std::min(i, len - 1)};
  });
}

Layout sliding_window_pattern(std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs, std::int64_t left,
                              std::int64_t right) {
  check("sliding_window_pattern", bh, sq, sk, bs);
  if (left < 0 || right < 0) {
    TG_THROW(ValueError, "sliding_window_pattern: left and right must be >= 0, got ", left, " and ", right);
  }
  return from_ranges(bh, sq, sk, bs, [&](std::int64_t, std::int64_t i) { return std::pair{i - left, i + right}; });
}

Layout causal_window_pattern(std::int64_t bh, std::int64_t seq, std::int64_t bs, std::int64_t window) {
  if (window < 1) TG_THROW(ValueError, "causal_window_pattern: window must be >= 1, got ", window);
  check("causal_window_pattern", bh, seq, seq, bs);
  return from_ranges(bh, seq, seq, bs, [&](std::int64_t, std::int64_t i) { return std::pair{i - window + 1, i}; });
}

Layout strided_pattern(std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs, std::int64_t stride) {
  check("strided_pattern", bh, sq, sk, bs);
  if (stride < 1) TG_THROW(ValueError, "strided_pattern: stride must be >= 1, got ", stride);
  const std::int64_t Mb = cdiv(sq, bs), Nb = cdiv(sk, bs);
  std::vector<bool> m(static_cast<std::size_t>(bh * Mb * Nb), false);
  for (std::int64_t b = 0; b < bh; ++b)
    for (std::int64_t r = 0; r < Mb; ++r)
      for (std::int64_t c = 0; c < Nb; ++c)
        m[static_cast<std::size_t>((b * Mb + r) * Nb + c)] = (r == c) || (c % stride == stride - 1);
  return Layout(from_vector(m, {bh, Mb, Nb}), bs);
}

Layout global_local_pattern(std::int64_t bh, std::int64_t seq, std::int64_t bs, std::int64_t global_tokens,
                            std::int64_t window, bool causal) {
  check("global_local_pattern", bh, seq, seq, bs);
  if (global_tokens < 0 || window < 0) {
    TG_THROW(ValueError, "global_local_pattern: global_tokens and window must be >= 0, got ", global_tokens, " and ",
             window);
  }
  const std::int64_t nb = cdiv(seq, bs);
  std::vector<bool> m(static_cast<std::size_t>(bh * nb * nb), false);
  for (std::int64_t b = 0; b < bh; ++b)
    for (std::int64_t i = 0; i < seq; ++i)
      for (std::int64_t c = 0; c < nb; ++c) {
        // Any key j of block c visible to i?
        std::int64_t jlo = c * bs, jhi = std::min(seq - 1, jlo + bs - 1);
        if (causal) jhi = std::min(jhi, i);
        if (jlo > jhi) continue;
        bool vis = i < global_tokens || jlo < global_tokens || (jhi >= i - window && jlo <= i + window);
        if (vis) m[static_cast<std::size_t>((b * nb + i / bs) * nb + c)] = true;
      }
  return Layout(from_vector(m, {bh, nb, nb}), bs);
}

Layout random_pattern(std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs, double density,
                      std::uint64_t seed) {
  check("random_pattern", bh, sq, sk, bs);
  if (!(density >= 0.0 && density <= 1.0)) TG_THROW(ValueError, "random_pattern: density must be in [0, 1], got ", density);
  return random_layout(bh, cdiv(sq, bs), cdiv(sk, bs), bs, density, seed);
}

namespace {
Layout combine(const char* op, const Layout& a, const Layout& b, bool both) {
  if (!a.defined() || !b.defined()) {
    TG_THROW(LayoutError, op, ": both layouts must be defined, got ", a.defined() ? "a defined" : "an undefined",
             " a and ", b.defined() ? "a defined" : "an undefined", " b");
  }
  if (a.batch() != b.batch() || a.block_rows() != b.block_rows() || a.block_cols() != b.block_cols() ||
      a.block_size() != b.block_size()) {
    TG_THROW(LayoutError, op, ": layouts differ in shape or block size: [", a.batch(), ", ", a.block_rows(), ", ",
             a.block_cols(), "] block ", a.block_size(), " vs [", b.batch(), ", ", b.block_rows(), ", ",
             b.block_cols(), "] block ", b.block_size());
  }
  const auto &x = a.mask_host(), &y = b.mask_host();
  std::vector<bool> m(x.size());
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = both ? (x[i] && y[i]) : (x[i] || y[i]);
  return Layout(from_vector(m, a.mask().shape()), a.block_size());
}
}  // namespace

Layout pattern_union(const Layout& a, const Layout& b) { return combine("pattern_union", a, b, false); }
Layout pattern_intersection(const Layout& a, const Layout& b) { return combine("pattern_intersection", a, b, true); }

}  // namespace tg
