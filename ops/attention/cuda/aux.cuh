// The small passes around the attention kernels: D = rowsum(dO ⊙ o), the conversion of
// the f32 dQ workspace, the sinks' gradient (a fixed-order reduction per head), and
// dropout's decisions drawn ahead of the Hopper kernels (keep_units.cuh).
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/attention/cuda/keep_units.cuh"
#include "ops/attention/cuda/params.cuh"
#include "ops/attention/cuda/ptx.cuh"

namespace tg::ops::attn {

constexpr int kAuxThreads = 256;

/// The pre-pass: for every (query tile of 64 << bm_lg rows, key tile of 64 keys) pair of
/// `rows`' lists (item x: query tile x % num_m of row bh = x / num_m), the units covering it
/// (keep_units.cuh). One CTA an item; a thread draws word m of a 64-row slice's 4 units.
__global__ void __launch_bounds__(kAuxThreads) keep_units_kernel(Params p, TileList rows, int bm_lg, RoundKeys rk) {
  const int item = rows.order[blockIdx.x];
  const int bh = item / rows.num_m, m = item % rows.num_m;
  const int e0 = rows.off[item], e1 = rows.off[item + 1];
  const int lg = 5 + bm_lg;  // log2 of the threads an entry takes: 32 a slice of 64 rows
  const int total = (e1 - e0) << lg;
  for (int x = static_cast<int>(threadIdx.x); x < total; x += kAuxThreads) {
    const int e = e0 + (x >> lg), w = x & ((1 << lg) - 1);
    const int qu = (m << bm_lg) + (w >> 5);
    if (qu >= p.keep_qt) continue;
    draw_unit_words(p, rk, bh, qu, rows.entries[e] >> kFlagBits, w & 31);
  }
}

/// delta[row] = Σ_c dout[row, c] · o[row, c], one warp per row. With `packed` (the
/// Hopper kv pass's table, rows of sq_pad), also packed[bh · sq_pad + i] = (lse of the row
/// in log2 units as lse_log2, delta) for row = bh · sq + i, and (+inf, 0) for i in [sq, sq_pad).
template <typename T>
__device__ __forceinline__ void delta_body(const T* o, const T* dout, float* delta, std::int64_t rows, int dv, int tid,
                                           int block, const float* lse, float2* packed, int sq, int sq_pad) {
  const std::int64_t row = static_cast<std::int64_t>(block) * (kAuxThreads / 32) + (tid >> 5);
  if (row >= rows) return;  // whole warps leave together
  const int lane = tid & 31;
  float s = 0.f;
  for (int c = lane; c < dv; c += 32) s += static_cast<float>(o[row * dv + c]) * static_cast<float>(dout[row * dv + c]);
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) s += shfl_xor(s, m);
  if (lane == 0) {
    delta[row] = s;
    if (packed != nullptr) packed[(row / sq) * sq_pad + row % sq] = make_float2(lse_log2(lse[row], true), s);
  }
  // The warp of a head's last row fills the head's padding rows [sq, sq_pad) with (+inf, 0):
  // the kv pass reads whole tiles of the table, and these make P and dS 0 there.
  if (packed != nullptr && row % sq == sq - 1) {
    for (int i = sq + lane; i < sq_pad; i += 32) packed[(row / sq) * sq_pad + i] = make_float2(INFINITY, 0.f);
  }
}

