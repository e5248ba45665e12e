// The Hopper (sm_90a) per-block kernel of block-sparse matmul for bf16 / f16, blocks of 64
// and 128: the same items, split-K slots and workspace as the mma.sync per-block kernel
// (cuda_launch.cuh), with warpgroup MMAs (wgmma.mma_async) reading both operands straight
// from shared memory.
//
// Tile. One CTA computes a BM x BM piece of an output block (BM = 64: the whole block, one
// warpgroup; BM = 128: two warpgroups of 64 rows each, every instruction m64 n128 k16).
// k advances BK = 64 at a time through a ring of STAGES shared-memory stages filled with
// cp.async (16-byte chunks, all threads), STAGES - 1 steps ahead of the MMAs. The MMAs of
// a step run while the threads issue the next copies; each warpgroup waits for them
// before the barrier that lets the ring reuse the slot they read.
//
// Layout. Every operand tile lives in the 128-byte-swizzled layout wgmma reads: lines of
// 128 bytes (64 elements), 8 lines to a 1024-byte atom, the 16-byte chunk c of line l
// stored at chunk c ^ (l % 8). A tile whose stored rows run along k (A not transposed,
// B transposed) is "K-major": one line per row of m (n), atoms stacked along m (n)
// 1024 bytes apart (the descriptor's stride offset). A tile stored with rows along k
// (A transposed, B not) is "MN-major": one line per k-row and 64 elements of m (n); 8
// k-rows make an atom (stride offset 1024), and a column of 64 m (n) elements over all
// BK k-rows is 8 KiB, the next column following it (leading offset 8 KiB). Transposed
// reads thus cost nothing: the copy keeps the stored orientation and the instruction's
// transpose bit tells wgmma which of the two layouts it reads.
// Include only from the per-dtype wgmma_<dtype>.cu files.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>

#include "ops/sparse_matmul/cuda_launch.cuh"
#include "ops/sparse_matmul/mma_kernel.cuh"
#include "ops/cuda_wgmma.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace tg::ops::spmm::wg {

/// CTA tile BM x BM with BK = 64 (one 128-byte line of 16-bit elements), BM / 64
/// warpgroups, STAGES ring slots; sized for 2 (BM 128) or 3 (BM 64) CTAs per SM.
template <int BM_>
struct WgCfg {
  static constexpr int BM = BM_, BN = BM_, BK = 64;
  static constexpr int kGroups = BM / 64;
  static constexpr int kThreads = 128 * kGroups;
  static constexpr int STAGES = BM == 128 ? 3 : 4;
  static constexpr int kMinBlocks = BM == 128 ? 2 : 3;
  static constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  /// One atom of slack: the dynamic shared window is rounded up to 1024 bytes in-kernel.
  static constexpr std::size_t SMEM = static_cast<std::size_t>(STAGES) * STAGE_BYTES + 1024;
  static constexpr int CHUNKS = BM * BK / 8;  ///< 16-byte chunks of one operand tile
  static_assert(CHUNKS % kThreads == 0, "whole chunks per thread");
  static_assert(STAGE_BYTES % 1024 == 0 && A_BYTES % 1024 == 0, "stages and tiles start on swizzle atoms");
};

constexpr std::uint32_t kAtom = 1024;     // 8 lines of 128 bytes
constexpr std::uint32_t kColumn = 8192;   // one MN-major column: 64 elements x BK (64) k-rows

/// Byte offset inside a tile of 16-byte chunk `c` (element offset 8c along a stored row
/// of `row_chunks` chunks) of stored row `r`, in the swizzled layout of the file comment.
template <bool K_MAJOR, int ROW_CHUNKS>
__device__ __forceinline__ std::uint32_t chunk_offset(int r, int c) {
  if constexpr (K_MAJOR) {
    return static_cast<std::uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
  } else {
    const int col = c >> 3, cc = c & 7;  // 64-element column, chunk inside its line
    return static_cast<std::uint32_t>(col) * kColumn + static_cast<std::uint32_t>(r * 128 + ((cc ^ (r & 7)) << 4));
  }
}

