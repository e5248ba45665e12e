// How many CTAs the staged kernels of the CUDA block-sparse softmax (forward and backward)
// run with, overridable so that tests and benchmarks can run both grids on the same inputs.
#pragma once

#include <cstdint>

namespace tg::ops {

/// The staged kernels cut the rows into slices (a few rows of one block-row each).
/// Persistent (the default): as many CTAs as fit the device at once, each taking slices one
/// after another through two shared-memory buffers, so that the next slice's loads are in
/// flight while this one is reduced and written. One per slice: a CTA per slice with one
/// buffer (the earlier plan: a CTA read nothing while it reduced and wrote).
enum class StagedGrid { Auto, Persistent, OnePerSlice };

/// Forces the grid of later calls (process-wide), and with Persistent and `max_ctas` > 0
/// caps its CTAs (tests: many slices per CTA, both buffers reused). Auto restores the
/// environment's choice: TG_SOFTMAX_GRID = `persistent` or `slice` when set, else
/// Persistent.
void set_staged_grid(StagedGrid g, std::int64_t max_ctas = 0);

/// The grid in effect, Auto resolved. Throws tg::ValueError naming TG_SOFTMAX_GRID when it
/// holds anything but `persistent` or `slice`.
StagedGrid staged_grid();

/// The CTA cap set with set_staged_grid (0: none).
std::int64_t staged_grid_max_ctas();

}  // namespace tg::ops
