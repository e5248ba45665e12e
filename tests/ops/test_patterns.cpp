// Tests of the attention pattern builders (ops/layout/patterns): each against a brute-force
// definition over element pairs (or blocks, for strided), over batch-heads > 1, seq_q !=
// seq_k and sequences that end inside a block; random patterns; union / intersection; bad
// inputs.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "util.h"

namespace test_patterns {

using namespace tg;

namespace {

using ElementRule = std::function<bool(std::int64_t b, std::int64_t i, std::int64_t j)>;
using BlockRule = std::function<bool(std::int64_t b, std::int64_t r, std::int64_t c)>;

std::int64_t cdiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Some (query i, key j) pair of block (r, c), within the sequences, satisfies the rule.
bool any_pair(const ElementRule& rule, std::int64_t sq, std::int64_t sk, std::int64_t bs, std::int64_t b,
              std::int64_t r, std::int64_t c) {
  for (std::int64_t i = r * bs; i < std::min(sq, (r + 1) * bs); ++i)
    for (std::int64_t j = c * bs; j < std::min(sk, (c + 1) * bs); ++j)
      if (rule(b, i, j)) return true;
  return false;
}

// REQUIREs the layout shape [bh, ceil(sq/bs), ceil(sk/bs)] at block size bs, and block
// (b, r, c) active iff want(b, r, c).
void require_blocks(const Layout& l, std::int64_t bh, std::int64_t sq, std::int64_t sk, std::int64_t bs,
                    const BlockRule& want) {
  REQUIRE(l.defined());
  REQUIRE(l.block_size() == bs);
  REQUIRE(l.batch() == bh);
  REQUIRE(l.block_rows() == cdiv(sq, bs));
  REQUIRE(l.block_cols() == cdiv(sk, bs));
  std::int64_t active = 0;
  for (std::int64_t b = 0; b < l.batch(); ++b)
    for (std::int64_t r = 0; r < l.block_rows(); ++r)
      for (std::int64_t c = 0; c < l.block_cols(); ++c) {
        const bool w = want(b, r, c);
        active += w;
        if (l.active(b, r, c) != w) {
          INFO("block (" << b << ", " << r << ", " << c << "): expected " << (w ? "active" : "inactive"));
          REQUIRE(l.active(b, r, c) == w);
        }
      }
  REQUIRE(l.n_blocks() == active);
}

// Brute force: block (b, r, c) active iff some element pair in it satisfies the rule.
void require_matches(const Layout& l, std::int64_t sq, std::int64_t sk,
                     const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& rule) {
  const std::int64_t bs = l.block_size();
  require_blocks(l, l.batch(), sq, sk, bs, [&](auto b, auto r, auto c) { return any_pair(rule, sq, sk, bs, b, r, c); });
}

// (seq_q, seq_k) pairs: equal, longer keys, longer queries, ends inside a block, empty.
struct Seqs {
  std::int64_t q, k;
};
const Seqs kSeqs[] = {{40, 40}, {50, 70}, {70, 50}, {33, 17}, {1, 5}, {0, 9}};

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

TEST_CASE("causal patterns, with and without valid lengths, match the element rule", "[ops][patterns]") {
  for (std::int64_t bs : {1, 4, 16, 32})
    for (const Seqs& q : kSeqs)
      for (std::int64_t bh : {1, 3}) {
        INFO("bs " << bs << " seq_q " << q.q << " seq_k " << q.k << " bh " << bh);
        require_blocks(causal_pattern(bh, q.q, q.k, bs), bh, q.q, q.k, bs, [&](auto b, auto r, auto c) {
          return any_pair([](auto, auto i, auto j) { return j <= i; }, q.q, q.k, bs, b, r, c);
        });
        // one length per batch-head: 0, the longer sequence, and values inside blocks
        const std::int64_t top = std::max(q.q, q.k);
        std::vector<std::int64_t> lens;
        for (std::int64_t b = 0; b < bh; ++b) lens.push_back(b == 0 ? top : b == 1 ? 0 : top * 2 / 3);
        INFO("valid lengths " << lens[0] << (bh > 1 ? detail::concat(", ", lens[1], ", ", lens[2]) : std::string()));
        // positions >= the length are neither queries nor keys
        require_blocks(causal_pattern(bh, q.q, q.k, bs, lens), bh, q.q, q.k, bs, [&](auto b, auto r, auto c) {
          const std::int64_t len = lens[static_cast<std::size_t>(b)];
          return any_pair([&](auto, auto i, auto j) { return j <= i && i < len && j < len; }, q.q, q.k, bs, b, r, c);
        });
      }
}

TEST_CASE("sliding and causal window patterns match the element rule", "[ops][patterns]") {
  struct Window {
    std::int64_t left, right;
  };
  for (std::int64_t bs : {1, 4, 16})
    for (const Seqs& q : kSeqs)
      for (Window w : {Window{0, 0}, Window{5, 9}, Window{17, 0}, Window{0, 100}, Window{3, 3}}) {
        INFO("bs " << bs << " seq_q " << q.q << " seq_k " << q.k << " left " << w.left << " right " << w.right);
        require_blocks(sliding_window_pattern(2, q.q, q.k, bs, w.left, w.right), 2, q.q, q.k, bs,
                       [&](auto b, auto r, auto c) {
                         return any_pair([&](auto, auto i, auto j) { return i - w.left <= j && j <= i + w.right; }, q.q,
                                         q.k, bs, b, r, c);
                       });
      }
  for (std::int64_t bs : {1, 8, 16})
    for (std::int64_t seq : {0, 1, 33, 64})
      for (std::int64_t window : {1, 8, 20, 1000}) {
        INFO("bs " << bs << " seq " << seq << " window " << window);
        // the last `window` tokens including i
        require_blocks(causal_window_pattern(3, seq, bs, window), 3, seq, seq, bs, [&](auto b, auto r, auto c) {
          return any_pair([&](auto, auto i, auto j) { return i - window < j && j <= i; }, seq, seq, bs, b, r, c);
        });
      }
}

TEST_CASE("strided patterns match the block rule", "[ops][patterns]") {
  // query block r attends to key block r and to every c with c % stride == stride - 1
  for (std::int64_t bs : {1, 4, 16})
    for (const Seqs& q : kSeqs)
      for (std::int64_t stride : {1, 2, 3, 5}) {
        INFO("bs " << bs << " seq_q " << q.q << " seq_k " << q.k << " stride " << stride);
        require_blocks(strided_pattern(2, q.q, q.k, bs, stride), 2, q.q, q.k, bs,
                       [&](auto, auto r, auto c) { return r == c || c % stride == stride - 1; });
      }
}

TEST_CASE("global + local patterns match the element rule", "[ops][patterns]") {
  // the first g tokens see and are seen by everything, the others keys within the window;
  // causal: and j <= i, global tokens included
  for (std::int64_t bs : {1, 4, 16})
    for (std::int64_t seq : {0, 1, 37, 64})
      for (std::int64_t g : {0, 4, 8, 70})
        for (std::int64_t window : {0, 3, 10})
          for (bool causal : {false, true}) {
            INFO("bs " << bs << " seq " << seq << " global " << g << " window " << window << (causal ? " causal" : ""));
            require_blocks(global_local_pattern(2, seq, bs, g, window, causal), 2, seq, seq, bs,
                           [&](auto b, auto r, auto c) {
                             return any_pair(
                                 [&](auto, auto i, auto j) {
                                   return (!causal || j <= i) && (i < g || j < g || std::abs(i - j) <= window);
                                 },
                                 seq, seq, bs, b, r, c);
                           });
          }
}

TEST_CASE("random patterns: shape, seed, density", "[ops][patterns]") {
  for (const Seqs& q : kSeqs) {
    INFO("seq_q " << q.q << " seq_k " << q.k);
    // the extremes are exact: nothing, everything
    require_blocks(random_pattern(3, q.q, q.k, 16, 0.0, 5), 3, q.q, q.k, 16, [](auto, auto, auto) { return false; });
    require_blocks(random_pattern(3, q.q, q.k, 16, 1.0, 5), 3, q.q, q.k, 16, [](auto, auto, auto) { return true; });
  }
  // the same seed the same pattern; another seed another one; batch-heads drawn apart
  Layout a = random_pattern(2, 1024, 2048, 16, 0.3, 11);
  REQUIRE(a == random_pattern(2, 1024, 2048, 16, 0.3, 11));
  REQUIRE_FALSE(a == random_pattern(2, 1024, 2048, 16, 0.3, 12));
  bool heads_differ = false;
  for (std::int64_t r = 0; r < a.block_rows() && !heads_differ; ++r)
    for (std::int64_t c = 0; c < a.block_cols(); ++c)
      heads_differ = heads_differ || a.active(0, r, c) != a.active(1, r, c);
  REQUIRE(heads_differ);
  // 16384 blocks at density 0.3: the fraction is within 0.03 (7 standard deviations)
  REQUIRE(a.batch() * a.block_rows() * a.block_cols() == 16384);
  REQUIRE(a.density() == Approx(0.3).margin(0.03));
  REQUIRE(random_pattern(2, 1024, 2048, 16, 0.8, 11).density() == Approx(0.8).margin(0.03));
}

TEST_CASE("pattern union and intersection match the block rules of their parts", "[ops][patterns]") {
  // union: some pair satisfies either rule; intersection: some pair satisfies the one rule
  // and some (maybe other) pair the other, per block
  for (std::int64_t bs : {1, 4, 16})
    for (const Seqs& q : {Seqs{50, 70}, Seqs{70, 50}, Seqs{33, 17}}) {
      INFO("bs " << bs << " seq_q " << q.q << " seq_k " << q.k);
      const std::vector<std::int64_t> lens{30, 0, std::max(q.q, q.k)};
      const ElementRule causal = [&](auto b, auto i, auto j) {
        const std::int64_t len = lens[static_cast<std::size_t>(b)];
        return j <= i && i < len && j < len;
      };
      const ElementRule window = [](auto, auto i, auto j) { return i - 6 <= j && j <= i + 2; };
      const Layout lc = causal_pattern(3, q.q, q.k, bs, lens), lw = sliding_window_pattern(3, q.q, q.k, bs, 6, 2);
      const Layout ls = strided_pattern(3, q.q, q.k, bs, 3), lr = random_pattern(3, q.q, q.k, bs, 0.4, 21);
      require_blocks(pattern_union(lc, lw), 3, q.q, q.k, bs, [&](auto b, auto r, auto c) {
        return any_pair([&](auto bb, auto i, auto j) { return causal(bb, i, j) || window(bb, i, j); }, q.q, q.k, bs, b,
                        r, c);
      });
      require_blocks(pattern_intersection(lc, lw), 3, q.q, q.k, bs, [&](auto b, auto r, auto c) {
        return any_pair(causal, q.q, q.k, bs, b, r, c) && any_pair(window, q.q, q.k, bs, b, r, c);
      });
      // with the block-level and random patterns, block by block
      require_blocks(pattern_union(ls, lr), 3, q.q, q.k, bs,
                     [&](auto b, auto r, auto c) { return ls.active(b, r, c) || lr.active(b, r, c); });
      require_blocks(pattern_intersection(lw, lr), 3, q.q, q.k, bs, [&](auto b, auto r, auto c) {
        return any_pair(window, q.q, q.k, bs, b, r, c) && lr.active(b, r, c);
      });
    }
}

TEST_CASE("pattern builders reject bad arguments", "[ops][patterns]") {
  // strides, windows and global token counts
  tgt::require_throws<ValueError>([] { strided_pattern(1, 64, 64, 16, 0); }, {"strided_pattern", "stride", "0"});
  tgt::require_throws<ValueError>([] { strided_pattern(1, 64, 64, 16, -2); }, {"strided_pattern", "stride", "-2"});
  tgt::require_throws<ValueError>([] { sliding_window_pattern(1, 8, 8, 4, 0, -1); },
                                  {"sliding_window_pattern", "left and right", "-1"});
  tgt::require_throws<ValueError>([] { causal_window_pattern(1, 8, 4, -3); },
                                  {"causal_window_pattern", "window", "-3"});
  tgt::require_throws<ValueError>([] { global_local_pattern(1, 64, 16, -1, 8); },
                                  {"global_local_pattern", "global_tokens", "-1"});
  tgt::require_throws<ValueError>([] { global_local_pattern(1, 64, 16, 4, -2, true); },
                                  {"global_local_pattern", "window", "-2"});
  // random densities outside [0, 1], nan included
  for (double d : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    INFO("density " << d);
    tgt::require_throws<ValueError>([d] { random_pattern(1, 64, 64, 16, d, 1); }, {"random_pattern", "density"});
  }
  // valid lengths outside [0, max(seq_q, seq_k)]
  tgt::require_throws<ValueError>(
      [] {
        causal_pattern(2, 40, 60, 16, {10, -1});
      },
      {"causal_pattern", "valid_lengths[1]", "-1"});
  tgt::require_throws<ValueError>(
      [] {
        causal_pattern(2, 40, 60, 16, {61, 10});
      },
      {"causal_pattern", "valid_lengths[0]", "61"});
  REQUIRE(causal_pattern(2, 40, 60, 16, {60, 0}).n_blocks() > 0);  // the bounds themselves are valid
  // extents and block sizes, every builder
  tgt::require_throws<ShapeError>([] { causal_pattern(-1, 8, 8, 4); }, {"causal_pattern", "bh=-1"});
  tgt::require_throws<ShapeError>([] { sliding_window_pattern(1, -8, 8, 4, 1, 1); },
                                  {"sliding_window_pattern", "seq_q=-8"});
  tgt::require_throws<ShapeError>([] { strided_pattern(1, 8, -2, 4, 2); }, {"strided_pattern", "seq_k=-2"});
  tgt::require_throws<ShapeError>([] { causal_window_pattern(1, -4, 4, 2); }, {"causal_window_pattern", "-4"});
  tgt::require_throws<ShapeError>([] { global_local_pattern(-2, 8, 4, 1, 1); }, {"global_local_pattern", "bh=-2"});
  tgt::require_throws<ShapeError>([] { random_pattern(1, 8, -1, 4, 0.5, 1); }, {"random_pattern", "seq_k=-1"});
  tgt::require_throws<LayoutError>([] { sliding_window_pattern(1, 8, 8, 0, 1, 1); },
                                   {"sliding_window_pattern", "power of two", "0"});
  tgt::require_throws<LayoutError>([] { strided_pattern(1, 8, 8, 6, 2); }, {"strided_pattern", "power of two", "6"});
  tgt::require_throws<LayoutError>([] { causal_window_pattern(1, 8, 12, 2); },
                                   {"causal_window_pattern", "power of two", "12"});
  tgt::require_throws<LayoutError>([] { global_local_pattern(1, 8, 3, 1, 1); },
                                   {"global_local_pattern", "power of two", "3"});
  tgt::require_throws<LayoutError>([] { random_pattern(1, 8, 8, -4, 0.5, 1); },
                                   {"random_pattern", "power of two", "-4"});
  // union / intersection of undefined or different layouts
  tgt::require_throws<LayoutError>([] { pattern_union(Layout(), causal_pattern(1, 8, 8, 4)); },
                                   {"pattern_union", "undefined"});
  tgt::require_throws<LayoutError>([] { pattern_intersection(causal_pattern(1, 8, 8, 4), Layout()); },
                                   {"pattern_intersection", "undefined"});
  tgt::require_throws<LayoutError>([] { pattern_intersection(causal_pattern(2, 8, 8, 4), causal_pattern(1, 8, 8, 4)); },
                                   {"pattern_intersection", "[2, 2, 2]", "[1, 2, 2]"});
}

}  // namespace test_patterns
