#include "ops/sparse_matmul/row_groups.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace tg::ops {

RowGroupSchedule row_group_schedule(const MatmulPlan& p, std::int64_t g, std::int64_t chunk) {
  RowGroupSchedule s;
  s.g = g;
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  auto same_row = [&](std::int64_t u, std::int64_t v) {
    return p.out_coord[at(3 * u)] == p.out_coord[at(3 * v)] && p.out_coord[at(3 * u + 1)] == p.out_coord[at(3 * v + 1)];
  };
  auto same_x = [&](std::int64_t u, std::int64_t v) {
    const std::int32_t bu = p.pair_begin[at(u)], eu = p.pair_begin[at(u + 1)];
    const std::int32_t bv = p.pair_begin[at(v)], ev = p.pair_begin[at(v + 1)];
    return eu - bu == ev - bv && std::equal(p.pair_a.begin() + bu, p.pair_a.begin() + eu, p.pair_a.begin() + bv);
  };
  std::int32_t slots = 0;
  for (std::int64_t o = 0; o < p.n_out;) {
    std::int64_t end = o + 1;
    while (end < p.n_out && end - o < g && same_row(o, end) && same_x(o, end)) ++end;
    const std::int64_t n = end - o;
    const std::int32_t b = p.pair_begin[at(o)];
    const std::int64_t len = p.pair_begin[at(o + 1)] - b;
    const std::int64_t pieces = len > chunk ? (len + chunk - 1) / chunk : 1;
    const auto group = static_cast<std::int32_t>(s.n_groups++);
    for (std::int64_t m = 0; m < g; ++m) s.outs.push_back(m < n ? static_cast<std::int32_t>(o + m) : -1);
    s.outs.push_back(static_cast<std::int32_t>(pieces));
    const auto first = static_cast<std::int32_t>(s.n_steps);
    for (std::int64_t q = 0; q < len; ++q) {
      s.steps.push_back(p.pair_a[at(b + q)]);
      for (std::int64_t m = 0; m < g; ++m)
        s.steps.push_back(m < n ? p.pair_b[at(p.pair_begin[at(o + m)] + q)] : -1);
    }
    s.n_steps += len;
    if (pieces == 1) {
      s.items.insert(s.items.end(), {group, first, first + static_cast<std::int32_t>(len), -1});
    } else {
      for (std::int64_t m = 0; m < n; ++m)
        s.reduce.insert(s.reduce.end(), {static_cast<std::int32_t>(o + m),
                                         static_cast<std::int32_t>(slots + m * pieces),
                                         static_cast<std::int32_t>(pieces)});
      for (std::int64_t q = 0; q < pieces; ++q)
        s.items.insert(s.items.end(), {group, static_cast<std::int32_t>(first + len * q / pieces),
                                       static_cast<std::int32_t>(first + len * (q + 1) / pieces),
                                       static_cast<std::int32_t>(slots + q)});
      slots += static_cast<std::int32_t>(n * pieces);
    }
    s.members += n;
    o = end;
  }
  s.n_items = static_cast<std::int64_t>(s.items.size()) / 4;
  s.n_slots = slots;
  return s;
}

ItemPairs pair_items(const RowGroupSchedule& s) {
  ItemPairs out;
  const auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  const std::int64_t w = 1 + s.g;
  // The ids item u reads at step q: column 0 (x) or columns 1.. (the members' y).
  auto same = [&](std::int64_t u, std::int64_t v, int mode) {
    const std::int32_t* iu = &s.items[at(4 * u)];
    const std::int32_t* iv = &s.items[at(4 * v)];
    if (iu[2] - iu[1] != iv[2] - iv[1]) return false;
    for (std::int32_t q = 0; q < iu[2] - iu[1]; ++q) {
      const std::int32_t* ru = &s.steps[at((iu[1] + q) * w)];
      const std::int32_t* rv = &s.steps[at((iv[1] + q) * w)];
      if (mode == 0 ? ru[0] != rv[0] : !std::equal(ru + 1, ru + w, rv + 1)) return false;
    }
    return true;
  };
  auto key = [&](std::int64_t u, int mode) {
    const std::int32_t* it = &s.items[at(4 * u)];
    std::uint64_t h = 1469598103934665603ull ^ static_cast<std::uint64_t>(it[2] - it[1]);
    for (std::int32_t q = it[1]; q < it[2]; ++q)
      for (std::int64_t c = mode == 0 ? 0 : 1; c < (mode == 0 ? 1 : w); ++c)
        h = (h ^ static_cast<std::uint32_t>(s.steps[at(q * w + c)])) * 1099511628211ull;
    return h;
  };
  std::vector<char> paired(at(s.n_items), 0);
  for (const int mode : {1, 0}) {
    std::unordered_map<std::uint64_t, std::vector<std::int64_t>> open;  // unpaired items by key
    for (std::int64_t u = 0; u < s.n_items; ++u) {
      const std::int32_t* it = &s.items[at(4 * u)];
      if (paired[at(u)] || it[2] == it[1]) continue;
      std::vector<std::int64_t>& bucket = open[key(u, mode)];
      const auto match = std::find_if(bucket.begin(), bucket.end(), [&](std::int64_t v) { return same(u, v, mode); });
      if (match == bucket.end()) {
        bucket.push_back(u);
        continue;
      }
      const std::int64_t v = *match;
      bucket.erase(match);
      paired[at(u)] = paired[at(v)] = 1;
      out.pairs.insert(out.pairs.end(), &s.items[at(4 * v)], &s.items[at(4 * v + 4)]);
      out.pairs.insert(out.pairs.end(), it, it + 4);
      out.modes.push_back(mode);
    }
  }
  for (std::int64_t u = 0; u < s.n_items; ++u)
    if (!paired[at(u)]) out.single.insert(out.single.end(), &s.items[at(4 * u)], &s.items[at(4 * u + 4)]);
  return out;
}

}  // namespace tg::ops
