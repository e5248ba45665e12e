#include "ops/sparse_matmul/queues.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>

#include "runtime/error.h"

namespace tg::ops {

QueueDeal deal_queues(const std::vector<double>& cost, std::int64_t n_queues) {
  if (n_queues < 1) TG_THROW(Error, "matmul: deal_queues: n_queues must be >= 1, got ", n_queues);
  const auto n = static_cast<std::int64_t>(cost.size());
  const double total = std::accumulate(cost.begin(), cost.end(), 0.0);
  // the first item of the tail: the items from it on cost at most kLongestFirstTail of the total
  std::int64_t tail = n;
  for (double left = 0.0; tail > 0 && left + cost[static_cast<std::size_t>(tail - 1)] <= kLongestFirstTail * total;)
    left += cost[static_cast<std::size_t>(--tail)];
  std::vector<std::int32_t> seq(static_cast<std::size_t>(n));
  std::iota(seq.begin(), seq.end(), 0);
  std::stable_sort(seq.begin() + tail, seq.end(), [&](std::int32_t a, std::int32_t b) {
    return cost[static_cast<std::size_t>(a)] > cost[static_cast<std::size_t>(b)];
  });
  // least loaded queue first, then the lowest index
  using Load = std::pair<double, std::int64_t>;
  std::priority_queue<Load, std::vector<Load>, std::greater<>> free;
  for (std::int64_t q = 0; q < n_queues; ++q) free.push({0.0, q});
  std::vector<std::int64_t> queue_of(static_cast<std::size_t>(n));
  std::vector<std::int32_t> count(static_cast<std::size_t>(n_queues), 0);
  for (const std::int32_t i : seq) {
    const auto [load, q] = free.top();
    free.pop();
    queue_of[static_cast<std::size_t>(i)] = q;
    ++count[static_cast<std::size_t>(q)];
    free.push({load + cost[static_cast<std::size_t>(i)], q});
  }
  QueueDeal d;
  d.off.assign(static_cast<std::size_t>(n_queues + 1), 0);
  for (std::int64_t q = 0; q < n_queues; ++q)
    d.off[static_cast<std::size_t>(q + 1)] = d.off[static_cast<std::size_t>(q)] + count[static_cast<std::size_t>(q)];
  d.order.resize(static_cast<std::size_t>(n));
  std::vector<std::int32_t> at(d.off.begin(), d.off.end() - 1);
  for (const std::int32_t i : seq)
    d.order[static_cast<std::size_t>(at[static_cast<std::size_t>(queue_of[static_cast<std::size_t>(i)])]++)] = i;
  return d;
}

std::vector<double> item_costs(const RowGroupSchedule& s, double pair_step, double lone_step, double per_item) {
  const std::int64_t width = s.gm + s.g;
  std::vector<double> cost(static_cast<std::size_t>(s.n_items));
  for (std::int64_t i = 0; i < s.n_items; ++i) {
    const std::int32_t* it = &s.items[static_cast<std::size_t>(4 * i)];
    // a group of two lines (row_groups.h: one-line groups of such a schedule carry -1 - group)
    const bool two = s.gm == 2 && it[0] >= 0;
    double c = per_item;
    for (std::int32_t t = it[1]; t < it[2]; ++t) {
      const std::int32_t* st = &s.steps[static_cast<std::size_t>(t) * static_cast<std::size_t>(width)];
      c += !two ? 1.0 : st[0] < 0 || st[1] < 0 ? lone_step : pair_step;
    }
    cost[static_cast<std::size_t>(i)] = c;
  }
  return cost;
}

double deal_makespan(const QueueDeal& d, const std::vector<double>& cost) {
  double most = 0.0;
  for (std::size_t q = 0; q + 1 < d.off.size(); ++q) {
    double load = 0.0;
    for (std::int32_t j = d.off[q]; j < d.off[q + 1]; ++j)
      load += cost[static_cast<std::size_t>(d.order[static_cast<std::size_t>(j)])];
    most = std::max(most, load);
  }
  return most;
}

namespace {

// Queues of a schedule's items for a grid of at most `ctas` CTAs: as many as the items fill.
std::int64_t queue_count(std::int64_t n_items, std::int64_t rings, std::int64_t ctas) {
  return std::min((n_items + rings - 1) / rings, ctas) * rings;
}

// The tail split (TailSplit) that minimises the estimated time of an unsplit schedule `s`
// with item costs `cost` (an item a group), or none (first_group -1) where none saves
// kTailSplitGain. Candidates: the last r groups (r: those past the last whole round of the
// full grid's queues, all of them where they do not fill one) or r + a round of them, each
// cut into 2-8 pieces of at least min_steps steps.
TailSplit choose_tail_split(const RowGroupSchedule& s, const std::vector<double>& cost, std::int64_t bs,
                            std::int64_t rings, std::int64_t ctas, std::int64_t min_steps) {
  const std::int64_t n = s.n_groups, per_line = s.gm * s.g + 1;
  // the split's costs in steps of a group of one line: a one-line step multiplies bs x g bs
  // x bs, a member's f32 tile holds bs x bs (the kTail costs are for bs g = 256)
  const double scale = 256.0 / static_cast<double>(bs * s.g);
  const double member_store = kTailMemberStore * scale, member_reduce = kTailMemberReduce * scale;
  const double launch =
      kTailReduceLaunch * scale * (128.0 / static_cast<double>(bs)) * (128.0 / static_cast<double>(bs));
  const double base = deal_makespan(deal_queues(cost, queue_count(n, rings, ctas)), cost);
  TailSplit best;
  double best_time = base * (1.0 - kTailSplitGain);
  const std::int64_t full = ctas * rings, r = n % full;
  for (const std::int64_t k : {r, r + full}) {
    if (k <= 0 || k > n) continue;
    for (const std::int64_t pieces : {2, 3, 4, 6, 8}) {
      std::vector<double> c(cost.begin(), cost.begin() + (n - k));
      double reduce = launch;
      for (std::int64_t gr = n - k; gr < n; ++gr) {
        const std::int32_t* it = &s.items[static_cast<std::size_t>(4 * gr)];
        const std::int64_t len = it[2] - it[1];
        const std::int64_t np = std::max<std::int64_t>(1, std::min(pieces, len / min_steps));
        const double own = cost[static_cast<std::size_t>(gr)] - kDealItemCost;
        if (np == 1) {
          c.push_back(cost[static_cast<std::size_t>(gr)]);
          continue;
        }
        std::int64_t members = 0;
        for (std::int64_t m = 0; m + 1 < per_line; ++m)
          members += s.outs[static_cast<std::size_t>(gr * per_line + m)] >= 0 ? 1 : 0;
        for (std::int64_t q = 0; q < np; ++q)
          c.push_back(own * static_cast<double>(len * (q + 1) / np - len * q / np) / static_cast<double>(len) +
                      kDealItemCost + static_cast<double>(members) * member_store);
        reduce += static_cast<double>(members * np) * member_reduce;
      }
      const std::int64_t nq = queue_count(static_cast<std::int64_t>(c.size()), rings, ctas);
      const double t = deal_makespan(deal_queues(c, nq), c) + reduce;
      if (t < best_time) {
        best_time = t;
        best = TailSplit{n - k, pieces, min_steps};
      }
    }
  }
  return best;
}

}  // namespace

TmaQueues tma_queues(const MatmulPlan& p, std::int64_t g, std::int64_t gm, GroupAxis axis, std::int64_t n_steps,
                     std::int64_t ctas) {
  // (splitting changes only the items, not the steps)
  const std::int64_t target = ctas * kTmaItemsPerCta;
  const std::int64_t min_chunk = std::max<std::int64_t>(1, kMinChunkK / p.bs);
  const std::int64_t chunk = std::max(min_chunk, (n_steps + target - 1) / target);
  const std::int64_t cut = chunk < p.max_pairs ? chunk : std::numeric_limits<std::int64_t>::max();
  const std::int64_t rings = tma_rings(p.bs, g);
  TmaQueues q;
  q.groups = row_group_schedule(p, g, cut, axis, gm);
  if (q.groups.n_items == 0) return q;
  std::vector<double> cost = item_costs(q.groups, kDealPairStep, kDealLoneStep, kDealItemCost);
  if (q.groups.n_slots == 0) {
    // No list was cut: the items may fill the queues' last round in part (equal items, an
    // SDD's), which only smaller items there can even out.
    q.tail = choose_tail_split(q.groups, cost, p.bs, rings, ctas, min_chunk);
    if (q.tail.first_group >= 0) {
      q.groups = row_group_schedule(p, g, cut, axis, gm, false, q.tail);
      cost = item_costs(q.groups, kDealPairStep, kDealLoneStep, kDealItemCost);
    }
  }
  q.n_queues = queue_count(q.groups.n_items, rings, ctas);
  q.deal = deal_queues(cost, q.n_queues);
  return q;
}

}  // namespace tg::ops
