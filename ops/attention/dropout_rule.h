// Attention dropout's keep decision, identical on the host and the device. Element e =
// (bh · Sq + i) · Sk + j reads 16 random bits: half e % 2 (low, high) of word (e / 2) % 4 of
// Philox block e / 8, so 8 consecutive keys of a row share one block. It is kept iff those
// bits, read as k / 2^16, are >= p. Sixteen bits a decision, not the 24 of ops::dropout:
// Philox's multiplies are what drawing costs on a GPU (one block for 8 decisions instead
// of 4), and p is still resolved to 1/65536.
#pragma once

#include <cstdint>

#include "runtime/macros.h"
#include "runtime/philox.h"

namespace tg::ops {

/// The threshold T of drop probability p in [0, 1): keep iff k >= T for the element's 16
/// bits k, which is exactly k / 2^16 >= p (T = ceil(p · 2^16), exact in double).
inline std::uint32_t attention_dropout_threshold(double p) { return philox::threshold(p, 16); }

/// Decision x (0..7: element 8·b + x of block b) of a drawn block with threshold T.
TG_HOST_DEVICE TG_INLINE bool attention_keep(const philox::U32x4& block, int x, std::uint32_t threshold) {
  const std::uint32_t w = philox::word(block, x >> 1);
  return ((x & 1) ? w >> 16 : w & 0xFFFFu) >= threshold;
}

/// The decision of element e under (seed, offset), drawing its block.
TG_HOST_DEVICE TG_INLINE bool attention_keep(std::uint64_t seed, std::uint64_t offset, std::uint64_t e,
                                             std::uint32_t threshold) {
  return attention_keep(philox::block(seed, offset, e >> 3), static_cast<int>(e & 7), threshold);
}

}  // namespace tg::ops
