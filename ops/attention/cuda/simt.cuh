// f32 attention on the CUDA cores: correct and simple rather than fast (the tensor-core
// kernels serve bf16 / f16). A warp handles one query row (or one key row in the kv pass)
// at a time; a lane owns one key (query) of each 32-wide chunk for the dot products and
// D/32 (Dv/32) columns of the accumulated rows. The same tile lists as the tensor-core
// kernels drive it, with tiles of kSimtTile rows and keys. Every reduction runs in a fixed
// order, so results are bit-identical run to run.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"

namespace tg::ops::attn {

constexpr int kSimtTile = 64;
constexpr int kSimtWarps = 4;
constexpr int kSimtThreads = kSimtWarps * 32;
constexpr int kSimtMaxCols = 4;  ///< head dims up to 128 = 4 x 32 lanes
/// Shared memory: two rows of up to 128 floats per warp.
constexpr int kSimtSmem = kSimtWarps * 2 * 128 * 4;

struct SimtArgs {
  Params p;
  TileList rows, cols;
  int d = 0, dv = 0;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* dout = nullptr;
  const float* lse = nullptr;
  const float* delta = nullptr;
  float* o = nullptr;
  float* lse_out = nullptr;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv_out = nullptr;
  float* dbias = nullptr;
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, shfl_xor(v, m));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += shfl_xor(v, m);
  return v;
}

// x · y over n floats (x in shared memory, y in global memory).
__device__ __forceinline__ float dot_row(const float* x, const float* y, int n) {
  float s = 0.f;
  for (int d = 0; d < n; ++d) s += x[d] * y[d];
  return s;
}

// Copies n <= 128 floats of a row into shared memory (whole warp).
__device__ __forceinline__ void warp_load_row(float* dst, const float* src, int n, int lane) {
#pragma unroll
  for (int c = 0; c < kSimtMaxCols; ++c) {
    const int d = lane + 32 * c;
    if (d < n) dst[d] = src[d];
  }
}

// The score of a visible element in natural units (and ds/dt).
__device__ __forceinline__ float simt_score(const Params& p, float dot, int bh, int i, int j, float& dsdt) {
  return general_score<float>(p, dot, bh, i, j, dsdt);
}

__device__ __forceinline__ void simt_fwd_body(const SimtArgs& a, float* smem, int tid, int block) {
  const Params& p = a.p;
  const int item = a.rows.order[block];
  const int bh = item / a.rows.num_m, m = item % a.rows.num_m;
  const int kv = bh / p.group, b = bh / p.heads, h = bh % p.heads;
  const int lane = tid & 31, warp = tid >> 5;
  float* qs = smem + warp * 256;
  const int e0 = a.rows.off[item], e1 = a.rows.off[item + 1];
  const float* kbase = a.k + static_cast<std::int64_t>(kv) * p.sk * a.d;
  const float* vbase = a.v + static_cast<std::int64_t>(kv) * p.sk * a.dv;

  for (int r = warp; r < kSimtTile; r += kSimtWarps) {
    const int i = m * kSimtTile + r;
    if (i >= p.sq) break;
    const std::int64_t row = static_cast<std::int64_t>(bh) * p.sq + i;
    sync_warp();
    warp_load_row(qs, a.q + row * a.d, a.d, lane);
    sync_warp();
    float mx = p.sinks ? p.sinks[h] : -INFINITY;
    float l = p.sinks ? 1.f : 0.f;
    float acc[kSimtMaxCols] = {0.f, 0.f, 0.f, 0.f};
    for (int e = e0; e < e1; ++e) {
      const int entry = a.rows.entries[e];
      const int flags = entry & ((1 << kFlagBits) - 1);
      const bool check = flags != 0 || p.elem_checks;
      for (int jc = 0; jc < kSimtTile; jc += 32) {
        const int jb = (entry >> kFlagBits) * kSimtTile + jc;
        const int j = jb + lane;
        const bool vis = !check || visible(p, flags, bh, b, i, j);
        float x = -INFINITY;
        if (vis) {
          float dsdt;
          x = simt_score(p, dot_row(qs, kbase + static_cast<std::int64_t>(j) * a.d, a.d), bh, i, j, dsdt);
        }
        const float m_new = fmaxf(mx, warp_max(x));
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float corr = expf(mx - m_use);
        float pr = expf(x - m_use);
        l = l * corr + warp_sum(pr);
        mx = m_new;
#pragma unroll
        for (int c = 0; c < kSimtMaxCols; ++c) acc[c] *= corr;
        if (p.dropout && vis && !keep_one(p, bh, i, j)) pr = 0.f;
        for (int jj = 0; jj < 32; ++jj) {
          const float pj = shfl(pr, jj);
          if (pj != 0.f) {
            const float* vrow = vbase + static_cast<std::int64_t>(jb + jj) * a.dv;
#pragma unroll
            for (int c = 0; c < kSimtMaxCols; ++c) {
              const int d = lane + 32 * c;
              if (d < a.dv) acc[c] += pj * vrow[d];
            }
          }
        }
      }
    }
    const float inv = l > 0.f ? p.drop_scale / l : 0.f;
#pragma unroll
    for (int c = 0; c < kSimtMaxCols; ++c) {
      const int d = lane + 32 * c;
      if (d < a.dv) a.o[row * a.dv + d] = acc[c] * inv;
    }
    if (lane == 0) a.lse_out[row] = l > 0.f ? mx + logf(l) : -INFINITY;
  }
}

