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

/// The estimated cost of each item of a full schedule (row_group_schedule without counts_only),
/// in steps of a group of one line: a step both lines of a group of two have costs `pair_step`,
/// one that a line sits out `lone_step`, any other 1, and each item `per_item` more (its
/// epilogue and pipeline start).
std::vector<double> item_costs(const RowGroupSchedule& s, double pair_step, double lone_step, double per_item);

}  // namespace tg::ops
