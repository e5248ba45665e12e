// What the CUDA kernels of block-sparse matmul receive, shared by the launch code
// (cuda.cu) and the tensor-core kernels (mma_kernel.cuh, one .cu per dtype).
//
// Work is a list of items, one CTA row each: (output tile, first pair, end pair, slot).
// An item with slot < 0 owns its output tile and writes it; items of an output tile
// whose pair list was split (split-K) write f32 (f64) partial tiles into workspace slots,
// which a reduction kernel sums in slot order. gridDim.y enumerates the sub-tiles of an
// output tile when the block is larger than the CTA tile. The grouped path's items are
// (region, first step, end step, -1) instead (see path.h).
// Include only from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tg::ops::spmm {

/// Tile id -> element offset of the tile's (0, 0) (see TileAddr in plan.h), with 32-bit
/// division: ids and grid widths fit i32.
struct DevAddr {
  unsigned grid_cols;
  long long row_step;  ///< bs * ld
  long long bs;
  __device__ __forceinline__ long long offset(int id) const {
    const unsigned u = static_cast<unsigned>(id);
    return static_cast<long long>(u / grid_cols) * row_step + static_cast<long long>(u % grid_cols) * bs;
  }
};

struct KernelArgs {
  const int4* items;  ///< [n_items]: out tile, pair begin, pair end, slot (-1: direct)
  const int2* pairs;  ///< [n_pairs]: (a tile id, b tile id)
  const int*
      steps;  ///< grouped path: [n_steps, GM + GN]: a tile ids of the GM block-rows, b tile ids of the GN block-columns
  const int* outs;  ///< grouped path: [n_regions, GM * GN]: output tile ids, row-major (-1: not stored)
  const int2* coords;  ///< TMA path: [n_steps, 1 + G]: (row, column) origins of x / member y tiles (row -1: none)
  const void* a;
  const void* b;
  void* c;
  void* ws;  ///< partial tiles [n_slots, bs, bs] of the accumulation type
  DevAddr addr_a, addr_b, addr_c;
  long long lda, ldb, ldc;
  int bs;
  int lg_kpp;  ///< log2 of the CTA k-steps per pair (bs / BK); set by the launcher
  int nsub;    ///< CTA tiles per block side (bs / BM); set by the launcher
  int trans_a, trans_b;
  /// TMA wgmma path: [n_queues + 1] offsets into items; queue q (CTA q / rings, ring q %
  /// rings) runs items queues[q] .. queues[q + 1] - 1 (queues.h)
  const int* queues;
  long long rows_a, rows_b, rows_c;  ///< TMA wgmma path: rows of ld elements each operand's storage holds
  int trans_c;                ///< TMA wgmma path: column groups (the items' tiles are stored transposed)
  /// TMA wgmma path at bs 64, fine stores (sparse_matmul_fine_kernel): [n output tiles, (64 /
  /// fine_bs)²] the ids of the fine blocks each output tile covers, row-major in the tile
  /// (-1: not stored); c then holds the fine blocks, rows_c = their rows (n fine_bs), and
  /// the split reduction stores through it too. Null: the tiles are stored as they are.
  const int* fine_c;
  int fine_bs;  ///< 16 or 32 with fine_c
};

/// Launches the tensor-core kernel for element type E (bf16, half, or float as TF32) with
/// the CTA tile for block size args.bs; n_items CTA rows on `stream`. Defined per dtype
/// in mma_<dtype>.cu.
template <typename E>
void launch_mma(const KernelArgs& args, int n_items, cudaStream_t stream);

/// Launches the grouped tensor-core kernel (E bf16 or half, args.bs 32 or 64): one CTA per
/// item = region of rows x cols elements (128 x 128, 64 x 128 or 128 x 64) made of
/// (rows / bs) x (cols / bs) output blocks; defined in mma_<dtype>.cu.
template <typename E>
void launch_mma_grouped(const KernelArgs& args, int n_items, int rows, int cols, cudaStream_t stream);

/// Launches the warp-specialised Hopper kernel (TMA loads into mbarrier-guarded stages,
/// warpgroup MMAs, persistent grid; see wgmma_tma_kernel.cuh) on the items of a group
/// schedule of gm lines of g members (row_groups.h: args.items, args.coords, args.outs) dealt
/// to n_queues queues (args.queues; a multiple of ops::tma_rings(args.bs, g), one CTA per rings);
/// with args.trans_c a column-group schedule, args describing the transposed product (a: the
/// stored y, b: the stored x, trans flags swapped and negated; c as it is). E bf16 or half,
/// (args.bs, g, gm) one of (128, 1, 1), (128, 2, 1), (64, 1, 1), (64, 4, 1), (64, 4, 2);
/// operands 16-byte aligned with rows of a multiple of 8 elements, compute capability 9.0
/// only. Defined in wgmma_<dtype>.cu.
template <typename E>
void launch_wgmma_tma(const KernelArgs& args, int n_queues, int g, int gm, cudaStream_t stream);

/// The CTA tile side the tensor-core kernel uses for block size bs.
inline int mma_tile(int bs) { return bs >= 128 ? 128 : bs; }

}  // namespace tg::ops::spmm
