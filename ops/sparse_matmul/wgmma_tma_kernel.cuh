// The warp-specialised Hopper (sm_90a) kernel of block-sparse matmul for bf16 / f16,
// blocks of 64 and 128, on row groups (row_groups.h): up to G output blocks of one
// block-row that read the same x tiles, computed together so that each x tile is loaded
// once and multiplied with one wide instruction (at bs 64 also two such rows a tile; a
// column group runs as the row group of the transposed product, TC); split pieces go to
// workspace slots as in cuda_launch.cuh. TMA loads and warpgroup MMAs overlap through
// mbarrier-guarded stages.
//
// Roles. A CTA has two consumer warpgroups and a producer warp per ring. The producer
// only loads: its first thread walks the ring's items and k-steps, waits until a stage is
// free, and starts TMA copies of the step's x tile and its members' y tiles into it (the
// copies count down the stage's "full" barrier). The consumers only multiply: they wait
// for a stage to be full, issue its wgmmas, and release it (its "empty" barrier) once the
// wgmmas reading it have completed, one step later, so that a group is always in flight.
// Loads run up to STAGES steps ahead of the MMAs, across items too: while the consumers
// store one tile, the next one's operands are already arriving.
//
// Epilogue. A consumer writes its part of a finished tile into two shared boxes of 64 x 64
// in turn (stmatrix, which also transposes the tiles of column groups) and its first
// thread stores each box with TMA, so that the consumer goes on to the next item's MMAs
// while the stores drain. Per-thread stores from the fragments (packing, quad shuffles)
// took a third of the consumer warps' stall samples at density 0.25; this measured 2-5%
// faster there, 1-2% at density 1 (bench/RESULTS.md, 12-04 ninth session: the operand
// stream is what remains). Split pieces write f32 partial tiles with plain stores. With
// fine stores (KernelArgs::fine_c: the covering route's block-sparse output of blocks of 16
// or 32) the box holds the fine blocks a tile covers, each stored by one lane.
//
// Tiles (CTA tile GM bs x G bs; k advances BK = 64 a step; k steps of 32 with twice the
// stages measured 1.2-1.5x slower):
//   bs 128: one ring, the consumers take 64 rows each, n = 128 G (G 1 or 2);
//   bs 64, G 4, GM 2 (groups of two block-rows): one ring, the consumers take one
//     block-row each, n = 256: the smem geometry of bs 128, G 2;
//   bs 64, G 4: one ring, the consumers take two members (128 columns) each;
//   bs 64, G 1: two rings, one per consumer, each with its own items and 64 x 64 tiles.
// A member slot without a tile (the last group of a row) is not loaded and not stored; the
// products on its stale stage bytes land in accumulators nobody reads. In the GM 2 kernel a
// group of one line (tiles that found no partner row) runs as the G 4 tile does, the
// consumers splitting its members, so one launch mixes both shapes; in a group of two lines
// over the union of their k lists, the consumer of a line without an x tile at a step
// multiplies zeros there (nothing was loaded for it). The grid is persistent: one CTA an
// SM, each ring running its own queue of items, dealt on the host by their estimated costs
// (queues.h). (Clusters of two CTAs multicasting the operand two items share measured
// slower, twice: 1.4-1.9x with the first epilogue, 1.04x at block 128 and 1.37x at block 64
// with this one; a stage then refills only once both CTAs released it, a longer round trip
// than its MMAs hide. Loading half the y bytes without sharing them, for timing, was 10-17%
// faster: the operand traffic is the remaining cost at density 1. bench/RESULTS.md, 12-04.)
//
// Layout. Every operand tile lives in the 128-byte-swizzled layout wgmma reads (and the
// tensor maps write): lines of 128 bytes (64 elements), 8 lines to a 1024-byte atom, the
// 16-byte chunk c of line l stored at chunk c ^ (l % 8). A tile stored with rows along k
// (x not transposed, y transposed) is "K-major": one line per row of m (n), atoms 1024
// bytes apart along m (n) (the descriptor's stride offset). One stored with k outermost
// is "MN-major": one line per k-row and 64 elements of m (n); 8 k-rows make an atom, and
// a column of 64 elements over the BK k-rows is 8 KiB, the next column following it (the
// leading offset): transposed reads cost nothing, the instruction's transpose bit says
// which layout it reads. Members' y tiles follow each other (bs x BK x 2 bytes apart), so
// that G of them read as one n = G bs operand.
// Include only from the per-dtype wgmma_<dtype>.cu files.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "ops/cuda_tma.cuh"
#include "ops/cuda_wgmma.cuh"
#include "ops/sparse_matmul/cuda_launch.cuh"
#include "ops/sparse_matmul/mma_kernel.cuh"
#include "ops/sparse_matmul/queues.h"
#include "ops/sparse_matmul/row_groups.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/tensor_map.h"
#include "runtime/error.h"

