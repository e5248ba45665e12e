// Host tests of the CUDA attention kernels' tile lists (ops/attention/cuda/work_lists.h):
// every list against a pair-by-pair reference of the pattern and causal / window rules.
// Host code only, but compiled with the CUDA backend (tests/CMakeLists.txt).
#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ops/attention/cuda/entry.h"
#include "ops/attention/cuda/work_lists.h"
#include "util.h"

namespace test_attention_lists {

using namespace tg::ops::attn;

namespace {

// A random problem: extents, a block pattern (uniform or variable block sizes), and
// causal / window rules; the vectors ListSpec points into live here.
struct Problem {
  std::int64_t bhq = 1, bhkv = 1, sq = 1, sk = 1;
  std::vector<std::int64_t> q_starts, k_starts;
  std::vector<std::int32_t> q_blk, k_blk;
  std::vector<std::uint8_t> pattern;
  bool causal = false;
  std::int64_t wl = -1, wr = -1;

  ListSpec spec() const {
    return {.bhq = bhq,
            .bhkv = bhkv,
            .sq = sq,
            .sk = sk,
            .pattern = pattern.data(),
            .qb = static_cast<std::int64_t>(q_starts.size()) - 1,
            .kb = static_cast<std::int64_t>(k_starts.size()) - 1,
            .q_starts = &q_starts,
            .k_starts = &k_starts,
            .q_blk = &q_blk,
            .k_blk = &k_blk,
            .causal = causal,
            .wl = wl,
            .wr = wr};
  }

  bool geometric(std::int64_t i, std::int64_t j) const {
    if (causal && j > i) return false;
    if (wl >= 0 && j < i - wl) return false;
    if (wr >= 0 && j > i + wr) return false;
    return true;
  }
  bool on(std::int64_t bh, std::int64_t i, std::int64_t j) const {
    const std::int64_t qb = static_cast<std::int64_t>(q_starts.size()) - 1;
    const std::int64_t kb = static_cast<std::int64_t>(k_starts.size()) - 1;
    return pattern[static_cast<std::size_t>((bh * qb + q_blk[static_cast<std::size_t>(i)]) * kb +
                                            k_blk[static_cast<std::size_t>(j)])] != 0;
  }
};

// Block boundaries of n positions: equal blocks of `size` (the last one short), or random
// sizes in [1, 2 size] when `variable`.
std::vector<std::int64_t> starts_of(std::int64_t n, std::int64_t size, bool variable, std::mt19937_64& rng) {
  std::vector<std::int64_t> s{0};
  while (s.back() < n) {
    const std::int64_t step = variable ? 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(2 * size))
                                       : size;
    s.push_back(std::min(n, s.back() + step));
  }
  return s;
}

Problem random_problem(std::mt19937_64& rng) {
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi - lo + 1));
  };
  Problem p;
  p.bhkv = pick(1, 2);
  p.bhq = p.bhkv * pick(1, 3);
  p.sq = pick(1, 420);
  p.sk = pick(1, 420);
  const std::int64_t sizes[] = {16, 32, 64, 128};
  const bool variable = rng() % 4 == 0;
  p.q_starts = starts_of(p.sq, sizes[rng() % 4], variable, rng);
  p.k_starts = starts_of(p.sk, sizes[rng() % 4], variable, rng);
  p.q_blk = block_of_positions(p.q_starts);
  p.k_blk = block_of_positions(p.k_starts);
  const std::int64_t qb = static_cast<std::int64_t>(p.q_starts.size()) - 1;
  const std::int64_t kb = static_cast<std::int64_t>(p.k_starts.size()) - 1;
  const int percent = static_cast<int>(pick(0, 4)) * 25;  // empty to full patterns
  p.pattern.resize(static_cast<std::size_t>(p.bhq * qb * kb));
  for (auto& x : p.pattern) x = static_cast<int>(rng() % 100) < percent ? 1 : 0;
  p.causal = rng() % 2 == 0;
  p.wl = rng() % 3 == 0 ? pick(0, 150) : -1;
  p.wr = rng() % 4 == 0 ? pick(0, 150) : -1;
  return p;
}

// The expected entries of row list (bh, m) for tiles of bm x bn, by every pair.
std::vector<std::int32_t> expected_row(const Problem& p, std::int64_t bh, std::int64_t m, int bm, int bn) {
  std::vector<std::int32_t> out;
  const std::int64_t i0 = m * bm, i1 = std::min(p.sq, i0 + bm);
  for (std::int64_t j0 = 0; j0 < p.sk; j0 += bn) {
    const std::int64_t j1 = std::min(p.sk, j0 + bn);
    bool any = false, every_on = true, every_geo = true;
    for (std::int64_t i = i0; i < i1; ++i)
      for (std::int64_t j = j0; j < j1; ++j) {
        const bool on = p.on(bh, i, j), geo = p.geometric(i, j);
        any = any || (on && geo);
        every_on = every_on && on;
        every_geo = every_geo && geo;
      }
    if (!any) continue;
    int flags = 0;
    if (!every_on || j1 - j0 < bn) flags |= kCheckPattern;
    if (!every_geo) flags |= kCheckGeometry;
    out.push_back(static_cast<std::int32_t>(((j0 / bn) << kFlagBits) | flags));
  }
  return out;
}