/// delta_body for 16-bit T with rows of dv = 8·L elements, 16-byte aligned: L lanes a row,
/// one 16-byte load of o and of dout each, so 32 / L rows a warp (the scalar body's 2-byte
/// loads kept it near a third of the copy rate). The same outputs as delta_body; with `zero`
/// (dQ's f32 workspace, rows of d = dv floats, 16-byte aligned) also zeroes the row's
/// workspace row, which spares the kv pass's workspace a memset of its own.
template <typename T, int L>
__device__ __forceinline__ void delta_vec_body(const T* o, const T* dout, float* delta, std::int64_t rows, int tid,
                                               int block, const float* lse, float2* packed, int sq, int sq_pad,
                                               float* zero) {
  static_assert(L == 4 || L == 8 || L == 16, "rows of 32, 64 or 128 elements");
  const std::int64_t row = (static_cast<std::int64_t>(block) * kAuxThreads + tid) / L;
  const int sub = tid % L;
  const bool valid = row < rows;  // every lane stays for the shuffles
  float s = 0.f;
  if (valid) {
    const uint4 a = reinterpret_cast<const uint4*>(o + row * (8 * L))[sub];
    const uint4 b = reinterpret_cast<const uint4*>(dout + row * (8 * L))[sub];
    const std::uint32_t aw[4] = {a.x, a.y, a.z, a.w}, bw[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float a0, a1, b0, b1;
      gpu::unpack2<T>(aw[i], a0, a1);
      gpu::unpack2<T>(bw[i], b0, b1);
      s = fmaf(a0, b0, fmaf(a1, b1, s));
    }
  }
#pragma unroll
  for (int m = L / 2; m > 0; m >>= 1) s += shfl_xor(s, m);
  if (!valid) return;
  if (zero != nullptr) {
    float4* z = reinterpret_cast<float4*>(zero + row * (8 * L)) + 2 * sub;
    z[0] = make_float4(0.f, 0.f, 0.f, 0.f);
    z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  if (sub == 0) {
    delta[row] = s;
    if (packed != nullptr) packed[(row / sq) * sq_pad + row % sq] = make_float2(lse_log2(lse[row], true), s);
  }
  if (packed != nullptr && row % sq == sq - 1) {  // the head's padding rows, as in delta_body
    for (int i = sq + sub; i < sq_pad; i += L) packed[(row / sq) * sq_pad + i] = make_float2(INFINITY, 0.f);
  }
}

/// dq[x] = scale · acc[x] rounded to T for the eight elements from x8 · 8 (both 16-byte
/// aligned): two 16-byte loads and one 16-byte store (4- and 2-byte accesses had kept the
/// conversion near half the copy rate).
template <typename T>
__device__ __forceinline__ void dq_convert_vec_body(const float* acc, T* dq, float scale, std::int64_t x8) {
  const float4 a = reinterpret_cast<const float4*>(acc)[2 * x8];
  const float4 b = reinterpret_cast<const float4*>(acc)[2 * x8 + 1];
  reinterpret_cast<uint4*>(dq)[x8] = make_uint4(pack2<T>(a.x * scale, a.y * scale), pack2<T>(a.z * scale, a.w * scale),
                                                pack2<T>(b.x * scale, b.y * scale), pack2<T>(b.z * scale, b.w * scale));
}

/// dsinks[h] = -Σ_{b, i} exp(sink_h - lse[b·heads + h, i]) · delta[b·heads + h, i], one CTA of
/// kAuxThreads per head; `red` holds kAuxThreads floats of shared memory.
__device__ __forceinline__ void dsinks_body(const float* lse, const float* delta, const float* sinks, float* dsinks,
                                            int batch, int heads, int sq, float* red, int tid, int h) {
  const float sink = sinks[h];
  float s = 0.f;
  const std::int64_t n = static_cast<std::int64_t>(batch) * sq;
  for (std::int64_t x = tid; x < n; x += kAuxThreads) {
    const std::int64_t b = x / sq, i = x % sq;
    const std::int64_t row = (b * heads + h) * sq + i;
    s += expf(sink - lse[row]) * delta[row];
  }
  red[tid] = s;
  sync_cta();
  for (int w = kAuxThreads / 2; w > 0; w >>= 1) {
    if (tid < w) red[tid] += red[tid + w];
    sync_cta();
  }
  if (tid == 0) dsinks[h] = -red[0];
}

}  // namespace tg::ops::attn
