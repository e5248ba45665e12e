// Groups of output blocks that share one operand tile a k-step, for the wide tiles of the
// Hopper TMA kernel (wgmma_tma_kernel.cuh), built on the host from a plan.
//
// Row groups: up to g output tiles of one block-row whose pair lists read the same x tiles
// in the same order (every block of a row when y is dense: SDD, DSD; any two equal lists
// otherwise), so that one CTA loads each x tile once for all of them and multiplies with
// one wide instruction. Column groups: up to g output tiles of one block-column whose lists
// read the same y tiles (every block of a column when x is dense and y block-sparse: DDS,
// whose lists differ from column to column and so form no row groups). The kernel runs a
// column group as the transposed product Cᵀ = op(B)ᵀ op(A)ᵀ, whose row groups they are,
// and stores its tile transposed.
//
// Groups of two lines (gm = 2): two block-rows of one batch on up to g of the columns both
// store (one CTA tile of two rows of tiles: at bs 64, 128 x 256, the shape of bs 128's wide
// tile), over the union of their k lists; a line without an x tile at a step sits that step
// out (the kernel loads nothing for it and multiplies zeros). Rows of equal k lists (every
// row of an SDD) pair first: each row with the row sharing the most of its unpaired columns,
// then again with the row sharing the most of what is left of it, and so on (every pair of
// rows at density 1; on the bench's random layouts 80% of the tiles at density 0.5 and 50%
// at 0.25, against 69% and 46% with one partner a row, which measured 1.11x slower at both).
// Then rows of different lists (a DSD's, or the columns of a DDS's column groups) pair the
// same way on what is left, where a pair saves steps (kPairStep). The tiles left
// form groups of one line in the same schedule, which the kernel computes as the one-line
// tile.
//
// No zeros are multiplied into a stored tile: a member's products are exactly its pairs.
// Long lists are cut into pieces (split-K) as in the per-block schedule.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/sparse_matmul/plan.h"

namespace tg::ops {

/// The cost of a step of a group of two lines in steps of a group of one line (bs 64: a 128
/// x 256 against a 64 x 256 tile), measured at density 1 (H100, bench/RESULTS.md 12-06,
/// twenty-seventh session). A line sitting a step out multiplies zeros: the same cost.
constexpr double kPairStep = 1.26;

/// How much less a schedule of pairs must cost than one of one-line groups, by kPairStep, to
/// be taken, and a pair of different k lists, to be made: at block 64, density 0.1, the pairs
/// measured 1.06x slower than the row groups where kPairStep says 0.96x (the per-item costs
/// it leaves out weigh with short lists); at 0.25, 0.87x where it says 0.82x (H100,
/// bench/RESULTS.md 12-06, twenty-seventh and twenty-eighth sessions).
constexpr double kPairMargin = 1.12;

/// Which output tiles form a group: tiles of a block-row sharing their x tiles, or of a
/// block-column sharing their y tiles.
enum class GroupAxis { Rows, Columns };

struct RowGroupSchedule {
  std::int64_t g = 1;   ///< tiles per line of a group (the last of a row may have fewer)
  std::int64_t gm = 1;  ///< lines per group (1 or 2)
  GroupAxis axis = GroupAxis::Rows;
  /// 4 per piece: group (where gm is 2 and the group has one line, -1 - group: the kernel
  /// learns the tile's shape with the item, not from a later read), first step, end step,
  /// slot (-1: direct)
  std::vector<std::int32_t> items;
  /// gm + g per step: each line's shared tile (x tile of a row, y tile of a column; -1: no
  /// line, or none at this step), then each member slot's own tile (its y tile, its x tile;
  /// -1: no member)
  std::vector<std::int32_t> steps;
  /// gm g + 2 per group: member output tiles, line-major (line i, slot m at i g + m; -1:
  /// none), its piece count, and 1 where a line sits a step out (else 0)
  std::vector<std::int32_t> outs;
  /// 3 per split member: output tile, first slot, slot count (member i g + m of a group cut
  /// in P pieces has slots s0 + (i g + m) P .. + P - 1, s0 the slot of the group's first piece).
  std::vector<std::int32_t> reduce;
  std::int64_t n_groups = 0, n_items = 0, n_steps = 0, n_slots = 0;
  std::int64_t members = 0;  ///< output tiles covered (all of the plan's)
  std::int64_t paired_steps = 0;  ///< steps of groups of two lines (the rest have one)
};

/// The groups of at most g (>= 1) tiles along `axis`, rows in output-tile order, columns in
/// (batch, block-column, block-row) order; where gm is 2, the groups of two lines of rows
/// sharing columns come first where their first line stood, then the one-line groups of
/// what is left of a line. A pair list longer than `chunk` (>= 1) steps is cut into
/// ceil(len / chunk) equal pieces, each with its own workspace slots.
RowGroupSchedule row_group_schedule(const MatmulPlan& plan, std::int64_t g, std::int64_t chunk,
                                    GroupAxis axis = GroupAxis::Rows, std::int64_t gm = 1);

}  // namespace tg::ops
