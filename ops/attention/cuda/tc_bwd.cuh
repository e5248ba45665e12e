// Tensor-core backward of block-sparse flash attention (bf16 / f16 in, f32 accumulation).
//
// With P = exp(s - lse) recomputed from the forward's lse, Pd = keep/(1-p) · P, and
// D_i = rowsum(dO_i ⊙ o_i) (a pre-pass):
//   dV = Pdᵀ dO,  dP = keep/(1-p) · dO Vᵀ,  dS = P ⊙ (dP - D),  dT = dS · ds/dt,
//   dK = scale · dTᵀ Q,  dQ = scale · dT K,  dbias = dT at the bias's elements.
//
// kv pass: one CTA per (kv row, key tile of BN = 16·NW keys), each warp owning 16 keys and
// keeping their dK, dV in registers; it walks the query tiles (of every query head of the
// GQA group) that visit its key tile, with the next Q / dO tile in flight. Everything is
// computed transposed (keys as rows): Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, so that Pᵀ and dTᵀ feed the
// dV and dK products straight from registers. dQ is either added to an f32 workspace with
// atomics (dTᵀ goes through shared memory, warps split the query rows x head-dim chunks),
// or left to the q pass.
//
// q pass (deterministic mode): one CTA per (row bh, query tile of 16·NW rows), each warp
// owning 16 rows and their dQ in registers, walking the same key tiles as the forward and
// recomputing P and dP: no atomics, so dQ is bit-identical run to run.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"
#include "ops/attention/cuda/tile.cuh"

namespace tg::ops::attn {

template <typename T>
struct BwdArgs {
  Params p;
  TileList rows;  ///< per (bh, query tile): key tiles (q pass)
  TileList cols;  ///< per (kv, key tile): (head in group, query tile) entries (kv pass)
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* dout = nullptr;
  const float* lse = nullptr;   ///< [bhq, sq] natural units
  const float* delta = nullptr;  ///< D = rowsum(dO ⊙ o) [bhq, sq]
  float* dq_acc = nullptr;       ///< f32 [bhq, sq, D] workspace (atomic mode), zeroed
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
  T* dbias = nullptr;  ///< bias block data (zeroed before), or null
  bool atomic_dq = true;
};

template <int D_, int DV_, int BM_, int NW_>
struct BwdKvConfig {
  static constexpr int D = D_, DV = DV_, BM = BM_, NW = NW_;
  static constexpr int kThreads = NW * 32;
  static constexpr int BN = 16 * NW;
  static constexpr int kDq = D < 32 ? D : 32;  // head-dim chunk of one dQ work unit
  static constexpr int kKBytes = BN * D * 2;
  static constexpr int kVBytes = BN * DV * 2;
  static constexpr int kQBytes = BM * D * 2;
  static constexpr int kOBytes = BM * DV * 2;
  static constexpr int kSBytes = BN * BM * 2;
  static constexpr int kSmem = kKBytes + kVBytes + 2 * (kQBytes + kOBytes) + kSBytes + 2 * 2 * BM * 4;
};

template <typename T, typename Cfg, bool kGeneral>
__device__ __forceinline__ void bwd_kv_body(const BwdArgs<T>& a, char* smem, int tid, int block) {
  constexpr int D = Cfg::D, DV = Cfg::DV, BM = Cfg::BM, BN = Cfg::BN, NW = Cfg::NW, NT = Cfg::kThreads;
  constexpr int NTQ = BM / 8;  // n-tiles over the query tile
  const Params& p = a.p;
  const int item = a.cols.order[block];
  const int kv = item / a.cols.num_n, n = item % a.cols.num_n;
  const int k0 = n * BN;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

  char* sK = smem;
  char* sV = sK + Cfg::kKBytes;
  char* sQ = sV + Cfg::kVBytes;
  char* sO = sQ + 2 * Cfg::kQBytes;
  char* sS = sO + 2 * Cfg::kOBytes;
  float* sL = reinterpret_cast<float*>(sS + Cfg::kSBytes);  // [2][BM] lse, then [2][BM] D
  float* sD = sL + 2 * BM;
  const int e0 = a.cols.off[item], e1 = a.cols.off[item + 1];
  const float inv_m = a.cols.inv_num_m();  // for query_tile, once

  load_tile<BN, D, NT>(sK, a.k + (static_cast<std::int64_t>(kv) * p.sk + k0) * D, p.sk - k0, tid);
  load_tile<BN, DV, NT>(sV, a.v + (static_cast<std::int64_t>(kv) * p.sk + k0) * DV, p.sk - k0, tid);
  cp_async_commit();
  auto load_q = [&](int e, int stage) {
    const int2 qt = a.cols.query_tile(a.cols.entries[e], kv, p.group, BM, inv_m);
    const int bh = qt.x, i0 = qt.y;
    const std::int64_t row = static_cast<std::int64_t>(bh) * p.sq + i0;
    load_tile<BM, D, NT>(sQ + stage * Cfg::kQBytes, a.q + row * D, p.sq - i0, tid);
    load_tile<BM, DV, NT>(sO + stage * Cfg::kOBytes, a.dout + row * DV, p.sq - i0, tid);
    load_floats<BM, NT>(sL + stage * BM, a.lse + row, p.sq - i0, tid);
    load_floats<BM, NT>(sD + stage * BM, a.delta + row, p.sq - i0, tid);
  };
  if (e0 < e1) load_q(e0, 0);
  cp_async_commit();

  float acc_dk[D / 8][4], acc_dv[DV / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) acc_dk[nt][0] = acc_dk[nt][1] = acc_dk[nt][2] = acc_dk[nt][3] = 0.f;
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) acc_dv[nt][0] = acc_dv[nt][1] = acc_dv[nt][2] = acc_dv[nt][3] = 0.f;