/// Issues the cp.async copies of one operand tile (BM x BK of op(X), stored K-major when
/// K_MAJOR, else as BK rows of BM) from g (row stride ld) into the tile at shared address s.
template <class C, bool K_MAJOR, typename E>
__device__ __forceinline__ void copy_tile(std::uint32_t s, const E* g, long long ld, int tid) {
  constexpr int kRowChunks = K_MAJOR ? C::BK / 8 : C::BM / 8;
#pragma unroll
  for (int i = 0; i < C::CHUNKS / C::kThreads; ++i) {
    const int c = tid + i * C::kThreads;
    const int r = c / kRowChunks, rc = c % kRowChunks;
    const std::uint32_t dst = s + chunk_offset<K_MAJOR, kRowChunks>(r, rc);
    const E* src = g + r * ld + rc * 8;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
  }
}

/// Copies step `step` (pair `pr`, k offset from the step's index within the pair) of the
/// CTA's sub-tile (ti, tj) into the stage at shared address s.
template <class C, typename E, bool TA, bool TB>
__device__ __forceinline__ void issue(const KernelArgs& args, int2 pr, int step, std::uint32_t s, int ti, int tj,
                                      int tid) {
  const E* A = static_cast<const E*>(args.a);
  const E* B = static_cast<const E*>(args.b);
  const long long kk = static_cast<long long>(step & ((1 << args.lg_kpp) - 1)) * C::BK;
  const long long m0 = static_cast<long long>(ti) * C::BM, n0 = static_cast<long long>(tj) * C::BN;
  // Stored A is [m][k] (or [k][m] when transposed), stored B [k][n] (or [n][k]).
  const E* ga = A + args.addr_a.offset(pr.x) + (TA ? kk * args.lda + m0 : m0 * args.lda + kk);
  const E* gb = B + args.addr_b.offset(pr.y) + (TB ? n0 * args.ldb + kk : kk * args.ldb + n0);
  copy_tile<C, !TA>(s, ga, args.lda, tid);
  copy_tile<C, TB>(s + C::A_BYTES, gb, args.ldb, tid);
}

/// Descriptor of k16 slice j (0..3) of a 64 x BK (or BN x BK) operand tile at address s:
/// K-major slices are 32 bytes apart inside each line, MN-major ones 16 k-rows = 2 atoms.
template <bool K_MAJOR>
__device__ __forceinline__ std::uint64_t slice_desc(std::uint32_t s, int j) {
  if constexpr (K_MAJOR)
    return ops::wg::make_desc(s + static_cast<std::uint32_t>(j) * 32u, 16u, kAtom);
  else
    return ops::wg::make_desc(s + static_cast<std::uint32_t>(j) * 2u * kAtom, kColumn, kAtom);
}

