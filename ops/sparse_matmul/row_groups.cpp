#include "ops/sparse_matmul/row_groups.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>

#include "runtime/error.h"

namespace tg::ops {

namespace {

/// Partners are looked for among this many later segments of a class, which bounds the
/// host's work on long layouts (the bench's 32 block-rows a batch are all in reach).
constexpr std::size_t kPartnerWindow = 64;

/// The number of k-blocks two increasing k lists share.
std::int64_t common_k(const std::int32_t* a, std::int64_t na, const std::int32_t* b, std::int64_t nb) {
  std::int64_t both = 0;
  for (std::int64_t u = 0, v = 0; u < na && v < nb;) {
    if (a[u] < b[v]) {
      ++u;
    } else if (b[v] < a[u]) {
      ++v;
    } else {
      ++both, ++u, ++v;
    }
  }
  return both;
}

/// Forms the groups of two lines, then those of one, in two passes. First, segments of one
/// batch and one k list (their members' own tiles are the same for the same cross
/// coordinate) are classes; in a class, each segment in turn is paired with the later one
/// sharing the most cross coordinates among its unpaired tiles, then with the next such one
/// among what is left of it, and so on. Then segments of one batch with different k lists
/// pair the same way on what the first pass left, over the union of their lists (a line
/// without a shared tile at a step multiplies zeros), the partner chosen by the steps its
/// groups save: the two lines' own steps against kPairStep a step both have and kLoneStep a
/// step one has; a pair saving none is not made. Costs, in steps of the 128 x 256 tile: a
/// group of two lines 1 whatever its member count, a group of one line about 3/4. So the
/// shared tiles go in groups of g, which spare each line one group of one line, and a last
/// few (fewer than g) only where they spare both lines one (equal rows of fewer than g
/// tiles). What is left of each segment is cut in groups of one line of up to g, in order.
/// A segment's groups of two lines come first, where it stands; `add` takes (line 0
/// members, line 1 members or null, count), members as indices into order (-1 past a
/// partner's last tile).
template <class Add>
void pair_segments(const MatmulPlan& p, const std::vector<std::int32_t>& order,
                   const std::vector<std::array<std::int64_t, 2>>& segs, std::int64_t g, int cross, Add&& add) {
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  const auto coord = [&](std::int64_t t, int c) {
    return p.out_coord[at(3 * static_cast<std::int64_t>(order[at(t)]) + c)];
  };
  // a segment's k list, as [begin, end) of the plan's pairs (its first tile's: a segment's
  // tiles share it)
  const auto list_of = [&](std::size_t i) {
    const std::int32_t o = order[at(segs[i][0])];
    return std::array<std::int64_t, 2>{p.pair_begin[at(o)], p.pair_begin[at(o + 1)]};
  };
  std::map<std::vector<std::int32_t>, std::vector<std::size_t>> classes;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const auto [b, e] = list_of(i);
    std::vector<std::int32_t> key{coord(segs[i][0], 0)};
    key.insert(key.end(), p.pair_k.begin() + b, p.pair_k.begin() + e);
    classes[key].push_back(i);
  }
  std::vector<std::size_t> class_of(segs.size());
  std::size_t n_classes = 0;
  for (const auto& [key, members] : classes) {
    for (const std::size_t i : members) class_of[i] = n_classes;
    ++n_classes;
  }
  std::vector<std::vector<std::int64_t>> left(segs.size());  // unpaired tiles, in cross order
  for (std::size_t i = 0; i < segs.size(); ++i)
    for (std::int64_t t = segs[i][0]; t < segs[i][1]; ++t) left[i].push_back(t);
  std::vector<std::vector<std::int64_t>> lines0(segs.size()), lines1(segs.size());  // paired, g at a time
  // The tiles of a and b at their shared cross coordinates, in order.
  auto shared = [&](const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b,
                    std::vector<std::int64_t>* ta, std::vector<std::int64_t>* tb) {
    std::int64_t n = 0;
    for (std::size_t u = 0, v = 0; u < a.size() && v < b.size();) {
      const std::int32_t cu = coord(a[u], cross), cv = coord(b[v], cross);
      if (cu < cv) {
        ++u;
      } else if (cv < cu) {
        ++v;
      } else {
        if (ta != nullptr) {
          ta->push_back(a[u]);
          tb->push_back(b[v]);
        }
        ++n, ++u, ++v;
      }
    }
    return n;
  };
  // How many of n shared cross coordinates a pair of segments with na and nb unpaired
  // tiles takes: whole groups of g, and the rest where it spares both a group of one line
  // (each keeps, after the full groups, a partial group of at most that many tiles).
  auto taken = [&](std::int64_t n, std::int64_t na, std::int64_t nb) {
    const std::int64_t full = n / g * g, rest = n - full, ma = (na - full) % g, mb = (nb - full) % g;
    return rest > 0 && ma > 0 && ma <= rest && mb > 0 && mb <= rest ? n : full;
  };
  // Pairs segment a with b on `take` of their shared cross coordinates.
  auto pair_with = [&](std::size_t a, std::size_t b, std::int64_t take) {
    std::vector<std::int64_t> ta, tb;
    shared(left[a], left[b], &ta, &tb);
    ta.resize(at(take));
    tb.resize(ta.size());
    auto drop = [](std::vector<std::int64_t>& from, const std::vector<std::int64_t>& gone) {
      std::vector<std::int64_t> kept;
      std::set_difference(from.begin(), from.end(), gone.begin(), gone.end(), std::back_inserter(kept));
      from = std::move(kept);
    };
    drop(left[a], ta);
    drop(left[b], tb);
    // (each partner's tiles start a new group: pad the last group of the previous one)
    while (lines0[a].size() % at(g) != 0) {
      lines0[a].push_back(-1);
      lines1[a].push_back(-1);
    }
    lines0[a].insert(lines0[a].end(), ta.begin(), ta.end());
    lines1[a].insert(lines1[a].end(), tb.begin(), tb.end());
  };
  // Each segment of `members` in turn pairs with the later one (within the window) that
  // `gain` (a, b, shared cross coordinates, how many of them a pair takes) rates highest
  // above 0 (the first of equals), again and again, stopping where that one would take none.
  auto pair_all = [&](const std::vector<std::size_t>& members, auto&& gain) {
    for (std::size_t ai = 0; ai < members.size(); ++ai) {
      const std::size_t a = members[ai];
      while (!left[a].empty()) {
        double best = 0;
        std::int64_t best_take = 0;
        std::size_t partner = a;
        for (std::size_t bi = ai + 1; bi < members.size() && bi <= ai + kPartnerWindow; ++bi) {
          const std::size_t b = members[bi];
          const std::int64_t n = shared(left[a], left[b], nullptr, nullptr);
          if (n == 0) continue;
          const std::int64_t take = taken(n, std::ssize(left[a]), std::ssize(left[b]));
          const double v = gain(a, b, n, take);
          if (v > best) {
            best = v;
            best_take = take;
            partner = b;
          }
        }
        if (partner == a || best_take == 0) break;
        pair_with(a, partner, best_take);
      }
    }
  };
  // Equal lists: the most shared cross coordinates.
  for (const auto& [key, members] : classes)
    pair_all(members, [](std::size_t, std::size_t, std::int64_t n, std::int64_t) { return static_cast<double>(n); });
  // Different lists, on what is left (the first pass paired those of one class): the steps a
  // group saves, in one-line steps, where a pair takes some.
  std::map<std::int32_t, std::vector<std::size_t>> batches;
  for (std::size_t i = 0; i < segs.size(); ++i) batches[coord(segs[i][0], 0)].push_back(i);
  for (const auto& [batch, members] : batches)
    pair_all(members, [&](std::size_t a, std::size_t b, std::int64_t, std::int64_t take) {
      if (class_of[a] == class_of[b] || take == 0) return 0.0;
      const auto [ba, ea] = list_of(a);
      const auto [bb, eb] = list_of(b);
      const std::int64_t both = common_k(p.pair_k.data() + ba, ea - ba, p.pair_k.data() + bb, eb - bb);
      const std::int64_t lone = (ea - ba) + (eb - bb) - 2 * both;
      const double per_group = static_cast<double>(2 * both + lone) - kPairStep * static_cast<double>(both) -
                               kLoneStep * static_cast<double>(lone);
      return per_group * static_cast<double>((take + g - 1) / g);
    });
  for (std::size_t i = 0; i < segs.size(); ++i) {
    for (std::size_t t = 0; t < lines0[i].size(); t += at(g))
      add(&lines0[i][t], &lines1[i][t], std::min<std::int64_t>(g, static_cast<std::int64_t>(lines0[i].size() - t)));
    for (std::size_t t = 0; t < left[i].size(); t += at(g))
      add(&left[i][t], nullptr, std::min<std::int64_t>(g, static_cast<std::int64_t>(left[i].size() - t)));
  }
}

}  // namespace

