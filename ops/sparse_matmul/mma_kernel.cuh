// The tensor-core kernel of block-sparse matmul (sm_80+ instructions, built for sm_90).
//
// One CTA computes one BM x BN tile of an output block over one item's pair list (see
// cuda_launch.cuh). Its k-loop runs over the pairs, BK columns of k at a time: each step
// copies the A and B tiles of that pair and k-range from global memory into a ring of
// shared-memory stages with cp.async (STAGES-1 steps in flight), then the warps multiply
// them with mma.sync: m16n8k16 for bf16/f16, m16n8k8 TF32 for f32, f32 accumulation.
// The grouped variant (blocks of 32 / 64, see path.h) runs the same loop on a 128 x 128
// (or 64 x 128, 128 x 64) region of several output blocks: a step then names one tile per
// block-row of the region for A and one per block-column for B, absent ones copied as
// zeros.
//
// Transposed operands cost nothing extra: a tile is copied into shared memory in its
// stored orientation (rows along its contiguous dimension, 16-byte chunks), and the
// fragments are read with ldmatrix or ldmatrix.trans, whichever turns that orientation
// into the mma operand layout (for TF32, 32-bit shared loads indexed either way). Rows
// are padded by 16 bytes (TF32 k-contiguous rows by 16, others by 32 bytes) so that
// the 8 rows an ldmatrix phase (or a TF32 fragment load) touches fall in distinct banks.
// Include only from the per-dtype .cu files.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "ops/cuda_fast_math.cuh"
#include "ops/sparse_matmul/cuda_launch.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace tg::ops::spmm {

/// CTA tile BM x BN (square unless a grouped region says otherwise), k-step BK, WM x WN
/// warps, pipeline depth for 16-bit and 32-bit elements.
template <int BM_, int BK_, int WM_, int WN_, int STAGES16_, int STAGES32_, int BN_ = BM_>
struct Cfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_;
  static constexpr int kThreads = 32 * WM * WN;
  static constexpr int WTM = BM / WM, WTN = BN / WN;  // warp tile
  static constexpr int MT = WTM / 16, NT = WTN / 8;   // mma tiles per warp
  static constexpr int STAGES16 = STAGES16_, STAGES32 = STAGES32_;
  static_assert(WTN % 16 == 0 && WTM % 16 == 0, "warp tiles are whole 16 x 16 units");
};
// Blocks of 128 and more, 16-bit: k-steps of 64 (half the barriers per k of 32-steps),
// three stages (2 x 105 KiB of shared memory: two CTAs per SM). TF32 keeps 32-steps,
// whose 32-bit stages are as large. The grouped path needs BK <= 32 (a step never spans
// two blocks of 32).
using Cfg128 = Cfg<128, 64, 2, 4, 3, 3>;
using Cfg128Tf32 = Cfg<128, 32, 2, 4, 4, 3>;
using CfgGroup = Cfg<128, 32, 2, 4, 4, 3>;
using CfgGroupWide = Cfg<64, 32, 2, 4, 4, 3, 128>;  // one block-row band of 64, 128 wide
using CfgGroupTall = Cfg<128, 32, 4, 2, 4, 3, 64>;
using Cfg64 = Cfg<64, 32, 2, 2, 4, 3>;
using Cfg32 = Cfg<32, 32, 2, 2, 4, 4>;
using Cfg16 = Cfg<16, 16, 1, 1, 4, 4>;

/// The k extent of one mma instruction for element type E.
template <typename E>
constexpr int mma_k() {
  return sizeof(E) == 4 ? 8 : 16;
}