namespace tg::ops::spmm::tma_wg {

/// k step of every tile: one 128-byte swizzled line of 16-bit elements.
constexpr int BK = 64;

/// Shared memory of the store epilogue: two boxes of 64 x 64 16-bit elements a consumer,
/// used in turn, in the 128-byte-swizzled layout the output's tensor map stores from (row r
/// at r * 128 bytes, its 16-byte chunk c at chunk c ^ (r % 8): the 8 rows one stmatrix
/// writes land in 8 different bank groups).
constexpr int EPI_BOX = 64 * 64 * 2;
constexpr int EPI_BYTES = 2 * 2 * EPI_BOX;

/// Descriptor of k16 slice j of a 64 x BK (or N x BK) operand tile at address s. K-major
/// tiles have lines of BK elements (128 bytes, 128-byte swizzle, 1024-byte atoms), slices
/// 32 bytes apart inside each line. MN-major tiles have 128-byte lines (one k-row of 64
/// elements), 64-element columns of BK k-rows (BK x 128 bytes apart), slices 16 k-rows = 2
/// atoms of 1024 bytes apart.
template <bool K_MAJOR>
__device__ __forceinline__ std::uint64_t slice_desc(std::uint32_t s, int j) {
  if constexpr (K_MAJOR)
    return ops::wg::make_desc(s + static_cast<std::uint32_t>(j) * 32u, 16u, 8u * BK * 2u);
  else
    return ops::wg::make_desc(s + static_cast<std::uint32_t>(j) * 2048u, BK * 128u, 1024u);
}

/// Block size BS, G members per block-row of a group, GM block-rows (see the file comment
/// for the four shapes).
template <int BS_, int G_, int GM_ = 1>
struct TmaCfg {
  static constexpr int BS = BS_, G = G_, GM = GM_;
  static_assert((BS == 128 && (G == 1 || G == 2) && GM == 1) || (BS == 64 && (G == 1 || G == 4) && GM == 1) ||
                    (BS == 64 && G == 4 && GM == 2),
                "tile shapes");
  static constexpr int kRings = ops::tma_rings(BS, G);
  static constexpr bool kSplitRows = GM * BS == 128;  ///< consumers split the rows (else the members)
  static constexpr int NC = kRings == 2 ? 64 : kSplitRows ? G * BS : G * BS / 2;  ///< a consumer's columns
  static constexpr int kThreads = 256 + 32 * kRings;  ///< two consumer warpgroups, a producer warp per ring
  static constexpr int A_ROW = BS * BK * 2;  ///< one block-row's x tile
  static constexpr int A_BYTES = GM * A_ROW, B_MEMBER = BS * BK * 2, B_BYTES = G * B_MEMBER;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  /// As many stages as fit besides the store epilogue's boxes (and 1 KiB of alignment).
  static constexpr int STAGES = std::min(12, (227 * 1024 - 1024 - EPI_BYTES) / (kRings * STAGE_BYTES));
  /// Warps that release a stage: both consumers' (one ring) or one consumer's.
  static constexpr int kReleasers = 8 / kRings;
  static constexpr std::size_t SMEM = static_cast<std::size_t>(kRings) * STAGES * STAGE_BYTES + EPI_BYTES + 1024;
  static_assert(SMEM <= 227 * 1024, "fits the opt-in shared memory of an SM");
  static_assert(STAGES >= 3, "a deep enough ring");
  static_assert(STAGE_BYTES % 1024 == 0 && A_BYTES % 1024 == 0 && (64 * BK * 2) % 1024 == 0,
                "stages, tiles and 64-row halves start on swizzle atoms");
};

/// Lines of an operand's TMA box. With boxes of 32 lines the producer's one thread limited
/// a step at densities 0.25-1: ~230 instructions a step (ten copies at bs 64, each wrapped
/// in a dozen instructions that move its operands to uniform registers) took about as long
/// as the consumers' MMAs, which waited on full stages while the producer never waited on a
/// free one. Boxes of 64 lines halve the copies and measured 1.07-1.21x faster. (A fifth
/// fewer producer instructions again, by a path without per-member tests, gained 4% at
/// density 1 and lost 2% at 0.5: measured, taken back. bench/RESULTS.md, 12-06 twenty-
/// seventh session.)
constexpr int BOX_ROWS = 64;

/// Starts the loads of one bs x BK (K_MAJOR: stored rows along k) or BK x bs tile of the
/// operand `map` at origin o, k offset kk, into shared address dst, in boxes of BOX_ROWS
/// lines: K-major box b holds rows BOX_ROWS b.. (lines of BK elements), MN-major box (j, h)
/// the k-rows BOX_ROWS h.. of 64-element column j.
template <int BS, bool K_MAJOR>
__device__ __forceinline__ void load_tile(std::uint32_t dst, const CUtensorMap* map, std::uint32_t bar, int2 o, int kk) {
  constexpr int R = BOX_ROWS;
  constexpr int H = K_MAJOR ? 1 : BK / R;  // boxes per 64-element column (MN-major)
#pragma unroll
  for (int b = 0; b < (K_MAJOR ? BS / R : (BS / 64) * H); ++b) {
    const int j = b / H, h = b % H;
    const std::uint32_t d = K_MAJOR ? dst + b * (R * BK * 2u) : dst + j * (BK * 128u) + h * (R * 128u);
    const int c0 = K_MAJOR ? o.y + kk : o.y + 64 * j;
    const int c1 = K_MAJOR ? o.x + R * b : o.x + kk + R * h;
    tma::load_2d(d, map, bar, c0, c1);
  }
}

/// A producer's position in its queue's work: item w (of items w .. end - 1), k-step s of its
/// nsteps; items without steps are skipped (their consumers only store zeros).
struct Cursor {
  int w, end, s, nsteps, first;  ///< first: the item's first row of the steps table
  __device__ __forceinline__ bool valid() const { return w < end; }
  __device__ __forceinline__ void settle(const KernelArgs& args) {
    for (; w < end; ++w) {
      const int4 item = args.items[w];
      nsteps = (item.z - item.y) << args.lg_kpp;
      first = item.y;
      if (nsteps > 0) break;
    }
    s = 0;
  }
  __device__ __forceinline__ void advance(const KernelArgs& args) {
    if (++s == nsteps) {
      ++w;
      settle(args);
    }
  }
};

/// What the TMA operations of one k-step need: the tile origins (row, column; row -1:
/// no tile) of the GM x tiles and the G members' y tiles, and the k offset. Fetched one
/// producer iteration before its use, so that the load latency hides behind that
/// iteration's waits.
template <int N>
struct StepBoxes {
  int2 o[N];
  int kk;
  __device__ __forceinline__ void fetch(const KernelArgs& args, const Cursor& c) {
    const int2* row = args.coords + static_cast<long long>(c.first + (c.s >> args.lg_kpp)) * N;
#pragma unroll
    for (int m = 0; m < N; ++m) o[m] = row[m];
    kk = (c.s & ((1 << args.lg_kpp) - 1)) * BK;
  }
};

/// Issues the TMA loads of one step into the stage at sa, counted by its barrier bar.
template <class C, bool TA, bool TB>
__device__ __forceinline__ void step_boxes(const StepBoxes<C::GM + C::G>& st, const CUtensorMap* map_a,
                                           const CUtensorMap* map_b, std::uint32_t sa, std::uint32_t bar) {
  std::uint32_t bytes = 0;
#pragma unroll
  for (int r = 0; r < C::GM; ++r) bytes += st.o[r].x >= 0 ? C::A_ROW : 0;
#pragma unroll
  for (int m = 0; m < C::G; ++m) bytes += st.o[C::GM + m].x >= 0 ? C::B_MEMBER : 0;
  tma::arrive_expect_tx(bar, bytes);
#pragma unroll
  for (int r = 0; r < C::GM; ++r) {
    if (C::GM > 1 && st.o[r].x < 0) continue;
    load_tile<C::BS, !TA>(sa + r * C::A_ROW, map_a, bar, st.o[r], st.kk);
  }
#pragma unroll
  for (int m = 0; m < C::G; ++m) {
    if (st.o[C::GM + m].x < 0) continue;
    load_tile<C::BS, TB>(sa + C::A_BYTES + m * C::B_MEMBER, map_b, bar, st.o[C::GM + m], st.kk);
  }
}

/// Stores four 8 x 8 matrices of 16-bit values held in the mma fragment layout (lane l:
/// row l / 4, columns 2 (l % 4), + 1 of each) to shared memory, row k of matrix m at the
/// address lane 8 m + k gives; TRANS stores each matrix transposed.
template <bool TRANS>
__device__ __forceinline__ void stmatrix4(std::uint32_t addr, std::uint32_t a, std::uint32_t b, std::uint32_t c,
                                          std::uint32_t d) {
  if constexpr (TRANS)
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b),
                 "r"(c), "r"(d)
                 : "memory");
  else
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b),
                 "r"(c), "r"(d)
                 : "memory");
}