// dq of one query row per warp at a time (walking the row's key tiles).
__device__ __forceinline__ void simt_bwd_q_body(const SimtArgs& a, float* smem, int tid, int block) {
  const Params& p = a.p;
  const int item = a.rows.order[block];
  const int bh = item / a.rows.num_m, m = item % a.rows.num_m;
  const int kv = bh / p.group, b = bh / p.heads;
  const int lane = tid & 31, warp = tid >> 5;
  float* qs = smem + warp * 256;
  float* os = qs + 128;
  const int e0 = a.rows.off[item], e1 = a.rows.off[item + 1];
  const float* kbase = a.k + static_cast<std::int64_t>(kv) * p.sk * a.d;
  const float* vbase = a.v + static_cast<std::int64_t>(kv) * p.sk * a.dv;

  for (int r = warp; r < kSimtTile; r += kSimtWarps) {
    const int i = m * kSimtTile + r;
    if (i >= p.sq) break;
    const std::int64_t row = static_cast<std::int64_t>(bh) * p.sq + i;
    sync_warp();
    warp_load_row(qs, a.q + row * a.d, a.d, lane);
    warp_load_row(os, a.dout + row * a.dv, a.dv, lane);
    sync_warp();
    const float L = a.lse[row], Dd = a.delta[row];
    float acc[kSimtMaxCols] = {0.f, 0.f, 0.f, 0.f};
    for (int e = e0; e < e1; ++e) {
      const int entry = a.rows.entries[e];
      const int flags = entry & ((1 << kFlagBits) - 1);
      const bool check = flags != 0 || p.elem_checks;
      for (int jc = 0; jc < kSimtTile; jc += 32) {
        const int jb = (entry >> kFlagBits) * kSimtTile + jc;
        const int j = jb + lane;
        float ds = 0.f;
        if (L != -INFINITY && (!check || visible(p, flags, bh, b, i, j))) {
          float dsdt;
          const float s = simt_score(p, dot_row(qs, kbase + static_cast<std::int64_t>(j) * a.d, a.d), bh, i, j, dsdt);
          const float pr = expf(s - L);
          const bool kept = !p.dropout || keep_one(p, bh, i, j);
          const float dpv = kept ? dot_row(os, vbase + static_cast<std::int64_t>(j) * a.dv, a.dv) * p.drop_scale : 0.f;
          ds = pr * (dpv - Dd) * dsdt;
        }
        for (int jj = 0; jj < 32; ++jj) {
          const float dj = shfl(ds, jj);
          if (dj != 0.f) {
            const float* krow = kbase + static_cast<std::int64_t>(jb + jj) * a.d;
#pragma unroll
            for (int c = 0; c < kSimtMaxCols; ++c) {
              const int d = lane + 32 * c;
              if (d < a.d) acc[c] += dj * krow[d];
            }
          }
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kSimtMaxCols; ++c) {
      const int d = lane + 32 * c;
      if (d < a.d) a.dq[row * a.d + d] = acc[c] * p.scale;
    }
  }
}

// dk, dv (and dbias) of one key row per warp at a time (walking the query tiles of every
// query head of the kv row's group that visit the key tile).
__device__ __forceinline__ void simt_bwd_kv_body(const SimtArgs& a, float* smem, int tid, int block) {
  const Params& p = a.p;
  const int item = a.cols.order[block];
  const int kv = item / a.cols.num_n, n = item % a.cols.num_n;
  const int lane = tid & 31, warp = tid >> 5;
  float* ks = smem + warp * 256;
  float* vs = ks + 128;
  const int e0 = a.cols.off[item], e1 = a.cols.off[item + 1];
  const float inv_m = a.cols.inv_num_m();  // for query_tile, once

  for (int r = warp; r < kSimtTile; r += kSimtWarps) {
    const int j = n * kSimtTile + r;
    if (j >= p.sk) break;
    const std::int64_t krow = static_cast<std::int64_t>(kv) * p.sk + j;
    sync_warp();
    warp_load_row(ks, a.k + krow * a.d, a.d, lane);
    warp_load_row(vs, a.v + krow * a.dv, a.dv, lane);
    sync_warp();
    float acc_k[kSimtMaxCols] = {0.f, 0.f, 0.f, 0.f};
    float acc_v[kSimtMaxCols] = {0.f, 0.f, 0.f, 0.f};
    for (int e = e0; e < e1; ++e) {
      const int entry = a.cols.entries[e];
      const int flags = entry & ((1 << kFlagBits) - 1);
      const bool check = flags != 0 || p.elem_checks;
      const int2 qt = a.cols.query_tile(entry, kv, p.group, kSimtTile, inv_m);
      const int bh = qt.x, b = bh / p.heads, i0 = qt.y;
      const std::int64_t row0 = static_cast<std::int64_t>(bh) * p.sq;
      for (int ic = 0; ic < kSimtTile; ic += 32) {
        const int i = i0 + ic + lane;
        float pd = 0.f, ds = 0.f;
        if (i < p.sq && (!check || visible(p, flags, bh, b, i, j))) {
          const float L = a.lse[row0 + i];
          if (L != -INFINITY) {
            float dsdt;
            const float s = simt_score(p, dot_row(ks, a.q + (row0 + i) * a.d, a.d), bh, i, j, dsdt);
            const float pr = expf(s - L);
            const bool kept = !p.dropout || keep_one(p, bh, i, j);
            const float dpv = kept ? dot_row(vs, a.dout + (row0 + i) * a.dv, a.dv) * p.drop_scale : 0.f;
            pd = kept ? pr * p.drop_scale : 0.f;
            ds = pr * (dpv - a.delta[row0 + i]) * dsdt;
          }
        }
        if (a.dbias && i < p.sq) {
          const std::int64_t slot = bias_slot(p, bh, i, j);
          if (slot >= 0) a.dbias[slot] = ds;
        }
        for (int ii = 0; ii < 32; ++ii) {
          const float pi = shfl(pd, ii), di = shfl(ds, ii);
          const std::int64_t qrow = row0 + i0 + ic + ii;
          if (pi != 0.f) {
#pragma unroll
            for (int c = 0; c < kSimtMaxCols; ++c) {
              const int d = lane + 32 * c;
              if (d < a.dv) acc_v[c] += pi * a.dout[qrow * a.dv + d];
            }
          }
          if (di != 0.f) {
#pragma unroll
            for (int c = 0; c < kSimtMaxCols; ++c) {
              const int d = lane + 32 * c;
              if (d < a.d) acc_k[c] += di * a.q[qrow * a.d + d];
            }
          }
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kSimtMaxCols; ++c) {
      const int d = lane + 32 * c;
      if (d < a.d) a.dk[krow * a.d + d] = acc_k[c] * p.scale;
      if (d < a.dv) a.dv_out[krow * a.dv + d] = acc_v[c];
    }
  }
}

}  // namespace tg::ops::attn