/// Shared-memory layout of one pipeline stage: the A tile then the B tile, each stored as
/// in global memory (A: [BM][BK], or [BK][BM] when transposed; B: [BK][BN], or [BN][BK]).
template <class C, typename E, bool TA, bool TB>
struct Smem {
  static constexpr int pad(bool k_contiguous) { return sizeof(E) == 4 && k_contiguous ? 4 : 8; }
  static constexpr int A_ROWS = TA ? C::BK : C::BM, A_COLS = TA ? C::BM : C::BK;
  static constexpr int B_ROWS = TB ? C::BN : C::BK, B_COLS = TB ? C::BK : C::BN;
  static constexpr int A_LD = A_COLS + pad(!TA), B_LD = B_COLS + pad(TB);
  static constexpr int A_SIZE = A_ROWS * A_LD, B_SIZE = B_ROWS * B_LD;
  static constexpr int STAGE = A_SIZE + B_SIZE;
  static constexpr int STAGES = sizeof(E) == 4 ? C::STAGES32 : C::STAGES16;
  static constexpr std::size_t BYTES = static_cast<std::size_t>(STAGES) * STAGE * sizeof(E);
  static_assert((A_LD * sizeof(E)) % 16 == 0 && (B_LD * sizeof(E)) % 16 == 0, "16-byte aligned rows");
};

// ---- PTX wrappers ------------------------------------------------------------------------
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
  }
}

__device__ __forceinline__ std::uint32_t to_tf32(float f) {
  std::uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

template <typename E>
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<E, bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (std::is_same_v<E, half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// ---- tile copies and fragment loads ------------------------------------------------------
/// Issues the cp.async copies of a ROWS x COLS tile (row stride `ld` in global memory, LD
/// in shared memory) spread over the CTA's threads.
template <int ROWS, int COLS, int LD, int THREADS, typename E>
__device__ __forceinline__ void copy_tile(E* s, const E* g, long long ld, int tid) {
  constexpr int kChunk = 16 / static_cast<int>(sizeof(E));
  constexpr int kPerRow = COLS / kChunk;
  constexpr int kChunks = ROWS * kPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + THREADS - 1) / THREADS; ++i) {
    const int c = tid + i * THREADS;
    if (kChunks % THREADS == 0 || c < kChunks) {
      const int r = c / kPerRow, col = (c % kPerRow) * kChunk;
      cp_async16(s + r * LD + col, g + r * ld + col);
    }
  }
}

/// A fragments (MT m16 x k tiles) of the warp at rows wm0.., k offset kb.
template <class C, typename E, bool TA, bool TB>
__device__ __forceinline__ void load_a(std::uint32_t (&af)[C::MT][4], const E* sa, int wm0, int kb, int lane) {
  using L = Smem<C, E, TA, TB>;
  if constexpr (sizeof(E) == 2) {
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt) {
      const E* p;
      if constexpr (!TA) {
        p = sa + (wm0 + mt * 16 + (lane & 15)) * L::A_LD + kb + (lane >> 4) * 8;
      } else {
        const int j = lane >> 3, r = lane & 7;
        p = sa + (kb + (j >> 1) * 8 + r) * L::A_LD + wm0 + mt * 16 + (j & 1) * 8;
      }
      ldmatrix_x4<TA>(af[mt], p);
    }
  } else {
    const int g = lane >> 2, t = lane & 3;
    auto at = [&](int m, int k) { return TA ? sa[k * L::A_LD + m] : sa[m * L::A_LD + k]; };
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt) {
      const int m = wm0 + mt * 16 + g;
      af[mt][0] = to_tf32(at(m, kb + t));
      af[mt][1] = to_tf32(at(m + 8, kb + t));
      af[mt][2] = to_tf32(at(m, kb + t + 4));
      af[mt][3] = to_tf32(at(m + 8, kb + t + 4));
    }
  }
}

