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
// same way on what is left, where a pair saves steps (kPairStep, kLoneStep). The tiles left
// form groups of one line in the same schedule, which the kernel computes as the one-line
// tile.
//
// A member's products are exactly its pairs, and the zeros of a line sitting a step out
// (which add exactly 0).
// Long lists are cut into pieces (split-K) as in the per-block schedule.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/sparse_matmul/plan.h"

namespace tg::ops {

/// The cost of a step of a group of two lines in steps of a group of one line (bs 64: a 128
/// x 256 against a 64 x 256 tile), measured at density 1 (H100, bench/RESULTS.md 12-06,
/// twenty-seventh session).
constexpr double kPairStep = 1.26;

/// The cost of a step of a group of two lines that one line sits out (it multiplies zeros),
/// in steps of a group of one line: the bytes of one line's step, the products of two.
/// Pairs of DSD rows (DDS columns) made with 1.05 measured 1.08-1.13x faster than the
/// one-line groups at density 0.5; made only where they saved steps by 1.26 a step, 0.99-
/// 1.02x (H100, bench/RESULTS.md 12-06, twenty-eighth session).
constexpr double kLoneStep = 1.05;

/// Added to the group of an item whose group of two lines has a step that one line sits out.
constexpr std::int32_t kSitsOut = std::int32_t{1} << 30;

/// Which output tiles form a group: tiles of a block-row sharing their x tiles, or of a
/// block-column sharing their y tiles.
enum class GroupAxis { Rows, Columns };

struct RowGroupSchedule {
  std::int64_t g = 1;   ///< tiles per line of a group (the last of a row may have fewer)
  std::int64_t gm = 1;  ///< lines per group (1 or 2)
  GroupAxis axis = GroupAxis::Rows;
  /// 4 per piece: group (where gm is 2 and the group has one line, -1 - group; where a line
  /// of a group of two sits a step out, group + kSitsOut: the kernel learns the tile's shape
  /// with the item, not from a later read), first step, end step, slot (-1: direct)
  std::vector<std::int32_t> items;
  /// gm + g per step: each line's shared tile (x tile of a row, y tile of a column; -1: no
  /// line, or none at this step), then each member slot's own tile (its y tile, its x tile;
  /// -1: no member)
  std::vector<std::int32_t> steps;
  /// gm g + 1 per group: member output tiles, line-major (line i, slot m at i g + m; -1:
  /// none), then its piece count
  std::vector<std::int32_t> outs;
  /// 3 per split member: output tile, first slot, slot count (member i g + m of a group cut
  /// in P pieces has slots s0 + (i g + m) P .. + P - 1, s0 the slot of the group's first piece).
  std::vector<std::int32_t> reduce;
  std::int64_t n_groups = 0, n_items = 0, n_steps = 0, n_slots = 0;
  std::int64_t members = 0;       ///< output tiles covered (all of the plan's)
  std::int64_t paired_steps = 0;  ///< steps of groups of two lines (the rest have one)
  std::int64_t lone_steps = 0;    ///< steps of groups of two lines that one line sits out
};

/// The groups of at most g (>= 1) tiles along `axis`, rows in output-tile order, columns in
/// (batch, block-column, block-row) order; where gm is 2, the groups of two lines of rows
/// sharing columns come first where their first line stood, then the one-line groups of
/// what is left of a line. A pair list longer than `chunk` (>= 1) steps is cut into
/// ceil(len / chunk) equal pieces, each with its own workspace slots. With `counts_only`,
/// items, steps, outs and reduce stay empty and only the counts are filled (the same as the
/// whole schedule's): what a choice between schedules needs, without writing the tables.
RowGroupSchedule row_group_schedule(const MatmulPlan& plan, std::int64_t g, std::int64_t chunk,
                                    GroupAxis axis = GroupAxis::Rows, std::int64_t gm = 1, bool counts_only = false);

}  // namespace tg::ops
