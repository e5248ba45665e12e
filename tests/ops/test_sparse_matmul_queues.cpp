// The Hopper matmul kernel's item queues (ops/sparse_matmul/queues.h): every item dealt once,
// loads within the list-scheduling bound, launch order kept before the tail and the tail
// dealt longest first; the items' estimated costs from a schedule.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/plan.h"
#include "ops/sparse_matmul/queues.h"
#include "ops/sparse_matmul/row_groups.h"
#include "sparse_matmul_cases.h"
#include "util.h"

namespace test_sparse_matmul_queues {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Checks that d deals each of n items once over n_queues queues; returns each queue's load.
std::vector<double> loads_of(const ops::QueueDeal& d, const std::vector<double>& cost, std::int64_t n_queues) {
  REQUIRE(d.off.size() == at(n_queues + 1));
  REQUIRE(d.off.front() == 0);
  REQUIRE(d.off.back() == static_cast<std::int32_t>(cost.size()));
  REQUIRE(std::is_sorted(d.off.begin(), d.off.end()));
  std::vector<std::int32_t> seen(d.order);
  std::sort(seen.begin(), seen.end());
  std::vector<std::int32_t> all(cost.size());
  std::iota(all.begin(), all.end(), 0);
  REQUIRE(seen == all);
  std::vector<double> load(at(n_queues), 0.0);
  for (std::int64_t q = 0; q < n_queues; ++q)
    for (std::int32_t j = d.off[at(q)]; j < d.off[at(q + 1)]; ++j) load[at(q)] += cost[at(d.order[at(j)])];
  return load;
}

}  // namespace

TEST_CASE("matmul queues: every item once, loads within the mean plus the largest cost", "[ops][sparse_matmul]") {
  std::mt19937 rng(7);
  for (const std::int64_t n_queues : {1, 3, 7, 132}) {
    for (const std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{1000}}) {
      std::vector<double> cost(n);
      // binomial-like lengths plus a per-item constant, and some empty items
      std::binomial_distribution<int> len(16, 0.5);
      for (double& c : cost) c = 2.0 + (rng() % 10 == 0 ? 0 : len(rng));
      const ops::QueueDeal d = ops::deal_queues(cost, n_queues);
      const std::vector<double> load = loads_of(d, cost, n_queues);
      const double total = std::accumulate(cost.begin(), cost.end(), 0.0);
      const double largest = n > 0 ? *std::max_element(cost.begin(), cost.end()) : 0.0;
      CAPTURE(n_queues, n);
      CHECK(*std::max_element(load.begin(), load.end()) <= total / static_cast<double>(n_queues) + largest + 1e-9);
    }
  }
}

TEST_CASE("matmul queues: a skewed cycle that every n-th item per queue piles up is spread", "[ops][sparse_matmul]") {
  // costs 10, 1, 1, 1 repeated over 4 queues: every 4th item per queue would give one queue
  // all the 10s (1000 against a mean of 325)
  std::vector<double> cost;
  for (int i = 0; i < 100; ++i) cost.insert(cost.end(), {10.0, 1.0, 1.0, 1.0});
  const ops::QueueDeal d = ops::deal_queues(cost, 4);
  const std::vector<double> load = loads_of(d, cost, 4);
  const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
  CHECK(*hi <= 325.0 + 10.0);
  CHECK(*hi - *lo <= 10.0);
}

TEST_CASE("matmul queues: launch order before the tail, the tail longest first", "[ops][sparse_matmul]") {
  // 200 items of cost 1, then a tail (the last items whose costs sum to at most 15% of the
  // total) in increasing cost: dealt longest first
  std::vector<double> cost(200, 1.0);
  for (int i = 1; i <= 7; ++i) cost.push_back(static_cast<double>(i));  // 28 of 228
  const double total = std::accumulate(cost.begin(), cost.end(), 0.0);
  std::size_t tail = cost.size();
  for (double left = 0; tail > 0 && left + cost[tail - 1] <= ops::kLongestFirstTail * total;) left += cost[--tail];
  REQUIRE(tail < 200);  // the tail reaches into the unit items
  const std::int64_t n_queues = 6;
  const ops::QueueDeal d = ops::deal_queues(cost, n_queues);
  loads_of(d, cost, n_queues);
  // the first n_queues items open the queues in order
  for (std::int64_t q = 0; q < n_queues; ++q) CHECK(d.order[at(d.off[at(q)])] == static_cast<std::int32_t>(q));
  for (std::int64_t q = 0; q < n_queues; ++q) {
    // within a queue: items before the tail ascending, then the tail's in non-increasing cost
    std::vector<std::int32_t> head, rest;
    for (std::int32_t j = d.off[at(q)]; j < d.off[at(q + 1)]; ++j)
      (static_cast<std::size_t>(d.order[at(j)]) < tail ? head : rest).push_back(d.order[at(j)]);
    CHECK(std::is_sorted(head.begin(), head.end()));
    const auto first_rest = std::find_if(d.order.begin() + d.off[at(q)], d.order.begin() + d.off[at(q + 1)],
                                         [&](std::int32_t i) { return static_cast<std::size_t>(i) >= tail; });
    CHECK(std::all_of(first_rest, d.order.begin() + d.off[at(q + 1)],
                      [&](std::int32_t i) { return static_cast<std::size_t>(i) >= tail; }));
    for (std::size_t k = 1; k < rest.size(); ++k) CHECK(cost[at(rest[k - 1])] >= cost[at(rest[k])]);
  }
  // the 7 is dealt first of the tail, to the least loaded queue
  const auto it = std::find(d.order.begin(), d.order.end(), static_cast<std::int32_t>(cost.size() - 1));
  const auto pos = static_cast<std::int32_t>(it - d.order.begin());
  const auto q7 = std::upper_bound(d.off.begin(), d.off.end(), pos) - d.off.begin() - 1;
  std::vector<double> before(at(n_queues), 0.0);
  for (std::int64_t q = 0; q < n_queues; ++q)
    for (std::int32_t j = d.off[at(q)]; j < d.off[at(q + 1)]; ++j)
      if (static_cast<std::size_t>(d.order[at(j)]) < tail) before[at(q)] += cost[at(d.order[at(j)])];
  CHECK(before[at(q7)] == *std::min_element(before.begin(), before.end()));
}

