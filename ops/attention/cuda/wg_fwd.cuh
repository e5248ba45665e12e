// Hopper (sm_90a) forward of block-sparse flash attention for bf16 / f16 with D = Dv of 64
// or 128: the same work items, tile lists, visibility rules, sinks, general transform
// (bias, soft cap, dropout; kGeneral) and outputs as the mma.sync forward (tc_fwd.cuh),
// with warpgroup MMAs.
//
// One CTA per (row bh, query tile of BM): BM / 64 warpgroups of 64 query rows each (BM =
// 128, or 64 for patterns sparse at 64-row granularity, where a 128-row tile would visit
// the union of two rows' key tiles with each warpgroup idle for half of them, and for every
// pattern at D 64, where four independent CTAs an SM beat two of two warpgroups). Q arrives
// once and the key tiles' K and V in STAGES stages, by TMA (3-d tensor maps: rows past sq /
// sk read as zeros) into mbarrier-guarded stages; there is no CTA-wide barrier in the loop,
// so the warpgroups drift apart and one's softmax overlaps the other's MMAs (the
// warpgroup that releases a stage last refills it with the tile STAGES steps on). Per key
// tile of 64:
//   S = Q Kᵀ   wgmma m64n64k16, Q and K from shared memory (both K-major),
//   masking and the online softmax (base 2) on the S registers, as in tc_fwd.cuh,
//   O += P V   wgmma m64nDk16 with P straight from the S registers (the accumulator fragment
//              of S is the A operand fragment) and V from shared memory (N-major).
// A warpgroup whose 64 rows see nothing of a tile skips it (one barrier reduction among its
// 128 threads). Shared tiles: see wg_tile.cuh.
//
// kOverlap (plain scores only; kernel_choice.h's FwdSchedule): a warpgroup issues tile j's
// S = Q Kᵀ and tile j-1's O += P V together and runs tile j's softmax while P V is on the
// tensor cores, O's rescale deferred to just before the next P V. It skips no tile.
// BN = 128 (plain scores, 128-row tiles; FwdKeys): key tiles of 128, S = Q Kᵀ one m64n128k16
// product a k-slice and P V over k = 128, half the steps (waits, releases, row reductions)
// of 64-key tiles; one CTA an SM by its registers. With them at D 64, BM = 192 (FwdRows):
// three warpgroups, 12 warps an SM.
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/configs.h"
#include "ops/attention/cuda/keep_units.cuh"
#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"
#include "ops/attention/cuda/tc_fwd.cuh"
#include "ops/attention/cuda/wg_tile.cuh"
#include "ops/cuda_tma.cuh"
#include "ops/cuda_wgmma.cuh"

