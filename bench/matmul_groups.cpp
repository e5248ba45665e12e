// The Hopper matmul kernel's groups (ops/sparse_matmul/row_groups.h) for the forward of each
// bench_sparse_matmul case at blocks 64 and 128 (matmul_cases.h), built on the host as the
// CUDA backend builds them, without a GPU: per schedule its steps (k-steps of a CTA tile, the
// kernel's unit of work: one block a tile, row groups, column groups, and at block 64 pairs of
// block-rows, or of block-columns where column groups have fewer steps: "c"), and for the
// pairs the share of output tiles in groups of two lines, the steps in units of a one-line
// step (a step both lines have costs ops::kPairStep of them, one a line sits out
// ops::kLoneStep) against the fewer of the row and column groups' steps (under 1, the pairs
// should beat the one-line schedules), and the steps of one line, of both lines and of one
// line sitting out.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>

#include "matmul_cases.h"
#include "ops/sparse_matmul/plan.h"
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

}  // namespace

int main() {
  const std::int64_t B = tg_bench::kMatmulB, S = tg_bench::kMatmulS, whole = std::numeric_limits<std::int64_t>::max();
  std::printf(
      "Hopper matmul groups of bench_sparse_matmul's forwards (%lld x %lld^3): steps per schedule; pairs: "
      "share of tiles paired, steps in one-line units (pair step = %.2f) over the fewer one-line steps\n",
      static_cast<long long>(B), static_cast<long long>(S), ops::kPairStep);
  std::printf("%-4s %4s %7s %8s %8s %8s %8s %8s | %7s %7s\n", "mode", "bs", "density", "tiles", "1 block", "rows",
              "columns", "pairs", "paired", "units");
  tg_bench::for_each_matmul_case([&](MatmulMode m, std::int64_t bs, double, const tg::Layout& l) {
    if (bs == 32) return;  // no Hopper kernel
    const tg::Layout none;
    const ops::OperandDesc a{m == MatmulMode::DSD ? l : none, B, S, S, false};
    const ops::OperandDesc b{m == MatmulMode::DDS ? l : none, B, S, S, false};
    const ops::OperandDesc c{m == MatmulMode::SDD ? l : none, B, S, S, false};
    const auto plan = ops::matmul_plan(a, b, c, bs);
    const std::int64_t g = bs == 128 ? 2 : 4;
    const auto one = ops::row_group_schedule(*plan, 1, whole, ops::GroupAxis::Rows, 1);
    const auto rows = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Rows, 1);
    const auto cols = ops::row_group_schedule(*plan, g, whole, ops::GroupAxis::Columns, 1);
    std::printf("%-4s %4lld %7.3f %8lld %8lld %8lld %8lld", tg_bench::mode_name(m), static_cast<long long>(bs),
                l.density(), static_cast<long long>(plan->n_out), static_cast<long long>(one.n_steps),
                static_cast<long long>(rows.n_steps), static_cast<long long>(cols.n_steps));
    if (bs != 64) {
      std::printf("\n");
      return;
    }
    // the pairs along the axis whose one-line groups have the fewer steps
    const bool by_cols = cols.n_steps < rows.n_steps;
    const double base = static_cast<double>(by_cols ? cols.n_steps : rows.n_steps);
    const auto pairs =
        ops::row_group_schedule(*plan, g, whole, by_cols ? ops::GroupAxis::Columns : ops::GroupAxis::Rows, 2);
    std::printf(" %8lld%s | %7.3f %7.3f | %lld %lld %lld\n", static_cast<long long>(pairs.n_steps), by_cols ? "c" : " ",
                paired_share(pairs, plan->n_out), units(pairs) / base,
                static_cast<long long>(pairs.n_steps - pairs.paired_steps),
                static_cast<long long>(pairs.paired_steps - pairs.lone_steps),
                static_cast<long long>(pairs.lone_steps));
  });
  return 0;
}
