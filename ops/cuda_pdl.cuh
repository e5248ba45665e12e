// Programmatic dependent launch (sm_90+): a kernel launched with programmatic stream
// serialisation may be scheduled while the previous kernel of its stream is still running,
// once every CTA of that kernel has called pdl_allow() (or exited). Such a kernel calls
// pdl_wait() before it touches anything the previous kernel writes, or any memory it could
// share with that kernel through the allocator; pdl_wait() returns once the previous grid has
// completed and its writes are visible. Every CTA must reach pdl_wait(), so that the kernel
// never completes before the one it follows (later work in the stream waits for it alone).
// Without the launch attribute, or before sm_90, both calls cost nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops::gpu {

/// Waits until the previous kernel of the stream has completed and its writes are visible.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Lets the next kernel of the stream (if launched programmatically) be scheduled early; it
/// still waits for this kernel's completion in its own pdl_wait().
__device__ __forceinline__ void pdl_allow() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Launches `kernel` on `stream`, with programmatic stream serialisation when `programmatic`
/// and the device has it (compute capability 9+), else as a plain launch. The kernel must
/// follow pdl_wait()'s rule. Throws tg::CudaError when the launch fails.
template <typename... Params, typename... Args>
void launch_pdl(bool programmatic, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                cudaStream_t stream, int device, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  if (programmatic && tg::cuda::compute_capability_major(device) >= 9) {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  TG_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

}  // namespace tg::ops::gpu
