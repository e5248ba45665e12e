// Tensor-core block-sparse matmul for half operands, in its own
// translation unit so that the per-dtype instantiations compile in parallel.
#include "ops/sparse_matmul/mma_kernel.cuh"

namespace tg::ops::spmm {
template void launch_mma<tg::half>(const KernelArgs&, int, cudaStream_t);
template void launch_mma_grouped<tg::half>(const KernelArgs&, int, int, int, cudaStream_t);
}  // namespace tg::ops::spmm
