// Tests of AttentionPattern::slice: every element pair of the slice is visited exactly when
// the same pair of the whole pattern is (uniform and variable blocks, P = 1 and 2, ranges
// on and off block boundaries), block sizes cut to the ranges, and bad ranges.
#include <random>
#include <vector>

#include "util.h"

namespace test_attention_pattern_slice {

using namespace tg;

namespace {

// Whether element pair (p, i, j) is visited: the blocks holding query i and key j.
bool element_visited(const AttentionPattern& pat, std::int64_t p, std::int64_t i, std::int64_t j) {
  const auto& qs = pat.q_starts();
  const auto& ks = pat.k_starts();
  const auto r = std::upper_bound(qs.begin(), qs.end(), i) - qs.begin() - 1;
  const auto c = std::upper_bound(ks.begin(), ks.end(), j) - ks.begin() - 1;
  return pat.visited(p, r, c);
}

}  // namespace

TEST_CASE("AttentionPattern::slice keeps every element pair of its ranges", "[ops][attention]") {
  std::mt19937_64 rng(5);
  std::vector<AttentionPattern> patterns;
  patterns.push_back(AttentionPattern::from_layout(random_layout(2, 5, 6, 4, 0.5, 1)));
  std::vector<bool> m(2 * 3 * 4);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = rng() % 2;
  patterns.push_back(AttentionPattern::variable(from_vector(m, {2, 3, 4}), {3, 7, 2}, {5, 1, 6, 4}));
  patterns.push_back(AttentionPattern::from_layout(causal_pattern(1, 24, 24, 8)));
  for (const AttentionPattern& pat : patterns) {
    for (int trial = 0; trial < 40; ++trial) {
      const auto pick = [&](std::int64_t n, std::int64_t& a, std::int64_t& b) {
        a = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
        b = a + 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n - a));
      };
      std::int64_t qa, qb, ka, kb;
      pick(pat.sq(), qa, qb);
      pick(pat.sk(), ka, kb);
      INFO("queries [" << qa << ", " << qb << "), keys [" << ka << ", " << kb << ") of " << pat.sq() << " x "
                       << pat.sk());
      const AttentionPattern s = pat.slice(qa, qb, ka, kb);
      REQUIRE(s.count() == pat.count());
      REQUIRE(s.sq() == qb - qa);
      REQUIRE(s.sk() == kb - ka);
      for (std::int64_t p = 0; p < pat.count(); ++p)
        for (std::int64_t i = qa; i < qb; ++i)
          for (std::int64_t j = ka; j < kb; ++j) {
            if (element_visited(s, p, i - qa, j - ka) != element_visited(pat, p, i, j)) {
              FAIL("pair (" << p << ", " << i << ", " << j << ") differs");
            }
          }
    }
  }
  // The last position of a causal pattern, as a decoder with a KV cache asks for it: one
  // query block of 1, key blocks of 8 with the last cut to 3.
  const AttentionPattern causal = AttentionPattern::from_layout(causal_pattern(1, 24, 24, 8));
  const AttentionPattern row = causal.slice(18, 19, 0, 19);
  REQUIRE(row.q_starts() == std::vector<std::int64_t>{0, 1});
  REQUIRE(row.k_starts() == std::vector<std::int64_t>{0, 8, 16, 19});
  // Uncut ranges on block boundaries stay uniform.
  REQUIRE(causal.slice(8, 24, 0, 16).bq() == 8);

  tgt::require_throws<ValueError>([&] { causal.slice(5, 5, 0, 4); }, {"AttentionPattern::slice", "[5, 5)"});
  tgt::require_throws<ValueError>([&] { causal.slice(0, 4, 0, 25); }, {"AttentionPattern::slice", "[0, 25)", "24"});
  tgt::require_throws<ValueError>([] { AttentionPattern().slice(0, 1, 0, 1); },
                                  {"AttentionPattern::slice", "undefined"});
}

}  // namespace test_attention_pattern_slice
