// Tile lists of the CUDA attention kernels, built on the host from the pattern and the
// options that hide whole tiles (causal, window), then cached on the device.
//
// Row lists: per (row bh, query tile m of bm rows), the key tiles n (of bn keys) holding at
// least one pair that the pattern visits and causal / window do not rule out, ascending,
// each entry (n << kFlagBits) | flags (kCheckPattern, kCheckGeometry of entry.h).
// Column lists: per (kv row, key tile n), the entries ((bh % group) · num_m + m) << kFlagBits
// | flags of the row lists that contain n (their transpose; all query heads of the group).
// Each list also has an order of its items for the launch (item_order): by bands of rows,
// the longest lists first within a band, so that a band's rows run together (K/V reuse in
// L2) and the grid ends on short lists of many rows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ops/attention/kernels.h"

namespace tg::ops::attn {

/// The host data the lists depend on.
struct ListSpec {
  std::int64_t bhq = 0, bhkv = 0, sq = 0, sk = 0;
  const std::uint8_t* pattern = nullptr;  ///< [bhq, qb, kb]
  std::int64_t qb = 0, kb = 0;
  const std::vector<std::int64_t>* q_starts = nullptr;  ///< qb + 1 block boundaries
  const std::vector<std::int64_t>* k_starts = nullptr;
  const std::vector<std::int32_t>* q_blk = nullptr;  ///< block of each query position [sq]
  const std::vector<std::int32_t>* k_blk = nullptr;  ///< block of each key position [sk]
  bool causal = false;
  std::int64_t wl = -1, wr = -1;  ///< < 0: unbounded
};

struct HostList {
  int num_m = 0, num_n = 0;
  std::vector<std::int32_t> order;    ///< items in launch order
  std::vector<std::int32_t> off;      ///< items + 1 offsets into entries
  std::vector<std::int32_t> entries;
};

/// The block of every position: blk[i] = r for starts[r] <= i < starts[r + 1].
std::vector<std::int32_t> block_of_positions(const std::vector<std::int64_t>& starts);

/// The spec of pattern `pat` (its host mask, pat.p() >= bhq rows) with causal and the window
/// bounds wl, wr (< 0: unbounded); q_blk and k_blk are block_of_positions of its starts, kept
/// alive by the caller as long as the spec.
ListSpec list_spec(const AttentionPattern& pat, std::int64_t bhq, std::int64_t bhkv, bool causal, std::int64_t wl,
                   std::int64_t wr, const std::vector<std::int32_t>& q_blk, const std::vector<std::int32_t>& k_blk);

/// Bands of rows of a launch order (item_order): the fewest rows holding at least `items`
/// items, at most max_rows rows; the last band at least the last rows holding last_items
/// items. The default, one row a band.
struct LaunchBand {
  std::int64_t items = 0;
  std::int64_t max_rows = 1;
  std::int64_t last_items = 0;
};

/// The launch order of the items whose lists `off` bounds (off.size() - 1 items, in rows of
/// per_group items: item x in row x / per_group): the rows cut into bands of consecutive rows
/// (`band`; the last band also takes the rows left over, fewer than a band, and the rows
/// before them that band.last_items asks for), bands in row order, the longest lists first
/// within a band, ties in item order.
std::vector<std::int32_t> item_order(const std::vector<std::int32_t>& off, std::int64_t per_group, LaunchBand band);

/// The forwards' bands of kernel_choice.h's LaunchOrder::Bands on a device of `sms` SMs and an
/// L2 cache of l2_bytes: kLaunchBandWaves items an SM, in no more rows than keep their K and V
/// (sk keys of d + dv 16-bit elements) within half the L2.
LaunchBand forward_band(int sms, std::int64_t l2_bytes, std::int64_t sk, std::int64_t d, std::int64_t dv);

/// The kv passes' bands of KvOrder::Tail on a device of `sms` SMs: one row a band, and a last
/// band of kKvTailWaves items an SM.
LaunchBand kv_tail_band(int sms);

/// Row lists for query tiles of bm rows and key tiles of bn keys, ordered in bands (item_order).
HostList build_row_lists(const ListSpec& s, int bm, int bn, LaunchBand band = {});

/// Column lists (the transpose of `rows`, grouped by kv row), ordered in bands (item_order).
HostList build_col_lists(const HostList& rows, std::int64_t bhq, std::int64_t bhkv, LaunchBand band = {});

/// Tile lists and pattern tables on one device.
struct DeviceWork {
  Tensor pattern;       ///< bool [bhq, qb, kb]
  Tensor q_blk, k_blk;  ///< i32 [sq], [sk]
  Tensor row_order, row_off, row_entries;
  Tensor col_order, col_off, col_entries;  ///< undefined unless asked for
  int num_m = 0, num_n = 0;
  std::int64_t row_items = 0, col_items = 0;
  std::int64_t pattern_checked = 0;  ///< entries (rows' and columns' alike) flagged kCheckPattern
};

/// The device work lists of problem `p` for tiles of bm x bn (and their transpose when
/// `with_cols`), the row lists in kernel_choice.h's launch_order() (bands of kLaunchBandWaves
/// items per SM of `dev`, of rows whose K and V fit half its L2 cache), the column lists in
/// its kv_order(), built once and cached by the pattern's id, the extents, causal / window, the tile
/// sizes and the bands, so a training loop builds them in its first step only.
std::shared_ptr<const DeviceWork> device_work(const AttentionProblem& p, int bm, int bn, bool with_cols, Device dev);

}  // namespace tg::ops::attn
