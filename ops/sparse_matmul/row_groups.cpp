#include "ops/sparse_matmul/row_groups.h"

#include <algorithm>
#include <cstdint>

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

}  // namespace tg::ops
