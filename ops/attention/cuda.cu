// CUDA kernels of block-sparse flash attention: the glue between the kernel slots and the
// kernels of ops/attention/cuda/.
//
// - bf16 / f16: tensor-core kernels (cuda/tc_fwd.cuh, cuda/tc_bwd.cuh), instantiated for
//   D, Dv in {32, 64, 128} by the cuda_{fwd,bwd_kv,bwd_q}_{bf16,f16}.cu files.
// - f32: CUDA-core kernels (cuda/simt.cuh), always deterministic.
// - Work: tile lists built on the host from the pattern and causal / window, cached on the
//   device per pattern (cuda/work_lists.h).
// - Backward: D = rowsum(dO ⊙ o), then the kv pass (dK, dV, dbias; dQ by f32 atomics into a
//   workspace), then either the dQ conversion or, in deterministic mode, the q pass; the
//   sinks' gradient is a fixed-order reduction per head. With the Hopper kv pass the first three
//   launch programmatically (kernel_choice.h's LaunchOverlap, ops/cuda_pdl.cuh).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/attention/cuda/aux.cuh"
#include "ops/attention/cuda/configs.h"
#include "ops/attention/cuda/simt.cuh"
#include "ops/attention/cuda/tc_bwd.cuh"
#include "ops/attention/cuda/tc_fwd.cuh"
#include "ops/attention/cuda/work_lists.h"
#include "ops/attention/kernel_choice.h"
#include "ops/attention/kernels.h"
#include "ops/common.h"
#include "ops/cuda_pdl.cuh"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::attn {

// Launchers instantiated in the cuda_*.cu files (see cuda/tc_launch.cuh).
template <typename T, int D, int DV, bool kGeneral>
void launch_fwd(const FwdArgs<T>& a, std::int64_t items, cudaStream_t st);
template <typename T, int D, int DV, bool kGeneral>
void launch_bwd_kv(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st);
template <typename T, int D, int DV, bool kGeneral>
void launch_bwd_q(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st);
// The Hopper forward (cuda_fwd_wgmma.cu, sm_90a), D = Dv of 64 or 128, query tiles of BM.
// kDrop: plain scores with dropout (DropoutKernels::Plain); kSums: plain scores bounded by
// row sums (FwdSoftmax::Sums).
template <typename T, int D, bool kGeneral, int BM, bool kOverlap, int BN, bool kDrop = false, bool kSums = false>
void launch_fwd_wgmma(const FwdArgs<T>& a, std::int64_t items, cudaStream_t st);
// The Hopper kv pass of the backward (cuda_bwd_wgmma.cu, sm_90a), D = Dv of 64 or 128, key tiles
// of BN; dQ by columns, the pipelined step or the producer warpgroup (kernel_choice.h) where
// asked, the latter at D 64 with K and V as register operands (kRegKV) or with dQ in turns
// (kTurns) where asked; kDrop as above; at D 128 on 64-key tiles dQ staged in the step's stage
// (kDqInStage) where asked; `programmatic`: a programmatic dependent launch (LaunchOverlap).
template <typename T, int D, bool kGeneral, int BN, bool kDqCols, bool kPipe, bool kDrop = false,
          bool kProducer = false, bool kRegKV = false, bool kTurns = false, bool kDqInStage = false>
void launch_bwd_kv_wgmma(const BwdArgs<T>& a, const float2* ld, int sq_pad, std::int64_t items, cudaStream_t st,
                         bool programmatic);
// The mma.sync kv pass with key tiles of 64 (cuda_bwd_kv_*.cu), D = Dv.
template <typename T, int D, bool kGeneral>
void launch_bwd_kv_narrow(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st);