/// Starts moving the line holding p into L1.
__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p)); }

/// Synchronises the 128 threads of consumer warpgroup `consumer` (named barrier 1 + consumer).
__device__ __forceinline__ void sync_consumer(int consumer) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(consumer + 1) : "memory");
}

/// Fine stores (args.fine_c): the shared address of 16-byte chunk `chunk` (0-7) of row
/// `row` (0-63) of a 64 x 64 box laid out as the (64 / fb)² fine blocks of fb x fb it covers
/// (row-major, fb² 2 bytes each), each in the layout its tensor map stores from: lines of 2
/// fb bytes with the swizzle of that span (chunk c of line r at chunk c ^ the line's address
/// bits 7..; the blocks start on the swizzle's period, so the box offset adds nothing). A
/// fine block's 8 consecutive lines then fall in 8 different bank groups, as in the 64-wide
/// box.
__device__ __forceinline__ std::uint32_t fine_chunk(std::uint32_t box, int row, int chunk, int fb) {
  const int lg = fb == 32 ? 5 : 4;  // log2 fb
  const int cpl = fb / 8;           // chunks a line
  const int sub = ((row >> lg) << (6 - lg)) + chunk / cpl;
  const int r = row & (fb - 1), c = chunk & (cpl - 1);
  const int sw = ((r * 2 * fb) >> 7) & (cpl - 1);
  return box + static_cast<std::uint32_t>(sub * fb * fb * 2 + r * 2 * fb + ((c ^ sw) << 4));
}

