// The warp-specialised Hopper (sm_90a) kernel of block-sparse matmul for bf16 / f16,
// blocks of 64 and 128: the per-block items and split-K slots of cuda_launch.cuh, with
// TMA loads and warpgroup MMAs overlapped through mbarrier-guarded stages.
//
// Roles. A CTA has two consumer warpgroups and a producer warp per ring. The producer
// only loads: its first thread walks the ring's items and k-steps, waits until a stage is
// free, and starts TMA copies of the step's operand tiles into it (the copies count down
// the stage's "full" barrier). The consumers only multiply: they wait for a stage to be
// full, issue its wgmmas, and release it (its "empty" barrier) as soon as the wgmmas
// reading it have completed, one step later, so that a group is always in flight. Loads thus run up to STAGES steps ahead of the
// MMAs, across item boundaries too: while the consumers store one output tile, the next
// one's operands are already arriving.
//
// Tiles. Blocks of 128: one ring; both consumers work on the same 128 x 128 output block,
// 64 rows each (m64 n128 k16 instructions). Blocks of 64: two rings, one per consumer,
// each with its own item stream and 64 x 64 tiles (m64 n64 k16). k advances BK = 64 a
// step. The grid is persistent: at most CTAS CTAs an SM, CTA b taking every gridDim.x-th
// item of each ring.
//
// Layout. The tensor maps read boxes with the 128-byte swizzle, which is the layout of
// wgmma_kernel.cuh: a K-major operand (A stored [m][k], B stored [n][k]) is one box of
// 64 k x BM lines, an MN-major one (stored with k outermost) BM / 64 boxes of 64 k-rows x
// 64 elements, 8 KiB apart (the descriptors' leading offset).
// Include only from the per-dtype wgmma_<dtype>.cu files.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "ops/cuda_tma.cuh"
#include "ops/cuda_wgmma.cuh"
#include "ops/sparse_matmul/cuda_launch.cuh"
#include "ops/sparse_matmul/mma_kernel.cuh"
#include "ops/sparse_matmul/wgmma_kernel.cuh"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/tensor_map.h"
#include "runtime/error.h"

