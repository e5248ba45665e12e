// Instantiations of the Hopper (sm_90a) kv pass of the attention backward
// (cuda/wg_bwd.cuh): bf16 and f16, D = Dv = 64, with and without the general transform. Built for sm_90a on top of the library's
// targets (CMakeLists.txt).
#include "ops/attention/cuda/tc_launch.cuh"
#include "ops/attention/cuda/wg_bwd.cuh"

namespace tg::ops::attn {

template <typename T, bool kGeneral>
void launch_bwd_kv_wgmma(const BwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  auto* kernel = wg_bwd_kv_kernel<T, kGeneral>;
  allow_smem(kernel, WgBwdConfig::kSmem);
  kernel<<<static_cast<unsigned>(items), WgBwdConfig::kThreads, WgBwdConfig::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

template void launch_bwd_kv_wgmma<bfloat16, false>(const BwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_bwd_kv_wgmma<bfloat16, true>(const BwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_bwd_kv_wgmma<half, false>(const BwdArgs<half>&, std::int64_t, cudaStream_t);
template void launch_bwd_kv_wgmma<half, true>(const BwdArgs<half>&, std::int64_t, cudaStream_t);

}  // namespace tg::ops::attn