/// Stores a consumer's accumulators (its 64 rows from row0_tile, NC columns) of a direct
/// item to the output tiles out_tile[] through shared memory and TMA stores, in boxes of 64
/// x 64: each box is written with stmatrix (TC: transposed, the tile of a column group being
/// the transpose of the output block), then stored by the consumer's first thread while the
/// consumer goes on with its next item. n_boxes counts the consumer's boxes (the shared box
/// used in turn); the store that read a box two boxes ago is waited for before it is
/// written again. Fine stores (args.fine_c, bs 64: a box is a whole output tile): the box
/// holds the tile's fine blocks (fine_chunk), lane q of the first warp storing block q (id
/// -1: none) with its own TMA store, so that the 4 or 16 stores go out as one instruction
/// (one thread issuing 16 made block 16 slower than moving the blocks afterwards).
template <class C, int NC, typename E, bool TC>
__device__ __forceinline__ void store_boxes(const float* acc, const int* out_tile, const CUtensorMap* map_c,
                                            const KernelArgs& args, std::uint32_t epi, int row0_tile, int consumer,
                                            int warp, int lane, unsigned& n_boxes) {
  constexpr int J = C::BS / 8;  // 8-column chunks of a member
  const int k = lane & 7, hf = (lane >> 3) & 1, jhi = lane >> 4;  // the row and matrix this lane addresses
  const bool leader = warp == 0 && lane == 0;
  const bool fine = args.fine_c != nullptr;
  const int per = fine ? 64 / args.fine_bs : 1;  // fine blocks a side of the tile
  // the threads that store (and wait for the stores of) a box
  const bool storer = warp == 0 && lane < per * per;
#pragma unroll
  for (int b = 0; b < NC / 64; ++b) {
    const int mm = 64 * b / C::BS, off = 64 * b % C::BS;  // member, its first column in the box
    const int o = out_tile[mm];
    if (o < 0) continue;
    const std::uint32_t box = epi + (n_boxes & 1u) * EPI_BOX;
    if (storer) tma::bulk_wait_read<1>();
    sync_consumer(consumer);
    // Matrices (rows 16 warp + 8 hf .., chunk jj) for jj = 2 jp, 2 jp + 1: the top and
    // bottom halves of the warp's 16 rows (accumulator pairs 0-1 and 2-3) of two chunks.
#pragma unroll
    for (int jp = 0; jp < 4; ++jp) {
      const int q0 = 4 * (mm * J + off / 8 + 2 * jp), q1 = q0 + 4;
      const std::uint32_t r0 = gpu::pack2<E>(acc[q0], acc[q0 + 1]), r1 = gpu::pack2<E>(acc[q0 + 2], acc[q0 + 3]);
      const std::uint32_t r2 = gpu::pack2<E>(acc[q1], acc[q1 + 1]), r3 = gpu::pack2<E>(acc[q1 + 2], acc[q1 + 3]);
      const int jj = 2 * jp + jhi;
      // Not transposed: box row 16 warp + 8 hf + k, chunk jj. Transposed: box row 8 jj + k
      // (an accumulator column), chunk 2 warp + hf (eight accumulator rows). Either way the
      // row is k modulo 8.
      const int row = TC ? 8 * jj + k : 16 * warp + 8 * hf + k, chunk = TC ? 2 * warp + hf : jj;
      const std::uint32_t addr =
          fine ? fine_chunk(box, row, chunk, args.fine_bs) : box + row * 128 + ((chunk ^ k) << 4);
      stmatrix4<TC>(addr, r0, r1, r2, r3);
    }
    ops::wg::fence_proxy_async();
    sync_consumer(consumer);
    if (fine) {
      if (storer) {
        const int fb = args.fine_bs;
        const int id = args.fine_c[static_cast<long long>(o) * per * per + lane];
        if (id >= 0) tma::store_2d(map_c, box + static_cast<std::uint32_t>(lane * fb * fb * 2), 0, id * fb);
        tma::bulk_commit();  // (a group, empty or not, a box: bulk_wait_read counts them)
      }
    } else if (leader) {
      const unsigned u = static_cast<unsigned>(o);
      const int tile_row = static_cast<int>((u / args.addr_c.grid_cols) * C::BS);
      const int tile_col = static_cast<int>((u % args.addr_c.grid_cols) * C::BS);
      if constexpr (TC)
        tma::store_2d(map_c, box, tile_col + row0_tile, tile_row + off);
      else
        tma::store_2d(map_c, box, tile_col + off, tile_row + row0_tile);
      tma::bulk_commit();
    }
    ++n_boxes;
  }
}