namespace tg::ops::spmm::tma_wg {

/// Tile BM x BM (= the block), BK 64, STAGES slots per ring, CTAS CTAs an SM.
template <int BM_, int CTAS_>
struct TmaCfg {
  static constexpr int BM = BM_, BN = BM_, BK = 64;
  static constexpr int kRings = BM == 128 ? 1 : 2;
  /// Two consumer warpgroups, then one producer warp per ring.
  static constexpr int kThreads = 256 + 32 * kRings;
  static constexpr int CTAS = CTAS_;
  static constexpr int STAGES = CTAS == 1 ? 6 : 3;
  static constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  /// Warps that release a stage: both consumers' (one ring) or one consumer's.
  static constexpr int kReleasers = 8 / kRings;
  static constexpr std::size_t SMEM = static_cast<std::size_t>(kRings) * STAGES * STAGE_BYTES + 1024;
  static_assert(CTAS * (SMEM + 1024) <= 228 * 1024, "fits the shared memory of an SM");
  static_assert(STAGE_BYTES % 1024 == 0 && A_BYTES % 1024 == 0, "stages and tiles start on swizzle atoms");
};

/// The grid coordinates (row, column, in elements) of a tile's (0, 0) in the 2-d view of
/// its operand (rows of ld elements): see TileAddr in plan.h.
__device__ __forceinline__ int2 tile_origin(const DevAddr& a, int id) {
  const unsigned u = static_cast<unsigned>(id);
  return make_int2(static_cast<int>((u / a.grid_cols) * a.bs), static_cast<int>((u % a.grid_cols) * a.bs));
}

template <class C, typename E, bool TA, bool TB>
__global__ void __launch_bounds__(C::kThreads, C::CTAS)
    tma_kernel(const KernelArgs args, const __grid_constant__ CUtensorMap map_a,
               const __grid_constant__ CUtensorMap map_b) {
#if TG_WGMMA_ENABLED
  extern __shared__ __align__(16) unsigned char tma_smem[];
  __shared__ __align__(8) std::uint64_t bars[2 * C::kRings * C::STAGES];  // full, then empty
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
  __syncthreads();
  const int stride = static_cast<int>(gridDim.x) * C::kRings;
  const int kmask = (1 << args.lg_kpp) - 1;

  if (wg == 2) {
    // Producer: lane 0 of warp 8 + ring.
    if (lane != 0) return;
    const int ring = warp;
    tma::prefetch_map(&map_a);
    tma::prefetch_map(&map_b);
    int stage = 0;
    std::uint32_t phase = 0;
    for (int w = static_cast<int>(blockIdx.x) * C::kRings + ring; w < args.n_items; w += stride) {
      const int4 item = args.items[w];
      const int nsteps = (item.z - item.y) << args.lg_kpp;
      int2 pr{0, 0};
      for (int s = 0; s < nsteps; ++s) {
        if ((s & kmask) == 0) pr = args.pairs[item.y + (s >> args.lg_kpp)];
        const int kk = (s & kmask) * C::BK;
        tma::wait(empty(ring, stage), phase ^ 1u);
        const std::uint32_t bar = full(ring, stage);
        tma::arrive_expect_tx(bar, C::STAGE_BYTES);
        const std::uint32_t sa = base + static_cast<std::uint32_t>((ring * C::STAGES + stage) * C::STAGE_BYTES);
        const std::uint32_t sb = sa + C::A_BYTES;
        const int2 oa = tile_origin(args.addr_a, pr.x), ob = tile_origin(args.addr_b, pr.y);
        if constexpr (!TA) {
          tma::load_2d(sa, &map_a, bar, oa.y + kk, oa.x);  // stored [m][k]: one box of BM lines
        } else {
#pragma unroll
          for (int j = 0; j < C::BM / 64; ++j)  // stored [k][m]: 64-element columns
            tma::load_2d(sa + j * wg::kColumn, &map_a, bar, oa.y + 64 * j, oa.x + kk);
        }
        if constexpr (TB) {
          tma::load_2d(sb, &map_b, bar, ob.y + kk, ob.x);  // stored [n][k]
        } else {
#pragma unroll
          for (int j = 0; j < C::BN / 64; ++j)  // stored [k][n]
            tma::load_2d(sb + j * wg::kColumn, &map_b, bar, ob.y + 64 * j, ob.x + kk);
        }
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
  const int rows = C::kRings == 1 ? consumer : 0;  // 64-row half of the tile (one ring)
  int stage = 0;
  std::uint32_t phase = 0;
  for (int w = static_cast<int>(blockIdx.x) * C::kRings + ring; w < args.n_items; w += stride) {
    const int4 item = args.items[w];
    const int nsteps = (item.z - item.y) << args.lg_kpp;
    float acc[C::BN / 2];
#pragma unroll
    for (int i = 0; i < C::BN / 2; ++i) acc[i] = 0.0f;
    int prev = -1;
    for (int s = 0; s < nsteps; ++s) {
      tma::wait(full(ring, stage), phase);
      // A's 64-row half starts 8 KiB in for both layouts: 64 lines of 128 bytes (K-major)
      // or the second 64-element column (MN-major).
      const std::uint32_t sa = base + static_cast<std::uint32_t>((ring * C::STAGES + stage) * C::STAGE_BYTES) +
                               static_cast<std::uint32_t>(rows) * 8192u;
      const std::uint32_t sb = base + static_cast<std::uint32_t>((ring * C::STAGES + stage) * C::STAGE_BYTES) +
                               C::A_BYTES;
      ops::wg::fence();
#pragma unroll
      for (int j = 0; j < C::BK / 16; ++j)
        ops::wg::mma_ss<E, C::BN, TA ? 1 : 0, TB ? 0 : 1>(acc, wg::slice_desc<!TA>(sa, j),
                                                           wg::slice_desc<TB>(sb, j));
      ops::wg::commit();
      // The previous step's group has completed once at most this one is pending: its
      // stage can be refilled.
      ops::wg::wait<1>();
      if (prev >= 0 && lane == 0) tma::arrive(empty(ring, prev));
      prev = stage;
      if (++stage == C::STAGES) {
        stage = 0;
        phase ^= 1u;
      }
    }
    ops::wg::wait<0>();
    ops::wg::fence_regs(acc);
    if (prev >= 0 && lane == 0) tma::arrive(empty(ring, prev));

    // Fragment rows 16 * warp + lane / 4 (+8) of the consumer's 64, columns 8j + 2(lane % 4).
    const long long row0 = static_cast<long long>(rows) * 64 + warp * 16 + (lane >> 2);
    const long long col0 = 2 * (lane & 3);
    if (item.w < 0) {
      E* out = static_cast<E*>(args.c) + args.addr_c.offset(item.x) + row0 * args.ldc + col0;
#pragma unroll
      for (int j = 0; j < C::BN / 8; ++j) {
        store2<E>(out + 8 * j, acc[4 * j], acc[4 * j + 1]);
        store2<E>(out + 8 * args.ldc + 8 * j, acc[4 * j + 2], acc[4 * j + 3]);
      }
    } else {
      const long long bs = args.bs;
      float* out = static_cast<float*>(args.ws) + static_cast<long long>(item.w) * bs * bs + row0 * bs + col0;
#pragma unroll
      for (int j = 0; j < C::BN / 8; ++j) {
        store2<float>(out + 8 * j, acc[4 * j], acc[4 * j + 1]);
        store2<float>(out + 8 * bs + 8 * j, acc[4 * j + 2], acc[4 * j + 3]);
      }
    }
  }
#else
  __trap();  // never launched: the host takes this path only on compute capability 9.0
#endif
}

/// The tensor map of an operand stored as rows of ld elements: K-major tiles are read as
/// one box of 64 x BM, MN-major ones as 64 x 64 boxes.
template <class C, typename E>
CUtensorMap operand_map(const void* p, long long rows, long long ld, bool k_major) {
  return tg::cuda::tensor_map_2d_16bit(p, std::is_same_v<E, bfloat16>, static_cast<std::uint64_t>(rows),
                                       static_cast<std::uint64_t>(ld), static_cast<std::uint64_t>(ld), 64,
                                       k_major ? C::BM : 64);
}

template <class C, typename E, bool TA, bool TB>
void launch_cfg(const KernelArgs& args, int n_items, cudaStream_t stream) {
  auto* kernel = &tma_kernel<C, E, TA, TB>;
  static std::array<std::atomic<bool>, 64> ready{};
  int dev = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  auto& flag = ready[static_cast<std::size_t>(dev & 63)];
  if (!flag.load(std::memory_order_acquire)) {
    TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::SMEM)));
    flag.store(true, std::memory_order_release);
  }
  KernelArgs a = args;
  a.nsub = 1;
  a.lg_kpp = 0;
  while ((C::BK << a.lg_kpp) < args.bs) ++a.lg_kpp;
  a.n_items = n_items;
  const CUtensorMap ma = operand_map<C, E>(args.a, args.rows_a, args.lda, !TA);
  const CUtensorMap mb = operand_map<C, E>(args.b, args.rows_b, args.ldb, TB);
  const int per_cta = (n_items + C::kRings - 1) / C::kRings;
  const int grid = std::max(1, std::min(per_cta, C::CTAS * tg::cuda::multiprocessor_count(dev)));
  kernel<<<grid, C::kThreads, C::SMEM, stream>>>(a, ma, mb);
  TG_CUDA_CHECK(cudaGetLastError());
}

template <class C, typename E>
void launch_trans(const KernelArgs& args, int n_items, cudaStream_t stream) {
  if (!args.trans_a && !args.trans_b)
    launch_cfg<C, E, false, false>(args, n_items, stream);
  else if (args.trans_a && !args.trans_b)
    launch_cfg<C, E, true, false>(args, n_items, stream);
  else if (!args.trans_a)
    launch_cfg<C, E, false, true>(args, n_items, stream);
  else
    launch_cfg<C, E, true, true>(args, n_items, stream);
}

}  // namespace tg::ops::spmm::tma_wg

namespace tg::ops::spmm {

template <typename E>
void launch_wgmma_tma(const KernelArgs& args, int n_items, cudaStream_t stream) {
  if (n_items == 0) return;
  static const bool two = [] {
    const char* v = std::getenv("TG_SPMM_TMA_CTAS");
    return v != nullptr && v[0] == '2';
  }();
  switch (args.bs) {
    case 128:
      if (two)
        tma_wg::launch_trans<tma_wg::TmaCfg<128, 2>, E>(args, n_items, stream);
      else
        tma_wg::launch_trans<tma_wg::TmaCfg<128, 1>, E>(args, n_items, stream);
      break;
    case 64:
      if (two)
        tma_wg::launch_trans<tma_wg::TmaCfg<64, 2>, E>(args, n_items, stream);
      else
        tma_wg::launch_trans<tma_wg::TmaCfg<64, 1>, E>(args, n_items, stream);
      break;
    default:
      TG_THROW(Error, "matmul: internal error: no TMA wgmma tile for block size ", args.bs);
  }
}

}  // namespace tg::ops::spmm
