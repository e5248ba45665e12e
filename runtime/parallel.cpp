#include "runtime/parallel.h"

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tg {

void parallel_ranges(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& f) {
  if (n <= 0) return;
  const std::int64_t ranges = (n + grain - 1) / grain;
  if (ranges <= 1) {
    f(0, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < ranges; ++r) f(r * grain, std::min(n, (r + 1) * grain));
}

int parallel_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace tg