/// B fragments (NT k x n8 tiles) of the warp at columns wn0.., k offset kb.
template <class C, typename E, bool TA, bool TB>
__device__ __forceinline__ void load_b(std::uint32_t (&bf)[C::NT][2], const E* sb, int wn0, int kb, int lane) {
  using L = Smem<C, E, TA, TB>;
  if constexpr (sizeof(E) == 2) {
    const int j = lane >> 3, r = lane & 7;
#pragma unroll
    for (int np = 0; np < C::NT / 2; ++np) {
      const E* p;
      if constexpr (TB) {
        p = sb + (wn0 + np * 16 + (j >> 1) * 8 + r) * L::B_LD + kb + (j & 1) * 8;
      } else {
        p = sb + (kb + (j & 1) * 8 + r) * L::B_LD + wn0 + np * 16 + (j >> 1) * 8;
      }
      std::uint32_t q[4];
      ldmatrix_x4<!TB>(q, p);
      bf[2 * np][0] = q[0];
      bf[2 * np][1] = q[1];
      bf[2 * np + 1][0] = q[2];
      bf[2 * np + 1][1] = q[3];
    }
  } else {
    const int g = lane >> 2, t = lane & 3;
    auto at = [&](int k, int n) { return TB ? sb[n * L::B_LD + k] : sb[k * L::B_LD + n]; };
#pragma unroll
    for (int nt = 0; nt < C::NT; ++nt) {
      const int n = wn0 + nt * 8 + g;
      bf[nt][0] = to_tf32(at(kb + t, n));
      bf[nt][1] = to_tf32(at(kb + t + 4, n));
    }
  }
}

/// Stores two adjacent output values (rounded to E) at p (4- or 8-byte aligned). 16-bit
/// values round in hardware (one cvt a pair; the software rounding of tg::bfloat16 took
/// about seven instructions an element, in an epilogue during which no MMA runs).
template <typename E>
__device__ __forceinline__ void store2(E* p, float x, float y) {
  if constexpr (sizeof(E) == 2) {
    *reinterpret_cast<std::uint32_t*>(p) = gpu::pack2<E>(x, y);
  } else {
    *reinterpret_cast<float2*>(p) = make_float2(x, y);
  }
}

// ---- operand loading ---------------------------------------------------------------------
/// Which 16-byte chunks of a stage each thread copies, and the tile ids they come from.
/// The ids of a step are fetched from global memory one main-loop iteration before its
/// copies are issued, so that the fetch latency hides behind that iteration's mma work
/// instead of stalling the copy issue.
template <class C, typename E, bool TA, bool TB, int GB>
struct Loader {
  using L = Smem<C, E, TA, TB>;
  static constexpr int kChunk = 16 / static_cast<int>(sizeof(E));
  static constexpr int A_PER_ROW = L::A_COLS / kChunk, A_CHUNKS = L::A_ROWS * A_PER_ROW;
  static constexpr int B_PER_ROW = L::B_COLS / kChunk, B_CHUNKS = L::B_ROWS * B_PER_ROW;
  static constexpr int A_ITERS = (A_CHUNKS + C::kThreads - 1) / C::kThreads;
  static constexpr int B_ITERS = (B_CHUNKS + C::kThreads - 1) / C::kThreads;
  // blocks along m and n of a grouped region
  static constexpr int GM = GB > 0 ? C::BM / GB : 1, GN = GB > 0 ? C::BN / GB : 1;
  static constexpr int GB1 = GB > 0 ? GB : 1;  // GB as a divisor
  static_assert(GB == 0 || (C::BM % GB1 == 0 && C::BN % GB1 == 0 && C::BK <= GB), "regions of whole blocks");
  // A grouped region stacks blocks along m (A's rows unless transposed) and n (B's columns
  // unless transposed); the other dimension of each stored tile is k.
  static constexpr bool A_ROWS_GROUPED = !TA, B_ROWS_GROUPED = TB;

  /// Tile ids of one step: a pair (per-block path), or per chunk (grouped path, -1: zeros).
  struct Ids {
    int2 pair{0, 0};
    int a[A_ITERS]{}, b[B_ITERS]{};
  };

