// Hopper (sm_90a) kv pass of the block-sparse flash attention backward for bf16 / f16 with
// D = Dv of 64 or 128 and dQ by atomics: the same work items and tile lists (query tiles of 64,
// also for the general transform), per-element rules (bias, soft cap, dropout with its
// sign-bit marking of dropped probabilities; kGeneral) and outputs as the mma.sync kv pass
// (tc_bwd.cuh), with warpgroup MMAs.
//
// One CTA per (kv row, key tile of BN = 128, or 64 for patterns sparse at 64-key
// granularity and at D 64 without the general transform, where three such CTAs share an
// SM): BN / 64 warpgroups of 64 keys each, K and V resident in shared memory, dK and dV in
// registers. Per query tile of 64, each warpgroup computes, keys as rows:
//   Sᵀ  = K Qᵀ            wgmma, K and Q from shared memory (both K-major), issued
//   dPᵀ = V dOᵀ           together with this one (V and dO K-major)
//   Pᵀ  = 2^(Sᵀ·scale·log2 e - lse), masked as the forward
//   dV += Pᵀ dO           Pᵀ from registers (the accumulator fragment is the A fragment),
//                         dO N-major; runs on while dSᵀ is computed and dK, dQ issued
//   dSᵀ = Pᵀ ⊙ (dPᵀ - D)
//   dK += dSᵀ Q           dSᵀ from registers, Q N-major
//   dQ += dS K            dSᵀ through shared memory, read M-major (transposed) as A, K
//                         N-major; each warpgroup's share goes through shared memory to
//                         the f32 workspace as TMA reductions (one per 32 columns)
// dK is scaled at the end and dQ by the conversion kernel, as in tc_bwd.cuh.
//
// kDqCols (D 128, 128-key tiles; kernel_choice.h's BwdDq): dQ split by columns instead: each
// warpgroup stores its dSᵀ into this step's buffer of two, one CTA barrier, then warpgroup g
// computes dQ's columns 64g .. 64g + 63 over all 128 keys (half the f32 reduction traffic,
// 32 fewer accumulators). No warpgroup skips a step there (an invisible tile gives dS = 0),
// so both reach every barrier; a buffer is rewritten two steps on, after both warpgroups
// passed the barrier between, i.e. after their products that read it completed.
//
// kPipe (plain scores, dQ by keys; kernel_choice.h's BwdStep): the step's products reordered so
// that the tensor cores have work while the warpgroup does its scalar work. Sᵀ and dPᵀ are
// committed as two groups: Pᵀ is computed while dPᵀ still runs. dK is issued
// after dQ and runs while dQ is stored to shared memory; it reads the stage's Q, so it is
// waited before the stage is released. (Left in flight into the next step, dK made ptxas
// serialise every wgmma of the loop: it does not follow pending groups across the back edge.)
//
// kProducer (128-key tiles, plain scores; dQ by columns at D 128, by keys at D 64;
// kernel_choice.h's BwdWarps): warp specialisation. A third warpgroup keeps 24 registers a
// thread and gives the rest to the two computing ones (240): its first warp refills the
// stages, its second adds each step's dQ tiles to the workspace, so the computing warpgroups
// issue no copies and wait for no bulk reads. Hand-offs by mbarriers: `empty` (a stage's 256
// consumer threads are done with it), `dq_full` (a warpgroup's dQ tile is in shared memory)
// and `dq_empty` (its reductions have read it). No warpgroup skips a step (an invisible tile
// gives dS = 0): the reduction thread takes every warpgroup's tile every step, and at D 128 the
// warpgroups meet once a step, for the dSᵀ exchange. (Skipping the steps a warpgroup's keys see
// nothing of, the diagonal tiles of causal patterns, measured 0.96-1.01x the backward at D 64
// with dQ by keys and did not combine with dQ in turns: bench/RESULTS.md, thirty-sixth and
// thirty-eighth sessions.)
//
// kTurns (the producer at D 64; kernel_choice.h's ProducerDq): dQ in turns. Both warpgroups
// store their dSᵀ into this step's buffer of two and meet at one barrier a step, as with dQ by
// columns; then the warpgroup of the step's parity alone computes dQ's 64 columns over all 128
// keys (m64n64, k = 128) and hands that one tile to the reduction thread: one f32 reduction a
// step instead of two, at the same shared-memory reads as dQ by keys. Its n-th turn (step 2n + g)
// is phase n of its dq_full / dq_empty. No warpgroup skips a step (an invisible tile gives dS = 0).
//
// kRegKV (the producer at D 64; kernel_choice.h's BwdOperands): each computing warpgroup keeps
// its 64 keys of K and V as A operand fragments in registers (32 a thread), so that Sᵀ and dPᵀ
// read only Q and dO from shared memory. At D 64 those are m64n64k16 products, whose two
// shared operands take the whole 128 bytes a clock of shared-memory bandwidth; from registers
// they take half.
//
// kDqInStage (D 128 on 64-key tiles, the pipelined step; kernel_choice.h's BwdDqStaging): dQ is
// staged for its reductions in the step's own stage, boxes 2 and 3 in the dO tile once dV is done
// (while dK runs), boxes 0 and 1 in the Q tile once dK is; the thread that issues the reductions
// waits for them to have read the stage before it refills it. Without the 32 KiB tile a CTA takes
// 106 KiB, and two share an SM (four warps each, 255 registers a thread). The default for plain scores
// (kernel_choice.h); with dropout compiled in it is instantiated nowhere yet.
//
// Pipeline. Q, dO (TMA, 128-byte swizzled) and the query rows' (lse, D) pairs (a bulk copy
// from the packed table the delta pass writes) arrive in STAGES stages guarded by
// mbarriers; there is no CTA-wide barrier in the loop, so the warpgroups drift apart and
// one's softmax work overlaps the other's MMAs. A stage is refilled by whichever
// warpgroup releases it last (a shared counter decides), with the tile STAGES steps on.
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/configs.h"
#include "ops/attention/cuda/keep_units.cuh"
#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"
#include "ops/attention/cuda/tc_bwd.cuh"
#include "ops/attention/cuda/tile.cuh"
#include "ops/attention/cuda/wg_tile.cuh"
#include "ops/cuda_pdl.cuh"
#include "ops/cuda_tma.cuh"
#include "ops/cuda_wgmma.cuh"