RowGroupSchedule row_group_schedule(const MatmulPlan& p, std::int64_t g, std::int64_t chunk, GroupAxis axis,
                                    std::int64_t gm, bool counts_only) {
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

  // Groups, each gm lines of up to g member slots, a member an index into order (-1: none),
  // members packed from slot 0, a second line only in groups of two lines.
  std::vector<std::vector<std::int64_t>> groups;
  auto add_group = [&](const std::int64_t* l0, const std::int64_t* l1, std::int64_t n) {
    std::vector<std::int64_t> gr(static_cast<std::size_t>(gm * g), -1);
    for (std::int64_t m = 0; m < n; ++m) {
      gr[at(m)] = l0[m];
      if (l1 != nullptr) gr[at(g + m)] = l1[m];
    }
    groups.push_back(std::move(gr));
  };
  // Segments: maximal runs of tiles of one line with equal lists, as [first, end) of order.
  std::vector<std::array<std::int64_t, 2>> segs;
  for (std::int64_t t = 0; t < p.n_out;) {
    std::int64_t end = t + 1;
    while (end < p.n_out && same_line(order[at(t)], order[at(end)]) && same_list(order[at(t)], order[at(end)])) ++end;
    segs.push_back({t, end});
    t = end;
  }
  if (gm < 2) {
    for (const auto& sg : segs)
      for (std::int64_t t = sg[0]; t < sg[1]; t += g) {
        std::vector<std::int64_t> l0(at(std::min(g, sg[1] - t)));
        std::iota(l0.begin(), l0.end(), t);
        add_group(l0.data(), nullptr, static_cast<std::int64_t>(l0.size()));
      }
  } else {
    pair_segments(p, order, segs, g, cross, add_group);
  }

  std::int32_t slots = 0;
  for (const auto& gr : groups) {
    std::int64_t n = 0;  // members a line (equal in both)
    while (n < g && gr[at(n)] >= 0) ++n;
    const std::int64_t n_lines = gm > 1 && gr[at(g)] >= 0 ? 2 : 1;
    auto member = [&](std::int64_t i, std::int64_t m) -> std::int32_t {
      const std::int64_t t = gr[at(i * g + m)];
      return t < 0 ? -1 : order[at(t)];
    };
    // The group's steps: the union of its lines' k lists (a line's members share one), each
    // step as the index of its pair in each line's list (-1: the line has none there).
    std::vector<std::array<std::int32_t, 2>> idx;
    {
      const std::int32_t o0 = member(0, 0), o1 = n_lines == 2 ? member(1, 0) : o0;
      const std::int32_t b0 = p.pair_begin[at(o0)], e0 = p.pair_begin[at(o0 + 1)];
      const std::int32_t b1 = p.pair_begin[at(o1)], e1 = p.pair_begin[at(o1 + 1)];
      constexpr std::int32_t kEnd = std::numeric_limits<std::int32_t>::max();
      for (std::int32_t u = b0, v = b1; u < e0 || v < e1;) {
        const std::int32_t ku = u < e0 ? p.pair_k[at(u)] : kEnd, kv = v < e1 ? p.pair_k[at(v)] : kEnd;
        idx.push_back({ku <= kv ? u - b0 : -1, kv <= ku ? v - b1 : -1});
        if (ku <= kv) ++u;
        if (kv <= ku) ++v;
      }
    }
    const auto len = static_cast<std::int64_t>(idx.size());
    const std::int64_t pieces = len > chunk ? (len + chunk - 1) / chunk : 1;
    const auto group = static_cast<std::int32_t>(s.n_groups++);
    if (group >= kSitsOut) TG_THROW(ShapeError, "matmul: more than 2^30 groups of output tiles");
    // steps one line sits out
    const auto lone = std::count_if(idx.begin(), idx.end(), [](const auto& q) { return q[0] < 0 || q[1] < 0; });
    s.members += n_lines * n;
    if (n_lines == 2) {
      s.paired_steps += len;
      s.lone_steps += lone;
    }
    // workspace slots of a split group: one per member and piece
    const auto split_slots = static_cast<std::int32_t>(pieces > 1 ? ((n_lines - 1) * g + n) * pieces : 0);
    if (counts_only) {
      s.n_steps += len;
      s.n_items += pieces;
      slots += split_slots;
      continue;
    }
    // the items' first entry
    const std::int32_t tag = gm == 2 && n_lines == 1 ? -1 - group : lone > 0 ? group + kSitsOut : group;
    for (std::int64_t i = 0; i < gm; ++i)
      for (std::int64_t m = 0; m < g; ++m) s.outs.push_back(member(i, m));
    s.outs.push_back(static_cast<std::int32_t>(pieces));
    const auto first = static_cast<std::int32_t>(s.n_steps);
    for (const auto& q : idx) {
      for (std::int64_t i = 0; i < gm; ++i)
        s.steps.push_back(i < n_lines && q[at(i)] >= 0 ? shared[at(p.pair_begin[at(member(i, 0))] + q[at(i)])] : -1);
      // a slot's own tile at a step is the same for both lines (the step's k, the slot's
      // cross coordinate): taken from a line that has the step
      const std::int64_t li = q[0] >= 0 ? 0 : 1;
      for (std::int64_t m = 0; m < g; ++m)
        s.steps.push_back(m < n ? own[at(p.pair_begin[at(member(li, m))] + q[at(li)])] : -1);
    }
    s.n_steps += len;
    if (pieces == 1) {
      s.items.insert(s.items.end(), {tag, first, first + static_cast<std::int32_t>(len), -1});
    } else {
      for (std::int64_t i = 0; i < n_lines; ++i)
        for (std::int64_t m = 0; m < n; ++m)
          s.reduce.insert(s.reduce.end(), {member(i, m), static_cast<std::int32_t>(slots + (i * g + m) * pieces),
                                           static_cast<std::int32_t>(pieces)});
      for (std::int64_t q = 0; q < pieces; ++q)
        s.items.insert(s.items.end(), {tag, static_cast<std::int32_t>(first + len * q / pieces),
                                       static_cast<std::int32_t>(first + len * (q + 1) / pieces),
                                       static_cast<std::int32_t>(slots + q)});
      slots += split_slots;
    }
  }
  if (!counts_only) s.n_items = static_cast<std::int64_t>(s.items.size()) / 4;
  s.n_slots = slots;
  return s;
}

}  // namespace tg::ops