  __device__ __forceinline__ static Ids fetch(const KernelArgs& args, int first, int step, int tid) {
    Ids ids;
    if constexpr (GB == 0) {
      ids.pair = args.pairs[first + (step >> args.lg_kpp)];
    } else {
      const int* rec = args.steps + static_cast<long long>(first + (step >> args.lg_kpp)) * (GM + GN);
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int c = tid + i * C::kThreads;
        if (A_CHUNKS % C::kThreads == 0 || c < A_CHUNKS) {
          const int r = c / A_PER_ROW, col = (c % A_PER_ROW) * kChunk;
          ids.a[i] = rec[(A_ROWS_GROUPED ? r : col) / GB];
        }
      }
#pragma unroll
      for (int i = 0; i < B_ITERS; ++i) {
        const int c = tid + i * C::kThreads;
        if (B_CHUNKS % C::kThreads == 0 || c < B_CHUNKS) {
          const int r = c / B_PER_ROW, col = (c % B_PER_ROW) * kChunk;
          ids.b[i] = rec[GM + (B_ROWS_GROUPED ? r : col) / GB];
        }
      }
    }
    return ids;
  }

  /// Copies the chunks of one operand tile of a grouped region: chunk (r, col) of the
  /// stored-orientation tile comes from block ids[i] (zeros when absent), at the row /
  /// column inside that block and k offset kk.
  template <int ROWS, int COLS, int LD, int ITERS, bool ROWS_GROUPED>
  __device__ __forceinline__ static void copy_grouped(E* s, const E* X, const int (&ids)[ITERS], const DevAddr& addr,
                                                      long long ld, int kk, int tid) {
    constexpr int kPerRow = COLS / kChunk, kChunks = ROWS * kPerRow;
#pragma unroll
    for (int i = 0; i < ITERS; ++i) {
      const int c = tid + i * C::kThreads;
      if (kChunks % C::kThreads == 0 || c < kChunks) {
        const int r = c / kPerRow, col = (c % kPerRow) * kChunk;
        E* dst = s + r * LD + col;
        if (ids[i] < 0) {
          *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
        } else {
          const long long rr = ROWS_GROUPED ? r % GB : kk + r, cc = ROWS_GROUPED ? kk + col : col % GB;
          cp_async16(dst, X + addr.offset(ids[i]) + rr * ld + cc);
        }
      }
    }
  }

  /// Issues the copies of `step` into stage `slot`; (ti, tj): the CTA's sub-tile of a block
  /// larger than the CTA tile (per-block path).
  __device__ __forceinline__ static void issue(const KernelArgs& args, const Ids& ids, int step, E* s, int ti, int tj,
                                               int tid) {
    const E* A = static_cast<const E*>(args.a);
    const E* B = static_cast<const E*>(args.b);
    const int kk = (step & ((1 << args.lg_kpp) - 1)) * C::BK;
    if constexpr (GB == 0) {
      const long long a_sub = TA ? static_cast<long long>(ti) * C::BM : static_cast<long long>(ti) * C::BM * args.lda;
      const long long b_sub = TB ? static_cast<long long>(tj) * C::BN * args.ldb : static_cast<long long>(tj) * C::BN;
      const E* ga = A + args.addr_a.offset(ids.pair.x) + a_sub + (TA ? kk * args.lda : kk);
      const E* gb = B + args.addr_b.offset(ids.pair.y) + b_sub + (TB ? kk : kk * args.ldb);
      copy_tile<L::A_ROWS, L::A_COLS, L::A_LD, C::kThreads>(s, ga, args.lda, tid);
      copy_tile<L::B_ROWS, L::B_COLS, L::B_LD, C::kThreads>(s + L::A_SIZE, gb, args.ldb, tid);
    } else {
      copy_grouped<L::A_ROWS, L::A_COLS, L::A_LD, A_ITERS, A_ROWS_GROUPED>(s, A, ids.a, args.addr_a, args.lda, kk, tid);
      copy_grouped<L::B_ROWS, L::B_COLS, L::B_LD, B_ITERS, B_ROWS_GROUPED>(s + L::A_SIZE, B, ids.b, args.addr_b,
                                                                           args.ldb, kk, tid);
    }
  }
};

