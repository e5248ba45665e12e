// Regions of output blocks for the grouped CUDA path (see path.h), built on the host from a
// plan. A region is gm x gn output blocks computed by one CTA over the union of the
// k-blocks of its blocks' pairs. A step records, per block-row i of the region, the x
// tile of any pair (i, ., k) and, per block-column j, the y tile of any pair (., j, k);
// -1 where there is none, read as zeros. Those zeros multiply only products no stored
// block of the region needs: if output (i, j) is stored and both its tiles at k exist,
// (i, j, k) is one of its pairs, so both ids are recorded.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/sparse_matmul/plan.h"

namespace tg::ops {

struct RegionSchedule {
  std::int64_t gm = 1, gn = 1;      ///< blocks per region along m and n
  std::vector<std::int32_t> items;  ///< 4 per region: region index, first step, end step, -1
  std::vector<std::int32_t> steps;  ///< gm + gn per step: x tile per block-row, y tile per block-column
  std::vector<std::int32_t> outs;   ///< gm * gn per region: output tile ids, row-major (-1: not stored)
  std::int64_t n_regions = 0, total_steps = 0, max_steps = 0;
  std::int64_t work = 0;  ///< block products computed, zeros included: total_steps * gm * gn
};

/// The regions of gm x gn blocks (gm, gn >= 1) covering plan's output tiles, row-major by
/// (batch, region row, region column), steps in increasing k; regions without an output
/// tile are left out.
RegionSchedule region_schedule(const MatmulPlan& plan, std::int64_t gm, std::int64_t gn);

}  // namespace tg::ops
