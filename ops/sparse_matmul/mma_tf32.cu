// Tensor-core block-sparse matmul for float operands (TF32 mma, f32 accumulation), in its own
// translation unit so that the per-dtype instantiations compile in parallel.
#include "ops/sparse_matmul/mma_kernel.cuh"

namespace tg::ops::spmm {
template void launch_mma<float>(const KernelArgs&, int, cudaStream_t);
}  // namespace tg::ops::spmm