/// Stores a consumer's accumulators of member mm of a split item, f32, to the workspace
/// tile ws_tile (bs x bs, row-major); TC: transposed (accumulator row r is tile column
/// row0_tile + r). Lanes of one quad row write whole sectors either way.
template <class C, bool TC>
__device__ __forceinline__ void store_partial(const float* acc, int mm, float* ws_tile, int row0_tile, int warp,
                                              int lane) {
  constexpr int J = C::BS / 8;
  const int g = lane >> 2, q = lane & 3;
  const int r0 = row0_tile + 16 * warp + g;  // accumulator rows r0, r0 + 8; columns 8j + 2q, + 1
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const float* a = acc + 4 * (mm * J + j);
    if constexpr (TC) {
      float* out = ws_tile + static_cast<long long>(8 * j + 2 * q) * C::BS + r0;
      out[0] = a[0];
      out[C::BS] = a[1];
      out[8] = a[2];
      out[C::BS + 8] = a[3];
    } else {
      float* out = ws_tile + static_cast<long long>(r0) * C::BS + 8 * j + 2 * q;
      store2<float>(out, a[0], a[1]);
      store2<float>(out + 8 * C::BS, a[2], a[3]);
    }
  }
}

/// A consumer's position in its ring: the ring's first stage, its full and empty barriers,
/// the stage it waits for next and that stage's phase.
struct ConsumerRing {
  std::uint32_t stages, full, empty;
  int stage;
  std::uint32_t phase;
};

