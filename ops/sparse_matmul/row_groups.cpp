#include "ops/sparse_matmul/row_groups.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <numeric>

namespace tg::ops {

RowGroupSchedule row_group_schedule(const MatmulPlan& p, std::int64_t g, std::int64_t chunk, GroupAxis axis,
                                    std::int64_t gm) {
  RowGroupSchedule s;
  s.g = g;
  s.gm = gm;
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
  const int line = cols ? 2 : 1, cross = cols ? 1 : 2;  // the coordinate a line's tiles share, the other
  if (cols) {
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t u, std::int32_t v) {
      if (coord(u, 0) != coord(v, 0)) return coord(u, 0) < coord(v, 0);
      if (coord(u, 2) != coord(v, 2)) return coord(u, 2) < coord(v, 2);
      return coord(u, 1) < coord(v, 1);
    });
  }
  auto same_line = [&](std::int32_t u, std::int32_t v) {
    return coord(u, 0) == coord(v, 0) && coord(u, line) == coord(v, line);
  };
  auto same_list = [&](std::int32_t u, std::int32_t v) {
    const std::int32_t bu = p.pair_begin[at(u)], eu = p.pair_begin[at(u + 1)];
    const std::int32_t bv = p.pair_begin[at(v)], ev = p.pair_begin[at(v + 1)];
    return eu - bu == ev - bv && std::equal(shared.begin() + bu, shared.begin() + eu, shared.begin() + bv);
  };

  // Line groups: runs of at most g tiles of one line with equal lists, as [first, end) of order.
  std::vector<std::array<std::int64_t, 2>> lines;
  for (std::int64_t t = 0; t < p.n_out;) {
    std::int64_t end = t + 1;
    while (end < p.n_out && end - t < g && same_line(order[at(t)], order[at(end)]) &&
           same_list(order[at(t)], order[at(end)]))
      ++end;
    lines.push_back({t, end});
    t = end;
  }
  // Groups: one line each, or two lines of one batch whose members have the same cross
  // coordinates (slot by slot) and the same k list, so that their own tiles are the same
  // (y(k, j) of a row group depends on k and j alone): the second line is taken from a
  // later one waiting with an equal key.
  std::vector<std::array<std::int64_t, 2>> groups;  // line indices, -1: none
  std::map<std::vector<std::int32_t>, std::size_t> waiting;
  for (std::size_t l = 0; l < lines.size(); ++l) {
    if (gm < 2) {
      groups.push_back({static_cast<std::int64_t>(l), -1});
      continue;
    }
    const std::int32_t o = order[at(lines[l][0])];
    std::vector<std::int32_t> key{coord(o, 0), static_cast<std::int32_t>(lines[l][1] - lines[l][0])};
    for (std::int64_t t = lines[l][0]; t < lines[l][1]; ++t) key.push_back(coord(order[at(t)], cross));
    key.insert(key.end(), p.pair_k.begin() + p.pair_begin[at(o)], p.pair_k.begin() + p.pair_begin[at(o + 1)]);
    const auto it = waiting.find(key);
    if (it != waiting.end()) {
      groups[it->second][1] = static_cast<std::int64_t>(l);
      waiting.erase(it);
    } else {
      waiting.emplace(std::move(key), groups.size());
      groups.push_back({static_cast<std::int64_t>(l), -1});
    }
  }

  std::int32_t slots = 0;
  for (const auto& gr : groups) {
    const std::array<std::int64_t, 2>& first_line = lines[at(gr[0])];
    const std::int64_t n = first_line[1] - first_line[0];  // members a line (equal in both)
    const std::int64_t n_lines = gr[1] >= 0 ? 2 : 1;
    auto member = [&](std::int64_t i, std::int64_t m) -> std::int32_t {
      return i < n_lines && m < n ? order[at(lines[at(gr[i])][0] + m)] : -1;
    };
    const std::int32_t o = member(0, 0);
    const std::int32_t b = p.pair_begin[at(o)];
    const std::int64_t len = p.pair_begin[at(o + 1)] - b;
    const std::int64_t pieces = len > chunk ? (len + chunk - 1) / chunk : 1;
    const auto group = static_cast<std::int32_t>(s.n_groups++);
    for (std::int64_t i = 0; i < gm; ++i)
      for (std::int64_t m = 0; m < g; ++m) s.outs.push_back(member(i, m));
    s.outs.push_back(static_cast<std::int32_t>(pieces));
    const auto first = static_cast<std::int32_t>(s.n_steps);
    for (std::int64_t q = 0; q < len; ++q) {
      for (std::int64_t i = 0; i < gm; ++i)
        s.steps.push_back(i < n_lines ? shared[at(p.pair_begin[at(member(i, 0))] + q)] : -1);
      for (std::int64_t m = 0; m < g; ++m) s.steps.push_back(m < n ? own[at(p.pair_begin[at(member(0, m))] + q)] : -1);
    }
    s.n_steps += len;
    if (pieces == 1) {
      s.items.insert(s.items.end(), {group, first, first + static_cast<std::int32_t>(len), -1});
    } else {
      for (std::int64_t i = 0; i < n_lines; ++i)
        for (std::int64_t m = 0; m < n; ++m)
          s.reduce.insert(s.reduce.end(), {member(i, m), static_cast<std::int32_t>(slots + (i * g + m) * pieces),
                                           static_cast<std::int32_t>(pieces)});
      for (std::int64_t q = 0; q < pieces; ++q)
        s.items.insert(s.items.end(), {group, static_cast<std::int32_t>(first + len * q / pieces),
                                       static_cast<std::int32_t>(first + len * (q + 1) / pieces),
                                       static_cast<std::int32_t>(slots + q)});
      slots += static_cast<std::int32_t>(((n_lines - 1) * g + n) * pieces);
    }
    s.members += n_lines * n;
  }
  s.n_items = static_cast<std::int64_t>(s.items.size()) / 4;
  s.n_slots = slots;
  return s;
}

}  // namespace tg::ops
