// Inputs shared by the block-sparse softmax tests (test_sparse_softmax.cpp and
// test_sparse_softmax_two_pass.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/layout.h"

namespace tgt {

/// Plants the special rows the CUDA parity tests need into block data d ([n_blocks, bs, bs]
/// of layout l, bs >= 4, l not empty): in the first non-empty block-row, in-block row 1 all
/// -inf, one nan in row 2 (its last block), one +inf in row 3 (its first block).
inline void plant_special_rows(const tg::Layout& l, std::vector<double>& d) {
  const std::int64_t bs = l.block_size();
  const std::vector<std::int64_t> off = l.tables(tg::Device::cpu()).row_offsets.to_vector<std::int64_t>();
  std::size_t q = 0;
  while (off[q + 1] == off[q]) ++q;
  const auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  for (std::int64_t k = off[q]; k < off[q + 1]; ++k)
    for (std::int64_t j = 0; j < bs; ++j) d[at((k * bs + 1) * bs + j)] = -std::numeric_limits<double>::infinity();
  d[at((off[q + 1] - 1) * bs * bs + 2 * bs + bs / 2)] = std::nan("");
  d[at(off[q] * bs * bs + 3 * bs + 1)] = std::numeric_limits<double>::infinity();
}

}  // namespace tgt