namespace {

__global__ void __launch_bounds__(kSimtThreads) simt_fwd_kernel(const __grid_constant__ SimtArgs a) {
  __shared__ float smem[kSimtSmem / 4];
  simt_fwd_body(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

__global__ void __launch_bounds__(kSimtThreads) simt_bwd_q_kernel(const __grid_constant__ SimtArgs a) {
  __shared__ float smem[kSimtSmem / 4];
  simt_bwd_q_body(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

__global__ void __launch_bounds__(kSimtThreads) simt_bwd_kv_kernel(const __grid_constant__ SimtArgs a) {
  __shared__ float smem[kSimtSmem / 4];
  simt_bwd_kv_body(a, smem, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x));
}

template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    delta_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta, std::int64_t rows,
                 int dv, const float* __restrict__ lse, float2* __restrict__ packed, int sq, int sq_pad) {
  gpu::pdl_wait();  // (launched programmatically or not: see LaunchOverlap)
  gpu::pdl_allow();
  delta_body(o, dout, delta, rows, dv, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x), lse, packed, sq,
             sq_pad);
}

template <typename T, int L>
__global__ void __launch_bounds__(kAuxThreads)
    delta_vec_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta, std::int64_t rows,
                     const float* __restrict__ lse, float2* __restrict__ packed, int sq, int sq_pad,
                     float* __restrict__ zero) {
  gpu::pdl_wait();
  gpu::pdl_allow();
  delta_vec_body<T, L>(o, dout, delta, rows, static_cast<int>(threadIdx.x), static_cast<int>(blockIdx.x), lse, packed,
                       sq, sq_pad, zero);
}

template <typename T>
__global__ void __launch_bounds__(kAuxThreads)
    dq_convert_vec_kernel(const float* __restrict__ acc, T* __restrict__ dq, std::int64_t n8, float scale) {
  gpu::pdl_wait();
  gpu::pdl_allow();
  for (std::int64_t x = static_cast<std::int64_t>(blockIdx.x) * kAuxThreads + threadIdx.x; x < n8;
       x += static_cast<std::int64_t>(gridDim.x) * kAuxThreads)
    dq_convert_vec_body(acc, dq, scale, x);
}

__global__ void __launch_bounds__(kAuxThreads)
    dsinks_kernel(const float* __restrict__ lse, const float* __restrict__ delta, const float* __restrict__ sinks,
                  float* __restrict__ dsinks, int batch, int heads, int sq) {
  __shared__ float red[kAuxThreads];
  dsinks_body(lse, delta, sinks, dsinks, batch, heads, sq, red, static_cast<int>(threadIdx.x),
              static_cast<int>(blockIdx.x));
}

constexpr const char* kOp = "flash_attention";

// Tensor cores: head dims with compiled kernels; f32 (CUDA cores): any up to 128.
void check_head_dims(const AttentionProblem& p, DType dt) {
  if (dt == DType::f32) {
    if (p.d > 4 * 32 || p.dv > 4 * 32) {
      TG_THROW(ValueError, kOp, ": on CUDA the head dims of f32 inputs must be at most 128 (D of q and k, Dv of v), got D = ",
               p.d, " and Dv = ", p.dv);
    }
  } else if (!supported_head_dim(p.d) || !supported_head_dim(p.dv)) {
    TG_THROW(ValueError, kOp, ": on CUDA the head dims of ", dt,
             " inputs must be 32, 64 or 128 (D of q and k, Dv of v), got D = ", p.d, " and Dv = ", p.dv);
  }
}

int log2_of(std::int64_t v) {
  int lg = 0;
  while ((std::int64_t(1) << lg) < v) ++lg;
  return lg;
}

// (The plain kernels need scale > 0: the forward takes its row maxima of unscaled scores.)
bool is_general(const AttentionProblem& p) {
  return p.bias.defined() || p.softcap > 0.0 || p.dropout_p > 0.0 || !(p.scale > 0.0);
}

// Dropout alone on the Hopper plain-score kernels (DropoutKernels::Plain): no bias or soft
// cap, a positive scale, and decisions drawn ahead (sk a multiple of 8, as Params::drop_groups).
bool plain_dropout(const AttentionProblem& p) {
  return dropout_kernels() == DropoutKernels::Plain && p.dropout_p > 0.0 && !p.bias.defined() &&
         !(p.softcap > 0.0) && p.scale > 0.0 && p.sk % 8 == 0;
}

// Whether the forward of p runs on the Hopper kernel: chosen (kernel_choice.h), a shape and
// options it has, and a device its sm_90a code runs on.
bool use_wgmma_fwd(const AttentionProblem& p, int device) {
  if (fwd_kernel() != FwdKernel::Wgmma) return false;
  if (p.d != p.dv || (p.d != 64 && p.d != 128)) return false;
  return cuda_compute_capability(device) == 90;
}

// Whether the backward's kv pass of p runs on the Hopper kernel (kernel_choice.h).
bool use_wgmma_bwd(const AttentionProblem& p, int device) {
  if (bwd_kernel() != BwdKernel::Wgmma) return false;
  if (p.d != p.dv || (p.d != 64 && p.d != 128) || p.deterministic) return false;
  return cuda_compute_capability(device) == 90;
}

// Whether tiles of half the height (64 query rows, or 64 keys) pay for a problem whose lists
// have `narrow` entries at that height and `wide` at 128: each half of a 128-tile CTA steps
// through all `wide` entries, so the half-height tiles do 2 * wide steps' work in `narrow`
// steps. They are taken at no more than 3/4 of that: patterns sparse at 64 granularity
// (random blocks), not causal or window ones (within a few percent), where the larger tile
// halves the K / V (Q / dO) traffic.
bool half_tiles_pay(std::int64_t narrow, std::int64_t wide) { return 4 * narrow <= 3 * 2 * wide; }

using WorkPtr = std::shared_ptr<const DeviceWork>;

// The device work of p at the half height when the tile-height setting (kernel_choice.h)
// takes it: forced, or chosen by half_tiles_pay against full(), the work at height 128 (built
// only when compared: the lists are built, uploaded and cached per problem); null for the
// full height. `rows`: query tiles of 64 (forward) rather than key tiles. `always`: the half
// height is the better one whatever the lists (set only where measured so).
template <typename Full>
WorkPtr half_height_work(const AttentionProblem& p, Full&& full, bool rows, int kv_bm, Device dev, bool always) {
  const TileHeight h = tile_height();
  if (h == TileHeight::Full) return nullptr;
  auto half = rows ? device_work(p, 64, kFwdBN, false, dev) : device_work(p, kv_bm, kBwdKvBNNarrow, true, dev);
  if (h == TileHeight::Half || always) return half;
  const std::int64_t n = rows ? half->row_entries.numel() : half->col_entries.numel();
  const std::int64_t w = rows ? full()->row_entries.numel() : full()->col_entries.numel();
  return half_tiles_pay(n, w) ? half : nullptr;
}

Params make_params(const AttentionProblem& p, const DeviceWork& w, Device dev) {
  Params r;
  r.bhq = static_cast<int>(p.bhq);
  r.bhkv = static_cast<int>(p.bhkv);
  r.group = static_cast<int>(p.bhq / p.bhkv);
  r.heads = static_cast<int>(p.heads);
  r.sq = static_cast<int>(p.sq);
  r.sk = static_cast<int>(p.sk);
  r.scale = static_cast<float>(p.scale);
  r.scale_log2 = static_cast<float>(p.scale * 1.4426950408889634);
  r.softcap = static_cast<float>(p.softcap);
  r.inv_softcap = p.softcap > 0.0 ? static_cast<float>(1.0 / p.softcap) : 0.f;
  r.causal = p.causal ? 1 : 0;
  // a bound beyond the extents hides nothing; clamping keeps i - wl and i + wr in range
  const std::int64_t far = p.sq + p.sk;
  r.wl = p.window_left < 0 ? -1 : static_cast<int>(std::min(p.window_left, far));
  r.wr = p.window_right < 0 ? -1 : static_cast<int>(std::min(p.window_right, far));
  r.q_lens = cptr_or_null<std::int64_t>(p.q_lens);
  r.k_lens = cptr_or_null<std::int64_t>(p.k_lens);
  r.seg_q = cptr_or_null<std::int64_t>(p.seg_q);
  r.seg_k = cptr_or_null<std::int64_t>(p.seg_k);
  if (p.mask.defined()) {
    const Layout& l = p.mask.layout();
    r.mask_index = static_cast<const std::int64_t*>(l.tables(dev).block_index.data_ptr());
    r.mask_data = static_cast<const std::uint8_t*>(p.mask.data().data_ptr());
    r.mask_lg = log2_of(l.block_size());
    r.mask_mb = static_cast<int>(l.block_rows());
    r.mask_nb = static_cast<int>(l.block_cols());
  }
  r.elem_checks = r.q_lens || r.k_lens || r.seg_q || r.mask_index;
  if (p.bias.defined()) {
    const Layout& l = p.bias.layout();
    r.bias_index = static_cast<const std::int64_t*>(l.tables(dev).block_index.data_ptr());
    r.bias_data = p.bias.data().data_ptr();
    r.bias_lg = log2_of(l.block_size());
    r.bias_mb = static_cast<int>(l.block_rows());
    r.bias_nb = static_cast<int>(l.block_cols());
  }
  r.pat = static_cast<const std::uint8_t*>(w.pattern.data_ptr());
  r.pat_qb = static_cast<int>(p.pattern.q_blocks());
  r.pat_kb = static_cast<int>(p.pattern.k_blocks());
  r.q_blk = static_cast<const std::int32_t*>(w.q_blk.data_ptr());
  r.k_blk = static_cast<const std::int32_t*>(w.k_blk.data_ptr());
  // uniform power-of-two pattern blocks: block of a position by a shift
  auto lg_of_block = [](std::int64_t bs) { return bs >= 8 && (bs & (bs - 1)) == 0 ? log2_of(bs) : -1; };
  if (lg_of_block(p.pattern.bq()) >= 0 && lg_of_block(p.pattern.bk()) >= 0) {
    r.q_lg = lg_of_block(p.pattern.bq());
    r.k_lg = lg_of_block(p.pattern.bk());
  }
  r.sinks = cptr_or_null<float>(p.sinks);
  r.dropout = p.dropout_p > 0.0;
  r.drop_threshold = p.dropout_threshold;
  r.drop_groups = r.dropout && p.sk % 8 == 0;
  r.drop_scale = p.dropout_p > 0.0 ? static_cast<float>(1.0 / (1.0 - p.dropout_p)) : 1.f;
  r.seed = p.seed;
  r.offset = p.offset;
  return r;
}

TileList rows_of(const DeviceWork& w) {
  return {static_cast<const std::int32_t*>(w.row_order.data_ptr()), static_cast<const std::int32_t*>(w.row_off.data_ptr()),
          static_cast<const std::int32_t*>(w.row_entries.data_ptr()), w.num_m, w.num_n};
}

TileList cols_of(const DeviceWork& w) {
  return {static_cast<const std::int32_t*>(w.col_order.data_ptr()), static_cast<const std::int32_t*>(w.col_off.data_ptr()),
          static_cast<const std::int32_t*>(w.col_entries.data_ptr()), w.num_m, w.num_n};
}

// The kernels read q, k, v, dO with 16-byte cp.async and write rows in 4-byte pairs; a
// tensor whose data is not 16-byte aligned (a view into other storage) is copied first, and
// an output is written to an aligned temporary and copied back.
bool aligned16(const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

Tensor aligned_input(const Tensor& t) {
  if (aligned16(t)) return t;
  Tensor c = empty(t.shape(), {.dtype = t.dtype(), .device = t.device()});
  copy_bytes(c, t);
  return c;
}

Tensor aligned_output(const Tensor& t) {
  if (!t.defined() || aligned16(t)) return t;
  return empty(t.shape(), {.dtype = t.dtype(), .device = t.device()});
}

void finish_output(const Tensor& user, const Tensor& written) {
  if (user.defined() && !user.is_same(written)) copy_bytes(user, written);
}

// Calls f(D, DV, G) with compile-time head dims and general flag.
template <typename F>
void with_dims(std::int64_t d, std::int64_t dv, bool general, F&& f) {
  auto with_g = [&](auto D, auto DV) {
    if (general) f(D, DV, std::true_type{});
    else f(D, DV, std::false_type{});
  };
  auto with_dv = [&](auto D) {
    switch (dv) {
      case 32: with_g(D, std::integral_constant<int, 32>{}); return;
      case 64: with_g(D, std::integral_constant<int, 64>{}); return;
      default: with_g(D, std::integral_constant<int, 128>{}); return;
    }
  };
  switch (d) {
    case 32: with_dv(std::integral_constant<int, 32>{}); return;
    case 64: with_dv(std::integral_constant<int, 64>{}); return;
    default: with_dv(std::integral_constant<int, 128>{}); return;
  }
}

// Draws dropout's decisions (p.dropout_p > 0, sk % 8 == 0) for the pairs of w's row lists
// (query tiles of bm = 64 or 128, key tiles of kFwdBN) into a new tensor of keep_units.cuh's
// layout, and points prm at it.
Tensor draw_keep_units(const AttentionProblem& p, Params& prm, const DeviceWork& w, int bm, Device dev,
                       cudaStream_t st) {
  static_assert(kFwdBN == 64, "keep_units_kernel draws the units of 64-key tiles");
  prm.keep_qt = static_cast<int>((p.sq + 127) / 128 * 2);
  prm.keep_kc = static_cast<int>((p.sk + 15) / 16);
  Tensor keep = empty({p.bhq, prm.keep_qt, prm.keep_kc, 32}, {.dtype = DType::i32, .device = dev});
  prm.keep = static_cast<std::uint32_t*>(keep.data_ptr());
  note_launch(Path::DropoutDrawn);
  if (w.row_items > 0) {
    keep_units_kernel<<<static_cast<unsigned>(w.row_items), kAuxThreads, 0, st>>>(prm, rows_of(w), bm == 128 ? 1 : 0,
                                                                                  round_keys(p.seed));
    TG_CUDA_CHECK_LAST();
  }
  return keep;
}

Tensor attention_fwd_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionProblem& p,
                          const Tensor& o, const Tensor& lse, bool keep_mask) {
  check_head_dims(p, q.dtype());
  const Device dev = q.device();
  tg::cuda::DeviceGuard guard(dev.index);
  const cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const bool simt = q.dtype() == DType::f32;
  WorkPtr work;  // the lists of the tiles chosen below
  auto full = [&] {
    if (!work) work = device_work(p, simt ? kSimtTile : kFwdBM, simt ? kSimtTile : kFwdBN, false, dev);
    return work;
  };
  const bool wgmma = !simt && use_wgmma_fwd(p, dev.index);
  int wg_bm = kFwdBM, wg_bn = kFwdBN;
  if (wgmma) {
    // D 64 takes 64-row tiles for every pattern (four CTAs of 4 warps an SM instead of two of
    // 8, each stage released by one warpgroup): the forward 5-13% faster on dense, causal,
    // window and variable-block patterns, with or without the general transform (H100, two
    // runs; bench/RESULTS.md). Not where 128-key tiles are asked for (FwdKeys).
    const bool always = p.d == 64 && fwd_keys() == FwdKeys::K64;
    if (auto half = half_height_work(p, full, true, 0, dev, always)) {
      work = std::move(half);
      wg_bm = 64;
    } else if (!is_general(p) && fwd_keys() == FwdKeys::K128) {
      wg_bn = kFwdWideBN;
      if (p.d == 64 && fwd_rows() == FwdRows::R192) wg_bm = kFwdTallBM;
      work = device_work(p, wg_bm, kFwdWideBN, false, dev);
    }
  }
  if (!work) full();
  Params prm = make_params(p, *work, dev);
  // The Hopper forward reads dropout's decisions drawn ahead (where 8 keys share a Philox
  // block), and hands them to the backward when asked.
  Tensor keep;
  if (wgmma && prm.drop_groups) {
    keep = draw_keep_units(p, prm, *work, wg_bm, dev, st);
    if (keep_mask) note_launch(Path::DropoutKept);
  }
  const Tensor qa = aligned_input(q), ka = aligned_input(k), va = aligned_input(v);
  const Tensor oa = aligned_output(o), la = aligned_output(lse);

  if (simt) {
    SimtArgs a;
    a.p = prm;
    a.rows = rows_of(*work);
    a.d = static_cast<int>(p.d);
    a.dv = static_cast<int>(p.dv);
    a.q = cptr<float>(qa);
    a.k = cptr<float>(ka);
    a.v = cptr<float>(va);
    a.o = mptr<float>(oa);
    a.lse_out = mptr<float>(la);
    simt_fwd_kernel<<<static_cast<unsigned>(work->row_items), kSimtThreads, 0, st>>>(a);
    TG_CUDA_CHECK_LAST();
  } else {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      FwdArgs<T> a;
      a.p = prm;
      a.list = rows_of(*work);
      a.q = cptr<T>(qa);
      a.k = cptr<T>(ka);
      a.v = cptr<T>(va);
      a.o = mptr<T>(oa);
      a.lse = mptr<float>(la);
      if (wgmma) {
        note_launch(Path::WgmmaFwd);
        if (wg_bm == 64) note_launch(Path::WgmmaFwdNarrow);
        const bool g = is_general(p);
        const bool pd = plain_dropout(p);
        if (pd) note_launch(Path::DropoutPlainFwd);
        const bool overlap = !g && fwd_schedule() == FwdSchedule::Overlap;
        if (overlap) note_launch(Path::WgmmaFwdOverlap);
        // row sums for the plain serial steps on 64-key tiles
        const bool sums = !g && !overlap && wg_bn != kFwdWideBN && fwd_softmax(p.d) == FwdSoftmax::Sums;
        if (sums) note_launch(Path::WgmmaFwdSums);
        if (wg_bn == kFwdWideBN) {
          note_launch(Path::WgmmaFwdWideKeys);
          if (wg_bm == kFwdTallBM) {
            note_launch(Path::WgmmaFwdTall);
            (overlap ? launch_fwd_wgmma<T, 64, false, kFwdTallBM, true, 128>
                     : launch_fwd_wgmma<T, 64, false, kFwdTallBM, false, 128>)(a, work->row_items, st);
          } else if (p.d == 64) {
            (overlap ? launch_fwd_wgmma<T, 64, false, 128, true, 128>
                     : launch_fwd_wgmma<T, 64, false, 128, false, 128>)(a, work->row_items, st);
          } else {
            (overlap ? launch_fwd_wgmma<T, 128, false, 128, true, 128>
                     : launch_fwd_wgmma<T, 128, false, 128, false, 128>)(a, work->row_items, st);
          }
          return;
        }
        auto launch = [&](auto BM) {
          constexpr int bm = decltype(BM)::value;
          auto with_d = [&](auto D) {
            constexpr int d = decltype(D)::value;
            (pd     ? launch_fwd_wgmma<T, d, false, bm, false, 64, true>
             : g    ? launch_fwd_wgmma<T, d, true, bm, false, 64>
             : sums ? launch_fwd_wgmma<T, d, false, bm, false, 64, false, true>
                 : overlap ? launch_fwd_wgmma<T, d, false, bm, true, 64>
                           : launch_fwd_wgmma<T, d, false, bm, false, 64>)(a, work->row_items, st);
          };
          if (p.d == 64) with_d(std::integral_constant<int, 64>{});
          else with_d(std::integral_constant<int, 128>{});
        };
        if (wg_bm == 64) launch(std::integral_constant<int, 64>{});
        else launch(std::integral_constant<int, 128>{});
        return;
      }
      with_dims(p.d, p.dv, is_general(p), [&](auto D, auto DV, auto G) {
        launch_fwd<T, decltype(D)::value, decltype(DV)::value, decltype(G)::value>(a, work->row_items, st);
      });
    };
    if (q.dtype() == DType::bf16) run(bfloat16{});
    else run(half{});
  }
  finish_output(o, oa);
  finish_output(lse, la);
  return keep_mask ? keep : Tensor();
}