/// One item's k loop and stores for one consumer: 64 rows from row0_tile of block-row
/// `line`'s tile, NC columns from member m0 on. NC is C::NC, or half of it for a group of
/// one line in a GM 2 kernel (the consumers then split its members). SITS_OUT: the item's
/// group has two lines, one of which has no x tile at some step.
template <class C, int NC, typename E, bool TA, bool TB, bool TC, bool SITS_OUT = false>
__device__ __forceinline__ void consume_item(const KernelArgs& args, int4 item, const int* outs, ConsumerRing& r,
                                             const CUtensorMap* map_c, std::uint32_t epi, std::uint32_t zeros,
                                             int row0_tile, int line, int m0, int consumer, int warp, int lane,
                                             unsigned& n_boxes) {
  const int nsteps = (item.z - item.y) << args.lg_kpp;
  const int pieces = outs[C::GM * C::G];
  int out_tile[NC / C::BS];
#pragma unroll
  for (int mm = 0; mm < NC / C::BS; ++mm) out_tile[mm] = outs[line * C::G + m0 + mm];
  // Fine stores: the tiles' fine block ids reach L1 during the k loop (the store after it
  // waits for them while the consumer's next MMAs wait for the store's thread).
  if (args.fine_c != nullptr && warp == 0 && lane == 0) {
    const int per = 64 / args.fine_bs;
#pragma unroll
    for (int mm = 0; mm < NC / C::BS; ++mm)
      if (out_tile[mm] >= 0) prefetch_l1(args.fine_c + static_cast<long long>(out_tile[mm]) * per * per);
  }
  float acc[NC / 2];
#pragma unroll
  for (int i = 0; i < NC / 2; ++i) acc[i] = 0.0f;
  int prev = -1;
  auto release = [&](int st) {
    if (lane == 0) tma::arrive(r.empty + 8u * static_cast<std::uint32_t>(st));
  };
  // SITS_OUT: a line without an x tile at a step (origin row -1: the producer loads none)
  // multiplies zeros there (the 128 bytes at `zeros`). (A branch around its wgmmas, or a
  // guard predicate on them, makes ptxas serialise every wgmma of the kernel: C7520.) Its
  // origins are read a step ahead and tested after the next stage's wait, so that the load's
  // latency is not waited for; the vote makes the test warp-uniform, so that the
  // descriptor's select stays in uniform registers. (Reading the origins in every item and
  // testing them at once cost 5% at density 1.)
  static_assert(!SITS_OUT || (C::GM == 2 && NC == C::NC), "only a group of two lines sits steps out");
  constexpr int N = C::GM + C::G;
  const int2* line_o = args.coords + static_cast<long long>(item.y) * N + line;
  int o_next = SITS_OUT && nsteps > 0 ? line_o[0].x : 0;
  for (int s = 0; s < nsteps; ++s) {
    const int o_cur = o_next;
    if constexpr (SITS_OUT) {
      if (s + 1 < nsteps) o_next = line_o[static_cast<long long>((s + 1) >> args.lg_kpp) * N].x;
    }
    tma::wait(r.full + 8u * static_cast<std::uint32_t>(r.stage), r.phase);
    // A 64-row half starts 64 BK 2 bytes in for both layouts: 64 lines of BK elements
    // (K-major) or the second 64-element column (MN-major), where GM 2 puts the second
    // block-row's tile; members are B_MEMBER apart.
    const std::uint32_t st = r.stages + static_cast<std::uint32_t>(r.stage * C::STAGE_BYTES);
    const std::uint32_t sa = st + static_cast<std::uint32_t>(row0_tile + 64 * line) * (BK * 2u);
    const std::uint32_t sb = st + C::A_BYTES + static_cast<std::uint32_t>(m0) * C::B_MEMBER;
    const bool have = !SITS_OUT || __all_sync(0xffffffffu, o_cur >= 0);
    ops::wg::fence();
#pragma unroll
    for (int j = 0; j < BK / 16; ++j)
      ops::wg::mma_ss<E, NC, TA ? 1 : 0, TB ? 0 : 1>(acc, have ? slice_desc<!TA>(sa, j) : ops::wg::zero_desc(zeros),
                                                     slice_desc<TB>(sb, j));
    ops::wg::commit();
    // The previous step's group has completed once at most this one is pending: its
    // stage can be refilled.
    ops::wg::wait<1>();
    if (prev >= 0) release(prev);
    prev = r.stage;
    if (++r.stage == C::STAGES) {
      r.stage = 0;
      r.phase ^= 1u;
    }
  }
  ops::wg::wait<0>();
  ops::wg::fence_regs(acc);
  if (prev >= 0) release(prev);

  if (item.w < 0) {
    store_boxes<C, NC, E, TC>(acc, out_tile, map_c, args, epi, row0_tile, consumer, warp, lane, n_boxes);
    return;
  }
#pragma unroll
  for (int mm = 0; mm < NC / C::BS; ++mm) {
    if (out_tile[mm] < 0) continue;
    const long long slot = item.w + static_cast<long long>(line * C::G + m0 + mm) * pieces;
    store_partial<C, TC>(acc, mm, static_cast<float*>(args.ws) + slot * C::BS * C::BS, row0_tile, warp, lane);
  }
}