namespace tg::ops::attn {

/// The Hopper kv pass's arguments: the common ones plus what its loads need.
template <typename T>
struct WgBwdArgs {
  BwdArgs<T> a;
  CUtensorMap map_q, map_do;   ///< q and dout as [bhq][sq][D], boxes of 64 x 64 (128-byte swizzle)
  CUtensorMap map_dq;          ///< the f32 dQ workspace as [bhq][sq][D], boxes of 32 x 64 (the same)
  const float2* ld = nullptr;  ///< [bhq][sq_pad]: (lse in log2 units, D) of each query row
  int sq_pad = 0;              ///< sq rounded up to a multiple of 64 (whole tiles of ld)
};

template <int D_, int BN_, bool kGeneral_, bool kDqCols_ = false, bool kProducer_ = false, bool kRegKV_ = false,
          bool kTurns_ = false, bool kDqInStage_ = false>
struct WgBwdConfig {
  static constexpr int D = D_, DV = D_, BM = 64, BN = BN_, NG = BN_ / 64;
  /// kProducer: a third warpgroup after the NG computing ones issues the loads and the dQ
  /// reductions (kernel_choice.h's BwdWarps); registers a thread of each kind by setmaxnreg
  /// (24 + 2 x 240 = 3 x 168, the entry count of 384 threads)
  static constexpr bool kProducer = kProducer_;
  static_assert(!kProducer || (BN == 128 && kDqCols_ == (D == 128) && !kGeneral_),
                "the producer warpgroup: 128-key tiles, plain scores, dQ by columns at D 128 (by keys at D 64)");
  /// kRegKV: K and V as register A operands of Sᵀ and dPᵀ (the producer at D 64)
  static constexpr bool kRegKV = kRegKV_;
  static_assert(!kRegKV || (kProducer && D == 64), "K and V in registers: the producer at D 64");
  static constexpr int kConsumers = 128 * NG, kThreads = kConsumers + (kProducer ? 128 : 0);
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  static_assert((BN == kBwdKvBN || BN == kBwdKvBNNarrow) && BM == bwd_kv_bm(false),
                "the host's kv tile lists are built for these tiles");
  static_assert(D == 64 || D == 128, "head dims of 64 or 128");
  /// Three CTAs an SM for 64-key tiles at D 64 without the general transform (168
  /// registers a thread, 32 bytes spilled), so that 12 warps, not 8, hide each other's
  /// latency; the general transform would spill 376 bytes there and takes two.
  /// kDqInStage (D 128 on 64-key tiles, plain scores; kernel_choice.h's BwdDqStaging): dQ staged
  /// for its reductions in the step's own Q and dO tiles once the step's products are done, not in
  /// a 32 KiB tile of its own, so that two CTAs share an SM (106 KiB each)
  static constexpr bool kDqInStage = kDqInStage_;
  static_assert(!kDqInStage || (D == 128 && BN == 64 && !kGeneral_ && !kProducer_),
                "dQ staged in the stage: D 128, 64-key tiles, plain scores");
  static constexpr int kMinBlocks = D == 64 && BN == 64 && !kGeneral_ ? 3 : kDqInStage ? 2 : 1;
  /// D 128: two stages, so that everything fits in 227 KiB (210 at BN 128); two as well
  /// where three CTAs share an SM. With the producer warpgroup three (226.5 KiB: dQ by columns
  /// stages half the dQ), so that its refills run further ahead. (Without it, three stages of
  /// dQ by columns measured 0.94-1.02x the default's backward, two 0.88-0.97x, in different
  /// sessions: bench/RESULTS.md, sixteenth and nineteenth.)
  static constexpr int STAGES = (D == 64 && kMinBlocks == 1) || kProducer ? 3 : 2;
  static constexpr int kKBytes = BN * D * 2;   // 16 KiB at BN 128, D 64
  static constexpr int kVBytes = BN * DV * 2;
  static constexpr int kQBytes = BM * D * 2;   // 8 KiB a stage at D 64
  static constexpr int kOBytes = BM * DV * 2;
  static constexpr int kLdBytes = BM * 8;      // (lse, D) pairs of a stage
  static constexpr int kSBytes = 64 * BM * 2;  // dSᵀ of one warpgroup, 8 KiB
  /// dQ by columns (kDqCols, D 128 and 128-key tiles): warpgroup g computes dQ's columns
  /// 64g .. 64g + 63 over all BN keys, from every warpgroup's dSᵀ (two buffers of them,
  /// alternating by step); by keys (default), dQ's D columns over its own 64 keys.
  static constexpr bool kDqCols = kDqCols_;
  static_assert(!kDqCols || (D == 128 && BN == 128), "dQ by columns: D 128, 128-key tiles");
  /// kTurns (the producer at D 64): dQ over all BN keys by one warpgroup a step, from both
  /// warpgroups' dSᵀ (double-buffered like dQ by columns)
  static constexpr bool kTurns = kTurns_;
  static_assert(!kTurns || (kProducer && D == 64 && BN == 128), "dQ in turns: the producer at D 64");
  static constexpr int kSBuffers = kDqCols || kTurns ? 2 : 1;
  static constexpr int DQN = kDqCols ? D / NG : D;  // dQ columns a warpgroup computes
  static constexpr int kDqCol0 = kDqCols ? DQN : 0;  // warpgroup g's first dQ column is kDqCol0 * g
  /// dQ of a warpgroup as DQN / 32 boxes of 64 x 32 f32 (128-byte lines, 128-byte swizzled)
  static constexpr int kDqBox = 64 * 128, kDqBytes = kDqInStage ? 0 : DQN / 32 * kDqBox;
  static_assert(!kDqInStage || (kQBytes == 2 * kDqBox && kOBytes == 2 * kDqBox), "a stage holds dQ's four boxes");
  static constexpr int kTiles =
      kKBytes + kVBytes + STAGES * (kQBytes + kOBytes) + NG * (kSBuffers * kSBytes + kDqBytes);
  /// the tiles, the (lse, D) stages, one atom of slack for the in-kernel alignment
  static constexpr int kSmem = kTiles + STAGES * kLdBytes + 1024;
  /// the CTAs of an SM: dynamic shared memory, the static barriers (at most 128 bytes) and the 1 KiB
  /// the hardware reserves per CTA
  static_assert(kMinBlocks * (kSmem + 128 + 1024) <= 228 * 1024, "the CTAs of an SM fit in its shared memory");
};

/// The producer warpgroup's mbarriers (kProducer): `empty` per stage, then `dq_full` and
/// `dq_empty` per computing warpgroup; a function's static, so other kernels lack them.
template <int NS, int NG>
__device__ __forceinline__ std::uint64_t* producer_barriers() {
  __shared__ __align__(8) std::uint64_t bars[NS + 2 * NG];
  return bars;
}

// kDrop: plain scores with dropout (DropoutKernels::Plain; decisions drawn ahead, p.keep),
// dropped probabilities marked by their sign bit as in the general transform.
// kTurns (the producer at D 64; kernel_choice.h's ProducerDq): dQ in turns, see above.
// kDqInStage (D 128 on 64-key tiles, the pipelined step; kernel_choice.h's BwdDqStaging): dQ staged in
// the step's stage, see WgBwdConfig.
template <typename T, int D_, bool kGeneral, int BN_, bool kDqCols = false, bool kPipe = false, bool kDrop = false,
          bool kProducer = false, bool kRegKV = false, bool kTurns = false, bool kDqInStage = false>
__global__ void __launch_bounds__(
    WgBwdConfig<D_, BN_, kGeneral, kDqCols, kProducer, kRegKV, kTurns, kDqInStage>::kThreads,
    WgBwdConfig<D_, BN_, kGeneral, kDqCols, kProducer, kRegKV, kTurns, kDqInStage>::kMinBlocks)
    wg_bwd_kv_kernel(const __grid_constant__ WgBwdArgs<T> w) {
#if TG_WGMMA_ENABLED
  using Cfg = WgBwdConfig<D_, BN_, kGeneral, kDqCols, kProducer, kRegKV, kTurns, kDqInStage>;
  static_assert(!kDqInStage || kPipe, "dQ staged in the stage: the pipelined step");
  static_assert(!kPipe || !kGeneral, "the pipelined step: plain scores");
  static_assert(!kTurns || (kPipe && !kDqCols), "dQ in turns: the producer's pipelined step");
  // whether a step needs every warpgroup's dSᵀ (so that none skips it)
  constexpr bool kSharedDs = kDqCols || kTurns;
  static_assert(!kDrop || (!kGeneral && !kDqCols), "dropout on plain scores: dQ by keys");
  constexpr bool kDropout = kGeneral || kDrop;  // whether dropout's code is compiled in
  // NC: the computing threads (all but the producer warpgroup's)
  constexpr int D = Cfg::D, DV = Cfg::DV, BM = Cfg::BM, BN = Cfg::BN, NC = Cfg::kConsumers, NS = Cfg::STAGES;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ __align__(8) std::uint64_t full[NS];  // a stage's Q, dO and (lse, D) have landed
  __shared__ unsigned released[NS];                // warpgroups done with a stage this round
  const BwdArgs<T>& a = w.a;
  const std::uint32_t base = (smem_u32(smem) + 1023u) & ~1023u;
  unsigned char* gen = smem + (base - smem_u32(smem));  // generic pointer to `base`
  const std::uint32_t sK = base, sV = sK + Cfg::kKBytes, sQ = sV + Cfg::kVBytes, sO = sQ + NS * Cfg::kQBytes;
  const std::uint32_t sS = sO + NS * Cfg::kOBytes, sDQ = sS + Cfg::NG * Cfg::kSBuffers * Cfg::kSBytes;
  const std::uint32_t sLD = base + Cfg::kTiles;
  const float2* ldg = reinterpret_cast<const float2*>(gen + Cfg::kTiles);  // [NS][BM]

  const Params& p = a.p;
  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  // The warpgroup broadcast from lane 0 for the shared-memory tile addresses and (at D 64)
  // the warpgroup barriers: the compiler then keeps those, and the wgmma descriptors made
  // from them, in uniform registers (loop 1393 -> 1014 instructions at D 64, 1733 -> 1426
  // at D 128 with the changes of the same commit; uniform barrier ids made D 128 spill).
  const int group_u = __shfl_sync(0xffffffffu, group, 0);
  const int group_bar = D_ == 64 ? group_u : group;
  const int item = a.cols.order[blockIdx.x];
  const int kv = item / a.cols.num_n, n = item % a.cols.num_n;
  const int k0 = n * BN;
  const int kr = k0 + group * 64 + warp * 16 + g;  // this thread's keys: kr and kr + 8
  const int e0 = a.cols.off[item], e1 = a.cols.off[item + 1];
  const float inv_m = a.cols.inv_num_m();  // for query_tile, once
  // this warpgroup's 64 keys in K and V, its dSᵀ tile and its dQ rows
  const std::uint32_t sKg = sK + static_cast<std::uint32_t>(group_u) * 64u * 128u;
  const std::uint32_t sVg = sV + static_cast<std::uint32_t>(group_u) * 64u * 128u;
  const std::uint32_t sSg = sS + static_cast<std::uint32_t>(group_u) * Cfg::kSBytes;
  const std::uint32_t sDQg = sDQ + static_cast<std::uint32_t>(group_u) * Cfg::kDqBytes;
  auto bar = [&](int s) { return tma::smem_addr(&full[s]); };

  // Starts the loads of entry e's query tile into stage s (one thread).
  auto issue = [&](int e, int s) {
    const int2 qt = a.cols.query_tile(a.cols.entries[e], kv, p.group, BM, inv_m);
    tma::arrive_expect_tx(bar(s), Cfg::kQBytes + Cfg::kOBytes + Cfg::kLdBytes);
    // a row of 128 is two 64-element columns, the second after all BM lines of the first
#pragma unroll
    for (int h = 0; h < D / 64; ++h) {
      const std::uint32_t col = static_cast<std::uint32_t>(h) * BM * 128u;
      tma::load_3d(sQ + static_cast<std::uint32_t>(s) * Cfg::kQBytes + col, &w.map_q, bar(s), 64 * h, qt.y, qt.x);
      tma::load_3d(sO + static_cast<std::uint32_t>(s) * Cfg::kOBytes + col, &w.map_do, bar(s), 64 * h, qt.y, qt.x);
    }
    tma::load_bulk(sLD + static_cast<std::uint32_t>(s) * Cfg::kLdBytes,
                   w.ld + static_cast<std::int64_t>(qt.x) * w.sq_pad + qt.y, Cfg::kLdBytes, bar(s));
  };
  // Adds warpgroup g's dQ tile, staged at shared address tile, to the workspace at query rows
  // i0 .. of plane bh, as one bulk group (one thread).
  auto reduce_dq = [&](std::uint32_t tile, int g, int i0, int bh) {
#pragma unroll
    for (int j = 0; j < Cfg::DQN / 32; ++j) {
      tma::reduce_add_3d(&w.map_dq, tile + static_cast<std::uint32_t>(j) * Cfg::kDqBox, Cfg::kDqCol0 * g + 32 * j, i0,
                         bh);
    }
    tma::bulk_commit();
  };
  // kProducer: stage s is free again (completion r - 1 before its fill r), warpgroup g's dQ tile
  // is in place / has been read
  [[maybe_unused]] auto empty = [](int s) { return tma::smem_addr(&producer_barriers<NS, Cfg::NG>()[s]); };
  [[maybe_unused]] auto dq_full = [](int g) { return tma::smem_addr(&producer_barriers<NS, Cfg::NG>()[NS + g]); };
  [[maybe_unused]] auto dq_empty = [](int g) {
    return tma::smem_addr(&producer_barriers<NS, Cfg::NG>()[NS + Cfg::NG + g]);
  };
  if (tid == 0) {
    for (int s = 0; s < NS; ++s) {
      tma::init(bar(s), 1);
      released[s] = 0;
    }
    if constexpr (kProducer) {
      for (int s = 0; s < NS; ++s) tma::init(empty(s), NC);  // every computing thread releases
      for (int g = 0; g < Cfg::NG; ++g) {
        tma::init(dq_full(g), 128);  // every thread of the warpgroup has stored its part
        tma::init(dq_empty(g), 1);   // the reduction thread
      }
    }
    tma::fence_init();
  }
  if (!kProducer || tid < NC) {
    load_sw128<BN, D, NC>(sK, a.k + (static_cast<std::int64_t>(kv) * p.sk + k0) * D, p.sk - k0, tid);
    load_sw128<BN, DV, NC>(sV, a.v + (static_cast<std::int64_t>(kv) * p.sk + k0) * DV, p.sk - k0, tid);
    cp_async_commit();
  }
  // Launched programmatically (LaunchOverlap), this CTA may start while the delta pass ends:
  // K, V and the lists predate that kernel, but its outputs (the (lse, D) table, the zeroed dQ
  // workspace) and this pass's outputs (memory the allocator may have handed on) wait for it.
  gpu::pdl_wait();
  gpu::pdl_allow();
  if (tid == 0) {
    for (int s = 0; s < NS && e0 + s < e1; ++s) issue(e0 + s, s);
  }
  if (!kProducer || tid < NC) {
    cp_async_wait<0>();
    wg::fence_proxy_async();
  }
  __syncthreads();  // K, V and the barriers are ready

  if constexpr (kProducer) {
    if (tid >= NC) {
      wg::set_max_regs_dec<Cfg::kProducerRegs>();
      if (warp == 0 && lane == 0) {
        // the stages' refills: fill r of stage s once the computing threads released fill r - 1
        for (int e = e0 + NS; e < e1; ++e) {
          const int step = e - e0;
          tma::wait(empty(step % NS), static_cast<std::uint32_t>(((step / NS) & 1) ^ 1));
          issue(e, step % NS);
        }
      } else if (kTurns && warp == 1 && lane == 0) {
        // each step's one dQ tile, warpgroup (step % 2)'s turn n = step / 2; a tile is handed
        // back once its reduction has read it, the last step's reduction still running
        for (int e = e0; e < e1; ++e) {
          const int step = e - e0, g = step & 1;
          const int2 qt = a.cols.query_tile(a.cols.entries[e], kv, p.group, BM, inv_m);
          tma::wait(dq_full(g), static_cast<std::uint32_t>((step >> 1) & 1));
          reduce_dq(sDQ + static_cast<std::uint32_t>(g) * Cfg::kDqBytes, 0, qt.y, qt.x);
          if (step > 0) {
            tma::bulk_wait_read<1>();
            tma::arrive(dq_empty(g ^ 1));
          }
        }
        tma::bulk_wait<0>();  // the reductions are done before the CTA ends
      } else if (!kTurns && warp == 1 && lane == 0) {
        // each step's dQ tiles (every step has them: no warpgroup skips one) into the
        // workspace; a tile is handed back once its reduction has read it
        for (int e = e0; e < e1; ++e) {
          const int step = e - e0;
          const int2 qt = a.cols.query_tile(a.cols.entries[e], kv, p.group, BM, inv_m);
#pragma unroll
          for (int g = 0; g < Cfg::NG; ++g) {
            tma::wait(dq_full(g), static_cast<std::uint32_t>(step & 1));
            reduce_dq(sDQ + static_cast<std::uint32_t>(g) * Cfg::kDqBytes, g, qt.y, qt.x);
          }
          static_assert(Cfg::NG == 2, "two computing warpgroups");
          tma::bulk_wait_read<1>();
          tma::arrive(dq_empty(0));
          tma::bulk_wait_read<0>();
          tma::arrive(dq_empty(1));
        }
        tma::bulk_wait<0>();  // the reductions are done before the CTA ends
      }
      return;
    }
    wg::set_max_regs_inc<Cfg::kConsumerRegs>();
  }

  // kRegKV: this warp's 16 keys of K and V as A fragments, for the whole pass
  [[maybe_unused]] std::uint32_t ka[kRegKV ? D / 16 : 1][4], va[kRegKV ? DV / 16 : 1][4];
  if constexpr (kRegKV) {
    load_a_sw128<BN>(ka, sK, group_u * 64 + warp * 16, lane);
    load_a_sw128<BN>(va, sV, group_u * 64 + warp * 16, lane);
  }

  float acc_dk[D / 2], acc_dv[DV / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc_dk[i] = 0.f;
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) acc_dv[i] = 0.f;

  // each step's list entry is loaded one step ahead (it heads the step's dependency chain)
  int next_entry = e0 < e1 ? a.cols.entries[e0] : 0;
  for (int e = e0; e < e1; ++e) {
    const int step = e - e0, stage = step % NS;
    const int entry = next_entry;
    if (e + 1 < e1) next_entry = a.cols.entries[e + 1];
    tma::wait(bar(stage), static_cast<std::uint32_t>((step / NS) & 1));
    // the previous step's dQ reductions have read their source before this step rewrites
    // it (after a warpgroup barrier); long done by now, and no MMA is in flight here
    // (kProducer: the reduction thread says so through dq_empty)
    if constexpr (!kProducer) {
      if ((tid & 127) == 0) tma::bulk_wait_read<0>();
    }

    const int flags = entry & ((1 << kFlagBits) - 1);
    const int2 qt = a.cols.query_tile(entry, kv, p.group, BM, inv_m);
    const int bh = qt.x, b = bh / p.heads, i0 = qt.y;
    const std::uint32_t sQs = sQ + static_cast<std::uint32_t>(stage) * Cfg::kQBytes;
    const std::uint32_t sOs = sO + static_cast<std::uint32_t>(stage) * Cfg::kOBytes;
    const float2* lds = ldg + stage * BM;

    // This warpgroup is done with the stage (its MMAs completed, its (lse, D) reads done):
    // the last of the warpgroups to say so refills it with the tile NS steps on. `then`
    // runs on the warpgroup's first thread once every thread has arrived. (Not called with the
    // producer warpgroup, whose stages are released through `empty`.)
    auto release = [&](auto then) {
      sync_wg<Cfg::NG>(group_bar);
      if ((tid & 127) == 0) {
        then();
        if (last_release(&released[stage], Cfg::NG)) {
          if (e + NS < e1) issue(e + NS, stage);
        }
      }
    };

    // visibility: bit 4·nt + c is (key kr + 8·(c / 2), query i0 + 8·nt + 2t + c % 2)
    std::uint32_t vis = ~0u;
    bool any = true;
    if (flags != 0 || p.elem_checks) {
      vis = tile_bits(p, flags, bh, b, i0 + 2 * t, kr, true, 32);
      // dQ by columns needs every warpgroup's dSᵀ each step, the producer's reduction thread
      // every warpgroup's dQ tile: none skips there (invisible: dS = 0)
      if constexpr (!kSharedDs && !kProducer) any = any_wg<Cfg::NG>(vis != 0, group_bar);
    }
    if (!any) {
      if constexpr (!kSharedDs && !kProducer) release([] {});  // (otherwise `any` stays true)
    } else {
    // which elements dropout keeps, decided before any MMA of the step is in flight (in
    // between, the divergent Philox code made ptxas serialise the MMAs)
    // (decisions drawn ahead, p.keep: loaded here, decoded after the products)
    std::uint32_t kept = ~0u, kept_word = 0u;
    if constexpr (kDropout) {
      if (p.dropout) {
        if (p.keep != nullptr) kept_word = load_keep_unit(p, bh, i0, kr - g, lane);
        else kept = keep_bits(p, bh, i0 + 2 * t, kr, true, 32);  // sk % 8 != 0: per element
      }
    }
    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, one group (pipelined: two): neither depends on the other
    // (pipelined: the products overwrite st and dp instead of adding to zeros)
    float st[32], dp[32];
    if constexpr (!kPipe) {
#pragma unroll
      for (int i = 0; i < 32; ++i) st[i] = dp[i] = 0.f;
      wg::fence_regs(st);  // the zeros are written before the fence, not sunk between the MMAs
      wg::fence_regs(dp);
    }
    wg::fence();
    if constexpr (kRegKV) {
      mma_abt_rs<T>(st, ka, sQs, kPipe);
    } else {
      mma_abt<T, D>(st, sKg, BN * 128u, sQs, BM * 128u, kPipe);
    }
    if constexpr (kPipe) wg::commit();
    if constexpr (kRegKV) {
      mma_abt_rs<T>(dp, va, sOs, kPipe);
    } else {
      mma_abt<T, DV>(dp, sVg, BN * 128u, sOs, BM * 128u, kPipe);
    }
    wg::commit();
    if constexpr (kPipe) {
      wg::wait<1>();  // Sᵀ done; dPᵀ may still run
      wg::fence_regs(st);
    } else {
      wg::wait<0>();
      wg::fence_regs(st);
      wg::fence_regs(dp);
    }
    if constexpr (kDropout) {
      if (p.dropout && p.keep != nullptr) kept = unit_keep_bits(kept_word, lane);
    }

    // (lse, D) of the thread's query rows 8 nt + 2t and 8 nt + 2t + 1 (element i's row is
    // 8 (i / 4) + 2t + i % 2), one 16-byte load a pair. Rows past sq hold (+inf, 0) (the
    // delta pass pads the table): P = 0 and dS = 0 there without a check per element.
    // (Loaded where used, not kept: 32 registers held across the MMAs made D 128 spill.)
    auto ld_pair = [&](int i) { return reinterpret_cast<const float4*>(lds)[4 * (i >> 2) + t]; };
    auto lse_of = [&](int i) { const float4 v = ld_pair(i); return (i & 1) ? v.z : v.x; };
    auto delta_of = [&](int i) { const float4 v = ld_pair(i); return (i & 1) ? v.w : v.y; };

    // Pᵀ (element i of st is bit i of vis and kept); a dropped element keeps its
    // probability with the sign bit set.
    [[maybe_unused]] float fac[kGeneral ? 32 : 1];
    if constexpr (kGeneral) {
      general_scores_log2<T, true, true>(p, st, vis, bh, i0 + 2 * t, kr, fac);
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const float pr = ex2_approx(st[i] - lse_of(i));
        st[i] = ((kept >> i) & 1u) ? pr : -pr;
      }
    } else if (flags != 0 || p.elem_checks) {
#pragma unroll
      for (int i = 0; i < 32; ++i) st[i] = (vis >> i) & 1u ? ex2_approx(fmaf(st[i], p.scale_log2, -lse_of(i))) : 0.f;
    } else {  // a whole tile: no selects
#pragma unroll
      for (int i = 0; i < 32; ++i) st[i] = ex2_approx(fmaf(st[i], p.scale_log2, -lse_of(i)));
    }
    if constexpr (kDrop) {
#pragma unroll
      for (int i = 0; i < 32; ++i) st[i] = ((kept >> i) & 1u) ? st[i] : -st[i];
    }
    std::uint32_t pa[4][4];  // Pdᵀ: dropped elements 0 (the 1/(1-p) is applied at the end)
    if constexpr (kDropout)
      acc_to_a<T>(st, pa, [](float x) { return fmaxf(x, 0.f); });
    else
      acc_to_a<T>(st, pa);
    // dV += Pᵀ dO, left running (pa and acc_dv untouched) until the wait after dQ
    if constexpr (kPipe) {
      // dPᵀ waited before dV is issued, not after: ptxas issues dV's last k-slice as a group of
      // its own at D 128 (its A operand packed after the first fence), so a wait<1> after dV
      // would wait for most of dV, which should run on while dSᵀ is computed
      wg::wait<0>();
      wg::fence_regs(dp);
    }
    wg::fence();
    mma_ab_nmajor<T, DV>(acc_dv, pa, sOs);
    wg::commit();

    // dTᵀ = Pᵀ ⊙ (dPᵀ - D) · ds/dt, and dbias (invisible elements stay at the zeros
    // written before the pass); packed as the A operand of dK and stored for dQ
    std::uint32_t da[4][4];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const float pr = st[i];
      if constexpr (kDropout) {  // a dropped element (sign bit set) has no dP
        const float dpv = sign_bit(pr) ? 0.f : dp[i] * p.drop_scale;
        st[i] = fabsf(pr) * (dpv - delta_of(i));
        if constexpr (kGeneral) st[i] *= fac[i];
      } else {
        st[i] = pr * (dp[i] - delta_of(i));
      }
    }
    if constexpr (kGeneral) {
      if (a.dbias) {
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          int iq, j;
          element_of(i, true, i0 + 2 * t, kr, iq, j);
          const std::int64_t slot = bias_slot(p, bh, iq, j);
          if (slot >= 0) a.dbias[slot] = T(st[i]);
        }
      }
    }
    acc_to_a<T>(st, da);
    if constexpr (!kPipe) {
      wg::fence();
      mma_ab_nmajor<T, D>(acc_dk, da, sQs);
      wg::commit();
    }
    // dSᵀ [64 keys][64 queries] to shared memory while dK (pipelined: dV) runs: n-tile nt of a row is chunk nt
    // (by columns or in turns, into this step's buffer: the other warpgroup may still read the last one)
    const std::uint32_t sSw =
        kSharedDs ? sS + static_cast<std::uint32_t>((step & 1) * Cfg::NG + group_u) * Cfg::kSBytes : sSg;
    unsigned char* sSgen = gen + (sSw - base);
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const int r = warp * 16 + g;
      *reinterpret_cast<std::uint32_t*>(sSgen + sw128_offset<64>(r, nt) + 4 * t) = da[nt >> 1][(nt & 1) * 2];
      *reinterpret_cast<std::uint32_t*>(sSgen + sw128_offset<64>(r + 8, nt) + 4 * t) = da[nt >> 1][(nt & 1) * 2 + 1];
    }
    wg::fence_proxy_async();
    if constexpr (kSharedDs) {
      sync_named(1 + Cfg::NG, NC);  // every warpgroup's dSᵀ of this step is in place
    } else {
      sync_wg<Cfg::NG>(group_bar);
    }

    constexpr int DQN = Cfg::DQN;
    // whether this warpgroup computes dQ this step (kTurns: on the steps of its parity)
    const bool turn = !kTurns || (step & 1) == group_u;
    float dq[DQN / 2];
    if constexpr (!kPipe) {
#pragma unroll
      for (int i = 0; i < DQN / 2; ++i) dq[i] = 0.f;
    }
    // (kTurns: a fence in each branch, before its first product; one before the branch alone
    // made ptxas inject two, C7519)
    if constexpr (!kTurns) wg::fence();
    if (!turn) {
      // (dK below is the step's last product)
    } else if constexpr (kTurns) {
      // dQ (64 queries x D) += dS K over all 128 keys: A = the dSᵀ of the warpgroup that owns
      // keys 16kk .., read M-major; K's 128 lines N-major
      wg::fence();
      const std::uint32_t sSs = sS + static_cast<std::uint32_t>((step & 1) * Cfg::NG) * Cfg::kSBytes;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const std::uint32_t a_off = static_cast<std::uint32_t>(kk >> 2) * Cfg::kSBytes + (kk & 3) * 2048u;
        wg::mma_ss<T, D, 1, 1>(dq, wg::make_desc(sSs + a_off, 8192u, 1024u),
                               wg::make_desc(sK + static_cast<std::uint32_t>(kk) * 2048u, BN * 128u, 1024u),
                               kk == 0 ? 0 : 1);
      }
      wg::commit();
    } else if constexpr (kDqCols) {
      // dQ (64 queries x columns 64g ..) += dS K over all BN keys: A = the dSᵀ of the
      // warpgroup that owns keys 16kk .., read M-major; K's 64-column half g, N-major
      const std::uint32_t sSs = sS + static_cast<std::uint32_t>((step & 1) * Cfg::NG) * Cfg::kSBytes;
      const std::uint32_t sKc = sK + static_cast<std::uint32_t>(group_u) * BN * 128u;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const std::uint32_t a_off = static_cast<std::uint32_t>(kk >> 2) * Cfg::kSBytes + (kk & 3) * 2048u;
        wg::mma_ss<T, DQN, 1, 1>(dq, wg::make_desc(sSs + a_off, 8192u, 1024u),
                                 wg::make_desc(sKc + static_cast<std::uint32_t>(kk) * 2048u, BN * 128u, 1024u),
                                 kPipe && kk == 0 ? 0 : 1);
      }
    } else {
      // dQ (64 queries x D) += dS K over this warpgroup's 64 keys: A = dSᵀ read M-major, K
      // N-major (its 64-column halves BN lines apart)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const std::uint32_t off = static_cast<std::uint32_t>(kk) * 2048u;
        wg::mma_ss<T, D, 1, 1>(dq, wg::make_desc(sSg + off, 8192u, 1024u), wg::make_desc(sKg + off, BN * 128u, 1024u),
                               kPipe && kk == 0 ? 0 : 1);
      }
    }
    if constexpr (!kTurns) wg::commit();
    if constexpr (kPipe) {
      if constexpr (kTurns) wg::fence();
      mma_ab_nmajor<T, D>(acc_dk, da, sQs);
      wg::commit();
      wg::wait<1>();  // dV and dQ done; dK runs on through dQ's stores
      wg::fence_regs(acc_dv);
      if (turn) wg::fence_regs(dq);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wg::fence_regs(pa[kk]);
    } else {
      wg::wait<0>();
      wg::fence_regs(acc_dv);
      wg::fence_regs(acc_dk);
      wg::fence_regs(dq);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        wg::fence_regs(pa[kk]);
        wg::fence_regs(da[kk]);
      }
    }
    if constexpr (Cfg::kDqInStage) {
      // dQ into the stage as dQ's boxes (the layout below): boxes 2 and 3 into its dO tile, whose
      // last reader (dV) is done, while dK runs; boxes 0 and 1 into its Q tile once dK, the Q
      // tile's last reader, is done too. The thread that adds them to the workspace waits for
      // the reductions to have read the stage before release refills it.
      unsigned char* dqs[2] = {gen + (sQs - base), gen + (sOs - base)};
      const bool hi = (t & 2) != 0;
#pragma unroll
      for (int half = 1; half >= 0; --half) {
        if (half == 0) {
          wg::wait<0>();
          wg::fence_regs(acc_dk);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) wg::fence_regs(da[kk]);
        }
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int r = warp * 16 + g + hf * 8;
#pragma unroll
          for (int n0 = 8 * half; n0 < 8 * half + 8; ++n0) {
            const int nt = hi ? n0 ^ 2 : n0;
            const int chunk = (nt & 3) * 2 + (t >> 1);
            const float x0 = hi ? dq[4 * (n0 ^ 2) + 2 * hf] : dq[4 * n0 + 2 * hf];
            const float x1 = hi ? dq[4 * (n0 ^ 2) + 2 * hf + 1] : dq[4 * n0 + 2 * hf + 1];
            *reinterpret_cast<float2*>(dqs[half] + ((nt >> 2) & 1) * Cfg::kDqBox + r * 128 +
                                       ((chunk ^ (r & 7)) << 4) + (t & 1) * 8) = make_float2(x0, x1);
          }
        }
      }
      wg::fence_proxy_async();
      release([&] {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const std::uint32_t box = (j < 2 ? sQs : sOs) + static_cast<std::uint32_t>(j & 1) * Cfg::kDqBox;
          tma::reduce_add_3d(&w.map_dq, box, 32 * j, i0, bh);
        }
        tma::bulk_commit();
        tma::bulk_wait_read<0>();  // the refill release may issue overwrites what the reductions read
      });
    } else {
    // dQ to shared memory (16-byte chunk c of row r of a 32-column box at c ^ (r % 8)),
    // then, once the whole warpgroup has written it, one thread adds it to the workspace.
    // In one store, lanes t < 2 write n-tile nt and lanes t >= 2 n-tile nt ^ 2: an 8-byte
    // store is served a half-warp (rows g of one parity group of 4) at a time, whose chunks
    // c ^ (r % 8) then fall in both groups of four chunks, not one (no 2-way conflict).
    // (kProducer: once the reduction thread has read the last step's tile; kTurns: the last turn's)
    if (turn) {
      if constexpr (kProducer) {
        const int handoff = kTurns ? step >> 1 : step;
        tma::wait(dq_empty(group_u), static_cast<std::uint32_t>((handoff & 1) ^ 1));
      }
      unsigned char* dqs = gen + (sDQg - base);
      const bool hi = (t & 2) != 0;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = warp * 16 + g + hf * 8;
#pragma unroll
      for (int n0 = 0; n0 < DQN / 8; ++n0) {
        const int nt = hi ? n0 ^ 2 : n0;
        const int chunk = (nt & 3) * 2 + (t >> 1);
        const float x0 = hi ? dq[4 * (n0 ^ 2) + 2 * hf] : dq[4 * n0 + 2 * hf];
        const float x1 = hi ? dq[4 * (n0 ^ 2) + 2 * hf + 1] : dq[4 * n0 + 2 * hf + 1];
        *reinterpret_cast<float2*>(dqs + (nt >> 2) * Cfg::kDqBox + r * 128 + ((chunk ^ (r & 7)) << 4) + (t & 1) * 8) =
            make_float2(x0, x1);
      }
    }
    if constexpr (kProducer) {
      // the tile goes to the reduction thread at once, while dK runs; each thread's stores
      // are made visible to the async proxy before its arrival
      wg::fence_proxy_async();
      tma::arrive(dq_full(group_u));
    }
    }
    if constexpr (kPipe) {
      wg::wait<0>();  // dK, which reads the stage's Q, before the release lets the stage be refilled
      wg::fence_regs(acc_dk);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wg::fence_regs(da[kk]);
    }
    if constexpr (kProducer) {
      tma::arrive(empty(stage));  // this thread's MMAs and (lse, D) reads of the stage are done
    } else {
      // (after dK's wait, so that the stores drain while dK runs, not before it is waited)
      wg::fence_proxy_async();
      release([&] { reduce_dq(sDQg, group_u, i0, bh); });
    }
    }
    }
  }
  if constexpr (!kProducer) {
    if ((tid & 127) == 0) tma::bulk_wait<0>();  // the reductions are done before the CTA ends
  }

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int j = kr + hf * 8;
    if (j < p.sk) {
      T* dkrow = a.dk + (static_cast<std::int64_t>(kv) * p.sk + j) * D;
      T* dvrow = a.dv + (static_cast<std::int64_t>(kv) * p.sk + j) * DV;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt)
        *reinterpret_cast<std::uint32_t*>(dkrow + nt * 8 + 2 * t) =
            pack2<T>(acc_dk[4 * nt + 2 * hf] * p.scale, acc_dk[4 * nt + 2 * hf + 1] * p.scale);
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<std::uint32_t*>(dvrow + nt * 8 + 2 * t) =
            pack2<T>(acc_dv[4 * nt + 2 * hf] * p.drop_scale, acc_dv[4 * nt + 2 * hf + 1] * p.drop_scale);
    }
  }
#else
  __trap();  // never launched: the host takes this path only on compute capability 9.0
#endif
}

}  // namespace tg::ops::attn