std::vector<std::int32_t> list_of(const HostList& l, std::int64_t item) {
  return {l.entries.begin() + l.off[static_cast<std::size_t>(item)],
          l.entries.begin() + l.off[static_cast<std::size_t>(item) + 1]};
}

// `order` is a permutation of the items in bands of rows (row = item / per_group): band k
// holds rows [k r, (k + 1) r) with r = ceil(band.items / per_group) within [1, max_rows],
// the last band every row from its first on, and from row t on, t the first of the last
// rows that hold last_items items (t within [0, the last band's first row]), the band of
// row t; bands ascending, the longest lists first within a band, ties in item order.
void check_order(const HostList& l, std::int64_t per_group, LaunchBand lb) {
  const std::size_t items = l.off.size() - 1;
  REQUIRE(l.order.size() == items);
  std::vector<std::int32_t> sorted = l.order;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t x = 0; x < items; ++x) REQUIRE(sorted[x] == static_cast<std::int32_t>(x));
  const std::int64_t rows_a_band = std::min(std::max<std::int64_t>(1, lb.max_rows),
                                            std::max<std::int64_t>(1, (lb.items + per_group - 1) / per_group));
  const std::int64_t rows = static_cast<std::int64_t>(items) / per_group;
  const std::int64_t bands = std::max<std::int64_t>(1, rows / rows_a_band);
  const std::int64_t t =
      std::clamp<std::int64_t>(rows - (lb.last_items + per_group - 1) / per_group, 0, (bands - 1) * rows_a_band);
  auto band = [&](std::int32_t x) { return std::min(t, x / per_group) / rows_a_band; };
  auto len = [&](std::int32_t x) {
    return l.off[static_cast<std::size_t>(x) + 1] - l.off[static_cast<std::size_t>(x)];
  };
  for (std::size_t x = 1; x < items; ++x) {
    const std::int32_t a = l.order[x - 1], b = l.order[x];
    REQUIRE(band(a) <= band(b));
    if (band(a) == band(b)) {
      REQUIRE(len(a) >= len(b));
      if (len(a) == len(b)) REQUIRE(a < b);
    }
  }
}

}  // namespace

TEST_CASE("attention tile lists: every tile shape against a pair-by-pair reference", "[ops][attention]") {
  // the kernels' tile shapes (forward rows x keys, kv pass queries x keys) and odd ones
  const int shapes[][2] = {{128, 64}, {64, 64}, {128, 128}, {192, 128}, {64, 128}, {32, 128}, {16, 16}, {48, 80}};
  std::mt19937_64 rng(20261205);
  int with_entries = 0, with_geometry = 0, with_pattern = 0, clean = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const Problem p = random_problem(rng);
    const ListSpec s = p.spec();
    for (const auto& shape : shapes) {
      const int bm = shape[0], bn = shape[1];
      INFO("trial " << trial << ": sq " << p.sq << ", sk " << p.sk << ", bhq " << p.bhq << ", bhkv " << p.bhkv
                    << ", causal " << p.causal << ", window " << p.wl << " / " << p.wr << ", tiles " << bm << " x "
                    << bn);
      const HostList rows = build_row_lists(s, bm, bn);
      const std::int64_t num_m = (p.sq + bm - 1) / bm, num_n = (p.sk + bn - 1) / bn;
      REQUIRE(rows.num_m == num_m);
      REQUIRE(rows.num_n == num_n);
      REQUIRE(rows.off.size() == static_cast<std::size_t>(p.bhq * num_m + 1));
      for (std::int64_t bh = 0; bh < p.bhq; ++bh)
        for (std::int64_t m = 0; m < num_m; ++m) {
          const auto got = list_of(rows, bh * num_m + m), want = expected_row(p, bh, m, bm, bn);
          REQUIRE(got == want);
          for (std::int32_t e : got) {
            ++with_entries;
            if (e & kCheckGeometry) ++with_geometry;
            if (e & kCheckPattern) ++with_pattern;
            if ((e & ((1 << kFlagBits) - 1)) == 0) ++clean;
          }
        }
      // the launch order: one row a band (the default), bands of several rows, one band
      for (const LaunchBand band : {LaunchBand{}, LaunchBand{3 * num_m - 1, 1000}, LaunchBand{std::int64_t{1} << 30, 2},
                                    LaunchBand{std::int64_t{1} << 30, 1000}}) {
        INFO("band of " << band.items << " items, at most " << band.max_rows << " rows");
        check_order(build_row_lists(s, bm, bn, band), num_m, band);
      }
      check_order(rows, num_m, {});

      // the column lists: per (kv row, key tile), the row entries holding that tile, bh then
      // m ascending, as ((bh % group) · num_m + m) with the row entry's flags
      const HostList cols = build_col_lists(rows, p.bhq, p.bhkv);
      const std::int64_t group = p.bhq / p.bhkv;
      REQUIRE(cols.off.size() == static_cast<std::size_t>(p.bhkv * num_n + 1));
      for (std::int64_t kv = 0; kv < p.bhkv; ++kv)
        for (std::int64_t n = 0; n < num_n; ++n) {
          std::vector<std::int32_t> want;
          for (std::int64_t bh = kv * group; bh < (kv + 1) * group; ++bh)
            for (std::int64_t m = 0; m < num_m; ++m)
              for (std::int32_t e : list_of(rows, bh * num_m + m))
                if ((e >> kFlagBits) == n)
                  want.push_back(static_cast<std::int32_t>((((bh % group) * num_m + m) << kFlagBits) |
                                                           (e & ((1 << kFlagBits) - 1))));
          REQUIRE(list_of(cols, kv * num_n + n) == want);
        }
      check_order(cols, num_n, {});
      check_order(build_col_lists(rows, p.bhq, p.bhkv, {2 * num_n + 1, 1000}), num_n, {2 * num_n + 1, 1000});
      check_order(build_col_lists(rows, p.bhq, p.bhkv, {.last_items = 3 * num_n - 2}), num_n,
                  {.last_items = 3 * num_n - 2});
    }
  }
  // the random problems reached every kind of entry
  CHECK(with_entries > 1000);
  CHECK(with_geometry > 0);
  CHECK(with_pattern > 0);
  CHECK(clean > 0);
}

