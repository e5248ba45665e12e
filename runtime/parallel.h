// Splitting CPU work over the cores: the CPU kernels call parallel_ranges for loops whose
// iterations are independent. Built on OpenMP where the library is compiled with it
// (otherwise everything runs on the calling thread).
#pragma once

#include <cstdint>
#include <functional>

namespace tg {

/// Calls f(i0, i1) for consecutive ranges that cover [0, n) exactly once, each at most
/// `grain` long (grain >= 1), on the cores in parallel when there are at least two ranges
/// (inside an already parallel region, on the calling thread). f must be safe to run
/// concurrently on disjoint ranges and must not throw.
void parallel_ranges(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& f);

/// How many threads parallel_ranges spreads over (OpenMP's maximum; 1 without OpenMP), for
/// kernels that cut their work into a multiple of it.
int parallel_threads();

}  // namespace tg
