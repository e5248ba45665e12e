// Instantiations of the Hopper (sm_90a) kv pass of the attention backward
// (cuda/wg_bwd.cuh): bf16 and f16, D = Dv = 64, with and without the general transform,
// key tiles of 128 and 64. Built for sm_90a on top of the library's targets (CMakeLists.txt).
#include "ops/attention/cuda/tc_launch.cuh"
#include "ops/attention/cuda/wg_bwd.cuh"

namespace tg::ops::attn {

template <typename T, bool kGeneral, int BN>
void launch_bwd_kv_wgmma(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = WgBwdConfig<BN>;
  auto* kernel = wg_bwd_kv_kernel<T, kGeneral, BN>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

#define TG_WG_BWD(T, G)                                                                                  \
  template void launch_bwd_kv_wgmma<T, G, kBwdKvBN>(const BwdArgs<T>&, std::int64_t, cudaStream_t); \
  template void launch_bwd_kv_wgmma<T, G, kBwdKvBNNarrow>(const BwdArgs<T>&, std::int64_t, cudaStream_t);
TG_WG_BWD(bfloat16, false)
TG_WG_BWD(bfloat16, true)
TG_WG_BWD(half, false)
TG_WG_BWD(half, true)
#undef TG_WG_BWD

}  // namespace tg::ops::attn
