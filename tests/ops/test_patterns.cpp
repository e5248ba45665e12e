#include <functional>

#include "util.h"

using namespace tg;

namespace {
// Brute force: block (b, r, c) active iff some element pair in it satisfies the rule.
void require_matches(const Layout& l, std::int64_t sq, std::int64_t sk,
                     const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& rule) {
  const std::int64_t bs = l.block_size();
  for (std::int64_t b = 0; b < l.batch(); ++b)
    for (std::int64_t r = 0; r < l.block_rows(); ++r)
      for (std::int64_t c = 0; c < l.block_cols(); ++c) {
        bool any = false;
        for (std::int64_t i = r * bs; i < std::min(sq, (r + 1) * bs); ++i)
          for (std::int64_t j = c * bs; j < std::min(sk, (c + 1) * bs); ++j) any = any || rule(b, i, j);
        INFO("block (" << b << ", " << r << ", " << c << ")");
        REQUIRE(l.active(b, r, c) == any);
      }
}
}  // namespace

TEST_CASE("attention patterns match their element rules", "[ops][patterns]") {
  require_matches(causal_pattern(2, 40, 40, 16), 40, 40, [](auto, auto i, auto j) { return j <= i; });
  std::vector<std::int64_t> lens{17, 40};
  require_matches(causal_pattern(2, 40, 40, 8, lens), 40, 40,
                  [&](auto b, auto i, auto j) { return j <= i && i < lens[static_cast<std::size_t>(b)]; });
  require_matches(sliding_window_pattern(1, 50, 70, 16, 5, 9), 50, 70,
                  [](auto, auto i, auto j) { return j >= i - 5 && j <= i + 9; });
  require_matches(causal_window_pattern(1, 64, 8, 20), 64, 64, [](auto, auto i, auto j) { return j <= i && j > i - 20; });
  require_matches(global_local_pattern(1, 64, 16, 8, 10, true), 64, 64, [](auto, auto i, auto j) {
    return j <= i && (i < 8 || j < 8 || (j >= i - 10 && j <= i + 10));
  });
  require_matches(global_local_pattern(1, 48, 4, 4, 6, false), 48, 48,
                  [](auto, auto i, auto j) { return i < 4 || j < 4 || (j >= i - 6 && j <= i + 6); });
  Layout s = strided_pattern(1, 64, 64, 16, 2);
  REQUIRE(s.active(0, 0, 0));
  REQUIRE(s.active(0, 0, 1));
  REQUIRE(s.active(0, 0, 3));
  REQUIRE_FALSE(s.active(0, 0, 2));
  REQUIRE(s.active(0, 2, 2));
}

TEST_CASE("pattern union and intersection", "[ops][patterns]") {
  Layout a = causal_pattern(1, 64, 64, 16);
  Layout b = sliding_window_pattern(1, 64, 64, 16, 0, 20);
  Layout u = pattern_union(a, b), x = pattern_intersection(a, b);
  for (std::int64_t r = 0; r < 4; ++r)
    for (std::int64_t c = 0; c < 4; ++c) {
      REQUIRE(u.active(0, r, c) == (a.active(0, r, c) || b.active(0, r, c)));
      REQUIRE(x.active(0, r, c) == (a.active(0, r, c) && b.active(0, r, c)));
    }
  REQUIRE(random_pattern(2, 64, 32, 16, 0.5, 3) == random_pattern(2, 64, 32, 16, 0.5, 3));
  REQUIRE(causal_pattern(1, 0, 0, 16).n_blocks() == 0);
}

TEST_CASE("pattern bad inputs", "[ops][patterns]") {
  tgt::require_throws<LayoutError>([] { pattern_union(causal_pattern(1, 64, 64, 16), causal_pattern(1, 64, 64, 32)); },
                                   {"pattern_union", "block 16", "block 32"});
  tgt::require_throws<LayoutError>([] { causal_pattern(1, 64, 64, 24); }, {"causal_pattern", "power of two", "24"});
  tgt::require_throws<ShapeError>([] { causal_pattern(2, 8, 8, 4, {3}); }, {"valid_lengths", "(2)", "got 1"});
  tgt::require_throws<ValueError>([] { causal_window_pattern(1, 8, 4, 0); }, {"window must be >= 1"});
  tgt::require_throws<ValueError>([] { sliding_window_pattern(1, 8, 8, 4, -1, 0); }, {"left and right"});
}
