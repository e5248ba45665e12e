#include "ops/sparse_matmul/row_groups.h"

#include <algorithm>
#include <cstdint>
#include <numeric>

namespace tg::ops {

RowGroupSchedule row_group_schedule(const MatmulPlan& p, std::int64_t g, std::int64_t chunk, GroupAxis axis) {
  RowGroupSchedule s;
  s.g = g;
  s.axis = axis;
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  const bool cols = axis == GroupAxis::Columns;
  // The pairs' shared and own tiles: (x, y) for row groups, (y, x) for column groups.
  const std::vector<std::int32_t>& shared = cols ? p.pair_b : p.pair_a;
  const std::vector<std::int32_t>& own = cols ? p.pair_a : p.pair_b;
  // Output tiles in the order groups are cut from: (b, i, j) for rows (the plan's order),
  // (b, j, i) for columns.
  std::vector<std::int32_t> order(at(p.n_out));
  std::iota(order.begin(), order.end(), 0);
  const auto coord = [&](std::int32_t o, int c) { return p.out_coord[at(3 * static_cast<std::int64_t>(o) + c)]; };
  if (cols) {
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t u, std::int32_t v) {
      if (coord(u, 0) != coord(v, 0)) return coord(u, 0) < coord(v, 0);
      if (coord(u, 2) != coord(v, 2)) return coord(u, 2) < coord(v, 2);
      return coord(u, 1) < coord(v, 1);
    });
  }
  const int line = cols ? 2 : 1;  // the coordinate a group's tiles share besides the batch
  auto same_line = [&](std::int32_t u, std::int32_t v) {
    return coord(u, 0) == coord(v, 0) && coord(u, line) == coord(v, line);
  };
  auto same_list = [&](std::int32_t u, std::int32_t v) {
    const std::int32_t bu = p.pair_begin[at(u)], eu = p.pair_begin[at(u + 1)];
    const std::int32_t bv = p.pair_begin[at(v)], ev = p.pair_begin[at(v + 1)];
    return eu - bu == ev - bv && std::equal(shared.begin() + bu, shared.begin() + eu, shared.begin() + bv);
  };
  std::int32_t slots = 0;
  for (std::int64_t t = 0; t < p.n_out;) {
    const std::int32_t o = order[at(t)];
    std::int64_t end = t + 1;
    while (end < p.n_out && end - t < g && same_line(o, order[at(end)]) && same_list(o, order[at(end)])) ++end;
    const std::int64_t n = end - t;
    auto member = [&](std::int64_t m) { return order[at(t + m)]; };
    const std::int32_t b = p.pair_begin[at(o)];
    const std::int64_t len = p.pair_begin[at(o + 1)] - b;
    const std::int64_t pieces = len > chunk ? (len + chunk - 1) / chunk : 1;
    const auto group = static_cast<std::int32_t>(s.n_groups++);
    for (std::int64_t m = 0; m < g; ++m) s.outs.push_back(m < n ? member(m) : -1);
    s.outs.push_back(static_cast<std::int32_t>(pieces));
    const auto first = static_cast<std::int32_t>(s.n_steps);
    for (std::int64_t q = 0; q < len; ++q) {
      s.steps.push_back(shared[at(b + q)]);
      for (std::int64_t m = 0; m < g; ++m) s.steps.push_back(m < n ? own[at(p.pair_begin[at(member(m))] + q)] : -1);
    }
    s.n_steps += len;
    if (pieces == 1) {
      s.items.insert(s.items.end(), {group, first, first + static_cast<std::int32_t>(len), -1});
    } else {
      for (std::int64_t m = 0; m < n; ++m)
        s.reduce.insert(s.reduce.end(),
                        {member(m), static_cast<std::int32_t>(slots + m * pieces), static_cast<std::int32_t>(pieces)});
      for (std::int64_t q = 0; q < pieces; ++q)
        s.items.insert(s.items.end(), {group, static_cast<std::int32_t>(first + len * q / pieces),
                                       static_cast<std::int32_t>(first + len * (q + 1) / pieces),
                                       static_cast<std::int32_t>(slots + q)});
      slots += static_cast<std::int32_t>(n * pieces);
    }
    s.members += n;
    t = end;
  }
  s.n_items = static_cast<std::int64_t>(s.items.size()) / 4;
  s.n_slots = slots;
  return s;
}

}  // namespace tg::ops