  for (int e = e0; e < e1; ++e) {
    const int stage = (e - e0) & 1;
    if (e + 1 < e1) load_q(e + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    sync_cta();

    const int entry = a.cols.entries[e];
    const int flags = entry & ((1 << kFlagBits) - 1);
    const bool check = flags != 0 || p.elem_checks;
    const int2 qt = a.cols.query_tile(entry, kv, p.group, BM, inv_m);
    const int bh = qt.x, b = bh / p.heads, i0 = qt.y;
    const char* sQs = sQ + stage * Cfg::kQBytes;
    const char* sOs = sO + stage * Cfg::kOBytes;
    const float* sLs = sL + stage * BM;
    const float* sDs = sD + stage * BM;

    // visibility (and dropout) first: a warp whose 16 keys see no query of this tile skips it
    constexpr int NWD = (NTQ + 7) / 8;  // 32-element bit words
    const int kr = k0 + warp * 16 + g;  // this thread's first key
    std::uint32_t vis[NWD], kept[NWD], seen = 0;
#pragma unroll
    for (int w = 0; w < NWD; ++w) {
      const int count = NTQ * 4 - 32 * w < 32 ? NTQ * 4 - 32 * w : 32;
      vis[w] = check ? tile_bits(p, flags, bh, b, i0 + 2 * t + 64 * w, kr, true, count) : ~0u;
      seen |= vis[w];
    }
    const bool any = !check || warp_any(seen != 0);

    if (any) {
#pragma unroll
      for (int w = 0; w < NWD; ++w) {
        kept[w] = ~0u;
        if constexpr (kGeneral) {
          const int count = NTQ * 4 - 32 * w < 32 ? NTQ * 4 - 32 * w : 32;
          if (p.dropout) kept[w] = keep_bits(p, bh, i0 + 2 * t + 64 * w, kr, true, count);
        }
      }

      // Sᵀ = K Qᵀ: rows = this warp's 16 keys, columns = the BM queries
      float st[NTQ][4];
#pragma unroll
      for (int nt = 0; nt < NTQ; ++nt) st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t ka[4];
        ldsm_x4(ka, sK + Swz<D>::at(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BM / 16; ++np) {
          std::uint32_t qb[4];
          ldsm_x4(qb, sQs + Swz<D>::at(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
          mma16816<T>(st[2 * np], ka, qb[0], qb[1]);
          mma16816<T>(st[2 * np + 1], ka, qb[2], qb[3]);
        }
      }

      // Pᵀ; a dropped element keeps its probability with the sign bit set
      [[maybe_unused]] float fac[kGeneral ? NTQ : 1][4];
      if constexpr (kGeneral) {
        constexpr int NE = NTQ * 4 < 32 ? NTQ * 4 : 32;  // the elements of one vis word
#pragma unroll
        for (int w = 0; w < NWD; ++w) {
          float x[NE], f[NE];
#pragma unroll
          for (int e = 0; e < NE; ++e) x[e] = st[8 * w + (e >> 2)][e & 3];
          general_scores_log2<T, true, true, NE>(p, x, vis[w], bh, i0 + 64 * w + 2 * t, kr, f);
#pragma unroll
          for (int e = 0; e < NE; ++e) st[8 * w + (e >> 2)][e & 3] = x[e], fac[8 * w + (e >> 2)][e & 3] = f[e];
        }
      }
#pragma unroll
      for (int nt = 0; nt < NTQ; ++nt) {
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {
          const int iq = nt * 8 + 2 * t + cc;
          const float L = lse_log2(sLs[iq], i0 + iq < p.sq);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int c = hf * 2 + cc;
            const int bit = (nt & 7) * 4 + c;
            float xs;
            if constexpr (kGeneral) {
              xs = st[nt][c];  // transformed above
            } else {
              xs = (vis[nt >> 3] >> bit) & 1u ? st[nt][c] * p.scale_log2 : -INFINITY;
            }
            const float pr = ex2_approx(xs - L);
            st[nt][c] = ((kept[nt >> 3] >> bit) & 1u) ? pr : -pr;
          }
        }
      }

      // dV += Pdᵀ dO (the 1/(1-p) is applied once at the end)
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) {
        std::uint32_t pa[4];
        pa[0] = pack2<T>(fmaxf(st[2 * kk][0], 0.f), fmaxf(st[2 * kk][1], 0.f));
        pa[1] = pack2<T>(fmaxf(st[2 * kk][2], 0.f), fmaxf(st[2 * kk][3], 0.f));
        pa[2] = pack2<T>(fmaxf(st[2 * kk + 1][0], 0.f), fmaxf(st[2 * kk + 1][1], 0.f));
        pa[3] = pack2<T>(fmaxf(st[2 * kk + 1][2], 0.f), fmaxf(st[2 * kk + 1][3], 0.f));
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          std::uint32_t ob[4];
          ldsm_x4_trans(ob, sOs + Swz<DV>::at(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), 2 * np + (lane >> 4)));
          mma16816<T>(acc_dv[2 * np], pa, ob[0], ob[1]);
          mma16816<T>(acc_dv[2 * np + 1], pa, ob[2], ob[3]);
        }
      }

      // dPᵀ = V dOᵀ
      float dp[NTQ][4];
#pragma unroll
      for (int nt = 0; nt < NTQ; ++nt) dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        std::uint32_t va[4];
        ldsm_x4(va, sV + Swz<DV>::at(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BM / 16; ++np) {
          std::uint32_t ob[4];
          ldsm_x4(ob, sOs + Swz<DV>::at(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
          mma16816<T>(dp[2 * np], va, ob[0], ob[1]);
          mma16816<T>(dp[2 * np + 1], va, ob[2], ob[3]);
        }
      }

      // dTᵀ = Pᵀ ⊙ (dPᵀ - D) · ds/dt, and dbias (invisible elements stay at the zeros
      // written before the pass)
#pragma unroll
      for (int nt = 0; nt < NTQ; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int iq = nt * 8 + 2 * t + (c & 1);
          const float pr = st[nt][c];
          const float dpv = sign_bit(pr) ? 0.f : dp[nt][c] * p.drop_scale;
          float ds = fabsf(pr) * (dpv - sDs[iq]);
          if constexpr (kGeneral) {
            ds *= fac[nt][c];
            if (a.dbias) {
              const std::int64_t slot = bias_slot(p, bh, i0 + iq, kr + (c >> 1) * 8);
              if (slot >= 0) a.dbias[slot] = T(ds);
            }
          }
          st[nt][c] = ds;
        }
      }

      // dK += dTᵀ Q (scale applied at the end)
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) {
        std::uint32_t pa[4];
        pa[0] = pack2<T>(st[2 * kk][0], st[2 * kk][1]);
        pa[1] = pack2<T>(st[2 * kk][2], st[2 * kk][3]);
        pa[2] = pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
        pa[3] = pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          std::uint32_t qb[4];
          ldsm_x4_trans(qb, sQs + Swz<D>::at(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), 2 * np + (lane >> 4)));
          mma16816<T>(acc_dk[2 * np], pa, qb[0], qb[1]);
          mma16816<T>(acc_dk[2 * np + 1], pa, qb[2], qb[3]);
        }
      }

      if (a.atomic_dq) {  // dTᵀ to shared memory [BN keys][BM queries] for dQ below
        const int kw = warp * 16 + g;
#pragma unroll
        for (int nt = 0; nt < NTQ; ++nt) {
          *reinterpret_cast<std::uint32_t*>(sS + Swz<BM>::at(kw, nt) + 4 * t) = pack2<T>(st[nt][0], st[nt][1]);
          *reinterpret_cast<std::uint32_t*>(sS + Swz<BM>::at(kw + 8, nt) + 4 * t) = pack2<T>(st[nt][2], st[nt][3]);
        }
      }
    } else if (a.atomic_dq) {  // a skipping warp's keys add nothing to dQ
      const int kw = warp * 16 + g;
#pragma unroll
      for (int nt = 0; nt < NTQ; ++nt) {
        *reinterpret_cast<std::uint32_t*>(sS + Swz<BM>::at(kw, nt) + 4 * t) = 0u;
        *reinterpret_cast<std::uint32_t*>(sS + Swz<BM>::at(kw + 8, nt) + 4 * t) = 0u;
      }
    }

    if (a.atomic_dq) {
      // dQ (BM x D) = dT K by units of (16 query rows, kDq head-dim columns) spread over the
      // warps, added atomically to the f32 workspace
      sync_cta();
      constexpr int DQ = Cfg::kDq;
      constexpr int kUnits = (BM / 16) * (D / DQ);
      for (int u = warp; u < kUnits; u += NW) {
        const int qt = u / (D / DQ), dc = u % (D / DQ);
        float acc[DQ / 8][4];
#pragma unroll
        for (int nt = 0; nt < DQ / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
          std::uint32_t sa[4];
          ldsm_x4_trans(sa, sS + Swz<BM>::at(kk * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * qt + ((lane >> 3) & 1)));
#pragma unroll
          for (int np = 0; np < DQ / 16; ++np) {
            std::uint32_t kb[4];
            ldsm_x4_trans(kb, sK + Swz<D>::at(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7),
                                              dc * (DQ / 8) + 2 * np + (lane >> 4)));
            mma16816<T>(acc[2 * np], sa, kb[0], kb[1]);
            mma16816<T>(acc[2 * np + 1], sa, kb[2], kb[3]);
          }
        }
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int i = i0 + qt * 16 + g + hf * 8;
          if (i < p.sq) {
            float* dst = a.dq_acc + (static_cast<std::int64_t>(bh) * p.sq + i) * D + dc * DQ + 2 * t;
#pragma unroll
            for (int nt = 0; nt < DQ / 8; ++nt) atomic_add2(dst + nt * 8, acc[nt][2 * hf], acc[nt][2 * hf + 1]);
          }
        }
      }
    }
    sync_cta();  // the stage just read (and sS) is refilled next
  }
  cp_async_wait<0>();

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int j = k0 + warp * 16 + g + hf * 8;
    if (j < p.sk) {
      T* dkrow = a.dk + (static_cast<std::int64_t>(kv) * p.sk + j) * D;
      T* dvrow = a.dv + (static_cast<std::int64_t>(kv) * p.sk + j) * DV;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt)
        *reinterpret_cast<std::uint32_t*>(dkrow + nt * 8 + 2 * t) =
            pack2<T>(acc_dk[nt][2 * hf] * p.scale, acc_dk[nt][2 * hf + 1] * p.scale);
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<std::uint32_t*>(dvrow + nt * 8 + 2 * t) =
            pack2<T>(acc_dv[nt][2 * hf] * p.drop_scale, acc_dv[nt][2 * hf + 1] * p.drop_scale);
    }
  }
}

