// Hopper (sm_90a) TMA / wgmma block-sparse matmul for float16 operands, in its own
// translation unit, the only kind built with the sm_90a target besides the default
// architectures.
#include "ops/sparse_matmul/wgmma_tma_kernel.cuh"

namespace tg::ops::spmm {
template void launch_wgmma_tma<tg::half>(const KernelArgs&, int, int, int, cudaStream_t);
}  // namespace tg::ops::spmm