/// items[w] = (group, or -1 - group for one of one line with GM 2, or group + kSitsOut for
/// one of two lines one of which sits a step out; first step, end step, slot); coords[s] =
/// origins of the GM shared tiles (x of a row group; row -1: none) and the G members' own
/// tiles (y; row -1: none); outs[group] = GM x G member output tiles (-1: none), piece
/// count. TC: the items are column groups (row_groups.h), operands given as those of the
/// transposed product; each member's tile is stored transposed. map_c: the output as rows
/// of ldc elements, boxes of 64 x 64.
template <class C, typename E, bool TA, bool TB, bool TC>
__global__ void __launch_bounds__(C::kThreads, 1)
    tma_kernel(const KernelArgs args, const __grid_constant__ CUtensorMap map_a,
               const __grid_constant__ CUtensorMap map_b, const __grid_constant__ CUtensorMap map_c) {
#if TG_WGMMA_ENABLED
  extern __shared__ __align__(16) unsigned char tma_smem[];
  __shared__ __align__(8) std::uint64_t bars[2 * C::kRings * C::STAGES];  // full, then empty
  __shared__ __align__(128) std::uint32_t zero_bytes[32];                 // the x tile of a line sitting a step out
  const std::uint32_t base = (tma::smem_addr(tma_smem) + 1023u) & ~1023u;
  const int tid = static_cast<int>(threadIdx.x), wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  auto full = [&](int ring, int s) { return tma::smem_addr(&bars[ring * C::STAGES + s]); };
  auto empty = [&](int ring, int s) { return tma::smem_addr(&bars[(C::kRings + ring) * C::STAGES + s]); };
  if (tid == 0) {
    for (int r = 0; r < C::kRings; ++r)
      for (int s = 0; s < C::STAGES; ++s) {
        tma::init(full(r, s), 1);
        tma::init(empty(r, s), C::kReleasers);
      }
    tma::fence_init();
  }
  if constexpr (C::GM == 2) {  // only the pair kernel reads the zeros (a line sitting a step out)
    if (tid < 32) zero_bytes[tid] = 0u;
    ops::wg::fence_proxy_async();  // (the zeros are read by wgmma, through the async proxy)
  }
  __syncthreads();
  const std::uint32_t zeros = tma::smem_addr(zero_bytes);
  // The queue of items of each ring of this CTA (queues.h): queue blockIdx.x kRings + ring.
  const int queue0 = static_cast<int>(blockIdx.x) * C::kRings;

  if (wg == 2) {
    // Producer: lane 0 of warp 8 + ring.
    if (lane == 0) {
      const int ring = warp;
      tma::prefetch_map(&map_a);
      tma::prefetch_map(&map_b);
      Cursor ld{args.queues[queue0 + ring], args.queues[queue0 + ring + 1], 0, 0, 0};
      ld.settle(args);
      StepBoxes<C::GM + C::G> next_ld{};
      if (ld.valid()) next_ld.fetch(args, ld);
      int stage = 0;
      std::uint32_t phase = 0;
      while (ld.valid()) {
        const StepBoxes<C::GM + C::G> cur = next_ld;
        ld.advance(args);
        if (ld.valid()) next_ld.fetch(args, ld);
        tma::wait(empty(ring, stage), phase ^ 1u);
        const std::uint32_t sa = base + static_cast<std::uint32_t>((ring * C::STAGES + stage) * C::STAGE_BYTES);
        step_boxes<C, TA, TB>(cur, &map_a, &map_b, sa, full(ring, stage));
        if (++stage == C::STAGES) {
          stage = 0;
          phase ^= 1u;
        }
      }
    }
    return;
  }

  // Consumers.
  const int consumer = wg;
  const int ring = C::kRings == 1 ? 0 : consumer;
  // The consumer's part of the tile: 64 rows from row0_tile (split rows: of block-row
  // `line`'s tile, the consumer's own with GM 2), NC columns from member m0 on (split
  // members).
  const int row0_tile = C::kRings == 1 && C::kSplitRows && C::GM == 1 ? consumer * 64 : 0;
  const int line = C::GM == 2 ? consumer : 0;
  const int m0 = C::kRings == 1 && !C::kSplitRows ? consumer * (C::NC / C::BS) : 0;
  ConsumerRing ring_state{base + static_cast<std::uint32_t>(ring * C::STAGES * C::STAGE_BYTES),
                          tma::smem_addr(&bars[ring * C::STAGES]),
                          tma::smem_addr(&bars[(C::kRings + ring) * C::STAGES]), 0, 0u};
  const std::uint32_t epi =
      base + static_cast<std::uint32_t>(C::kRings * C::STAGES * C::STAGE_BYTES + consumer * 2 * EPI_BOX);
  unsigned n_boxes = 0;
  const int end = args.queues[queue0 + ring + 1];
  for (int w = args.queues[queue0 + ring]; w < end; ++w) {
    const int4 item = args.items[w];
    // The item's group, its tag decoded once (GM 2: -1 - group for a group of one line, group
    // + kSitsOut for one of two lines one of which sits some step out; row_groups.h). The
    // group's output tiles are read in consume_item before its k loop, so that their latency
    // passes during the loop and not before the stores.
    int group = item.x;
    if constexpr (C::GM == 2) group = item.x < 0 ? -1 - item.x : item.x >= kSitsOut ? item.x - kSitsOut : item.x;
    const int* outs = args.outs + static_cast<long long>(group) * (C::GM * C::G + 1);
    if constexpr (C::GM == 2) {
      // A group of one line is computed as the one-line tile of G members: the consumers
      // split its members rather than idle on (or multiply stale bytes for) a missing
      // second line.
      if (item.x < 0) {
        consume_item<C, C::NC / 2, E, TA, TB, TC>(args, item, outs, ring_state, &map_c, epi, zeros, 0, 0,
                                                  consumer * (C::G / 2), consumer, warp, lane, n_boxes);
        continue;
      }
      if (item.x >= kSitsOut) {
        consume_item<C, C::NC, E, TA, TB, TC, true>(args, item, outs, ring_state, &map_c, epi, zeros, row0_tile, line,
                                                    m0, consumer, warp, lane, n_boxes);
        continue;
      }
    }
    consume_item<C, C::NC, E, TA, TB, TC>(args, item, outs, ring_state, &map_c, epi, zeros, row0_tile, line, m0,
                                          consumer, warp, lane, n_boxes);
  }
  // The last stores must be done before the CTA (and its shared memory) ends (fine stores:
  // every lane's of the first warp).
  if (warp == 0) tma::bulk_wait<0>();
#else
  __trap();  // never launched: the host takes this path only on compute capability 9.0
#endif
}

/// The tensor map of an operand stored as rows of ld elements, read in boxes of BOX_ROWS
/// rows of 64 elements (128-byte swizzle).
template <typename E>
CUtensorMap operand_map(const void* p, long long rows, long long ld) {
  return tg::cuda::tensor_map_2d_16bit(p, std::is_same_v<E, bfloat16>, static_cast<std::uint64_t>(rows),
                                       static_cast<std::uint64_t>(ld), static_cast<std::uint64_t>(ld), 64, BOX_ROWS);
}