namespace tg::ops::attn {

/// The Hopper forward's arguments: the common ones plus the tensor maps of its loads.
template <typename T>
struct WgFwdArgs {
  FwdArgs<T> a;
  CUtensorMap map_q;         ///< q as [bhq][sq][D], boxes of 64 x BM (128-byte swizzle)
  CUtensorMap map_k, map_v;  ///< k, v as [bhkv][sk][D], boxes of 64 x BN
};

template <int D_, int BM_, bool kOverlap_ = false, int BN_ = 64>
struct WgFwdConfig {
  static constexpr int D = D_, DV = D_, BM = BM_, BN = BN_, NG = BM_ / 64, kThreads = 2 * BM_;
  static constexpr int kQBytes = BM * D * 2;
  static constexpr int kKBytes = BN * D * 2;
  static constexpr int kVBytes = BN * DV * 2;
  static constexpr int kStageBytes = kKBytes + kVBytes;
  /// The overlapped schedule at D 128 and 128-row tiles: one CTA an SM (O, S and P in
  /// flight take ~140 registers), so it has the shared memory for four stages.
  /// Key tiles of 128 (S of a warpgroup in 64 registers a thread): one CTA an SM too.
  static constexpr bool kSolo = (kOverlap_ && D == 128 && BM == 128) || BN == 128;
  /// K / V stages: 3 where that still lets min_blocks CTAs share an SM, else 2; a CTA alone
  /// on its SM takes four of 64 keys, or at D 64 four of 128 keys.
  static constexpr int STAGES = BN == 128 ? (D == 64 ? 4 : 2) : kSolo ? 4 : D == 64 && BM == 128 ? 3 : 2;
  /// CTAs an SM (each capping the registers, 64 Ki an SM): two of 128-row tiles, five of
  /// 64-row tiles at D 64 (four with the general transform or the overlapped schedule,
  /// whose registers allow no more), two at D 128 (where shared memory allows no more). The
  /// general transform at D 128 and 128-row tiles takes one (146 registers; two would spill).
  /// D 128 with two CTAs an SM, not one, measured 524 against 396 TFLOP/s dense.
  static constexpr int min_blocks(bool general) {
    return BM == 64 ? (D == 64 ? (general || kOverlap_ ? 4 : 5) : 2) : (kSolo || (D == 128 && general)) ? 1 : 2;
  }
  /// Q, the stages, and one atom of slack: the window is aligned to 1024 in-kernel.
  static constexpr int kSmem = kQBytes + STAGES * kStageBytes + 1024;
  static_assert(min_blocks(false) * (kSmem + 1024) <= 228 * 1024, "the CTAs of an SM fit in its shared memory");
  static_assert((BN == kFwdBN && (BM == 64 || BM == 128)) || (BN == kFwdWideBN && BM == 128) ||
                    (BN == kFwdWideBN && BM == kFwdTallBM && D == 64),
                "the host's forward tile lists are built for these tiles");
};

/// Visibility bits of a thread's scores in a key tile: one word a 64-key half.
template <int NH>
struct TileVis {
  std::uint32_t w[NH];
  __device__ __forceinline__ bool any() const {
    std::uint32_t x = 0;
#pragma unroll
    for (int h = 0; h < NH; ++h) x |= w[h];
    return x != 0;
  }
};

/// How far (log2 units) a row's scores may exceed the forward's reference maximum before
/// it moves: probabilities up to 2^8 before the final division.
constexpr float kMaxSlack = 8.f;

// kDrop: plain scores with dropout (DropoutKernels::Plain; decisions drawn ahead, p.keep),
// on the serial schedule and 64-key tiles, as many CTAs an SM as the general transform (at
// D 128 and 128-row tiles two would spill 220 bytes).
// kSums: whole tiles bound P by row sums, not maxima (FwdSoftmax::Sums; softmax_sums below).
template <typename T, int D, bool kGeneral, int BM, bool kOverlap, int BN_ = 64, bool kDrop = false, bool kSums = false>
__global__ void __launch_bounds__(2 * BM, WgFwdConfig<D, BM, kOverlap, BN_>::min_blocks(kGeneral || kDrop))
    wg_fwd_kernel(const __grid_constant__ WgFwdArgs<T> w) {
#if TG_WGMMA_ENABLED
  static_assert(!(kOverlap && kGeneral), "the overlapped schedule is built for the plain scores only");
  static_assert(BN_ == 64 || !kGeneral, "key tiles of 128 are built for the plain scores only");
  static_assert(!kDrop || (!kGeneral && !kOverlap && BN_ == 64), "dropout on plain scores: serial, 64-key tiles");
  static_assert(!kSums || (!kGeneral && !kOverlap && !kDrop && BN_ == 64), "row sums: plain scores, serial, 64 keys");
  constexpr bool kDropout = kGeneral || kDrop;  // whether dropout's code is compiled in
  using Cfg = WgFwdConfig<D, BM, kOverlap, BN_>;
  constexpr int DV = Cfg::DV, BN = Cfg::BN, NS = Cfg::STAGES;
  constexpr int NH = BN / 64;   // 64-key halves of a key tile (visibility words)
  constexpr int NS_ = BN / 2;   // S accumulators a thread
  constexpr int KS = BN / 16;   // k-slices of P V
  constexpr int NTO = DV / 8;  // n-tiles of O
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ __align__(8) std::uint64_t full[NS + 1];  // the stages' K and V have landed; [NS]: Q
  __shared__ unsigned released[NS];                    // warpgroups done with a stage this round
  const FwdArgs<T>& a = w.a;
  // The swizzle is a function of the absolute shared address: tiles start on atoms.
  const std::uint32_t sQ = (smem_u32(smem) + 1023u) & ~1023u;
  const std::uint32_t sKV = sQ + Cfg::kQBytes;  // stage s: K at sKV + s * kStageBytes, V after it
  const Params& p = a.p;
  const int tid = static_cast<int>(threadIdx.x);
  // the warpgroup broadcast from lane 0: the compiler then keeps the tile addresses and
  // wgmma descriptors derived from it in uniform registers
  const int group = __shfl_sync(0xffffffffu, tid >> 7, 0);
  const int warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int item = a.list.order[blockIdx.x];
  const int bh = item / a.list.num_m, m = item % a.list.num_m;
  const int kv = bh / p.group, b = bh / p.heads, h = bh % p.heads;
  const int q0 = m * Cfg::BM;
  const int r0 = q0 + group * 64 + warp * 16 + g;  // this thread's rows: r0 and r0 + 8
  const int e0 = a.list.off[item], e1 = a.list.off[item + 1];
  auto bar = [&](int s) { return tma::smem_addr(&full[s]); };

  // Starts the loads of entry e's K and V tiles into stage s (one thread); a row of 128 is
  // two 64-element columns, the second after all lines of the first.
  auto issue = [&](int e, int s) {
    const int k0 = (a.list.entries[e] >> kFlagBits) * BN;
    const std::uint32_t st = sKV + static_cast<std::uint32_t>(s) * Cfg::kStageBytes;
    tma::arrive_expect_tx(bar(s), Cfg::kStageBytes);
#pragma unroll
    for (int h = 0; h < D / 64; ++h) {
      tma::load_3d(st + static_cast<std::uint32_t>(h) * BN * 128u, &w.map_k, bar(s), 64 * h, k0, kv);
      tma::load_3d(st + Cfg::kKBytes + static_cast<std::uint32_t>(h) * BN * 128u, &w.map_v, bar(s), 64 * h, k0, kv);
    }
  };
  if (tid == 0) {
    for (int s = 0; s <= NS; ++s) tma::init(bar(s), 1);
    for (int s = 0; s < NS; ++s) released[s] = 0;
    tma::fence_init();
    if (e0 < e1) {  // (a tile without keys only stores zeros)
      tma::arrive_expect_tx(bar(NS), Cfg::kQBytes);
#pragma unroll
      for (int h = 0; h < D / 64; ++h)
        tma::load_3d(sQ + static_cast<std::uint32_t>(h) * Cfg::BM * 128u, &w.map_q, bar(NS), 64 * h, q0, bh);
    }
    for (int s = 0; s < NS && e0 + s < e1; ++s) issue(e0 + s, s);
  }
  __syncthreads();  // the barriers are initialised

  float o[DV / 2];
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) o[i] = 0.f;
  float row_max[2], row_sum[2];
  const float sink = p.sinks ? p.sinks[h] * kLog2e : -INFINITY;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    row_max[hf] = sink;
    row_sum[hf] = (p.sinks && t == 0) ? 1.f : 0.f;  // the sink's exp(sink - max) = 1, once per row
  }
  // this warpgroup's 64 rows of Q (a 128-wide Q has its second column 128 lines on)
  const std::uint32_t q_base = sQ + static_cast<std::uint32_t>(group) * 64u * 128u;

  if (e0 < e1) tma::wait(bar(NS), 0);
  // This warpgroup is done with stage st, which held entry ee's tiles (its MMAs on them
  // have completed): the last of the warpgroups to say so refills it with the tile NS
  // steps on.
  auto release = [&](int ee, int st) {
    sync_wg<Cfg::NG>(group);
    if ((tid & 127) == 0 && last_release(&released[st], Cfg::NG)) {
      if (ee + NS < e1) issue(ee + NS, st);
    }
  };
  auto k_tile = [&](int st) { return sKV + static_cast<std::uint32_t>(st) * Cfg::kStageBytes; };
  // Whether the tile needs visibility checks (the same for the whole CTA), and its bits.
  auto checked = [&](int entry) { return (entry & ((1 << kFlagBits) - 1)) != 0 || p.elem_checks; };
  // One word a 64-key half: bit 4·nt + c of word h is (row g + 8·(c / 2), key 64h + 8·nt + 2t + c % 2).
  auto tile_vis = [&](int entry, int k0) {
    TileVis<NH> v;
#pragma unroll
    for (int hh = 0; hh < NH; ++hh) {
      v.w[hh] = checked(entry) ? tile_bits(p, entry & ((1 << kFlagBits) - 1), bh, b, r0, k0 + 64 * hh + 2 * t, false, 32)
                               : ~0u;
    }
    return v;
  };
  // dropout's decisions drawn ahead (p.keep): this step's words, loaded while S runs
  std::uint32_t keep_w[8];
  // Row hf's P = 2^(s·sc - m) in place; returns the lane's sum of them (pairs, then a halving
  // tree: softmax and softmax_sums add in the same order, so their sums agree bit for bit).
  auto exp_row = [&](float (&s)[NS_], int hf, float sc, float m) {
    float part[BN / 8];
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const float p0 = ex2_approx(fmaf(s[4 * nt + 2 * hf], sc, -m));
      const float p1 = ex2_approx(fmaf(s[4 * nt + 2 * hf + 1], sc, -m));
      s[4 * nt + 2 * hf] = p0;
      s[4 * nt + 2 * hf + 1] = p1;
      part[nt] = p0 + p1;
    }
    return halving_tree(part, [](float x, float y) { return x + y; });
  };
  // S (scores of rows r0, r0 + 8 against keys k0..) -> P in place: masking, the online
  // softmax's running maximum and sum, dropout; corr is O's rescale factor per row.
  // `masked`: whether the tile has invisible elements to clear (a constant at each call, so
  // that the inlined copy for whole tiles has no selects).
  // Plain scores stay unscaled until the exponent, 2^(s·scale·log2 e - m), one FFMA an
  // element: the maximum of unscaled scores is the scaled one's for scale > 0, and the host
  // gives every other scale to the general transform (is_general).
  auto softmax = [&](float (&s)[NS_], const TileVis<NH>& vis, int k0, float (&corr)[2], bool masked) {
    // general: scores in log2 units, -inf where invisible (element x: bit x % 32 of word x / 32)
    if constexpr (kGeneral) {
      float unused[1];
      general_scores_log2<T, false, false>(p, s, vis.w[0], bh, r0, k0 + 2 * t, unused);
    } else if (masked) {
#pragma unroll
      for (int x = 0; x < NS_; ++x)
        if (!((vis.w[x >> 5] >> (x & 31)) & 1u)) s[x] = -INFINITY;
    }
    const float sc = kGeneral ? 1.f : p.scale_log2;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {  // rows g (hf 0) and g + 8 (hf 1)
      // maxima and sums by halving trees: one instruction fewer than a running value (no
      // -inf or 0 to start from) and shorter dependency chains
      float part[BN / 8];
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) part[nt] = fmaxf(s[4 * nt + 2 * hf], s[4 * nt + 2 * hf + 1]);
      float mx = halving_tree(part, [](float x, float y) { return fmaxf(x, y); });
      mx = fmaxf(mx, shfl_xor(mx, 1));
      mx = fmaxf(mx, shfl_xor(mx, 2));
      // The reference maximum moves only when the tile's exceeds it by more than
      // kMaxSlack: P stays below 2^kMaxSlack (exact enough in f32 sums and 16-bit products
      // alike, and O / l uses the same reference), and most steps leave O unscaled.
      const float m_tile = kGeneral ? mx : mx * sc;
      const bool move = m_tile > row_max[hf] + kMaxSlack;  // (from -inf: any finite maximum)
      const float m_ref = move ? m_tile : row_max[hf];
      const float m_use = m_ref == -INFINITY ? 0.f : m_ref;  // a row with nothing yet: all p = 0
      corr[hf] = move ? ex2_approx(row_max[hf] - m_use) : 1.f;
      row_max[hf] = m_ref;
      row_sum[hf] = row_sum[hf] * corr[hf] + exp_row(s, hf, sc, m_use);
    }
    if constexpr (kDropout) {
      if (p.dropout) {  // dropped probabilities count in the sum but not in O
        const std::uint32_t kept =
            p.keep != nullptr ? fwd_keep_bits(keep_w, lane)
                              : keep_bits(p, bh, r0, k0 + 2 * t, false, 32);  // sk % 8 != 0: per element
#pragma unroll
        for (int x = 0; x < 32; ++x)
          if (!((kept >> x) & 1u)) s[x] = 0.f;
      }
    }
  };
  auto rescale = [&](const float (&corr)[2]) {
    if (!__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) return;  // no row of the warp moved
#pragma unroll
    for (int nt = 0; nt < NTO; ++nt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        o[4 * nt + 2 * hf] *= corr[hf];
        o[4 * nt + 2 * hf + 1] *= corr[hf];
      }
    }
  };
  // kSums: a whole tile against the kept references, without its row maxima (32 FMNMX, four
  // shuffles and the reference checks a step): P = 2^(s·scale·log2 e - m) in place. A lane's
  // partial row sum bounds each of its probabilities, so where every sum of the warp is at most
  // 2^kMaxSlack no reference would move, and the sums are added as softmax adds them
  // (exp_row): the result is softmax's. Otherwise (a reference would move, P
  // overflowed, NaN) it returns true and the warp recomputes its S (warp_scores) for softmax:
  // rare, as references move after a row's first tiles only where its scores climb by more
  // than 2^kMaxSlack.
  // Needs every row of the warp to have a finite reference (a row's first scores take softmax).
  [[maybe_unused]] auto softmax_sums = [&](float (&s)[NS_]) -> bool {
    const float sum[2] = {exp_row(s, 0, p.scale_log2, row_max[0]), exp_row(s, 1, p.scale_log2, row_max[1])};
    constexpr float kBound = 1 << static_cast<int>(kMaxSlack);
    if (__all_sync(0xffffffffu, sum[0] <= kBound && sum[1] <= kBound)) {
      row_sum[0] += sum[0];
      row_sum[1] += sum[1];
      return false;
    }
    return true;
  };
  // kSums: this warp's 16 rows of S = Q Kᵀ for the tile in stage st, by mma.sync from the
  // swizzled shared tiles (the wgmma accumulator's fragment layout is mma.sync's, n-tile by
  // n-tile), without the warpgroup: softmax_sums' fallback.
  [[maybe_unused]] auto warp_scores = [&](float (&s)[NS_], int st) {
    // the lane read here, not reused: its address arithmetic stays in this rare path instead
    // of being hoisted out of the loop into registers the steps need (it spilled there)
    std::uint32_t ln;
    asm volatile("mov.u32 %0, %%laneid;\n" : "=r"(ln));
    const int lane = static_cast<int>(ln);
#pragma unroll
    for (int i = 0; i < NS_; ++i) s[i] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t qa[4];
      ldsm_x4_at(qa, q_base + sw128_offset<Cfg::BM>(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        std::uint32_t kb[4];
        const int key = np * 16 + ((lane >> 4) << 3) + (lane & 7);
        ldsm_x4_at(kb, k_tile(st) + sw128_offset<BN>(key, 2 * kk + ((lane >> 3) & 1)));
        mma16816<T>(*reinterpret_cast<float(*)[4]>(&s[8 * np]), qa, kb[0], kb[1]);
        mma16816<T>(*reinterpret_cast<float(*)[4]>(&s[8 * np + 4]), qa, kb[2], kb[3]);
      }
    }
  };

  if constexpr (kOverlap) {
    // Tile e's S = Q Kᵀ and tile e-1's O += P V go out together; e's softmax runs while
    // P V is on the tensor cores. No tile is skipped (an invisible one gives P = 0), so
    // every warpgroup releases every stage in order: a warpgroup waiting on tile e holds
    // only tile e-1, and tile e's load needs tile e-NS (NS >= 2) released, which it was.
    if (e0 < e1) {
      float s[NS_], corr[2];
      std::uint32_t pa[KS][4];
      auto scores = [&](int st) {
#pragma unroll
        for (int i = 0; i < NS_; ++i) s[i] = 0.f;
        wg::fence_regs(s);
        wg::fence();
        mma_abt<T, D>(s, q_base, Cfg::BM * 128u, k_tile(st), BN * 128u);
        wg::commit();
      };
      int entry = a.list.entries[e0];
      tma::wait(bar(0), 0);
      scores(0);
      wg::wait<0>();
      wg::fence_regs(s);
      softmax(s, tile_vis(entry, (entry >> kFlagBits) * BN), (entry >> kFlagBits) * BN, corr, true);
      acc_to_a<T>(s, pa);
      int next_entry = e0 + 1 < e1 ? a.list.entries[e0 + 1] : 0;
      for (int e = e0 + 1; e < e1; ++e) {
        const int step = e - e0, stage = step % NS, prev = (step - 1) % NS;
        entry = next_entry;
        if (e + 1 < e1) next_entry = a.list.entries[e + 1];
        tma::wait(bar(stage), static_cast<std::uint32_t>((step / NS) & 1));
        scores(stage);
        rescale(corr);  // O is P V of tiles < e-1, done: rescaled for tile e-1's maximum
        wg::fence_regs(o);
        wg::fence();
        mma_ab_nmajor<T, DV>(o, pa, k_tile(prev) + Cfg::kKBytes, BN * 128u);
        wg::commit();
        wg::wait<1>();  // S of tile e (the older group) has landed; P V runs on
        wg::fence_regs(s);
        const int k0 = (entry >> kFlagBits) * BN;
        if (checked(entry)) softmax(s, tile_vis(entry, k0), k0, corr, true);
        else softmax(s, tile_vis(entry, k0), k0, corr, false);
        wg::wait<0>();
        wg::fence_regs(o);
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) wg::fence_regs(pa[kk]);
        release(e - 1, prev);
        acc_to_a<T>(s, pa);
      }
      const int last = (e1 - 1 - e0) % NS;
      rescale(corr);
      wg::fence_regs(o);
      wg::fence();
      mma_ab_nmajor<T, DV>(o, pa, k_tile(last) + Cfg::kKBytes, BN * 128u);
      wg::commit();
      wg::wait<0>();
      wg::fence_regs(o);
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) wg::fence_regs(pa[kk]);
      release(e1 - 1, last);
    }
  } else {
  // kSums: whether every row of the warp has a finite reference (softmax_sums' condition)
  [[maybe_unused]] auto refs_ready = [&] {
    return __all_sync(0xffffffffu, row_max[0] != -INFINITY && row_max[1] != -INFINITY);
  };
  [[maybe_unused]] bool ready = kSums && refs_ready();
  // each step's list entry is loaded one step ahead (it heads the step's dependency chain)
  int next_entry = e0 < e1 ? a.list.entries[e0] : 0;
  for (int e = e0; e < e1; ++e) {
    const int step = e - e0, stage = step % NS;
    const int entry = next_entry;
    if (e + 1 < e1) next_entry = a.list.entries[e + 1];
    tma::wait(bar(stage), static_cast<std::uint32_t>((step / NS) & 1));
    const int k0 = (entry >> kFlagBits) * BN;
    const TileVis<NH> vis = tile_vis(entry, k0);
    // a warpgroup whose rows see nothing of the tile skips it
    const bool any = !checked(entry) || any_wg<Cfg::NG>(vis.any(), group);
    if (any) {
      float s[NS_];
#pragma unroll
      for (int i = 0; i < NS_; ++i) s[i] = 0.f;
      wg::fence();
      mma_abt<T, D>(s, q_base, Cfg::BM * 128u, k_tile(stage), BN * 128u);
      wg::commit();
      if constexpr (kDropout) {
        if (p.dropout && p.keep != nullptr) load_fwd_keep(p, bh, r0 - g, k0, lane, keep_w);
      }
      wg::wait<0>();
      wg::fence_regs(s);
      if (!kGeneral && kSums && ready && !checked(entry)) {
        if (softmax_sums(s)) {  // a reference moves (or P overflowed): this warp's S again
          warp_scores(s, stage);
          float corr[2];
          softmax(s, vis, k0, corr, false);
          rescale(corr);
        }
      } else {
        float corr[2];
        if (kGeneral || checked(entry)) softmax(s, vis, k0, corr, true);
        else softmax(s, vis, k0, corr, false);
        rescale(corr);
        if constexpr (kSums) ready = refs_ready();
      }
      std::uint32_t pa[KS][4];
      acc_to_a<T>(s, pa);
      wg::fence();
      mma_ab_nmajor<T, DV>(o, pa, k_tile(stage) + Cfg::kKBytes, BN * 128u);
      wg::commit();
      wg::wait<0>();
      wg::fence_regs(o);
    }
    release(e, stage);
  }
  }

  // O / l and the row log-sum-exp
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float l = row_sum[hf];
    l += shfl_xor(l, 1);
    l += shfl_xor(l, 2);
    const float inv = l > 0.f ? p.drop_scale / l : 0.f;
    const int i = r0 + hf * 8;
    if (i < p.sq) {
      T* orow = a.o + (static_cast<std::int64_t>(bh) * p.sq + i) * DV;
#pragma unroll
      for (int nt = 0; nt < NTO; ++nt) {
        *reinterpret_cast<std::uint32_t*>(orow + nt * 8 + 2 * t) =
            pack2<T>(o[4 * nt + 2 * hf] * inv, o[4 * nt + 2 * hf + 1] * inv);
      }
      if (t == 0) a.lse[static_cast<std::int64_t>(bh) * p.sq + i] = l > 0.f ? (row_max[hf] + log2f(l)) * kLn2 : -INFINITY;
    }
  }
#else
  __trap();  // never launched: the host takes this path only on compute capability 9.0
#endif
}

}  // namespace tg::ops::attn