/// item = (output tile, pair begin, pair end, slot): see cuda_launch.cuh.
template <class C, typename E, bool TA, bool TB>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) wgmma_kernel(const KernelArgs args) {
#if TG_WGMMA_ENABLED
  extern __shared__ __align__(16) unsigned char wg_smem[];
  // The swizzle is a function of the absolute shared address: start the ring on an atom.
  const std::uint32_t base = (static_cast<std::uint32_t>(__cvta_generic_to_shared(wg_smem)) + 1023u) & ~1023u;
  const int tid = static_cast<int>(threadIdx.x), group = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int4 item = args.items[blockIdx.x];
  const int ti = static_cast<int>(blockIdx.y) / args.nsub, tj = static_cast<int>(blockIdx.y) % args.nsub;
  const int nsteps = (item.z - item.y) << args.lg_kpp;
  constexpr int S = C::STAGES;

  float acc[C::BN / 2];
#pragma unroll
  for (int i = 0; i < C::BN / 2; ++i) acc[i] = 0.0f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < nsteps)
      issue<C, E, TA, TB>(args, args.pairs[item.y + (s >> args.lg_kpp)], s, base + s * C::STAGE_BYTES, ti, tj, tid);
    cp_async_commit();
  }
  // The pair of the next step to copy, loaded one iteration early so that its latency
  // hides behind that iteration's work.
  int2 pending{0, 0};
  if (S - 1 < nsteps) pending = args.pairs[item.y + ((S - 1) >> args.lg_kpp)];

  for (int s = 0; s < nsteps; ++s) {
    cp_async_wait<S - 2>();
    ops::wg::fence_proxy_async();
    ops::wg::wait<0>();
    ops::wg::fence_regs(acc);
    // Stage s has landed for every thread and is visible to the async proxy; every
    // warpgroup's MMAs of step s-1 are complete, so its slot can be refilled.
    __syncthreads();
    const std::uint32_t sa = base + (s % S) * C::STAGE_BYTES + static_cast<std::uint32_t>(group) * 64u * 128u;
    const std::uint32_t sb = base + (s % S) * C::STAGE_BYTES + C::A_BYTES;
    ops::wg::fence();
#pragma unroll
    for (int j = 0; j < C::BK / 16; ++j)
      ops::wg::mma_ss<E, C::BN, TA ? 1 : 0, TB ? 0 : 1>(acc, slice_desc<!TA>(sa, j), slice_desc<TB>(sb, j));
    ops::wg::commit();
    const int next = s + S - 1;
    if (next < nsteps) {
      issue<C, E, TA, TB>(args, pending, next, base + (next % S) * C::STAGE_BYTES, ti, tj, tid);
      if (next + 1 < nsteps) pending = args.pairs[item.y + ((next + 1) >> args.lg_kpp)];
    }
    cp_async_commit();
  }
  ops::wg::wait<0>();
  ops::wg::fence_regs(acc);
  cp_async_wait<0>();

  // Fragment rows 16 * warp + lane / 4 (+8) of the warpgroup's 64, columns 8j + 2(lane % 4).
  const long long row0 = static_cast<long long>(ti) * C::BM + group * 64 + warp * 16 + (lane >> 2);
  const long long col0 = static_cast<long long>(tj) * C::BN + 2 * (lane & 3);
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
#else
  __trap();  // never launched: the host takes this path only on compute capability 9.0
#endif
}

/// Launches the instantiation for (C, E, TA, TB): nsub x nsub CTAs per item.
template <class C, typename E, bool TA, bool TB>
void launch_wg_cfg(const KernelArgs& args, int n_items, cudaStream_t stream) {
  auto* kernel = &wgmma_kernel<C, E, TA, TB>;
  // Opting in to more than 48 KiB of dynamic shared memory, once per device.
  static std::array<std::atomic<bool>, 64> ready{};
  int dev = 0;
  TG_CUDA_CHECK(cudaGetDevice(&dev));
  auto& flag = ready[static_cast<std::size_t>(dev & 63)];
  if (!flag.load(std::memory_order_acquire)) {
    TG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::SMEM)));
    flag.store(true, std::memory_order_release);
  }
  KernelArgs a = args;
  a.nsub = args.bs / C::BM;
  a.lg_kpp = 0;
  while ((C::BK << a.lg_kpp) < args.bs) ++a.lg_kpp;
  const dim3 grid(static_cast<unsigned>(n_items), static_cast<unsigned>(a.nsub * a.nsub));
  kernel<<<grid, C::kThreads, C::SMEM, stream>>>(a);
  TG_CUDA_CHECK(cudaGetLastError());
}

template <class C, typename E>
void launch_wg_trans(const KernelArgs& args, int n_items, cudaStream_t stream) {
  if (!args.trans_a && !args.trans_b)
    launch_wg_cfg<C, E, false, false>(args, n_items, stream);
  else if (args.trans_a && !args.trans_b)
    launch_wg_cfg<C, E, true, false>(args, n_items, stream);
  else if (!args.trans_a)
    launch_wg_cfg<C, E, false, true>(args, n_items, stream);
  else
    launch_wg_cfg<C, E, true, true>(args, n_items, stream);
}

}  // namespace tg::ops::spmm::wg

namespace tg::ops::spmm {

template <typename E>
void launch_wgmma(const KernelArgs& args, int n_items, cudaStream_t stream) {
  switch (args.bs) {
    case 128:
      wg::launch_wg_trans<wg::WgCfg<128>, E>(args, n_items, stream);
      break;
    case 64:
      wg::launch_wg_trans<wg::WgCfg<64>, E>(args, n_items, stream);
      break;
    default:
      TG_THROW(Error, "matmul: internal error: no wgmma tile for block size ", args.bs);
  }
}

}  // namespace tg::ops::spmm