template <class C, typename E, bool TA, bool TB, bool TC>
void tma_launch_cfg(const KernelArgs& args, int n_queues, cudaStream_t stream) {
  auto* kernel = &tma_kernel<C, E, TA, TB, TC>;
  static std::array<std::atomic<bool>, 64> ready{};
  int dev = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  auto& flag = ready[static_cast<std::size_t>(dev & 63)];
  if (!flag.load(std::memory_order_acquire)) {
    TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::SMEM)));
    flag.store(true, std::memory_order_release);
  }
  if (n_queues % C::kRings != 0)
    TG_THROW(Error, "matmul: internal error: ", n_queues, " item queues for CTAs of ", C::kRings, " rings");
  KernelArgs a = args;
  a.nsub = 1;
  a.lg_kpp = 0;
  while ((BK << a.lg_kpp) < args.bs) ++a.lg_kpp;
  const CUtensorMap ma = operand_map<E>(args.a, args.rows_a, args.lda);
  const CUtensorMap mb = operand_map<E>(args.b, args.rows_b, args.ldb);
  const int grid = n_queues / C::kRings;
  // The output in boxes of 64 x 64 (the store epilogue's), or with fine stores its fine
  // blocks as rows of fine_bs elements, in boxes of one block.
  const std::uint64_t ldc =
      args.fine_c != nullptr ? static_cast<std::uint64_t>(args.fine_bs) : static_cast<std::uint64_t>(args.ldc);
  const std::uint32_t box_c = args.fine_c != nullptr ? static_cast<std::uint32_t>(args.fine_bs) : 64u;
  const CUtensorMap mc = tg::cuda::tensor_map_2d_16bit(args.c, std::is_same_v<E, bfloat16>,
                                                       static_cast<std::uint64_t>(args.rows_c), ldc, ldc, box_c, box_c);
  kernel<<<grid, C::kThreads, C::SMEM, stream>>>(a, ma, mb, mc);
  TG_CUDA_CHECK(cudaGetLastError());
}

template <class C, typename E, bool TC>
void tma_launch_trans(const KernelArgs& args, int n_queues, cudaStream_t stream) {
  if (!args.trans_a && !args.trans_b)
    tma_launch_cfg<C, E, false, false, TC>(args, n_queues, stream);
  else if (args.trans_a && !args.trans_b)
    tma_launch_cfg<C, E, true, false, TC>(args, n_queues, stream);
  else if (!args.trans_a)
    tma_launch_cfg<C, E, false, true, TC>(args, n_queues, stream);
  else
    tma_launch_cfg<C, E, true, true, TC>(args, n_queues, stream);
}

/// Column groups exist only with several members a line (g 2 at bs 128, 4 at bs 64).
template <class C, typename E>
void tma_launch(const KernelArgs& args, int n_queues, cudaStream_t stream) {
  if (!args.trans_c)
    tma_launch_trans<C, E, false>(args, n_queues, stream);
  else if constexpr (C::G > 1)
    tma_launch_trans<C, E, true>(args, n_queues, stream);
  else
    TG_THROW(Error, "matmul: internal error: no column groups of ", C::GM, " x ", C::G, " blocks");
}

}  // namespace tg::ops::spmm::tma_wg

namespace tg::ops::spmm {

template <typename E>
void launch_wgmma_tma(const KernelArgs& args, int n_queues, int g, int gm, cudaStream_t stream) {
  if (n_queues == 0) return;
  if (gm == 2 && args.bs == 64 && g == 4)
    tma_wg::tma_launch<tma_wg::TmaCfg<64, 4, 2>, E>(args, n_queues, stream);
  else if (gm != 1)
    TG_THROW(Error, "matmul: internal error: no TMA wgmma tile for block size ", args.bs, ", ", gm, " x ", g);
  else if (args.bs == 128 && g == 1)
    tma_wg::tma_launch<tma_wg::TmaCfg<128, 1>, E>(args, n_queues, stream);
  else if (args.bs == 128 && g == 2)
    tma_wg::tma_launch<tma_wg::TmaCfg<128, 2>, E>(args, n_queues, stream);
  else if (args.bs == 64 && g == 1)
    tma_wg::tma_launch<tma_wg::TmaCfg<64, 1>, E>(args, n_queues, stream);
  else if (args.bs == 64 && g == 4)
    tma_wg::tma_launch<tma_wg::TmaCfg<64, 4>, E>(args, n_queues, stream);
  else
    TG_THROW(Error, "matmul: internal error: no TMA wgmma tile for block size ", args.bs, ", groups of ", g);
}

}  // namespace tg::ops::spmm
