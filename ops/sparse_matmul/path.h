// Choice between the two decompositions of a bf16/f16 product on CUDA, overridable so that
// tests can run both on the same inputs.
//
// Per-block: one CTA per output block (or per 128 x 128 piece of a larger one) over its
// pair list, with split-K for long lists. Grouped (blocks of 32 and 64): one CTA per
// output region of 128 x 128 (Grouped), 64 x 128 (GroupedWide: one band of block-rows)
// or 128 x 64 (GroupedTall) elements made of several blocks, over the union of the
// k-blocks its blocks need, absent operand blocks read as zeros; operand tiles are shared
// by the region's blocks. Auto takes the cheapest by an estimate of the products each
// computes, zeros included, weighted by the speed of its tile; a grouped one only when no
// region is much longer than the rest (it has no split-K).
//
// WgmmaTma (blocks of 64 and 128, compute capability 9.0 only): the Hopper kernel, warp-
// specialised (a warp loading with TMA into mbarrier-guarded stages, two warpgroups
// multiplying with wgmma; persistent grid; wgmma_tma_kernel.cuh), on groups of output
// blocks of one block-row that read the same x tiles or of one block-column that read the
// same y tiles (row_groups.h), as wide as an estimate of their cost says: one block, or
// 2 (bs 128) / 4 (bs 64) blocks a tile, and at bs 64 pairs of block-rows (block-columns) on
// 4 columns (rows) both store, over the union of their k lists (tiles of 2 x 4 blocks; the
// rest as groups of one line in the same launch), split-K as the per-block schedule;
// WgmmaTmaNarrow forces one block a tile, WgmmaTmaWide row groups, WgmmaTmaWideColumns
// column groups, WgmmaTmaRowPairs pairs of row groups, WgmmaTmaColumnPairs pairs of column
// groups (at bs 128 the pairs are the groups of one line). Auto takes WgmmaTma wherever it
// applies (operands with fewer than 2^31 rows), before the others.
#pragma once

#include <cstdint>

namespace tg::ops::spmm {

enum class MmaPath {
  Auto,
  PerBlock,
  Grouped,
  GroupedWide,
  GroupedTall,
  WgmmaTma,
  WgmmaTmaNarrow,
  WgmmaTmaWide,
  WgmmaTmaWideColumns,
  WgmmaTmaRowPairs,
  WgmmaTmaColumnPairs
};

/// Forces the CUDA decomposition of later bf16/f16 products (process-wide; Auto restores
/// the heuristic). Grouped is taken only where it applies (block 32 or 64, 16-byte aligned
/// operands), the WgmmaTma ones too (block 64 or 128, 16-byte aligned operands, a compute
/// capability 9.0 device); elsewhere the per-block one runs.
void set_mma_path(MmaPath path);

/// The decomposition set by set_mma_path (Auto by default).
MmaPath mma_path();

/// Caps the persistent grid of the WgmmaTma paths at n CTAs for later products (process-wide;
/// 0, the default: one CTA an SM). For tests: with fewer CTAs than items, each CTA runs a
/// queue of several items (queues.h) on small problems. Throws tg::Error if n < 0.
void set_tma_max_ctas(int n);

/// The cap set by set_tma_max_ctas (0: none).
int tma_max_ctas();

/// Whether CUDA device `device` (an existing one) can run the WgmmaTma paths: compute
/// capability exactly 9.0, the only one sm_90a code runs on.
bool wgmma_supported(int device);

/// Whether products of blocks of 16 or 32 run as products of the 64-blocks covering them
/// (sparse_matmul.cpp, `covering_route`): Auto where the Hopper kernel takes 64-blocks (bf16 /
/// f16 on a device of wgmma_supported) and the covering blocks do at most
/// max_coarse_work(bs) times the fine blocks' work; Never keeps the block size; Always takes
/// 64-blocks wherever the extents allow, on any device and dtype (tests run it on the CPU).
enum class CoarseBlocks { Auto, Never, Always };

/// The most work (sum of block products, in multiply-adds) the covering 64-blocks may do, as
/// a multiple of that of the blocks of `bs` (16 or 32) they cover, for Auto to take them.
/// Measured (H100, 16 x 2048³ bf16, random layouts, bench/RESULTS.md 2026-12-06,
/// thirty-second session): at block 32 the covering blocks doing 3.4x the work took 0.58-0.68
/// of the time (1.9-2.7x the work: 0.35-0.52); at block 16, 8.1x the work 0.33-0.43 of the
/// time, 4x the work 0.16-0.20. The limits stay below where those ratios reach 1.
constexpr double max_coarse_work(std::int64_t bs) { return bs <= 16 ? 10.0 : 4.0; }

/// Sets CoarseBlocks for later products (process-wide; Auto restores the heuristic, or the
/// environment's TG_MATMUL_COARSE where set).
void set_coarse_blocks(CoarseBlocks c);

/// The setting of set_coarse_blocks; under Auto, TG_MATMUL_COARSE=never|always where set (read
/// once), else Auto. Throws tg::ValueError naming the variable when it holds anything else.
CoarseBlocks coarse_blocks();

/// Whether a block-sparse output of the covering route is stored straight into its blocks of
/// 16 or 32 (`sparse_matmul_fine_kernel`: each 64-block's finished tile split into the fine
/// blocks it covers: on a Hopper GPU by the kernel's TMA stores, on the CPU by its tile
/// loop; the other CUDA paths keep the move), not computed as 64-blocks and moved out
/// afterwards. On by default; off
/// (set_fine_stores(false) or TG_MATMUL_FINE_STORES=off) keeps the move, for comparison.
void set_fine_stores(bool on);

/// The setting of set_fine_stores, and TG_MATMUL_FINE_STORES=on|off where set (read once;
/// set_fine_stores(false) wins). Throws tg::ValueError naming the variable when it holds
/// anything else.
bool fine_stores();

}  // namespace tg::ops::spmm
