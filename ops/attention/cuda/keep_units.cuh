// Dropout's decisions drawn ahead of the Hopper kernels. Drawing them inside the forward and
// the kv pass put Philox blocks on each warpgroup's serial chain (the forward ran at 30% of
// its rate without dropout). A pre-pass draws them at the integer pipe's full rate into
// units the kernels load with one or two words a lane a step.
//
// Layout (Params::keep): units of 64 query rows x 16 keys, 32 words each. Word m holds rows
// 2m (bits 0-15) and 2m + 1 (bits 16-31), key k of the unit in bit k of a row's half; set =
// kept. Unit (bh, i / 64, j / 16) is at index (bh · keep_qt + i / 64) · keep_kc + j / 16;
// keep_qt covers sq rounded up to 128 (the forward's tiles), keep_kc covers sk in 16s. Only
// units of tiles in the drawing list are written, so only visible elements are defined.
#pragma once

#include <cstdint>

#include "ops/attention/cuda/params.cuh"

namespace tg::ops::attn {

/// Philox-4x32-10's round keys of one seed (philox.h: round r uses seed + r·(W0, W1)), formed
/// once on the host: the kernel's XORs then read them from the constant bank instead of
/// adding them up again for every block.
struct RoundKeys {
  std::uint32_t k0[10], k1[10];
};

inline RoundKeys round_keys(std::uint64_t seed) {
  RoundKeys rk;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    rk.k0[r] = k0;
    rk.k1[r] = k1;
    k0 += philox::W0;
    k1 += philox::W1;
  }
  return rk;
}

/// philox::block(seed, offset, blk) with seed's round keys `rk` (the same numbers).
__device__ __forceinline__ philox::U32x4 philox_block(const RoundKeys& rk, std::uint64_t offset, std::uint64_t blk) {
  std::uint32_t x = static_cast<std::uint32_t>(blk), y = static_cast<std::uint32_t>(blk >> 32);
  std::uint32_t z = static_cast<std::uint32_t>(offset), w = static_cast<std::uint32_t>(offset >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const std::uint32_t hi0 = __umulhi(philox::M0, x), lo0 = philox::M0 * x;
    const std::uint32_t hi1 = __umulhi(philox::M1, z), lo1 = philox::M1 * z;
    x = hi1 ^ y ^ rk.k0[r];
    y = lo1;
    z = hi0 ^ w ^ rk.k1[r];
    w = lo0;
  }
  return {x, y, z, w};
}

/// The 16 decisions of keys 8·b .. 8·b + 15 (blocks b, b + 1 of dropout_rule.h, drawn) as
/// bits 0..15, key k at bit k; `hi_thr` = T · 2^16.
__device__ __forceinline__ std::uint32_t draw_16_keys(const RoundKeys& rk, std::uint64_t offset, std::uint64_t b,
                                                      std::uint32_t thr, std::uint32_t hi_thr) {
  std::uint32_t bits = 0;
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const philox::U32x4 v = philox_block(rk, offset, b + static_cast<std::uint64_t>(q));
    const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int x = 0; x < 4; ++x) {  // key 8q + 2x: word x's low half; 8q + 2x + 1: its high half
      bits |= ((w[x] & 0xFFFFu) >= thr ? 1u : 0u) << (8 * q + 2 * x);
      bits |= (w[x] >= hi_thr ? 1u : 0u) << (8 * q + 2 * x + 1);
    }
  }
  return bits;
}

/// Word m of the 4 units (bh, qu, 4·tile + c) of a 64-key tile, c < 4: rows 64·qu + 2m and
/// + 1 against 16 keys each, 4 Philox blocks a word (dropout_rule.h; p.drop_groups: sk % 8
/// == 0, so a block never spans two rows). Drawn without branches; the bits of rows past sq
/// and keys past sk are cleared (they read as dropped), chunks past sk not written.
__device__ __forceinline__ void draw_unit_words(const Params& p, const RoundKeys& rk, int bh, int qu, int tile, int m) {
  const std::uint32_t thr = p.drop_threshold, hi_thr = thr << 16;
  const int i0 = 64 * qu + 2 * m;
  // T = 2^16 (p within 2^-16 of 1) keeps nothing (and T · 2^16 wraps); rows past sq keep nothing
  const std::uint32_t live = thr > 0xFFFFu ? 0u : (i0 < p.sq ? 0xFFFFu : 0u) | (i0 + 1 < p.sq ? 0xFFFF0000u : 0u);
  const std::uint64_t per_row = static_cast<std::uint64_t>(p.sk >> 3);  // blocks a row
  const std::uint64_t b0 =
      (static_cast<std::uint64_t>(bh) * static_cast<std::uint64_t>(p.sq) + static_cast<std::uint64_t>(i0)) * per_row +
      static_cast<std::uint64_t>(8 * tile);
  std::uint32_t* out = p.keep + ((static_cast<std::size_t>(bh) * p.keep_qt + qu) * p.keep_kc + 4 * tile) * 32 + m;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int keys = p.sk - 16 * (4 * tile + c);
    if (keys <= 0) break;
    const std::uint32_t cols = keys >= 16 ? 0xFFFFu : (1u << keys) - 1u;
    const std::uint64_t b = b0 + static_cast<std::uint64_t>(2 * c);
    const std::uint32_t word =
        draw_16_keys(rk, p.offset, b, thr, hi_thr) | (draw_16_keys(rk, p.offset, b + per_row, thr, hi_thr) << 16);
    out[32 * c] = word & (cols | (cols << 16)) & live;
  }
}

