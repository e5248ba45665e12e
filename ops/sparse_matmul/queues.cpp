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

TmaQueues tma_queues(const MatmulPlan& p, std::int64_t g, std::int64_t gm, GroupAxis axis, std::int64_t n_steps,
                     std::int64_t ctas) {
  // (splitting changes only the items, not the steps)
  const std::int64_t target = ctas * kTmaItemsPerCta;
  const std::int64_t min_chunk = std::max<std::int64_t>(1, kMinChunkK / p.bs);
  const std::int64_t chunk = std::max(min_chunk, (n_steps + target - 1) / target);
  TmaQueues q;
  q.groups = row_group_schedule(p, g, chunk < p.max_pairs ? chunk : std::numeric_limits<std::int64_t>::max(), axis, gm);
  if (q.groups.n_items > 0) {
    const std::int64_t rings = tma_rings(p.bs, g);
    q.n_queues = std::min((q.groups.n_items + rings - 1) / rings, ctas) * rings;
    q.deal = deal_queues(item_costs(q.groups, kDealPairStep, kDealLoneStep, kDealItemCost), q.n_queues);
  }
  return q;
}

}  // namespace tg::ops