TEST_CASE("attention launch order: bands of rows, longest lists first", "[ops][attention]") {
  // 5 rows of 3 items; list lengths by item:
  //   row 0: 1 4 2   row 1: 3 3 0   row 2: 5 1 1   row 3: 2 6 2   row 4: 0 0 7
  const std::vector<std::int32_t> len = {1, 4, 2, 3, 3, 0, 5, 1, 1, 2, 6, 2, 0, 0, 7};
  std::vector<std::int32_t> off(1, 0);
  for (std::int32_t n : len) off.push_back(off.back() + n);
  // one row a band: the order by row
  CHECK(item_order(off, 3, {}) == std::vector<std::int32_t>{1, 2, 0, 3, 4, 5, 6, 7, 8, 10, 9, 11, 14, 12, 13});
  CHECK(item_order(off, 3, {3, 1000}) == item_order(off, 3, {}));
  CHECK(item_order(off, 3, {1000, 1}) == item_order(off, 3, {}));
  // at least 4 items a band: two rows; the fifth row joins the last band (rows 2-4)
  const std::vector<std::int32_t> two_rows{1, 3, 4, 2, 0, 5, 14, 10, 6, 9, 11, 7, 8, 12, 13};
  CHECK(item_order(off, 3, {4, 1000}) == two_rows);
  // as many items as there are, at most two rows: the same bands
  CHECK(item_order(off, 3, {1000, 2}) == two_rows);
  // one band: longest first over every row
  CHECK(item_order(off, 3, {1000, 1000}) ==
        std::vector<std::int32_t>{14, 10, 6, 1, 3, 4, 2, 9, 11, 0, 7, 8, 5, 12, 13});
  // one row a band but the last two rows (at least 4 items) together
  CHECK(item_order(off, 3, {.last_items = 4}) ==
        std::vector<std::int32_t>{1, 2, 0, 3, 4, 5, 6, 7, 8, 14, 10, 9, 11, 12, 13});
  // bands of two rows: a last band of 7 items takes the rows it would have anyway
  CHECK(item_order(off, 3, {4, 1000, 7}) == two_rows);
  // no items
  CHECK(item_order(std::vector<std::int32_t>{0}, 3, {4, 1000}).empty());
}

TEST_CASE("attention launch order: the default bands on an H100", "[ops][attention]") {
  // 132 SMs, 50 MiB of L2: 8 waves of items; at S 4096 K and V take 2 MiB a row at D 128
  // (12 rows in 25 MiB), 1 MiB at D 64 (25 rows); at least one row however long
  const std::int64_t l2 = std::int64_t{50} << 20;
  const LaunchBand d128 = forward_band(132, l2, 4096, 128, 128), d64 = forward_band(132, l2, 4096, 64, 64);
  CHECK(d128.items == 1056);
  CHECK(d128.max_rows == 12);
  CHECK(d128.last_items == 0);
  CHECK(d64.max_rows == 25);
  CHECK(forward_band(132, l2, std::int64_t{1} << 24, 128, 128).max_rows == 1);
  // the kv passes: one row a band, a last band of two waves
  const LaunchBand tail = kv_tail_band(132);
  CHECK(tail.items == 0);
  CHECK(tail.max_rows == 1);
  CHECK(tail.last_items == 264);
}

}  // namespace test_attention_lists
