// Layout builders (no gradient): full, random, from a dense tensor. See OPS.md "Layout
// builders"; the attention pattern builders are in patterns.h, the layouts derived from
// other layouts or data (matmul, adapted, distribution) in derived.h.
#pragma once

#include <cstdint>

#include "core/layout.h"

namespace tg {

/// Every block of a [B, Mb*bs, Nb*bs] batch active.
Layout full_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t block_size);
/// Each block active with probability `density` (Philox with `seed`; the same on every
/// machine). density 0 gives an empty layout, 1 a full one.
Layout random_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t block_size, double density,
                     std::uint64_t seed);
/// The layout of the non-zero content of `dense` [B, M, N]: a block is active iff any of
/// its elements is non-zero (NaN counts as non-zero). M and N must be divisible by block_size.
Layout layout_of(const Tensor& dense, std::int64_t block_size);
/// The `density` fraction of blocks of `dense` [B, M, N] with the largest L2 norms, in
/// each batch matrix: round(density · Mb · Nb) blocks (ties broken by the lower block
/// index), e.g. to prune a trained weight to a block-sparse one. NaN blocks rank first.
/// Floating dtypes, any device (read on the host). Errors: ShapeError (rank), LayoutError
/// (block size not a power of two or not dividing M, N), ValueError (density outside
/// [0, 1]), DTypeError (non-floating dense).
Layout magnitude_layout(const Tensor& dense, std::int64_t block_size, double density);

}  // namespace tg
