// nn::sample_tokens: greedy and ties, each filter against the probabilities it must keep,
// the frequencies of many draws against the renormalised distribution (fixed seeds: the
// draws are deterministic, so the bounds are checked once, not hoped for), reproducibility,
// shapes, devices and bad inputs.
#include <cmath>
#include <map>
#include <vector>

#include "util.h"

namespace test_sampling {

using namespace tg;
using nn::SamplingOptions;

namespace {

// Frequencies of tokens over `n` draws (offsets 0..n-1) from one row.
std::map<std::int64_t, double> frequencies(const std::vector<double>& logits, SamplingOptions o, int n) {
  const Tensor t = from_vector(logits, Shape{static_cast<std::int64_t>(logits.size())});
  std::map<std::int64_t, double> f;
  for (int i = 0; i < n; ++i) {
    o.offset = static_cast<std::uint64_t>(i);
    f[nn::sample_tokens(t, o).item<std::int64_t>()] += 1.0 / n;
  }
  return f;
}

// softmax(x / temperature) over the indices in `keep`, 0 elsewhere.
std::vector<double> kept_probs(const std::vector<double>& x, double temperature, const std::vector<int>& keep) {
  std::vector<double> p(x.size(), 0.0);
  double m = -INFINITY, total = 0;
  for (int i : keep) m = std::max(m, x[static_cast<std::size_t>(i)]);
  for (int i : keep)
    total += p[static_cast<std::size_t>(i)] = std::exp((x[static_cast<std::size_t>(i)] - m) / temperature);
  for (double& v : p) v /= total;
  return p;
}

void require_frequencies(const std::map<std::int64_t, double>& f, const std::vector<double>& p, int n) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    const auto it = f.find(static_cast<std::int64_t>(i));
    const double got = it == f.end() ? 0.0 : it->second;
    INFO("token " << i << ": frequency " << got << ", probability " << p[i]);
    if (p[i] == 0.0) {
      REQUIRE(got == 0.0);
    } else {
      // 5 standard deviations of a binomial frequency.
      REQUIRE(std::abs(got - p[i]) <= 5 * std::sqrt(p[i] * (1 - p[i]) / n) + 1e-12);
    }
  }
}

const std::vector<double> kLogits = {1.0, 3.0, -2.0, 2.5, 0.0, 3.0, -INFINITY, 1.5};

}  // namespace

TEST_CASE("sample_tokens: greedy picks the largest logit, ties to the lower index", "[nn][sampling]") {
  const Tensor t = from_vector(kLogits, Shape{8});
  REQUIRE(nn::sample_tokens(t, {.temperature = 0.0}).item<std::int64_t>() == 1);
  REQUIRE(nn::sample_tokens(t, {.top_k = 1}).item<std::int64_t>() == 1);
  const Tensor inf = from_vector(std::vector<double>{0.0, INFINITY, 5.0, INFINITY}, Shape{4});
  for (std::uint64_t off = 0; off < 5; ++off)
    REQUIRE(nn::sample_tokens(inf, {.offset = off}).item<std::int64_t>() == 1);
}

TEST_CASE("sample_tokens: draws follow the filtered, renormalised distribution", "[nn][sampling]") {
  const int n = 20000;
  // Plain, at two temperatures: every finite token, never the -inf one.
  require_frequencies(frequencies(kLogits, {.seed = 1}, n), kept_probs(kLogits, 1.0, {0, 1, 2, 3, 4, 5, 7}), n);
  require_frequencies(frequencies(kLogits, {.temperature = 2.0, .seed = 2}, n),
                      kept_probs(kLogits, 2.0, {0, 1, 2, 3, 4, 5, 7}), n);
  // top_k 3: tokens 1 and 5 (3.0, the lower index first) and 3 (2.5).
  require_frequencies(frequencies(kLogits, {.top_k = 3, .seed = 3}, n), kept_probs(kLogits, 1.0, {1, 5, 3}), n);
  // top_p 0.7: the two most likely tokens hold 0.66 of the mass, three of them more than 0.7.
  {
    const auto p = kept_probs(kLogits, 1.0, {0, 1, 2, 3, 4, 5, 7});
    REQUIRE(p[1] + p[5] < 0.7);
    REQUIRE(p[1] + p[5] + p[3] >= 0.7);
    require_frequencies(frequencies(kLogits, {.top_p = 0.7, .seed = 4}, n), kept_probs(kLogits, 1.0, {1, 5, 3}), n);
  }
  // min_p 0.3: kept when p >= 0.3 * p_max, i.e. logit >= 3 + ln 0.3 = 1.796: tokens 1, 5, 3.
  require_frequencies(frequencies(kLogits, {.min_p = 0.3, .seed = 5}, n), kept_probs(kLogits, 1.0, {1, 5, 3}), n);
  // Filters compose: top_k 5 leaves 1, 5, 3, 7, 0; min_p 0.2 (logit >= 1.39) leaves 1, 5, 3, 7.
  require_frequencies(frequencies(kLogits, {.top_k = 5, .min_p = 0.2, .seed = 6}, n),
                      kept_probs(kLogits, 1.0, {1, 5, 3, 7}), n);
}

