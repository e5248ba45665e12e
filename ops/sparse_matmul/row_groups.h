// Groups of output blocks that share their x operand, for the wide tiles of the Hopper TMA
// kernel (wgmma_tma_kernel.cuh), built on the host from a plan. A group is up to g output
// tiles of one block-row whose pair lists read the same x tiles in the same order (every
// block of a row when y is dense: SDD, DSD; any two equal lists otherwise), so that one
// CTA loads each x tile once for all of them and multiplies with one wide instruction.
// No zeros are multiplied into a stored tile: a member's products are exactly its pairs.
// Long lists are cut into pieces (split-K) as in the per-block schedule.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/sparse_matmul/plan.h"

namespace tg::ops {

struct RowGroupSchedule {
  std::int64_t g = 1;               ///< tiles per group (the last of a row may have fewer)
  std::vector<std::int32_t> items;  ///< 4 per piece: group, first step, end step, slot (-1: direct)
  std::vector<std::int32_t> steps;  ///< 1 + g per step: x tile, then the y tile of each member (-1: none)
  std::vector<std::int32_t> outs;   ///< g + 1 per group: member output tiles (-1: none), then its piece count
  /// 3 per split member: output tile, first slot, slot count (member m of a group cut in P
  /// pieces has slots s0 + m P .. s0 + m P + P - 1, s0 the slot of the group's first piece).
  std::vector<std::int32_t> reduce;
  std::int64_t n_groups = 0, n_items = 0, n_steps = 0, n_slots = 0;
  std::int64_t members = 0;  ///< output tiles covered (all of the plan's)
};

/// The groups of at most g (>= 1) tiles, in output-tile order; a pair list longer than
/// `chunk` (>= 1) steps is cut into ceil(len / chunk) equal pieces, each with its own
/// workspace slots.
RowGroupSchedule row_group_schedule(const MatmulPlan& plan, std::int64_t g, std::int64_t chunk);

}  // namespace tg::ops
