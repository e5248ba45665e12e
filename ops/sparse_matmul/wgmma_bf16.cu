// Hopper (sm_90a) wgmma block-sparse matmul for bfloat16 operands (the cp.async per-block kernel
// and the warp-specialised TMA one), in its own translation unit, the only kind built
// with the sm_90a target besides the default architectures.
#include "ops/sparse_matmul/wgmma_kernel.cuh"
#include "ops/sparse_matmul/wgmma_tma_kernel.cuh"

namespace tg::ops::spmm {
template void launch_wgmma<tg::bfloat16>(const KernelArgs&, int, cudaStream_t);
template void launch_wgmma_tma<tg::bfloat16>(const KernelArgs&, int, int, cudaStream_t);
}  // namespace tg::ops::spmm
