// The Hopper matmul kernel's groups (ops/sparse_matmul/row_groups.h) for the forward of each
// bench_sparse_matmul case at blocks 64 and 128 (matmul_cases.h), built on the host as the
// CUDA backend builds them, without a GPU: per schedule its steps (k-steps of a CTA tile, the
// kernel's unit of work: one block a tile, row groups, column groups, and at block 64 pairs of
// block-rows, or of block-columns where column groups have fewer steps: "c"), and for the
// pairs the share of output tiles in groups of two lines, the steps in units of a one-line
// step (a step both lines have costs ops::kPairStep of them, one a line sits out
// ops::kLoneStep) against the fewer of the row and column groups' steps (under 1, the pairs
// should beat the one-line schedules), and the steps of one line, of both lines and of one
// line sitting out. Then, for the groups of one line along the axis with the fewer steps (and
// at block 64 their pairs), the most loaded of an H100's 132 kernel queues over the mean:
// every 132nd item a queue, then the items dealt as the kernel's host code deals them
// (ops::tma_queues). "packed": the units if every block product sat in a full group of two
// lines (2 g tiles, the kernel's cheapest work a product), over the pairs' units: the time a
// perfect packing of the layout would take at the kernel's rate a unit, as a fraction.
//
// Then the operand stream of each schedule: the bytes of the x and y tiles its steps load
// (every tile a step names, bs x bs 16-bit elements, read from L2), and the time they take at
// the rate the kernel streams them at density 1 (kL2Rate), beside issue 4's target for the
// forward (1.2 x density x cuBLAS dense): a floor of the schedule where that rate bounds it.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "matmul_cases.h"
#include "ops/sparse_matmul/plan.h"
#include "ops/sparse_matmul/queues.h"
#include "ops/sparse_matmul/row_groups.h"

namespace {

namespace ops = tg::ops;
using tg_bench::MatmulMode;

// Output tiles in groups of two lines.
double paired_share(const ops::RowGroupSchedule& r, std::int64_t n_out) {
  std::int64_t paired = 0;
  const std::int64_t row = r.gm * r.g + 1;
  for (std::int64_t gr = 0; gr < r.n_groups; ++gr)
    for (std::int64_t m = 0; m < r.g; ++m) paired += r.outs[static_cast<std::size_t>(gr * row + r.g + m)] >= 0 ? 2 : 0;
  return n_out > 0 ? static_cast<double>(paired) / static_cast<double>(n_out) : 0.0;
}

double units(const ops::RowGroupSchedule& r) {
  return static_cast<double>(r.n_steps - r.paired_steps) +
         ops::kPairStep * static_cast<double>(r.paired_steps - r.lone_steps) +
         ops::kLoneStep * static_cast<double>(r.lone_steps);
}

// The most loaded queue over the mean for the schedule of g x gm groups along axis as the
// CUDA backend builds it for `ctas` CTAs (ops::tma_queues): every n-th item a queue, and the
// items as dealt.
std::pair<double, double> queue_balance(const ops::MatmulPlan& plan, std::int64_t g, std::int64_t gm,
                                        ops::GroupAxis axis, std::int64_t ctas) {
  const std::int64_t whole = std::numeric_limits<std::int64_t>::max();
  const std::int64_t n_steps = ops::row_group_schedule(plan, g, whole, axis, gm, true).n_steps;
  const ops::TmaQueues q = ops::tma_queues(plan, g, gm, axis, n_steps, ctas);
  const std::int64_t n = q.n_queues;
  if (n == 0) return {1.0, 1.0};
  const std::vector<double> cost =
      ops::item_costs(q.groups, ops::kDealPairStep, ops::kDealLoneStep, ops::kDealItemCost);
  double total = 0;
  std::vector<double> every(static_cast<std::size_t>(n), 0.0), dealt(static_cast<std::size_t>(n), 0.0);
  for (std::size_t i = 0; i < cost.size(); ++i) {
    every[i % static_cast<std::size_t>(n)] += cost[i];
    total += cost[i];
  }
  for (std::int64_t k = 0; k < n; ++k)
    for (std::int32_t j = q.deal.off[static_cast<std::size_t>(k)]; j < q.deal.off[static_cast<std::size_t>(k + 1)]; ++j)
      dealt[static_cast<std::size_t>(k)] += cost[static_cast<std::size_t>(q.deal.order[static_cast<std::size_t>(j)])];
  const double mean = total / static_cast<double>(n);
  return {*std::max_element(every.begin(), every.end()) / mean, *std::max_element(dealt.begin(), dealt.end()) / mean};
}

// The operand tiles' rate from L2 the kernel reached at density 1, block 128 (3.15 GB in
// 0.400 ms; H100, bench/RESULTS.md 12-06 thirtieth session; this tool counts 3.22 GB there,
// 8.05 TB/s, so its times run 2% above what that point measured), and cuBLAS's dense time of
// the bench's product (bf16, 16 x 2048^3: 0.356-0.374 ms in the same runs).
constexpr double kL2Rate = 7.9e12, kCublasMs = 0.37;

// The plan of the bench's forward in mode m (the layout l on its sparse operand).
std::shared_ptr<const ops::MatmulPlan> forward_plan(MatmulMode m, std::int64_t bs, const tg::Layout& l) {
  const std::int64_t B = tg_bench::kMatmulB, S = tg_bench::kMatmulS;
  const tg::Layout none;
  const ops::OperandDesc a{m == MatmulMode::DSD ? l : none, B, S, S, false};
  const ops::OperandDesc b{m == MatmulMode::DDS ? l : none, B, S, S, false};
  const ops::OperandDesc c{m == MatmulMode::SDD ? l : none, B, S, S, false};
  return ops::matmul_plan(a, b, c, bs);
}

// The bytes of the operand tiles the steps of r load.
double operand_bytes(const ops::RowGroupSchedule& r, std::int64_t bs) {
  const auto tiles = std::count_if(r.steps.begin(), r.steps.end(), [](std::int32_t t) { return t >= 0; });
  return static_cast<double>(tiles) * static_cast<double>(bs * bs * 2);
}

}  // namespace