// ---- the kernel --------------------------------------------------------------------------
/// GB = 0: per-block path, item = (output tile, pair begin, pair end, slot). GB > 0:
/// grouped path for blocks of GB, item = (region, step begin, step end, -1), the region's
/// GM x GN output tile ids at args.outs[region * GM * GN] (-1: not stored).
template <class C, typename E, bool TA, bool TB, int GB>
__global__ void __launch_bounds__(C::kThreads) mma_kernel(const KernelArgs args) {
  using L = Smem<C, E, TA, TB>;
  using Ld = Loader<C, E, TA, TB, GB>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* smem = reinterpret_cast<E*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int4 item = args.items[blockIdx.x];
  const int ti = static_cast<int>(blockIdx.y) / args.nsub, tj = static_cast<int>(blockIdx.y) % args.nsub;
  const int nsteps = (item.z - item.y) << args.lg_kpp;

  const int wm0 = (warp % C::WM) * C::WTM, wn0 = (warp / C::WM) * C::WTN;
  float acc[C::MT][C::NT][4];
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < C::NT; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[mt][nt][q] = 0.0f;

#pragma unroll
  for (int s = 0; s < L::STAGES - 1; ++s) {
    if (s < nsteps) Ld::issue(args, Ld::fetch(args, item.y, s, tid), s, smem + s * L::STAGE, ti, tj, tid);
    cp_async_commit();
  }
  typename Ld::Ids pending;  // ids of the next step to issue
  if (L::STAGES - 1 < nsteps) pending = Ld::fetch(args, item.y, L::STAGES - 1, tid);
  for (int s = 0; s < nsteps; ++s) {
    cp_async_wait<L::STAGES - 2>();
    // Stage s has landed for every thread (cp.async and zero stores alike), and every
    // warp is done with step s-1, whose slot the next copy reuses.
    __syncthreads();
    const int next = s + L::STAGES - 1;
    if (next < nsteps) {
      Ld::issue(args, pending, next, smem + (next % L::STAGES) * L::STAGE, ti, tj, tid);
      if (next + 1 < nsteps) pending = Ld::fetch(args, item.y, next + 1, tid);
    }
    cp_async_commit();
    const E* sa = smem + (s % L::STAGES) * L::STAGE;
    const E* sb = sa + L::A_SIZE;
#pragma unroll
    for (int kb = 0; kb < C::BK; kb += mma_k<E>()) {
      std::uint32_t af[C::MT][4], bf[C::NT][2];
      load_a<C, E, TA, TB>(af, sa, wm0, kb, lane);
      load_b<C, E, TA, TB>(bf, sb, wn0, kb, lane);
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < C::NT; ++nt) mma<E>(acc[mt][nt], af[mt], bf[nt]);
    }
  }
  cp_async_wait<0>();

  // Fragment element (row g or g+8, columns 2t and 2t+1) of each mma tile.
  const int g = lane >> 2, t = lane & 3;
  if constexpr (GB > 0) {
    // Rows r and r+8 of a fragment lie in one 16-row band, hence in one block (GB >= 16).
    const int* outs = args.outs + static_cast<long long>(item.x) * Ld::GM * Ld::GN;
    E* C0 = static_cast<E*>(args.c);
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        const int row = wm0 + mt * 16 + g, col = wn0 + nt * 8 + 2 * t;
        const int id = outs[(row / GB) * Ld::GN + col / GB];
        if (id < 0) continue;
        E* p = C0 + args.addr_c.offset(id) + static_cast<long long>(row % GB) * args.ldc + col % GB;
        store2<E>(p, acc[mt][nt][0], acc[mt][nt][1]);
        store2<E>(p + 8 * args.ldc, acc[mt][nt][2], acc[mt][nt][3]);
      }
    return;
  }
  const long long row0 = static_cast<long long>(ti) * C::BM + wm0, col0 = static_cast<long long>(tj) * C::BN + wn0;
  if (item.w < 0) {
    E* out = static_cast<E*>(args.c) + args.addr_c.offset(item.x) + row0 * args.ldc + col0;
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        E* p = out + static_cast<long long>(mt * 16 + g) * args.ldc + nt * 8 + 2 * t;
        store2<E>(p, acc[mt][nt][0], acc[mt][nt][1]);
        store2<E>(p + 8 * args.ldc, acc[mt][nt][2], acc[mt][nt][3]);
      }
  } else {
    const long long bs = args.bs;
    float* out = static_cast<float*>(args.ws) + static_cast<long long>(item.w) * bs * bs + row0 * bs + col0;
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        float* p = out + static_cast<long long>(mt * 16 + g) * bs + nt * 8 + 2 * t;
        store2<float>(p, acc[mt][nt][0], acc[mt][nt][1]);
        store2<float>(p + 8 * bs, acc[mt][nt][2], acc[mt][nt][3]);
      }
  }
}

