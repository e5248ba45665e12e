#include "nn/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "ops/common.h"
#include "runtime/philox.h"

namespace tg::nn {

namespace {

// A uniform double in [0, 1) from two Philox words (53 bits): a 24-bit draw could never pick
// a token of probability below 6e-8, nor tell apart probabilities closer than that.
double uniform53(std::uint64_t seed, std::uint64_t offset, std::uint64_t row) {
  const std::uint64_t hi = philox::bits(seed, offset, 2 * row) >> 5;      // 27 bits
  const std::uint64_t lo = philox::bits(seed, offset, 2 * row + 1) >> 6;  // 26 bits
  return static_cast<double>((hi << 26) | lo) * 0x1.0p-53;
}

// The chosen index of one row (validated: no NaN, not all -inf). A +inf logit is certain:
// the first one is chosen.
std::int64_t choose(const double* x, std::int64_t V, const SamplingOptions& o, double u) {
  // Most likely first, ties to the lower index.
  std::vector<std::int64_t> order(static_cast<std::size_t>(V));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  auto before = [&](std::int64_t a, std::int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  if (o.temperature == 0.0) return *std::min_element(order.begin(), order.end(), before);
  std::int64_t keep = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), before);
  const double top = x[order[0]];
  if (std::isinf(top)) return order[0];  // +inf (an all -inf row was refused)
  std::vector<double> p(static_cast<std::size_t>(keep));
  for (std::int64_t i = 0; i < keep; ++i) {
    p[static_cast<std::size_t>(i)] = std::exp((x[order[static_cast<std::size_t>(i)]] - top) / o.temperature);
  }
  // min_p: relative to the most likely token, whose weight is exp(0) = 1.
  while (keep > 1 && p[static_cast<std::size_t>(keep - 1)] < o.min_p) --keep;
  // cum[i]: the mass of the i + 1 most likely kept tokens, serving top_p and the draw.
  std::vector<double> cum(static_cast<std::size_t>(keep));
  std::partial_sum(p.begin(), p.begin() + keep, cum.begin());
  if (o.top_p < 1.0) {
    const double need = o.top_p * cum.back();
    std::int64_t n = 0;
    while (n + 1 < keep && cum[static_cast<std::size_t>(n)] < need) ++n;
    keep = n + 1;
  }
  const double target = u * cum[static_cast<std::size_t>(keep - 1)];
  for (std::int64_t i = 0; i < keep; ++i) {
    if (target < cum[static_cast<std::size_t>(i)]) return order[static_cast<std::size_t>(i)];
  }
  return order[static_cast<std::size_t>(keep - 1)];  // u * mass rounded up to the last sum
}

}  // namespace

Tensor sample_tokens(const Tensor& logits, const SamplingOptions& o) {
  ops::check_floating("sample_tokens", "logits", logits);
  TG_CHECK(logits.dim() >= 1 && logits.size(logits.dim() - 1) > 0, ValueError,
           "sample_tokens: logits must be [..., V] with V >= 1, got shape ", logits.shape());
  TG_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0, ValueError,
           "sample_tokens: temperature must be finite and >= 0, got ", o.temperature);
  TG_CHECK(o.top_k >= 0, ValueError, "sample_tokens: top_k must be >= 0 (0: off), got ", o.top_k);
  TG_CHECK(o.top_p > 0.0 && o.top_p <= 1.0, ValueError, "sample_tokens: top_p must be in (0, 1], got ", o.top_p);
  TG_CHECK(o.min_p >= 0.0 && o.min_p <= 1.0, ValueError, "sample_tokens: min_p must be in [0, 1], got ", o.min_p);
  const std::int64_t V = logits.size(logits.dim() - 1), rows = logits.numel() / V;
  const std::vector<double> x = logits.detach().to_vector<double>();
  std::vector<std::int64_t> picks(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double* row = x.data() + r * V;
    bool nan = false, some = false;
    for (std::int64_t i = 0; i < V; ++i) {
      nan |= std::isnan(row[i]);
      some |= row[i] > -INFINITY;
    }
    TG_CHECK(!nan, ValueError, "sample_tokens: logits row ", r, " holds a NaN");
    TG_CHECK(some, ValueError, "sample_tokens: logits row ", r, " is all -inf (no token can be chosen)");
    picks[static_cast<std::size_t>(r)] = choose(row, V, o, uniform53(o.seed, o.offset, static_cast<std::uint64_t>(r)));
  }
  std::vector<std::int64_t> dims(logits.shape().dims().begin(), logits.shape().dims().end() - 1);
  return from_vector(picks, Shape(std::move(dims)), {.dtype = DType::i64, .device = logits.device()});
}

}  // namespace tg::nn