int main() {
  const std::int64_t B = tg_bench::kMatmulB, S = tg_bench::kMatmulS, whole = std::numeric_limits<std::int64_t>::max();
  std::printf(
      "Hopper matmul groups of bench_sparse_matmul's forwards (%lld x %lld^3): steps per schedule; pairs: "
      "share of tiles paired, steps in one-line units (pair step = %.2f) over the fewer one-line steps\n",
      static_cast<long long>(B), static_cast<long long>(S), ops::kPairStep);
  std::printf("%-4s %4s %7s %8s %8s %8s %8s %8s | %7s %7s %7s\n", "mode", "bs", "density", "tiles", "1 block", "rows",
              "columns", "pairs", "paired", "units", "packed");
  tg_bench::for_each_matmul_case([&](MatmulMode m, std::int64_t bs, double, const tg::Layout& l) {
    if (bs < 64) return;  // no Hopper kernel
    const auto plan = forward_plan(m, bs, l);
    const std::int64_t g = bs == 128 ? 2 : 4;
    const auto one = ops::row_group_schedule(*plan, 1, whole, ops::GroupAxis::Rows, 1);
    const auto rows = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Rows, 1);
    const auto cols = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Columns, 1);
    std::printf("%-4s %4lld %7.3f %8lld %8lld %8lld %8lld", tg_bench::mode_name(m), static_cast<long long>(bs),
                l.density(), static_cast<long long>(plan->n_out), static_cast<long long>(one.n_steps),
                static_cast<long long>(rows.n_steps), static_cast<long long>(cols.n_steps));
    // the groups (and the pairs) along the axis whose one-line groups have the fewer steps
    const bool by_cols = cols.n_steps < rows.n_steps;
    constexpr std::int64_t kSms = 132;  // an H100 SXM
    const auto groups_q = queue_balance(*plan, g, 1, by_cols ? ops::GroupAxis::Columns : ops::GroupAxis::Rows, kSms);
    if (bs != 64) {
      std::printf(" | %s queues %.3f -> %.3f\n", by_cols ? "columns" : "rows", groups_q.first, groups_q.second);
      return;
    }
    const double base = static_cast<double>(by_cols ? cols.n_steps : rows.n_steps);
    const auto pairs =
        ops::row_group_schedule(*plan, g, whole, by_cols ? ops::GroupAxis::Columns : ops::GroupAxis::Rows, 2);
    const auto pairs_q = queue_balance(*plan, g, 2, by_cols ? ops::GroupAxis::Columns : ops::GroupAxis::Rows, kSms);
    const double packed = static_cast<double>(one.n_steps) / static_cast<double>(2 * g) * ops::kPairStep;
    std::printf(" %8lld%s | %7.3f %7.3f %7.3f | %lld %lld %lld | %s queues %.3f -> %.3f, pairs %.3f -> %.3f\n",
                static_cast<long long>(pairs.n_steps), by_cols ? "c" : " ", paired_share(pairs, plan->n_out),
                units(pairs) / base, packed / units(pairs), static_cast<long long>(pairs.n_steps - pairs.paired_steps),
                static_cast<long long>(pairs.paired_steps - pairs.lone_steps), static_cast<long long>(pairs.lone_steps),
                by_cols ? "columns" : "rows", groups_q.first, groups_q.second, pairs_q.first, pairs_q.second);
  });

  std::printf("\noperand stream: GB of x and y tiles loaded, and ms at %.1f TB/s; target: 1.2 x density x %.2f ms\n",
              kL2Rate / 1e12, kCublasMs);
  std::printf("%-4s %4s %7s | %15s | %15s | %15s | %9s\n", "mode", "bs", "density", "1 block", "groups", "pairs",
              "target ms");
  tg_bench::for_each_matmul_case([&](MatmulMode m, std::int64_t bs, double, const tg::Layout& l) {
    if (bs < 64) return;
    const auto plan = forward_plan(m, bs, l);
    const std::int64_t g = bs == 128 ? 2 : 4;
    const auto rows = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Rows, 1, true);
    const auto cols = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Columns, 1, true);
    const ops::GroupAxis axis = cols.n_steps < rows.n_steps ? ops::GroupAxis::Columns : ops::GroupAxis::Rows;
    auto cell = [&](double bytes) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%6.2f %6.3f", bytes / 1e9, bytes / kL2Rate * 1e3);
      return std::string(buf);
    };
    const std::string pairs =
        bs == 64 ? cell(operand_bytes(ops::row_group_schedule(*plan, g, whole, axis, 2), bs)) : std::string("-");
    std::printf("%-4s %4lld %7.3f | %15s | %15s | %15s | %9.3f\n", tg_bench::mode_name(m), static_cast<long long>(bs),
                l.density(),
                cell(operand_bytes(ops::row_group_schedule(*plan, 1, whole, ops::GroupAxis::Rows, 1), bs)).c_str(),
                cell(operand_bytes(ops::row_group_schedule(*plan, g, whole, axis, 1), bs)).c_str(), pairs.c_str(),
                1.2 * l.density() * kCublasMs);
  });
  return 0;
}
