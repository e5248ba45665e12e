// Tensor-core forward of block-sparse flash attention (bf16 / f16 in, f32 accumulation).
//
// One CTA per (row bh, query tile of BM = 16·MT·NW rows): each warp owns MT slices of 16
// query rows; the CTA walks its tile list once, key tile by key tile, with the next K/V
// tile in flight (cp.async, two stages) while the current one is used:
//   S = Q Kᵀ (ldmatrix + mma.m16n8k16), masked / transformed per element where the tile's
//   flags say so, online softmax in base 2 (running row max and sum, FlashAttention-2
//   style: the sum is kept per thread and reduced once at the end), O += P V with P taken
//   straight from the S registers.
// Sinks enter as the initial running max and sum. Output rows >= sq are never stored.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"
#include "ops/attention/cuda/tile.cuh"

namespace tg::ops::attn {

template <typename T>
struct FwdArgs {
  Params p;
  TileList list;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* o = nullptr;
  float* lse = nullptr;
};

template <int D_, int DV_, int BN_, int NW_, int MT_>
struct FwdConfig {
  static constexpr int D = D_, DV = DV_, BN = BN_, NW = NW_, MT = MT_;
  static constexpr int kThreads = NW * 32;
  static constexpr int BM = 16 * MT * NW;
  static constexpr int kQBytes = BM * D * 2;
  static constexpr int kKBytes = BN * D * 2;
  static constexpr int kVBytes = BN * DV * 2;
  static constexpr int kSmem = kQBytes + 2 * (kKBytes + kVBytes);
};

template <typename T, typename Cfg, bool kGeneral>
__device__ __forceinline__ void fwd_tile_body(const FwdArgs<T>& a, char* smem, int tid, int block) {
  constexpr int D = Cfg::D, DV = Cfg::DV, BN = Cfg::BN, MT = Cfg::MT, BM = Cfg::BM, NT = Cfg::kThreads;
  constexpr int NTS = BN / 8;   // n-tiles of S
  constexpr int NTO = DV / 8;   // n-tiles of O
  static_assert(BN % 64 == 0, "key tiles of whole 64-key visibility words");
  const Params& p = a.p;
  const int item = a.list.order[block];
  const int bh = item / a.list.num_m, m = item % a.list.num_m;
  const int kv = bh / p.group, b = bh / p.heads, h = bh % p.heads;
  const int q0 = m * BM;
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

  char* sQ = smem;
  char* sK = sQ + Cfg::kQBytes;
  char* sV = sK + 2 * Cfg::kKBytes;
  const T* kg = a.k + static_cast<std::int64_t>(kv) * p.sk * D;
  const T* vg = a.v + static_cast<std::int64_t>(kv) * p.sk * DV;
  const int e0 = a.list.off[item], e1 = a.list.off[item + 1];

  load_tile<BM, D, NT>(sQ, a.q + (static_cast<std::int64_t>(bh) * p.sq + q0) * D, p.sq - q0, tid);
  cp_async_commit();
  auto load_kv = [&](int e, int stage) {
    const int k0 = (a.list.entries[e] >> kFlagBits) * BN;
    load_tile<BN, D, NT>(sK + stage * Cfg::kKBytes, kg + static_cast<std::int64_t>(k0) * D, p.sk - k0, tid);
    load_tile<BN, DV, NT>(sV + stage * Cfg::kVBytes, vg + static_cast<std::int64_t>(k0) * DV, p.sk - k0, tid);
  };
  if (e0 < e1) load_kv(e0, 0);
  cp_async_commit();

  float acc_o[MT][NTO][4];
  float row_max[MT][2], row_sum[MT][2];
  const float sink = p.sinks ? p.sinks[h] * kLog2e : -INFINITY;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < NTO; ++nt) acc_o[mt][nt][0] = acc_o[mt][nt][1] = acc_o[mt][nt][2] = acc_o[mt][nt][3] = 0.f;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      row_max[mt][hf] = sink;
      // the sink's exp(sink - max) = 1, counted once per row (by the quad's first thread)
      row_sum[mt][hf] = (p.sinks && t == 0) ? 1.f : 0.f;
    }
  }

  // With one 16-row slice per warp there is room to keep the warp's Q fragments in
  // registers for the whole walk (Q is read from shared memory once, not once per key tile).
  constexpr bool kQRegs = MT == 1;
  [[maybe_unused]] std::uint32_t q_reg[kQRegs ? D / 16 : 1][4];
  if constexpr (kQRegs) {
    cp_async_wait<1>();  // the Q tile (the first group) has landed
    sync_cta();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(q_reg[kk], sQ + Swz<D>::at(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
  }

  for (int e = e0; e < e1; ++e) {
    const int stage = (e - e0) & 1;
    if (e + 1 < e1) load_kv(e + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    sync_cta();

    const int entry = a.list.entries[e];
    const int k0 = (entry >> kFlagBits) * BN;
    const int flags = entry & ((1 << kFlagBits) - 1);
    const bool check = flags != 0 || p.elem_checks;
    const char* sKs = sK + stage * Cfg::kKBytes;
    const char* sVs = sV + stage * Cfg::kVBytes;

    // visibility first: a warp with no visible element in this tile skips it (block-sparse
    // patterns often leave whole 16-row slices of a tile empty)
    std::uint32_t vis[MT][NTS / 8];
    bool any = true;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int w = 0; w < NTS / 8; ++w) vis[mt][w] = ~0u;
    if (check) {
      std::uint32_t seen = 0;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int w = 0; w < NTS / 8; ++w) {
          vis[mt][w] = tile_bits(p, flags, bh, b, q0 + (warp * MT + mt) * 16 + g, k0 + 2 * t + 64 * w, false, 32);
          seen |= vis[mt][w];
        }
      }
      any = warp_any(seen != 0);
    }

    if (any) {
      // S = Q Kᵀ
      float s[MT][NTS][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTS; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t qa[MT][4];
        if constexpr (kQRegs) {
#pragma unroll
          for (int x = 0; x < 4; ++x) qa[0][x] = q_reg[kk][x];
        } else {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            ldsm_x4(qa[mt], sQ + Swz<D>::at((warp * MT + mt) * 16 + (lane & 15), 2 * kk + (lane >> 4)));
        }
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          std::uint32_t kb[4];
          ldsm_x4(kb, sKs + Swz<D>::at(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma16816<T>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
            mma16816<T>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
          }
        }
      }

      // scores in log2 units, -inf where invisible
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r0 = q0 + (warp * MT + mt) * 16 + g;
#pragma unroll
        for (int w = 0; w < NTS / 8; ++w) {  // 8 n-tiles: the 32 elements of one vis word
          if constexpr (kGeneral) {
            float x[32], unused[1];
#pragma unroll
            for (int e = 0; e < 32; ++e) x[e] = s[mt][8 * w + (e >> 2)][e & 3];
            general_scores_log2<T, false, false>(p, x, vis[mt][w], bh, r0, k0 + 64 * w + 2 * t, unused);
#pragma unroll
            for (int e = 0; e < 32; ++e) s[mt][8 * w + (e >> 2)][e & 3] = x[e];
          } else {
#pragma unroll
            for (int e = 0; e < 32; ++e) {
              float& x = s[mt][8 * w + (e >> 2)][e & 3];
              x = (vis[mt][w] >> e) & 1u ? x * p.scale_log2 : -INFINITY;
            }
          }
        }
      }

      // online softmax
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < NTS; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
          mx = fmaxf(mx, shfl_xor(mx, 1));
          mx = fmaxf(mx, shfl_xor(mx, 2));
          const float m_new = fmaxf(row_max[mt][hf], mx);
          const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing yet: all p = 0
          const float corr = ex2_approx(row_max[mt][hf] - m_use);
          row_max[mt][hf] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < NTS; ++nt) {
            const float p0 = ex2_approx(s[mt][nt][2 * hf] - m_use), p1 = ex2_approx(s[mt][nt][2 * hf + 1] - m_use);
            s[mt][nt][2 * hf] = p0;
            s[mt][nt][2 * hf + 1] = p1;
            sum += p0 + p1;
          }
          row_sum[mt][hf] = row_sum[mt][hf] * corr + sum;
