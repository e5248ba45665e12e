// Layout kinds shared by the block-sparse data-movement and conversion tests: the issue's
// acceptance list (empty, one block, ~30%, full, and layouts with an empty block-row and an
// empty block-column).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "core/layout.h"
#include "core/tensor.h"

namespace tgt {

enum class Density { Empty, One, Sparse, Full, Holes };
inline constexpr Density kDensities[] = {Density::Empty, Density::One, Density::Sparse, Density::Full,
                                         Density::Holes};

inline const char* density_name(Density d) {
  static const char* names[] = {"empty", "one block", "~30%", "full", "holes"};
  return names[static_cast<int>(d)];
}

/// A layout of the requested kind, seeded; Holes: ~70% active with one block-row and one
/// block-column empty in every batch.
inline tg::Layout make_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs, Density d,
                              std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb), false);
  const std::int64_t er = Mb ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(Mb)) : 0;
  const std::int64_t ec = Nb ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(Nb)) : 0;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const std::int64_t c = static_cast<std::int64_t>(i) % Nb, r = static_cast<std::int64_t>(i) / Nb % Mb;
    switch (d) {
      case Density::Empty: break;
      case Density::One: break;
      case Density::Sparse: m[i] = rng() % 10 < 3; break;
      case Density::Full: m[i] = true; break;
      case Density::Holes: m[i] = rng() % 10 < 7 && r != er && c != ec; break;
    }
  }
  if (d == Density::One && !m.empty()) m[rng() % m.size()] = true;
  return tg::Layout(tg::from_vector(m, {B, Mb, Nb}), bs);
}

}  // namespace tgt
