// Tests of parallel_ranges (runtime/parallel.h): every index covered exactly once, ranges
// never longer than the grain, for sizes around and far above one grain.
#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/parallel.h"
#include "util.h"

namespace test_parallel {

TEST_CASE("parallel_ranges covers [0, n) exactly once in ranges of at most the grain", "[runtime]") {
  for (std::int64_t grain : {1, 7, 64, 1 << 15}) {
    for (std::int64_t n : {std::int64_t{0}, std::int64_t{1}, grain - 1, grain, grain + 1, 5 * grain + 3, 40 * grain}) {
      if (n < 0) continue;
      INFO("n " << n << " grain " << grain);
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      std::atomic<bool> too_long{false}, empty{false};
      tg::parallel_ranges(n, grain, [&](std::int64_t i0, std::int64_t i1) {
        if (i1 - i0 > grain) too_long = true;
        if (i1 <= i0) empty = true;
        for (std::int64_t i = i0; i < i1; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
      });
      CHECK_FALSE(too_long.load());
      CHECK_FALSE(empty.load());
      std::int64_t wrong = 0;
      for (const auto& h : hits) wrong += h.load() != 1;
      CHECK(wrong == 0);
    }
  }
}

}  // namespace test_parallel