void attention_bwd_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                        const Tensor& dout, const AttentionProblem& p, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv, const Tensor& dbias, const Tensor& dsinks, const Tensor& keep) {
  check_head_dims(p, q.dtype());
  const Device dev = q.device();
  tg::cuda::DeviceGuard guard(dev.index);
  const cudaStream_t st = tg::cuda::current_cuda_stream(dev.index);
  const bool simt = q.dtype() == DType::f32;
  const bool general = is_general(p);
  // dropout alone on the plain-score kv pass (chosen with the Hopper kv pass only)
  const bool plain_drop = plain_dropout(p);
  const Tensor qa = aligned_input(q), ka = aligned_input(k), va = aligned_input(v), doa = aligned_input(dout);
  const Tensor dqa = aligned_output(dq), dka = aligned_output(dk), dva = aligned_output(dv);
  const Tensor dba = aligned_output(dbias);

  // D = rowsum(dO ⊙ o); for the Hopper kv pass also (lse, D) packed in whole query tiles
  const std::int64_t rows = p.bhq * p.sq;
  Tensor delta = empty({p.bhq, p.sq}, {.dtype = DType::f32, .device = dev});
  const bool wgmma_kv = !simt && use_wgmma_bwd(p, dev.index);
  // the delta pass, the Hopper kv pass and the dQ conversion launched programmatically
  const bool pdl = wgmma_kv && launch_overlap() == LaunchOverlap::Programmatic;
  if (pdl) note_launch(Path::ProgrammaticBwd);
  const std::int64_t sq_pad = (p.sq + 63) / 64 * 64;
  Tensor ld;
  if (wgmma_kv) ld = empty({p.bhq, sq_pad, 2}, {.dtype = DType::f32, .device = dev});
  const unsigned delta_grid = static_cast<unsigned>((rows + kAuxThreads / 32 - 1) / (kAuxThreads / 32));
  float2* const packed = ld.defined() ? static_cast<float2*>(ld.data_ptr()) : nullptr;
  // dQ's f32 workspace for the tensor-core kv passes (atomics or TMA reductions into it):
  // zeroed by the delta pass where it runs its vector body over rows of d = dv (one pass
  // over the rows instead of a memset after it), else by a memset
  const bool atomic = !simt && !p.deterministic;
  Tensor dq_acc;
  if (atomic) dq_acc = empty({p.bhq, p.sq, p.d}, {.dtype = DType::f32, .device = dev});
  bool dq_zeroed = false;
  auto run_delta = [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      // 16-bit rows of 32, 64 or 128 elements on 16-byte boundaries: dv / 8 lanes a row
      if ((p.dv == 32 || p.dv == 64 || p.dv == 128) && aligned16(o) && aligned16(dout)) {
        float* const zero = atomic && p.d == p.dv && aligned16(dq_acc) ? mptr<float>(dq_acc) : nullptr;
        dq_zeroed = zero != nullptr;
        auto launch = [&](auto lanes) {
          constexpr int L = decltype(lanes)::value;
          const auto grid = static_cast<unsigned>((rows * L + kAuxThreads - 1) / kAuxThreads);
          gpu::launch_pdl(pdl, delta_vec_kernel<T, L>, dim3(grid), dim3(kAuxThreads), 0, st, dev.index, cptr<T>(o),
                          cptr<T>(dout), mptr<float>(delta), rows, cptr<float>(lse), packed, static_cast<int>(p.sq),
                          static_cast<int>(sq_pad), zero);
        };
        if (p.dv == 32) return launch(std::integral_constant<int, 4>{});
        if (p.dv == 64) return launch(std::integral_constant<int, 8>{});
        return launch(std::integral_constant<int, 16>{});
      }
    }
    gpu::launch_pdl(pdl, delta_kernel<T>, dim3(delta_grid), dim3(kAuxThreads), 0, st, dev.index, cptr<T>(o),
                    cptr<T>(dout), mptr<float>(delta), rows, static_cast<int>(p.dv), cptr<float>(lse), packed,
                    static_cast<int>(p.sq), static_cast<int>(sq_pad));
  };
  if (q.dtype() == DType::f32) run_delta(float{});
  else if (q.dtype() == DType::bf16) run_delta(bfloat16{});
  else run_delta(half{});
  if (dba.defined() && dba.numel() > 0) TG_CUDA_CHECK(cudaMemsetAsync(dba.data_ptr(), 0, dba.nbytes(), st));

  if (simt) {
    const auto work = device_work(p, kSimtTile, kSimtTile, true, dev);
    SimtArgs a;
    a.p = make_params(p, *work, dev);
    a.rows = rows_of(*work);
    a.cols = cols_of(*work);
    a.d = static_cast<int>(p.d);
    a.dv = static_cast<int>(p.dv);
    a.q = cptr<float>(qa);
    a.k = cptr<float>(ka);
    a.v = cptr<float>(va);
    a.dout = cptr<float>(doa);
    a.lse = cptr<float>(lse);
    a.delta = cptr<float>(delta);
    a.dq = mptr<float>(dqa);
    a.dk = mptr<float>(dka);
    a.dv_out = mptr<float>(dva);
    a.dbias = mptr<float>(dba);
    simt_bwd_kv_kernel<<<static_cast<unsigned>(work->col_items), kSimtThreads, 0, st>>>(a);
    TG_CUDA_CHECK_LAST();
    simt_bwd_q_kernel<<<static_cast<unsigned>(work->row_items), kSimtThreads, 0, st>>>(a);
    TG_CUDA_CHECK_LAST();
  } else {
    // the Hopper kv pass takes query tiles of 64 with or without the general transform
    const int kv_bm = wgmma_kv ? bwd_kv_bm(false) : bwd_kv_bm(general);
    WorkPtr kv_work;
    auto kv_full = [&] {
      if (!kv_work) kv_work = device_work(p, kv_bm, kBwdKvBN, true, dev);
      return kv_work;
    };
    bool narrow = false;
    // BwdWarps::Lists (D 64's default) with plain scores: the producer where its lists say it
    // pays, else the uniform kernel on 64-key tiles (as Uniform wherever this is not asked;
    // Lists is Producer at D 128)
    const bool by_lists = wgmma_kv && p.d == 64 && p.dv == 64 && !general && !plain_drop &&
                          bwd_warps(64) == BwdWarps::Lists && tile_height() == TileHeight::Auto;
    bool lists_producer = false;
    if (by_lists) {
      auto half = device_work(p, kv_bm, kBwdKvBNNarrow, true, dev);
      const WorkPtr wide = kv_full();
      lists_producer =
          producer_pays_at_d64(wide->col_entries.numel(), half->col_entries.numel(), wide->pattern_checked);
      if (!lists_producer) {
        kv_work = std::move(half);
        narrow = true;
      }
    } else if (p.d == p.dv) {  // the 64-key instantiations exist for D = Dv
      // The Hopper kv pass at D 64 without the general transform runs three 64-key CTAs an
      // SM (12 warps, against 8 in one 128-key CTA): 10-15% faster on dense, causal, window
      // and variable patterns alike, although each query tile is loaded twice as often.
      // (With the producer warpgroup, 64-key tiles only where they save work.)
      const BwdWarps w64 = bwd_warps(64);
      const bool always = wgmma_kv && p.d == 64 && (!general || plain_drop) &&
                          (plain_drop || w64 == BwdWarps::Uniform || w64 == BwdWarps::Lists);
      if (auto half = half_height_work(p, kv_full, false, kv_bm, dev, always)) {
        kv_work = std::move(half);
        narrow = true;
      }
    }
    if (!kv_work) kv_full();
    if (narrow) note_launch(Path::NarrowKv);
    if (atomic && !dq_zeroed) TG_CUDA_CHECK(cudaMemsetAsync(dq_acc.data_ptr(), 0, dq_acc.nbytes(), st));
    auto run = [&](auto tag) {
      using T = decltype(tag);
      BwdArgs<T> a;
      a.p = make_params(p, *kv_work, dev);
      a.cols = cols_of(*kv_work);
      a.q = cptr<T>(qa);
      a.k = cptr<T>(ka);
      a.v = cptr<T>(va);
      a.dout = cptr<T>(doa);
      a.lse = cptr<float>(lse);
      a.delta = cptr<float>(delta);
      a.dq_acc = mptr<float>(dq_acc);
      a.dq = mptr<T>(dqa);
      a.dk = mptr<T>(dka);
      a.dv = mptr<T>(dva);
      a.dbias = mptr<T>(dba);
      a.atomic_dq = atomic;
      if (wgmma_kv) {
        note_launch(Path::WgmmaBwd);
        // dropout's decisions: the forward's, else drawn ahead here for this pass alone
        Tensor drawn;
        if (a.p.drop_groups && keep.defined()) {
          a.p.keep = static_cast<std::uint32_t*>(keep.data_ptr());
          a.p.keep_qt = static_cast<int>(keep.size(1));
          a.p.keep_kc = static_cast<int>(keep.size(2));
          note_launch(Path::DropoutRead);
        } else if (a.p.drop_groups) {
          drawn = draw_keep_units(p, a.p, *device_work(p, 64, kFwdBN, false, dev), 64, dev, st);
        }
        const auto* ldp = static_cast<const float2*>(ld.data_ptr());
        const int pad = static_cast<int>(sq_pad);
        auto launch = [&](auto D) {
          constexpr int d = decltype(D)::value;
          // the producer warpgroup (128-key tiles, plain scores without dropout; the pipelined
          // step, dQ by columns at D 128) before dQ by columns without it
          const bool full_plain = !narrow && !general && !plain_drop;
          const bool cols = full_plain && d == 128 && bwd_dq() == BwdDq::Columns;
          // dQ staged in the step's stage (D 128, 64-key tiles, plain scores without dropout, the
          // pipelined step; dropout keeps the tile of its own: not yet run on a GPU staged)
          const bool in_stage = d == 128 && narrow && !general && bwd_step() == BwdStep::Pipelined &&
                                bwd_dq_staging() == BwdDqStaging::Stage;
          auto producer = [&] {
            const BwdWarps w = bwd_warps(d);
            return w == BwdWarps::Producer || (w == BwdWarps::Lists && (d == 128 || lists_producer));
          };
          if (full_plain && producer()) {
            note_launch(Path::WgmmaBwdProducer);
            // dQ in turns with K and V in registers (the D 64 defaults)
            const bool regs = d == 64 && bwd_operands() == BwdOperands::Registers;
            const bool turns = regs && producer_dq() == ProducerDq::Turns;
            if (regs) note_launch(Path::WgmmaBwdRegKV);
            if (turns) note_launch(Path::ProducerDqTurns);
            auto go = [&](auto kernel) { kernel(a, ldp, pad, kv_work->col_items, st, pdl); };
            constexpr int bn = kBwdKvBN;
            if constexpr (d == 128) {
              go(launch_bwd_kv_wgmma<T, 128, false, bn, true, true, false, true>);
            } else if (turns) {
              go(launch_bwd_kv_wgmma<T, 64, false, bn, false, true, false, true, true, true>);
            } else if (regs) {
              go(launch_bwd_kv_wgmma<T, 64, false, bn, false, true, false, true, true>);
            } else {
              go(launch_bwd_kv_wgmma<T, 64, false, bn, false, true, false, true>);
            }
          } else if (plain_drop) {  // the pipelined step with dropout
            note_launch(Path::DropoutPlainBwd);
            (narrow ? launch_bwd_kv_wgmma<T, d, false, kBwdKvBNNarrow, false, true, true>
                    : launch_bwd_kv_wgmma<T, d, false, kBwdKvBN, false, true, true>)(a, ldp, pad, kv_work->col_items,
                                                                                     st, pdl);
          } else if (cols) {  // on either step (counted as dQ by columns only)
            note_launch(Path::WgmmaBwdDqColumns);
            (bwd_step() == BwdStep::Pipelined
                 ? launch_bwd_kv_wgmma<T, 128, false, kBwdKvBN, true, true>
                 : launch_bwd_kv_wgmma<T, 128, false, kBwdKvBN, true, false>)(a, ldp, pad, kv_work->col_items, st, pdl);
          } else if (in_stage) {
            note_launch(Path::WgmmaBwdPipelined);
            note_launch(Path::WgmmaBwdDqInStage);
            launch_bwd_kv_wgmma<T, 128, false, kBwdKvBNNarrow, false, true, false, false, false, false, true>(
                a, ldp, pad, kv_work->col_items, st, pdl);
          } else if (!general && bwd_step() == BwdStep::Pipelined) {
            note_launch(Path::WgmmaBwdPipelined);
            (narrow
                 ? launch_bwd_kv_wgmma<T, d, false, kBwdKvBNNarrow, false, true>
                 : launch_bwd_kv_wgmma<T, d, false, kBwdKvBN, false, true>)(a, ldp, pad, kv_work->col_items, st, pdl);
          } else if (narrow) {
            (general ? launch_bwd_kv_wgmma<T, d, true, kBwdKvBNNarrow, false, false>
                     : launch_bwd_kv_wgmma<T, d, false, kBwdKvBNNarrow, false, false>)(a, ldp, pad, kv_work->col_items,
                                                                                       st, pdl);
          } else {
            (general
                 ? launch_bwd_kv_wgmma<T, d, true, kBwdKvBN, false, false>
                 : launch_bwd_kv_wgmma<T, d, false, kBwdKvBN, false, false>)(a, ldp, pad, kv_work->col_items, st, pdl);
          }
        };
        if (p.d == 64) launch(std::integral_constant<int, 64>{});
        else launch(std::integral_constant<int, 128>{});
      } else {
        with_dims(p.d, p.dv, general, [&](auto D, auto DV, auto G) {
          constexpr int d = decltype(D)::value, dv = decltype(DV)::value;
          constexpr bool g = decltype(G)::value;
          if constexpr (d == dv) {
            if (narrow) {
              launch_bwd_kv_narrow<T, d, g>(a, kv_work->col_items, st);
              return;
            }
          }
          launch_bwd_kv<T, d, dv, g>(a, kv_work->col_items, st);
        });
      }
      if (atomic) {
        // eight elements a thread: the tensor-core head dims (32, 64, 128; check_head_dims) make
        // the count a multiple of 8; the workspace is a fresh allocation and dqa 16-byte aligned
        const std::int64_t n8 = dq_acc.numel() / 8;
        const auto grid = static_cast<unsigned>(std::min<std::int64_t>((n8 + kAuxThreads - 1) / kAuxThreads, 65535));
        gpu::launch_pdl(pdl, dq_convert_vec_kernel<T>, dim3(grid), dim3(kAuxThreads), 0, st, dev.index,
                        cptr<float>(dq_acc), mptr<T>(dqa), n8, static_cast<float>(p.scale));
      } else {
        note_launch(Path::DqPass);
        const auto q_work = device_work(p, kBwdQBM, kBwdQBN, false, dev);
        a.p = make_params(p, *q_work, dev);
        a.rows = rows_of(*q_work);
        with_dims(p.d, p.dv, general, [&](auto D, auto DV, auto G) {
          launch_bwd_q<T, decltype(D)::value, decltype(DV)::value, decltype(G)::value>(a, q_work->row_items, st);
        });
      }
    };
    if (q.dtype() == DType::bf16) run(bfloat16{});
    else run(half{});
  }

  if (dsinks.defined()) {
    dsinks_kernel<<<static_cast<unsigned>(p.heads), kAuxThreads, 0, st>>>(
        cptr<float>(lse), cptr<float>(delta), cptr<float>(p.sinks), mptr<float>(dsinks), static_cast<int>(p.batch),
        static_cast<int>(p.heads), static_cast<int>(p.sq));
    TG_CUDA_CHECK_LAST();
  }
  finish_output(dq, dqa);
  finish_output(dk, dka);
  finish_output(dv, dva);
  finish_output(dbias, dba);
}

}  // namespace
}  // namespace tg::ops::attn

namespace tg::ops {
TG_REGISTER_KERNEL(attention_fwd_kernel, CUDA, attn::attention_fwd_cuda);
TG_REGISTER_KERNEL(attention_bwd_kernel, CUDA, attn::attention_bwd_cuda);
}  // namespace tg::ops
