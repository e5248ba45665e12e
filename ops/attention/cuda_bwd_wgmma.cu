// Instantiations of the Hopper (sm_90a) kv pass of the attention backward
// (cuda/wg_bwd.cuh): bf16 and f16, D = Dv = 64 and 128, with and without the general
// transform, key tiles of 128 and 64; with plain scores also the pipelined step (both key
// tiles, with and without dropout), at D 128 on 128-key tiles dQ split by columns (on both
// steps), and on 128-key tiles the producer warpgroup (dQ by columns at D 128, by keys at D 64,
// there also with K and V as register operands and with dQ in turns); at D 128 on 64-key tiles
// the pipelined step with dQ staged in the step's stage.
// Built for sm_90a on top of the library's targets (CMakeLists.txt).
#include <type_traits>

#include "ops/attention/cuda/tc_launch.cuh"
#include "ops/attention/cuda/wg_bwd.cuh"
#include "ops/cuda_pdl.cuh"
#include "runtime/cuda/tensor_map.h"

namespace tg::ops::attn {

template <typename T, int D, bool kGeneral, int BN, bool kDqCols, bool kPipe, bool kDrop, bool kProducer, bool kRegKV,
          bool kTurns, bool kDqInStage>
void launch_bwd_kv_wgmma(const BwdArgs<T>& a, const float2* ld, int sq_pad, std::int64_t items, cudaStream_t st,
                         bool programmatic) {
  using Cfg = WgBwdConfig<D, BN, kGeneral, kDqCols, kProducer, kRegKV, kTurns, kDqInStage>;
  auto* kernel = wg_bwd_kv_kernel<T, D, kGeneral, BN, kDqCols, kPipe, kDrop, kProducer, kRegKV, kTurns, kDqInStage>;
  allow_smem(kernel, Cfg::kSmem);
  WgBwdArgs<T> w;
  w.a = a;
  using tg::cuda::TmaElem;
  constexpr TmaElem elem = std::is_same_v<T, bfloat16> ? TmaElem::bf16 : TmaElem::f16;
  const auto planes = static_cast<std::uint64_t>(a.p.bhq), rows = static_cast<std::uint64_t>(a.p.sq);
  w.map_q = tg::cuda::tensor_map_3d(a.q, elem, planes, rows, Cfg::D, 64, Cfg::BM);
  w.map_do = tg::cuda::tensor_map_3d(a.dout, elem, planes, rows, Cfg::DV, 64, Cfg::BM);
  w.map_dq = tg::cuda::tensor_map_3d(a.dq_acc, TmaElem::f32, planes, rows, Cfg::D, 32, Cfg::BM);
  w.ld = ld;
  w.sq_pad = sq_pad;
  int device = 0;
  if (programmatic) TG_CUDA_CHECK(cudaGetDevice(&device));
  gpu::launch_pdl(programmatic, kernel, dim3(static_cast<unsigned>(items)), dim3(Cfg::kThreads), Cfg::kSmem, st, device,
                  w);
}

#define TG_WG_BWD_ONE_STAGE(T, D, G, BN, COLS, PIPE, DROP, PROD, REGS, TURNS, STAGE)          \
  template void launch_bwd_kv_wgmma<T, D, G, BN, COLS, PIPE, DROP, PROD, REGS, TURNS, STAGE>( \
      const BwdArgs<T>&, const float2*, int, std::int64_t, cudaStream_t, bool);
#define TG_WG_BWD_ONE_TURNS(T, D, G, BN, COLS, PIPE, DROP, PROD, REGS, TURNS) \
  TG_WG_BWD_ONE_STAGE(T, D, G, BN, COLS, PIPE, DROP, PROD, REGS, TURNS, false)
#define TG_WG_BWD_ONE_REGS(T, D, G, BN, COLS, PIPE, DROP, PROD, REGS) \
  TG_WG_BWD_ONE_TURNS(T, D, G, BN, COLS, PIPE, DROP, PROD, REGS, false)
#define TG_WG_BWD_ONE(T, D, G, BN, COLS, PIPE, DROP, PROD) \
  TG_WG_BWD_ONE_REGS(T, D, G, BN, COLS, PIPE, DROP, PROD, false)
#define TG_WG_BWD(T, D)                                                  \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBN, false, false, false, false)       \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBNNarrow, false, false, false, false) \
  TG_WG_BWD_ONE(T, D, true, kBwdKvBN, false, false, false, false)        \
  TG_WG_BWD_ONE(T, D, true, kBwdKvBNNarrow, false, false, false, false)  \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBN, false, true, false, false)        \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBNNarrow, false, true, false, false)  \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBN, false, true, true, false)         \
  TG_WG_BWD_ONE(T, D, false, kBwdKvBNNarrow, false, true, true, false)
TG_WG_BWD(bfloat16, 64)
TG_WG_BWD(half, 64)
TG_WG_BWD(bfloat16, 128)
TG_WG_BWD(half, 128)
// dQ by columns: D 128, 128-key tiles, plain scores, on both steps
TG_WG_BWD_ONE(bfloat16, 128, false, kBwdKvBN, true, false, false, false)
TG_WG_BWD_ONE(half, 128, false, kBwdKvBN, true, false, false, false)
TG_WG_BWD_ONE(bfloat16, 128, false, kBwdKvBN, true, true, false, false)
TG_WG_BWD_ONE(half, 128, false, kBwdKvBN, true, true, false, false)
// the producer warpgroup: 128-key tiles, plain scores, the pipelined step
TG_WG_BWD_ONE(bfloat16, 128, false, kBwdKvBN, true, true, false, true)
TG_WG_BWD_ONE(half, 128, false, kBwdKvBN, true, true, false, true)
TG_WG_BWD_ONE(bfloat16, 64, false, kBwdKvBN, false, true, false, true)
TG_WG_BWD_ONE(half, 64, false, kBwdKvBN, false, true, false, true)
// the producer at D 64 with K and V as register operands
TG_WG_BWD_ONE_REGS(bfloat16, 64, false, kBwdKvBN, false, true, false, true, true)
TG_WG_BWD_ONE_REGS(half, 64, false, kBwdKvBN, false, true, false, true, true)
// ... and with dQ in turns (K and V in registers, the default operands)
TG_WG_BWD_ONE_TURNS(bfloat16, 64, false, kBwdKvBN, false, true, false, true, true, true)
TG_WG_BWD_ONE_TURNS(half, 64, false, kBwdKvBN, false, true, false, true, true, true)
// D 128 on 64-key tiles with dQ staged in the step's stage: the pipelined step, plain scores
TG_WG_BWD_ONE_STAGE(bfloat16, 128, false, kBwdKvBNNarrow, false, true, false, false, false, false, true)
TG_WG_BWD_ONE_STAGE(half, 128, false, kBwdKvBNNarrow, false, true, false, false, false, false, true)
#undef TG_WG_BWD_ONE_STAGE
#undef TG_WG_BWD_ONE_TURNS
#undef TG_WG_BWD
#undef TG_WG_BWD_ONE
#undef TG_WG_BWD_ONE_REGS

}  // namespace tg::ops::attn