template <int D_, int DV_, int BN_, int NW_>
struct BwdQConfig {
  static constexpr int D = D_, DV = DV_, BN = BN_, NW = NW_;
  static constexpr int kThreads = NW * 32;
  static constexpr int BM = 16 * NW;
  static constexpr int kQBytes = BM * D * 2;
  static constexpr int kOBytes = BM * DV * 2;
  static constexpr int kKBytes = BN * D * 2;
  static constexpr int kVBytes = BN * DV * 2;
  static constexpr int kSmem = kQBytes + kOBytes + 2 * (kKBytes + kVBytes);
};

template <typename T, typename Cfg, bool kGeneral>
__device__ __forceinline__ void bwd_q_body(const BwdArgs<T>& a, char* smem, int tid, int block) {
  constexpr int D = Cfg::D, DV = Cfg::DV, BN = Cfg::BN, BM = Cfg::BM, NT = Cfg::kThreads;
  constexpr int NTS = BN / 8;
  static_assert(BN % 64 == 0, "key tiles of whole 64-key visibility words");
  const Params& p = a.p;
  const int item = a.rows.order[block];
  const int bh = item / a.rows.num_m, m = item % a.rows.num_m;
  const int kv = bh / p.group, b = bh / p.heads;
  const int q0 = m * BM;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

  char* sQ = smem;
  char* sO = sQ + Cfg::kQBytes;
  char* sK = sO + Cfg::kOBytes;
  char* sV = sK + 2 * Cfg::kKBytes;
  const T* kg = a.k + static_cast<std::int64_t>(kv) * p.sk * D;
  const T* vg = a.v + static_cast<std::int64_t>(kv) * p.sk * DV;
  const int e0 = a.rows.off[item], e1 = a.rows.off[item + 1];
  const std::int64_t row0 = static_cast<std::int64_t>(bh) * p.sq + q0;

  load_tile<BM, D, NT>(sQ, a.q + row0 * D, p.sq - q0, tid);
  load_tile<BM, DV, NT>(sO, a.dout + row0 * DV, p.sq - q0, tid);
  cp_async_commit();
  auto load_kv = [&](int e, int stage) {
    const int kt = (a.rows.entries[e] >> kFlagBits) * BN;
    load_tile<BN, D, NT>(sK + stage * Cfg::kKBytes, kg + static_cast<std::int64_t>(kt) * D, p.sk - kt, tid);
    load_tile<BN, DV, NT>(sV + stage * Cfg::kVBytes, vg + static_cast<std::int64_t>(kt) * DV, p.sk - kt, tid);
  };
  if (e0 < e1) load_kv(e0, 0);
  cp_async_commit();

  float L[2], Dd[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int i = q0 + warp * 16 + g + hf * 8;
    L[hf] = lse_log2(i < p.sq ? a.lse[static_cast<std::int64_t>(bh) * p.sq + i] : 0.f, i < p.sq);
    Dd[hf] = i < p.sq ? a.delta[static_cast<std::int64_t>(bh) * p.sq + i] : 0.f;
  }
  float acc_dq[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) acc_dq[nt][0] = acc_dq[nt][1] = acc_dq[nt][2] = acc_dq[nt][3] = 0.f;

  for (int e = e0; e < e1; ++e) {
    const int stage = (e - e0) & 1;
    if (e + 1 < e1) load_kv(e + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    sync_cta();

    const int entry = a.rows.entries[e];
    const int k0 = (entry >> kFlagBits) * BN;
    const int flags = entry & ((1 << kFlagBits) - 1);
    const bool check = flags != 0 || p.elem_checks;
    const char* sKs = sK + stage * Cfg::kKBytes;
    const char* sVs = sV + stage * Cfg::kVBytes;

    // visibility (and dropout) first: a warp whose 16 rows see no key of this tile skips it
    const int r0 = q0 + warp * 16 + g;
    std::uint32_t vis[NTS / 8], kept[NTS / 8], seen = 0;
#pragma unroll
    for (int w = 0; w < NTS / 8; ++w) {
      vis[w] = check ? tile_bits(p, flags, bh, b, r0, k0 + 2 * t + 64 * w, false, 32) : ~0u;
      seen |= vis[w];
    }
    const bool any = !check || warp_any(seen != 0);

    if (any) {
#pragma unroll
      for (int w = 0; w < NTS / 8; ++w) {
        kept[w] = ~0u;
        if constexpr (kGeneral) {
          if (p.dropout) kept[w] = keep_bits(p, bh, r0, k0 + 2 * t + 64 * w, false, 32);
        }
      }

      // S = Q Kᵀ
      float s[NTS][4];
#pragma unroll
      for (int nt = 0; nt < NTS; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t qa[4];
        ldsm_x4(qa, sQ + Swz<D>::at(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          std::uint32_t kb[4];
          ldsm_x4(kb, sKs + Swz<D>::at(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
          mma16816<T>(s[2 * np], qa, kb[0], kb[1]);
          mma16816<T>(s[2 * np + 1], qa, kb[2], kb[3]);
        }
      }

      // P (sign bit = dropped)
      [[maybe_unused]] float fac[kGeneral ? NTS : 1][4];
      if constexpr (kGeneral) {
#pragma unroll
        for (int w = 0; w < NTS / 8; ++w) {  // 8 n-tiles: the 32 elements of one vis word
          float x[32], f[32];
#pragma unroll
          for (int e = 0; e < 32; ++e) x[e] = s[8 * w + (e >> 2)][e & 3];
          general_scores_log2<T, false, true>(p, x, vis[w], bh, r0, k0 + 64 * w + 2 * t, f);
#pragma unroll
          for (int e = 0; e < 32; ++e) s[8 * w + (e >> 2)][e & 3] = x[e], fac[8 * w + (e >> 2)][e & 3] = f[e];
        }
      }
#pragma unroll
      for (int nt = 0; nt < NTS; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int bit = (nt & 7) * 4 + c;
          float xs;
          if constexpr (kGeneral) {
            xs = s[nt][c];  // transformed above
          } else {
            xs = (vis[nt >> 3] >> bit) & 1u ? s[nt][c] * p.scale_log2 : -INFINITY;
          }
          const float pr = ex2_approx(xs - L[c >> 1]);
          s[nt][c] = ((kept[nt >> 3] >> bit) & 1u) ? pr : -pr;
        }
      }

      // dP = dO Vᵀ
      float dp[NTS][4];
#pragma unroll
      for (int nt = 0; nt < NTS; ++nt) dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        std::uint32_t oa[4];
        ldsm_x4(oa, sO + Swz<DV>::at(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          std::uint32_t vb[4];
          ldsm_x4(vb, sVs + Swz<DV>::at(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
          mma16816<T>(dp[2 * np], oa, vb[0], vb[1]);
          mma16816<T>(dp[2 * np + 1], oa, vb[2], vb[3]);
        }
      }

      // dT
#pragma unroll
      for (int nt = 0; nt < NTS; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float pr = s[nt][c];
          const float dpv = sign_bit(pr) ? 0.f : dp[nt][c] * p.drop_scale;
          float ds = fabsf(pr) * (dpv - Dd[c >> 1]);
          if constexpr (kGeneral) ds *= fac[nt][c];
          s[nt][c] = ds;
        }
      }

      // dQ += dT K
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        std::uint32_t pa[4];
        pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          std::uint32_t kb[4];
          ldsm_x4_trans(kb, sKs + Swz<D>::at(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), 2 * np + (lane >> 4)));
          mma16816<T>(acc_dq[2 * np], pa, kb[0], kb[1]);
          mma16816<T>(acc_dq[2 * np + 1], pa, kb[2], kb[3]);
        }
      }
    }
    sync_cta();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int i = q0 + warp * 16 + g + hf * 8;
    if (i < p.sq) {
      T* dst = a.dq + (static_cast<std::int64_t>(bh) * p.sq + i) * D;
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt)
        *reinterpret_cast<std::uint32_t*>(dst + nt * 8 + 2 * t) =
            pack2<T>(acc_dq[nt][2 * hf] * p.scale, acc_dq[nt][2 * hf + 1] * p.scale);
    }
  }
}

}  // namespace tg::ops::attn
