// The plan of one block-sparse product: which output tiles exist and, for each, the list
// of (x tile, y tile) pairs whose products it sums. Built once from the layouts' host
// index tables and shared by every call with the same operands' structure.
//
// The product is C = op(A) · op(B) with op(A) [B, M, K], op(B) [B, K, N] and C [B, M, N],
// all tiled into square bs x bs tiles. op() is the identity or, with a trans flag, the
// transpose of the stored matrix: the backward passes reuse the plan machinery with
// transposed reads instead of transposed copies.
//
// Tiles are named by an i32 id in their operand's own index space: the compressed block
// index for a block-sparse operand, the row-major block-grid index (b, r, c) of the stored
// matrix for a dense one. Both give the tile's first element at
//   (id / grid_cols) * bs * ld + (id % grid_cols) * bs
// with (grid_cols, ld) = (1, bs) for block data [n, bs, bs] and (C / bs, C) for a dense
// [B, R, C] (see TileAddr). Output tiles are numbered 0 .. n_out-1 in that same order.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/layout.h"

namespace tg::ops {

/// Where the tiles of one stored operand live: tile id -> element offset of its (0, 0).
struct TileAddr {
  std::int64_t grid_cols = 1;  ///< tiles per stored row of tiles (1 for block data)
  std::int64_t ld = 1;         ///< elements between consecutive rows of a tile
  std::int64_t bs = 1;
  std::int64_t offset(std::int64_t id) const { return (id / grid_cols) * bs * ld + (id % grid_cols) * bs; }
};

/// One operand (or the output) of a product as the planner sees it: block-sparse with a
/// layout, or dense [batch, rows, cols] (extents in elements); `trans` reads it transposed.
struct OperandDesc {
  Layout layout;  ///< defined: block-sparse
  std::int64_t batch = 0, rows = 0, cols = 0;
  bool trans = false;
  bool sparse() const { return layout.defined(); }
};

struct MatmulPlan {
  std::int64_t batch = 0, mb = 0, kb = 0, nb = 0, bs = 0;  ///< extents of C / op(A) / op(B) in tiles
  bool trans_a = false, trans_b = false;
  TileAddr a, b, c;
  std::int64_t n_out = 0;
  /// Pairs of output tile o are pair_begin[o] .. pair_begin[o+1]-1 of pair_a / pair_b, in
  /// increasing k; an output tile without pairs is exactly 0.
  std::vector<std::int32_t> pair_begin;
  std::vector<std::int32_t> pair_a, pair_b;
  /// Position of each pair's product along k (its k-block), and (b, i, j) of each output
  /// tile (3 per tile): what a backend needs to regroup the work into larger tiles.
  std::vector<std::int32_t> pair_k, out_coord;
  std::int64_t n_pairs() const { return static_cast<std::int64_t>(pair_a.size()); }
  /// Longest pair list.
  std::int64_t max_pairs = 0;

  /// Backend data derived from the plan (device copies, schedules), built once per key by
  /// `build` and kept for the plan's lifetime.
  template <typename T>
  const T& cached(const std::string& key, const std::function<std::shared_ptr<T>()>& build) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, std::shared_ptr<const void>(build())).first;
    return *static_cast<const T*>(it->second.get());
  }

 private:
  mutable std::mutex mu_;
  mutable std::map<std::string, std::shared_ptr<const void>> cache_;
};

/// The fewest k elements one split piece of a long pair list covers (split-K in the CUDA
/// schedules).
constexpr std::int64_t kMinChunkK = 256;

/// The plan of C = op(A) · op(B) (descs already validated: op(A) is [B, M, K], op(B)
/// [B, K, N], C [B, M, N], one block size `bs` dividing every extent). Built once and
/// returned again for operands of the same structure: kept with the output's layout (else
/// x's, else y's) for that layout's lifetime, and the last few also by value for equal
/// layouts rebuilt as new objects. Throws ShapeError when a tile or pair count exceeds the
/// i32 range.
std::shared_ptr<const MatmulPlan> matmul_plan(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c,
                                              std::int64_t bs);

/// For fine stores (kernels.h, sparse_matmul_fine_kernel): the ids of the blocks of `fine`
/// (block size fbs dividing plan.bs) that each output tile of `plan` covers, (bs / fbs)² a
/// tile, row-major within it, -1 where `fine` has no block; tile o's at o (bs / fbs)². The
/// tiles' grid must be fine's coarsened by bs / fbs (plan.c's layout covering fine's).
std::vector<std::int32_t> fine_block_ids(const MatmulPlan& plan, const Layout& fine);

}  // namespace tg::ops
