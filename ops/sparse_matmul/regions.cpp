#include "ops/sparse_matmul/regions.h"

#include <algorithm>

namespace tg::ops {

RegionSchedule region_schedule(const MatmulPlan& p, std::int64_t gm, std::int64_t gn) {
  RegionSchedule s;
  s.gm = gm;
  s.gn = gn;
  const std::int64_t w = gm + gn, mg = (p.mb + gm - 1) / gm, ng = (p.nb + gn - 1) / gn;
  auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  auto region_of = [&](std::int64_t o) {
    const std::int32_t* c = &p.out_coord[at(3 * o)];
    return (c[0] * mg + c[1] / gm) * ng + c[2] / gn;
  };
  // Output tiles sorted by region (row-major regions: neighbours share operand panels).
  std::vector<std::int32_t> order(at(p.n_out));
  for (std::int64_t o = 0; o < p.n_out; ++o) order[at(o)] = static_cast<std::int32_t>(o);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t u, std::int32_t v) { return region_of(u) < region_of(v); });

  std::vector<std::int32_t> rec(at(p.kb * w), -1);  // step record per k of the current region
  std::vector<char> seen(at(p.kb), 0);
  std::vector<std::int32_t> ks;
  for (std::size_t q0 = 0; q0 < order.size();) {
    const std::int64_t region = region_of(order[q0]);
    const std::size_t out_base = s.outs.size();
    s.outs.resize(out_base + at(gm * gn), -1);
    ks.clear();
    std::size_t q1 = q0;
    for (; q1 < order.size() && region_of(order[q1]) == region; ++q1) {
      const std::int32_t o = order[q1];
      const std::int32_t* c = &p.out_coord[at(3 * o)];
      const std::int64_t gi = c[1] % gm, gj = c[2] % gn;
      s.outs[out_base + at(gi * gn + gj)] = o;
      for (std::int32_t q = p.pair_begin[at(o)]; q < p.pair_begin[at(o) + 1]; ++q) {
        const std::int32_t k = p.pair_k[at(q)];
        if (!seen[at(k)]) {
          seen[at(k)] = 1;
          ks.push_back(k);
        }
        rec[at(k * w + gi)] = p.pair_a[at(q)];
        rec[at(k * w + gm + gj)] = p.pair_b[at(q)];
      }
    }
    std::sort(ks.begin(), ks.end());
    const auto first = static_cast<std::int32_t>(s.steps.size() / at(w));
    s.items.insert(s.items.end(),
                   {static_cast<std::int32_t>(s.n_regions), first, first + static_cast<std::int32_t>(ks.size()), -1});
    for (const std::int32_t k : ks) {
      std::int32_t* r = &rec[at(k * w)];
      s.steps.insert(s.steps.end(), r, r + w);
      std::fill(r, r + w, -1);
      seen[at(k)] = 0;
    }
    ++s.n_regions;
    s.total_steps += static_cast<std::int64_t>(ks.size());
    s.max_steps = std::max<std::int64_t>(s.max_steps, static_cast<std::int64_t>(ks.size()));
    q0 = q1;
  }
  s.work = s.total_steps * gm * gn;
  return s;
}

}  // namespace tg::ops
