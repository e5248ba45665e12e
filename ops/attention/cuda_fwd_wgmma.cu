// Instantiations of the Hopper (sm_90a) attention forward (cuda/wg_fwd.cuh): bf16 and f16,
// D = Dv of 64 and 128, with and without the general transform, query tiles of 64 and 128;
// without the general transform also the overlapped schedule, key tiles of 128 (128-row
// tiles) and, at D 64, 192-row tiles with them; plain scores with dropout, and plain scores
// bounded by row sums (both on the serial schedule, 64-key tiles). Built for sm_90a on top of the library's targets
// (CMakeLists.txt).
#include <type_traits>

#include "ops/attention/cuda/tc_launch.cuh"
#include "ops/attention/cuda/wg_fwd.cuh"
#include "runtime/cuda/tensor_map.h"

namespace tg::ops::attn {

template <typename T, int D, bool kGeneral, int BM, bool kOverlap, int BN, bool kDrop, bool kSums>
void launch_fwd_wgmma(const FwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = WgFwdConfig<D, BM, kOverlap, BN>;
  auto* kernel = wg_fwd_kernel<T, D, kGeneral, BM, kOverlap, BN, kDrop, kSums>;
  allow_smem(kernel, Cfg::kSmem);
  WgFwdArgs<T> w;
  w.a = a;
  using tg::cuda::TmaElem;
  constexpr TmaElem elem = std::is_same_v<T, bfloat16> ? TmaElem::bf16 : TmaElem::f16;
  const auto bhq = static_cast<std::uint64_t>(a.p.bhq), bhkv = static_cast<std::uint64_t>(a.p.bhkv);
  w.map_q = tg::cuda::tensor_map_3d(a.q, elem, bhq, static_cast<std::uint64_t>(a.p.sq), D, 64, BM);
  w.map_k = tg::cuda::tensor_map_3d(a.k, elem, bhkv, static_cast<std::uint64_t>(a.p.sk), D, 64, Cfg::BN);
  w.map_v = tg::cuda::tensor_map_3d(a.v, elem, bhkv, static_cast<std::uint64_t>(a.p.sk), Cfg::DV, 64, Cfg::BN);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(w);
  TG_CUDA_CHECK_LAST();
}

// 64-key tiles at both query-tile heights (64, 128): G the general transform, O the overlapped
// schedule, DROP plain scores with dropout, SUMS plain scores bounded by row sums
#define TG_WG_FWD(T, D, G, O, DROP, SUMS)                                                                        \
  template void launch_fwd_wgmma<T, D, G, 64, O, 64, DROP, SUMS>(const FwdArgs<T>&, std::int64_t, cudaStream_t); \
  template void launch_fwd_wgmma<T, D, G, 128, O, 64, DROP, SUMS>(const FwdArgs<T>&, std::int64_t, cudaStream_t);
#define TG_WG_FWD_EACH(T, D)                  \
  TG_WG_FWD(T, D, false, false, false, false) \
  TG_WG_FWD(T, D, false, true, false, false)  \
  TG_WG_FWD(T, D, true, false, false, false)  \
  TG_WG_FWD(T, D, false, false, true, false)  \
  TG_WG_FWD(T, D, false, false, false, true)
TG_WG_FWD_EACH(bfloat16, 64)
TG_WG_FWD_EACH(bfloat16, 128)
TG_WG_FWD_EACH(half, 64)
TG_WG_FWD_EACH(half, 128)
#undef TG_WG_FWD_EACH
#undef TG_WG_FWD
// key tiles of 128: plain scores, 128-row tiles, both schedules
#define TG_WG_FWD_WIDE(T, D)                                                                                  \
  template void launch_fwd_wgmma<T, D, false, 128, false, 128, false, false>(const FwdArgs<T>&, std::int64_t, \
                                                                             cudaStream_t);                   \
  template void launch_fwd_wgmma<T, D, false, 128, true, 128, false, false>(const FwdArgs<T>&, std::int64_t,  \
                                                                            cudaStream_t);
// 192-row tiles of those at D 64
#define TG_WG_FWD_TALL(T)                                                                                      \
  template void launch_fwd_wgmma<T, 64, false, 192, false, 128, false, false>(const FwdArgs<T>&, std::int64_t, \
                                                                              cudaStream_t);                   \
  template void launch_fwd_wgmma<T, 64, false, 192, true, 128, false, false>(const FwdArgs<T>&, std::int64_t,  \
                                                                             cudaStream_t);
TG_WG_FWD_TALL(bfloat16)
TG_WG_FWD_TALL(half)
#undef TG_WG_FWD_TALL
TG_WG_FWD_WIDE(bfloat16, 64)
TG_WG_FWD_WIDE(bfloat16, 128)
TG_WG_FWD_WIDE(half, 64)
TG_WG_FWD_WIDE(half, 128)
#undef TG_WG_FWD_WIDE

}  // namespace tg::ops::attn