TEST_CASE("sample_tokens: reproducible, batched rows, shapes and devices", "[nn][sampling]") {
  const Tensor batch = tgt::rand64({3, 5, 11}, 1, -3.0, 3.0);
  const Tensor a = nn::sample_tokens(batch, {.seed = 9, .offset = 4});
  REQUIRE(a.shape() == Shape{3, 5});
  REQUIRE(a.dtype() == DType::i64);
  tgt::require_close(nn::sample_tokens(batch, {.seed = 9, .offset = 4}), a, 0, 0);
  // Rows draw different numbers: not every row picks the same rank.
  REQUIRE(tgt::max_abs_diff(nn::sample_tokens(batch, {.seed = 9, .offset = 5}), a) > 0);
  // 16-bit logits give the same picks as their f64 values.
  const Tensor bf = batch.to(DType::bf16);
  tgt::require_close(nn::sample_tokens(bf, {.seed = 2}), nn::sample_tokens(bf.to(DType::f64), {.seed = 2}), 0, 0);
  REQUIRE(nn::sample_tokens(from_vector(std::vector<double>{0.5}, Shape{1})).dim() == 0);
}

TEST_CASE("sample_tokens refuses bad inputs", "[nn][sampling]") {
  const Tensor t = zeros({2, 4});
  tgt::require_throws<ValueError>([&] { nn::sample_tokens(t, {.temperature = -1}); },
                                  {"sample_tokens", "temperature", ">= 0", "-1"});
  tgt::require_throws<ValueError>([&] { nn::sample_tokens(t, {.temperature = NAN}); },
                                  {"sample_tokens", "temperature", "nan"});
  tgt::require_throws<ValueError>([&] { nn::sample_tokens(t, {.top_k = -2}); }, {"sample_tokens", "top_k", "-2"});
  tgt::require_throws<ValueError>([&] { nn::sample_tokens(t, {.top_p = 0.0}); }, {"sample_tokens", "top_p", "(0, 1]"});
  tgt::require_throws<ValueError>([&] { nn::sample_tokens(t, {.min_p = 1.5}); }, {"sample_tokens", "min_p", "1.5"});
  tgt::require_throws<ValueError>([] { nn::sample_tokens(zeros({3, 0})); }, {"sample_tokens", "V >= 1", "[3, 0]"});
  tgt::require_throws<DTypeError>([] { nn::sample_tokens(zeros({4}, {.dtype = DType::i64})); },
                                  {"sample_tokens", "logits", "i64"});
  tgt::require_throws<ValueError>(
      [] {
        nn::sample_tokens(from_vector(std::vector<double>{0, NAN, 1, 0, 1, 2}, Shape{2, 3}));
      },
      {"sample_tokens", "row 0", "NaN"});
  tgt::require_throws<ValueError>(
      [] {
        nn::sample_tokens(from_vector(std::vector<double>{0, 1, -INFINITY, -INFINITY}, Shape{2, 2}));
      },
      {"sample_tokens", "row 1", "all -inf"});
}

TEST_CASE("sample_tokens on CUDA gives the CPU's picks, on the GPU", "[nn][sampling][cuda]") {
  TG_REQUIRE_CUDA();
  const Tensor batch = tgt::rand64({4, 50}, 3, -3.0, 3.0).to(DType::f32);
  const SamplingOptions o{.temperature = 0.7, .top_k = 20, .top_p = 0.9, .seed = 5};
  const Tensor g = nn::sample_tokens(batch.to(Device::cuda()), o);
  REQUIRE(g.device() == Device::cuda());
  tgt::require_close(g.to(Device::cpu()), nn::sample_tokens(batch, o), 0, 0);
}

}  // namespace test_sampling