/// The forward warp's words (rows i_base + 0..15, i_base a multiple of 16; keys j_base +
/// 0..63, j_base of 64): for each 16-key chunk c, the words of rows g and g + 8 (lane (g, t)),
/// in kw[2c] and kw[2c + 1]. Each load of the warp reads one 32-byte sector. Issued while S
/// runs; fwd_keep_bits decodes them.
__device__ __forceinline__ void load_fwd_keep(const Params& p, int bh, int i_base, int j_base, int lane,
                                              std::uint32_t (&kw)[8]) {
  const int g = lane >> 2;
  const std::size_t unit = (static_cast<std::size_t>(bh) * p.keep_qt + (i_base >> 6)) * p.keep_kc + (j_base >> 4);
  const std::uint32_t* w = p.keep + unit * 32 + 8 * ((i_base & 63) >> 4) + (g >> 1);
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const bool in = (j_base >> 4) + c < p.keep_kc;  // chunks past sk: invisible
    kw[2 * c] = in ? __ldg(w + 32 * c) : 0u;
    kw[2 * c + 1] = in ? __ldg(w + 32 * c + 4) : 0u;
  }
}

/// The forward's keep bits, bit x = 4·nt + c of lane (g, t) for (row g + 8·(c >> 1), key
/// 8·nt + 2t + (c & 1)) of the warp's tile (the layout of its scores), from load_fwd_keep's
/// words: chunk c holds nt = 2c and 2c + 1, i.e. bits 8c .. 8c + 7.
__device__ __forceinline__ std::uint32_t fwd_keep_bits(const std::uint32_t (&kw)[8], int lane) {
  const int g = lane >> 2, t = lane & 3;
  const int shift = 16 * (g & 1) + 2 * t;  // the row's half, then keys 2t, 2t + 1 at bits 0, 1 (and 8, 9)
  std::uint32_t bits = 0;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const std::uint32_t a = (kw[2 * c] >> shift) & 0x303u, b = (kw[2 * c + 1] >> shift) & 0x303u;
    bits |= ((a & 3u) | ((b & 3u) << 2) | ((a >> 4) & 0x30u) | ((b >> 2) & 0xC0u)) << (8 * c);
  }
  return bits;
}

/// Lane `lane`'s word of the unit a kv-pass warp needs (query rows i_base + 0..63, i_base a
/// multiple of 64; keys j_base + 0..15, j_base of 16): one coalesced 128-byte load a warp,
/// issued before the step's products; unit_keep_bits decodes it after them. Keys past sk
/// read as dropped (they are invisible).
__device__ __forceinline__ std::uint32_t load_keep_unit(const Params& p, int bh, int i_base, int j_base, int lane) {
  if (j_base >= p.sk) return 0u;
  const std::size_t unit = (static_cast<std::size_t>(bh) * p.keep_qt + (i_base >> 6)) * p.keep_kc + (j_base >> 4);
  return __ldg(p.keep + unit * 32 + lane);
}

/// The kv pass's keep bits, bit x = 4·nt + c of lane (g, t) for (query 8·nt + 2t + (c & 1),
/// key g + 8·(c >> 1)) of the unit (the layout of its transposed scores), from the unit's
/// words, one a lane (load_keep_unit): rows 8·nt + 2t and 8·nt + 2t + 1 are word 4·nt + t.
__device__ __forceinline__ std::uint32_t unit_keep_bits(std::uint32_t word, int lane) {
  const int g = lane >> 2, t = lane & 3;
  std::uint32_t bits = 0;
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    // after the shift: c 0 at bit 0, c 2 at bit 8, c 1 at bit 16, c 3 at bit 24
    const std::uint32_t w = __shfl_sync(0xFFFFFFFFu, word, 4 * nt + t) >> g;
    bits |= ((w & 1u) | ((w >> 15) & 2u) | ((w >> 6) & 4u) | ((w >> 21) & 8u)) << (4 * nt);
  }
  return bits;
}

}  // namespace tg::ops::attn
