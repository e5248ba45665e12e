// Work queues of the persistent Hopper matmul kernel (wgmma_tma_kernel.cuh): which CTA (and
// ring) runs which items of a group schedule (row_groups.h), dealt on the host from each
// item's estimated cost.
//
// Why not every n-th item a CTA: the items' costs differ (the k lists of a DSD's rows or a
// DDS's columns have binomial lengths, groups of two lines cost more a step than groups of
// one), and a fixed share left the most loaded CTA 5-21% above the mean on the bench's DSD and
// DDS layouts at densities 0.1-0.5 (host count by bench/matmul_groups, 132 CTAs). Dealing each
// item in launch order to the least loaded queue keeps items near in order near in time (they
// share operand rows in L2, as under a dynamic scheduler); the last part of the work is dealt
// longest first. That leaves 0.2-2.8% there, and measured 1.04-1.32x faster (H100,
// bench/RESULTS.md 12-06, twenty-ninth session). Items of equal cost (an SDD at block 128)
// are dealt as every n-th item a CTA.

#pragma once

#include <cstdint>
#include <vector>

#include "ops/sparse_matmul/plan.h"
#include "ops/sparse_matmul/row_groups.h"

namespace tg::ops {

/// The items of a schedule dealt to queues: queue q runs order[off[q]] .. order[off[q+1] - 1],
/// in that order.
struct QueueDeal {
  std::vector<std::int32_t> order;  ///< item indices, queue by queue
  std::vector<std::int32_t> off;    ///< n_queues + 1 offsets into order
};

/// Share of the total cost dealt longest first at the end.
constexpr double kLongestFirstTail = 0.15;

/// Deals items of costs `cost` (>= 0, in launch order) to n_queues (>= 1) queues: in order,
/// each to the least loaded queue (ties: the lowest index), until the items left cost at most
/// kLongestFirstTail of the total; those then longest first (ties: launch order). Every queue's
/// load is at most the mean plus the largest cost. Throws tg::Error if n_queues < 1.
QueueDeal deal_queues(const std::vector<double>& cost, std::int64_t n_queues);

/// The costs that deal items to the kernel's queues, in steps of a group of one line of the
/// same kernel. A step of a group of two lines: at density 1 it took 1.26 steps of the
/// one-line kernel (row_groups.h), whose groups run 1.09x faster than the pair kernel's
/// one-line groups (bench/RESULTS.md 12-06, twenty-sixth session), so 1.16. Dealt with the
/// choice's 1.45 instead, SDD block 64 at density 0.25 (a third of its items pairs) ran 4%
/// slower than every n-th item a CTA, while DSD and DDS gained alike (twenty-ninth session).
/// A step one line sits out computes both lines' products and loads one line's x tile. An
/// item's cost besides its steps: its epilogue's stores and its first stage's wait (a guess;
/// the deal moves little with it within 0-8 steps on the bench's layouts).
constexpr double kDealPairStep = 1.16, kDealLoneStep = 1.1, kDealItemCost = 2.0;

/// The Hopper kernel's split target: about this many items per CTA (2 measured best: 4 cut
/// every 16-pair list at density 0.1 in two, 0.141 vs 0.098 ms at block 128, and 1, 12 or
/// 32 were no faster anywhere).
constexpr std::int64_t kTmaItemsPerCta = 2;

/// Rings of the Hopper kernel's CTA (wgmma_tma_kernel.cuh) for block size bs and g members a
/// line: two where bs is 64 and g is 1 (each consumer with its own queue of items and ring of
/// stages), else one. Its grid has one CTA per `rings` item queues.
constexpr int tma_rings(std::int64_t bs, std::int64_t g) { return bs == 64 && g == 1 ? 2 : 1; }

/// A schedule of the Hopper kernel as the CUDA backend launches it: the groups, and their
/// items dealt to the queues of its grid.
struct TmaQueues {
  RowGroupSchedule groups;
  QueueDeal deal;             ///< over groups.items (empty where there are none)
  std::int64_t n_queues = 0;  ///< CTAs times tma_rings
};

/// The schedule of g x gm groups along `axis` (row_group_schedule) for a grid of at most
/// `ctas` (>= 1) CTAs, given its unsplit step count n_steps (a counts_only schedule's): lists
/// cut into pieces of at least kMinChunkK of k so that there are about kTmaItemsPerCta items
/// a CTA, the grid as many CTAs as hold the items (tma_rings a CTA), at most `ctas`, and the
/// items dealt to its queues with the kDeal costs.
TmaQueues tma_queues(const MatmulPlan& p, std::int64_t g, std::int64_t gm, GroupAxis axis, std::int64_t n_steps,
                     std::int64_t ctas);

/// The estimated cost of each item of a full schedule (row_group_schedule without counts_only),
/// in steps of a group of one line: a step both lines of a group of two have costs `pair_step`,
/// one that a line sits out `lone_step`, any other 1, and each item `per_item` more (its
/// epilogue and pipeline start).
std::vector<double> item_costs(const RowGroupSchedule& s, double pair_step, double lone_step, double per_item);

}  // namespace tg::ops
