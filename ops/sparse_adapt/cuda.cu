// CUDA kernels of adapt_layout: one thread per aligned run of up to 16 bytes of an output
// block row; a run never straddles a source block, so it is one lookup and one load.
#include <cstdint>

#include "ops/sparse_adapt/kernels.h"
#include "ops/sparse_move/cuda_util.cuh"
#include "runtime/cuda/cuda_backend.h"

namespace tg::ops {
namespace {

using namespace smove;

// Unit g = V elements of output block k = g >> shift at row i, columns j0 .. j0+V-1.
template <typename U>
__global__ void adapt_k(const U* __restrict__ src, U* __restrict__ out, const std::int64_t* __restrict__ coords,
                        const std::int64_t* __restrict__ sidx, std::int64_t sM, std::int64_t sN, std::int64_t sMb,
                        std::int64_t sNb, int lbo, int lbi, int lv, std::int64_t total, int shift) {
  const std::int64_t umask = (std::int64_t(1) << shift) - 1, omask = (std::int64_t(1) << lbo) - 1,
                     imask = (std::int64_t(1) << lbi) - 1;
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t k = g >> shift, e0 = (g & umask) << lv;
    const std::int64_t r = (coords[3 * k + 1] << lbo) + (e0 >> lbo), c = (coords[3 * k + 2] << lbo) + (e0 & omask);
    std::int64_t s = -1;
    if (r < sM && c < sN) s = sidx[(coords[3 * k] * sMb + (r >> lbi)) * sNb + (c >> lbi)];
    // In units: element offset (s*bi + r%bi)*bi + c%bi, divided by V (c%bi is a multiple of V).
    out[g] = s >= 0 ? src[(((s << lbi) + (r & imask)) << (lbi - lv)) + ((c & imask) >> lv)] : zero_chunk<U>();
  }
}

void adapt_cuda(const Tensor& src, const Layout& sl, const Layout& ol, Tensor& out) {
  const std::int64_t n = ol.n_blocks(), bo = ol.block_size(), bi = sl.block_size();
  if (n == 0) return;
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(src.dtype()));
  // Run length: a power of two of elements dividing both block sizes, at most 16 bytes.
  const int w = widest_unit(std::min(bo, bi) * es, {src.data_ptr(), out.data_ptr()});
  const int lv = log2_exact(std::max<std::int64_t>(1, w / es));
  const int width = static_cast<int>(es) << lv;
  const int shift = log2_exact(bo * bo) - lv;
  const std::int64_t total = n << shift;
  const int dev = src.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const std::int64_t* coords = ol.tables(src.device()).block_coords.data<std::int64_t>();
  const std::int64_t* sidx = sl.tables(src.device()).block_index.data<std::int64_t>();
  dispatch_width(width, [&](auto W) {
    using U = Chunk<decltype(W)::value>;
    adapt_k<U><<<grid_for(total, dev), kThreads, 0, st>>>(
        static_cast<const U*>(src.data_ptr()), static_cast<U*>(out.data_ptr()), coords, sidx, sl.rows(), sl.cols(),
        sl.block_rows(), sl.block_cols(), log2_exact(bo), log2_exact(bi), lv, total, shift);
    TG_CUDA_CHECK_LAST();
  });
}

template <typename T>
__device__ __forceinline__ bool nonzero(T v) {
  if constexpr (std::is_same_v<T, bool>) return v;
  else if constexpr (std::is_integral_v<T>) return v != 0;
  else if constexpr (std::is_same_v<T, double>) return v != 0.0;  // NaN != 0
  else return static_cast<float>(v) != 0.0f;
}

// One CUDA block per source block (grid-stride): any non-zero element.
template <typename T>
__global__ void nonzero_blocks_k(const T* __restrict__ src, std::int64_t n, std::int64_t bb, bool* __restrict__ flags) {
  for (std::int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    bool any = false;
    for (std::int64_t e = threadIdx.x; e < bb && !any; e += blockDim.x) any = nonzero(src[k * bb + e]);
    any = __syncthreads_or(any);
    if (threadIdx.x == 0) flags[k] = any;
  }
}

void nonzero_blocks_cuda(const Tensor& src, Tensor& flags) {
  const std::int64_t n = src.size(0), bb = src.size(1) * src.size(2);
  if (n == 0) return;
  const int dev = src.device().index;
  cudaStream_t st = tg::cuda::current_cuda_stream(dev);
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(n, std::int64_t(cuda::multiprocessor_count(dev)) * 16));
  const unsigned threads = static_cast<unsigned>(std::min<std::int64_t>(kThreads, std::max<std::int64_t>(32, bb)));
  TG_DISPATCH_ALL(src.dtype(), "adapted_layout", [&] {
    nonzero_blocks_k<scalar_t><<<grid, threads, 0, st>>>(src.data<scalar_t>(), n, bb, flags.data<bool>());
    TG_CUDA_CHECK_LAST();
  });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_adapt_kernel, CUDA, &adapt_cuda);
TG_REGISTER_KERNEL(sparse_nonzero_blocks_kernel, CUDA, &nonzero_blocks_cuda);

}  // namespace tg::ops
