// Tile shapes of the tensor-core attention kernels, in one place: the host builds its tile
// lists with these sizes and the kernels are instantiated with them.
#pragma once

namespace tg::ops::attn {

/// Forward: 128 query rows per CTA, key tiles of 64. Dv <= 64: 4 warps x 2 slices of 16
/// rows (each K/V fragment feeds two MMAs); Dv = 128: 8 warps x 1 slice (O takes twice the
/// registers).
constexpr int kFwdBM = 128;
constexpr int kFwdBN = 64;
/// The Hopper forward's wide key tiles (kernel_choice.h's FwdKeys): 128 keys, 128-row tiles.
constexpr int kFwdWideBN = 128;
/// With those at D 64, the tall query tiles (FwdRows): 192 rows, three warpgroups.
constexpr int kFwdTallBM = 192;
constexpr int fwd_slices(int dv) { return dv <= 64 ? 2 : 1; }
constexpr int fwd_warps(int dv) { return kFwdBM / 16 / fwd_slices(dv); }

/// Backward kv pass: 8 warps x 16 keys = 128 keys per CTA; query tiles of 64 (32 on the
/// general path, which keeps ds/dt in registers too).
constexpr int kBwdKvWarps = 8;
constexpr int kBwdKvBN = 16 * kBwdKvWarps;
/// The narrow kv pass: 4 warps x 16 = 64 keys per CTA, for patterns sparse at 64-key
/// granularity (a 128-key tile steps through the union of two key blocks' query tiles).
constexpr int kBwdKvWarpsNarrow = 4;
constexpr int kBwdKvBNNarrow = 16 * kBwdKvWarpsNarrow;
constexpr int bwd_kv_bm(bool general) { return general ? 32 : 64; }

/// Backward q pass (deterministic dQ): 4 warps x 16 rows = 64 rows, key tiles of 64.
constexpr int kBwdQWarps = 4;
constexpr int kBwdQBM = 16 * kBwdQWarps;
constexpr int kBwdQBN = 64;

/// Head dims with compiled kernels.
constexpr bool supported_head_dim(long long d) { return d == 32 || d == 64 || d == 128; }

}  // namespace tg::ops::attn