TEST_CASE("matmul queues: bad queue counts and grid caps raise", "[ops][sparse_matmul]") {
  const std::vector<double> cost{1.0, 2.0};
  tgt::require_throws<Error>([&] { ops::deal_queues(cost, 0); }, {"deal_queues", "n_queues", ">= 1", "0"});
  tgt::require_throws<Error>([&] { ops::spmm::set_tma_max_ctas(-2); }, {"set_tma_max_ctas", "n", ">= 0", "-2"});
  CHECK(ops::spmm::tma_max_ctas() == 0);
}

TEST_CASE("matmul queues: item costs count pair, lone and one-line steps", "[ops][sparse_matmul]") {
  // The union-pair case (sparse_matmul_cases.h): rows with k lists {0, 1, 2, 3} and {0, 1, 2, 4}
  // pair over 5 steps (3 both lines have, 2 one sits out), and row {5, 6} stays alone (2 steps).
  const auto plan = mmcases::union_pair_plan();
  const ops::RowGroupSchedule r = ops::row_group_schedule(*plan, 4, 1000, ops::GroupAxis::Rows, 2);
  REQUIRE(r.n_items == 2);
  const std::vector<double> cost = ops::item_costs(r, 1.5, 1.25, 2.0);
  REQUIRE(cost.size() == 2);
  CHECK(cost[0] == 2.0 + 3 * 1.5 + 2 * 1.25);
  CHECK(cost[1] == 2.0 + 2.0);
  // one-line groups count 1 a step whatever the pair costs
  const ops::RowGroupSchedule one = ops::row_group_schedule(*plan, 4, 1000, ops::GroupAxis::Rows, 1);
  const std::vector<double> c1 = ops::item_costs(one, 1.5, 1.25, 0.0);
  CHECK(std::accumulate(c1.begin(), c1.end(), 0.0) == 4.0 + 4.0 + 2.0);
}

TEST_CASE("matmul queues: the Hopper schedule's grid, queues and split lists", "[ops][sparse_matmul]") {
  // DSD at block 64: x of 4 block-rows, row 0 with all 12 k-blocks and the others with one,
  // y dense with 4 block-columns. Row groups of 4 (one ring a CTA) and one block a tile (two
  // rings); the grid holds as many CTAs as the items fill, at most `ctas`.
  const std::int64_t bs = 64, kb = 12;
  const Layout lx = tgt::layout_where(1, 4, kb, bs, [](auto, auto r, auto c) { return r == 0 || c == r; });
  const ops::OperandDesc a{lx, 1, 4 * bs, kb * bs, false}, b{Layout(), 1, kb * bs, 4 * bs, false},
      c{Layout(), 1, 4 * bs, 4 * bs, false};
  const auto plan = ops::matmul_plan(a, b, c, bs);
  const std::int64_t whole = std::numeric_limits<std::int64_t>::max();
  for (const std::int64_t g : {4, 1}) {
    const std::int64_t rings = ops::tma_rings(bs, g);
    CHECK(rings == (g == 1 ? 2 : 1));
    const std::int64_t n_steps = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Rows, 1, true).n_steps;
    for (const std::int64_t ctas : {1, 2, 100}) {
      CAPTURE(g, ctas);
      const ops::TmaQueues q = ops::tma_queues(*plan, g, 1, ops::GroupAxis::Rows, n_steps, ctas);
      const std::int64_t items = q.groups.n_items;
      CHECK(q.n_queues == std::min((items + rings - 1) / rings, ctas) * rings);
      std::vector<double> cost(static_cast<std::size_t>(items), 0.0);
      loads_of(q.deal, cost, q.n_queues);  // every item once
      // k of 256 at least a piece (4 k-blocks at block 64); row 0's 12-step lists are cut
      // where a CTA's share of the steps (2 items a CTA) is shorter
      const std::int64_t chunk = std::max<std::int64_t>(4, (n_steps + 2 * ctas - 1) / (2 * ctas));
      CHECK((q.groups.n_slots > 0) == (chunk < kb));
      for (std::int64_t i = 0; i < items; ++i)
        CHECK(q.groups.items[static_cast<std::size_t>(4 * i + 2)] -
                  q.groups.items[static_cast<std::size_t>(4 * i + 1)] <=
              std::min(chunk, kb));
    }
  }
}

}  // namespace test_sparse_matmul_queues