#pragma unroll
          for (int nt = 0; nt < NTO; ++nt) {
            acc_o[mt][nt][2 * hf] *= corr;
            acc_o[mt][nt][2 * hf + 1] *= corr;
          }
        }
      }

      if constexpr (kGeneral) {
        if (p.dropout) {  // dropped probabilities count in the sum but not in O
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const int r0 = q0 + (warp * MT + mt) * 16 + g;
#pragma unroll
            for (int w = 0; w < NTS / 8; ++w) {
              const std::uint32_t kept = keep_bits(p, bh, r0, k0 + 2 * t + 64 * w, false, 32);
#pragma unroll
              for (int x = 0; x < 32; ++x)
                if (!((kept >> x) & 1u)) s[mt][w * 8 + (x >> 2)][x & 3] = 0.f;
            }
          }
        }
      }

      // O += P V
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        std::uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          std::uint32_t vb[4];
          ldsm_x4_trans(vb, sVs + Swz<DV>::at(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), 2 * np + (lane >> 4)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma16816<T>(acc_o[mt][2 * np], pa[mt], vb[0], vb[1]);
            mma16816<T>(acc_o[mt][2 * np + 1], pa[mt], vb[2], vb[3]);
          }
        }
      }
    }
    sync_cta();  // the stage just read is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

  // O / l and the row log-sum-exp
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = row_sum[mt][hf];
      l += shfl_xor(l, 1);
      l += shfl_xor(l, 2);
      const float inv = l > 0.f ? p.drop_scale / l : 0.f;
      const int i = q0 + (warp * MT + mt) * 16 + g + hf * 8;
      if (i < p.sq) {
        T* orow = a.o + (static_cast<std::int64_t>(bh) * p.sq + i) * DV;
#pragma unroll
        for (int nt = 0; nt < NTO; ++nt) {
          *reinterpret_cast<std::uint32_t*>(orow + nt * 8 + 2 * t) =
              pack2<T>(acc_o[mt][nt][2 * hf] * inv, acc_o[mt][nt][2 * hf + 1] * inv);
        }
        if (t == 0) {
          a.lse[static_cast<std::int64_t>(bh) * p.sq + i] = l > 0.f ? (row_max[mt][hf] + log2f(l)) * kLn2 : -INFINITY;
        }
      }
    }
  }
}

}  // namespace tg::ops::attn
