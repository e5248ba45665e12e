// Instantiations of the Hopper (sm_90a) attention forward (cuda/wg_fwd.cuh): bf16 and f16,
// D = Dv of 64 and 128, with and without the general transform. Built for sm_90a on top
// of the library's targets (CMakeLists.txt).
#include "ops/attention/cuda/tc_launch.cuh"
#include "ops/attention/cuda/wg_fwd.cuh"

namespace tg::ops::attn {

template <typename T, int D, bool kGeneral>
void launch_fwd_wgmma(const FwdArgs<T>& a, std::int64_t items, cudaStream_t st) {
  using Cfg = WgFwdConfig<D>;
  auto* kernel = wg_fwd_kernel<T, D, kGeneral>;
  allow_smem(kernel, Cfg::kSmem);
  kernel<<<static_cast<unsigned>(items), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  TG_CUDA_CHECK_LAST();
}

template void launch_fwd_wgmma<bfloat16, 64, false>(const FwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<bfloat16, 64, true>(const FwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<bfloat16, 128, false>(const FwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<bfloat16, 128, true>(const FwdArgs<bfloat16>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<half, 64, false>(const FwdArgs<half>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<half, 64, true>(const FwdArgs<half>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<half, 128, false>(const FwdArgs<half>&, std::int64_t, cudaStream_t);
template void launch_fwd_wgmma<half, 128, true>(const FwdArgs<half>&, std::int64_t, cudaStream_t);

}  // namespace tg::ops::attn