// ---- launch ------------------------------------------------------------------------------
template <class C, typename E, bool TA, bool TB, int GB>
void launch_cfg(const KernelArgs& args, int n_items, cudaStream_t stream) {
  using L = Smem<C, E, TA, TB>;
  auto* kernel = &mma_kernel<C, E, TA, TB, GB>;
  if constexpr (L::BYTES > 48 * 1024) {
    // Opting in to more than 48 KiB of dynamic shared memory, once per device; the flags
    // belong to this instantiation, i.e. to this kernel.
    static std::array<std::atomic<bool>, 64> ready{};
    int dev = 0;
    TG_CUDA_CHECK(cudaGetDevice(&dev));
    auto& flag = ready[static_cast<std::size_t>(dev & 63)];
    if (!flag.load(std::memory_order_acquire)) {
      TG_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L::BYTES)));
      flag.store(true, std::memory_order_release);
    }
  }
  KernelArgs a = args;
  a.nsub = GB > 0 ? 1 : args.bs / C::BM;
  a.lg_kpp = 0;
  while ((C::BK << a.lg_kpp) < args.bs) ++a.lg_kpp;
  const dim3 grid(static_cast<unsigned>(n_items), static_cast<unsigned>(a.nsub * a.nsub));
  kernel<<<grid, C::kThreads, L::BYTES, stream>>>(a);
  TG_CUDA_CHECK(cudaGetLastError());
}

template <class C, typename E, int GB = 0>
void launch_trans(const KernelArgs& args, int n_items, cudaStream_t stream) {
  if (!args.trans_a && !args.trans_b)
    launch_cfg<C, E, false, false, GB>(args, n_items, stream);
  else if (args.trans_a && !args.trans_b)
    launch_cfg<C, E, true, false, GB>(args, n_items, stream);
  else if (!args.trans_a)
    launch_cfg<C, E, false, true, GB>(args, n_items, stream);
  else
    launch_cfg<C, E, true, true, GB>(args, n_items, stream);
}

template <typename E>
void launch_mma(const KernelArgs& args, int n_items, cudaStream_t stream) {
  switch (mma_tile(args.bs)) {
    case 128:
      if constexpr (sizeof(E) == 2)
        launch_trans<Cfg128, E>(args, n_items, stream);
      else
        launch_trans<Cfg128Tf32, E>(args, n_items, stream);
      break;
    case 64:
      launch_trans<Cfg64, E>(args, n_items, stream);
      break;
    case 32:
      launch_trans<Cfg32, E>(args, n_items, stream);
      break;
    case 16:
      launch_trans<Cfg16, E>(args, n_items, stream);
      break;
    default:
      TG_THROW(Error, "matmul: internal error: no tensor-core tile for block size ", args.bs);
  }
}

template <class C, typename E>
void launch_grouped_cfg(const KernelArgs& args, int n_items, cudaStream_t stream) {
  switch (args.bs) {
    case 64:
      launch_trans<C, E, 64>(args, n_items, stream);
      break;
    case 32:
      launch_trans<C, E, 32>(args, n_items, stream);
      break;
    default:
      TG_THROW(Error, "matmul: internal error: no grouped tile for block size ", args.bs);
  }
}

template <typename E>
void launch_mma_grouped(const KernelArgs& args, int n_items, int rows, int cols, cudaStream_t stream) {
  if (rows == 128 && cols == 128)
    launch_grouped_cfg<CfgGroup, E>(args, n_items, stream);
  else if (rows == 64 && cols == 128)
    launch_grouped_cfg<CfgGroupWide, E>(args, n_items, stream);
  else if (rows == 128 && cols == 64)
    launch_grouped_cfg<CfgGroupTall, E>(args, n_items, stream);
  else
    TG_THROW(Error, "matmul: internal error: no grouped region of ", rows, " x ", cols);
}

}  // namespace tg::ops::spmm
