// Random block-sparse options shared by the CPU and CUDA flash-attention tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "core/block_sparse.h"
#include "core/layout.h"
#include "ops/layout/builders.h"
#include "util.h"

namespace tgt {

/// A bool element mask [P, sq, sk] at block size bs: ~60% of the blocks present, each
/// element true (excluded) with probability 0.3; seeded.
inline tg::BlockSparseTensor random_element_mask(std::int64_t P, std::int64_t sq, std::int64_t sk, std::int64_t bs,
                                                 std::uint64_t seed) {
  tg::Layout l = tg::random_layout(P, sq / bs, sk / bs, bs, 0.6, seed);
  std::mt19937_64 rng(seed + 1);
  std::vector<bool> d(static_cast<std::size_t>(l.n_blocks() * bs * bs));
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = rng() % 10 < 3;
  return tg::BlockSparseTensor(tg::from_vector(d, {l.n_blocks(), bs, bs}), l);
}

/// An f64 additive bias [bhq, sq, sk] at block size bs: ~70% of the blocks present, values
/// uniform in [-2, 2); seeded.
inline tg::BlockSparseTensor random_bias(std::int64_t bhq, std::int64_t sq, std::int64_t sk, std::int64_t bs,
                                         std::uint64_t seed) {
  tg::Layout l = tg::random_layout(bhq, sq / bs, sk / bs, bs, 0.7, seed);
  return tg::BlockSparseTensor(rand64({l.n_blocks(), bs, bs}, seed + 1, -2.0, 2.0), l);
}

}  // namespace tgt
