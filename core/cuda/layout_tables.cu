// Layout index tables built on a CUDA device (the CPU builds them with plain loops in
// core/layout.cpp; both give the same values).
//
// Only the mask bytes [B, Mb, Nb] travel to the device. Then:
//  - an exclusive scan of the mask in row-major order gives every block its compressed
//    index; its values at the start of each block-row are the CSR row_offsets, and a
//    kernel writes block_coords at the active positions and -1 at the others;
//  - an exclusive scan of the mask in transposed order, (b, c, r), gives every block its
//    position in the CSC order: at the start of each block-column these are col_offsets,
//    and at the active positions col_blocks[position] = compressed index.
// Scans are CUB device-wide scans with 64-bit offsets; all indices are i64.
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <algorithm>
#include <cstdint>
#include <cub/cub.cuh>
#include <limits>

#include "core/layout_tables.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg {
namespace {

constexpr int kThreads = 256;

// CUB's device scans take a 64-bit item count (NumItemsT, 64-bit offsets) in CCCL 3, the
// version CUDA 13 ships; older releases may narrow it to int. Masks of more blocks than
// an int counts are refused there rather than scanned wrong.
#if CUB_VERSION >= 300000
constexpr std::int64_t kMaxScanItems = std::numeric_limits<std::int64_t>::max();
#else
constexpr std::int64_t kMaxScanItems = std::numeric_limits<int>::max();
#endif

unsigned grid_for(std::int64_t items) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((items + kThreads - 1) / kThreads, 1, 1 << 16));
}

// 1 where the mask at row-major position t is set.
struct RowMajorFlag {
  const std::uint8_t* m;
  __host__ __device__ std::int64_t operator()(std::int64_t t) const { return m[t] != 0 ? 1 : 0; }
};

// 1 where the mask at transposed position t = (b * Nb + c) * Mb + r is set.
struct TransposedFlag {
  const std::uint8_t* m;
  std::int64_t Mb, Nb;
  __host__ __device__ std::int64_t operator()(std::int64_t t) const {
    const std::int64_t r = t % Mb, bc = t / Mb;
    return m[(bc / Nb * Mb + r) * Nb + bc % Nb] != 0 ? 1 : 0;
  }
};

// offsets[q] = pos[q * stride] for the `groups` groups of `stride` positions each, and the
// total n after the last one (also for groups with stride 0, which hold nothing).
__global__ void offsets_kernel(std::int64_t* __restrict__ offsets, const std::int64_t* __restrict__ pos,
                               std::int64_t groups, std::int64_t stride, std::int64_t total, std::int64_t n) {
  for (std::int64_t q = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q <= groups;
       q += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    offsets[q] = q * stride < total ? pos[q * stride] : n;
  }
}

// index holds the row-major scan; turns it into block_index (-1 where inactive) and
// writes block_coords for the active blocks.
__global__ void coords_kernel(const std::uint8_t* __restrict__ m, std::int64_t* __restrict__ index,
                              std::int64_t* __restrict__ coords, std::int64_t total, std::int64_t Mb, std::int64_t Nb) {
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (m[t] != 0) {
      const std::int64_t k = index[t], c = t % Nb, br = t / Nb;
      coords[3 * k] = br / Mb;
      coords[3 * k + 1] = br % Mb;
      coords[3 * k + 2] = c;
    } else {
      index[t] = -1;
    }
  }
}

// col_blocks[pos_t[t]] = block_index at the block of transposed position t, for active ones.
__global__ void csc_kernel(const std::uint8_t* __restrict__ m, const std::int64_t* __restrict__ index,
                           const std::int64_t* __restrict__ pos_t, std::int64_t* __restrict__ col_blocks,
                           std::int64_t total, std::int64_t Mb, std::int64_t Nb) {
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = t % Mb, bc = t / Mb;
    const std::int64_t flat = (bc / Nb * Mb + r) * Nb + bc % Nb;
    if (m[flat] != 0) col_blocks[pos_t[t]] = index[flat];
  }
}

LayoutTables build_cuda(const Layout& l, Device device) {
  tg::cuda::DeviceGuard guard(device.index);
  cudaStream_t st = tg::cuda::current_cuda_stream(device.index);
  const std::int64_t B = l.batch(), Mb = l.block_rows(), Nb = l.block_cols(), n = l.n_blocks();
  const std::int64_t total = B * Mb * Nb;
  if (total > kMaxScanItems) {
    TG_THROW(ShapeError, "Layout::tables(", device, "): a mask of at most ", kMaxScanItems,
             " blocks with this CUB version (CUDA 13 lifts the limit), got ", total, " = [", B, ", ", Mb, ", ", Nb, "]");
  }
  const TensorOptions i64{.dtype = DType::i64, .device = device};
  LayoutTables t;
  t.block_coords = empty({n, 3}, i64);
  t.block_index = empty({B, Mb, Nb}, i64);
  t.row_offsets = empty({B * Mb + 1}, i64);
  t.col_offsets = empty({B * Nb + 1}, i64);
  t.col_blocks = empty({n}, i64);
  const Tensor mask = l.mask().to(device);  // bool: one byte per block
  const Tensor pos_t = empty({total}, i64);
  const auto* m = static_cast<const std::uint8_t*>(mask.data_ptr());
  auto* index = t.block_index.data<std::int64_t>();
  auto* pt = pos_t.data<std::int64_t>();
  if (total > 0) {
    const auto count = thrust::make_counting_iterator<std::int64_t>(0);
    const auto row_major = thrust::make_transform_iterator(count, RowMajorFlag{m});
    const auto transposed = thrust::make_transform_iterator(count, TransposedFlag{m, Mb, Nb});
    std::size_t bytes_a = 0, bytes_b = 0;
    TG_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes_a, row_major, index, total, st));
    TG_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes_b, transposed, pt, total, st));
    std::size_t bytes = std::max(bytes_a, bytes_b);
    const Tensor tmp = empty({std::max<std::int64_t>(1, static_cast<std::int64_t>((bytes + 7) / 8))}, i64);
    TG_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.data_ptr(), bytes, row_major, index, total, st));
    bytes = std::max(bytes_a, bytes_b);
    TG_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.data_ptr(), bytes, transposed, pt, total, st));
  }
  // the offsets read the scans before coords_kernel overwrites inactive entries with -1
  offsets_kernel<<<grid_for(B * Mb + 1), kThreads, 0, st>>>(t.row_offsets.data<std::int64_t>(), index, B * Mb, Nb,
                                                            total, n);
  TG_CUDA_CHECK_LAST();
  offsets_kernel<<<grid_for(B * Nb + 1), kThreads, 0, st>>>(t.col_offsets.data<std::int64_t>(), pt, B * Nb, Mb, total,
                                                            n);
  TG_CUDA_CHECK_LAST();
  if (total > 0) {
    coords_kernel<<<grid_for(total), kThreads, 0, st>>>(m, index, t.block_coords.data<std::int64_t>(), total, Mb, Nb);
    TG_CUDA_CHECK_LAST();
    csc_kernel<<<grid_for(total), kThreads, 0, st>>>(m, index, pt, t.col_blocks.data<std::int64_t>(), total, Mb, Nb);
    TG_CUDA_CHECK_LAST();
  }
  return t;
}

const bool registered [[maybe_unused]] = (register_layout_tables_builder(DeviceType::CUDA, &build_cuda), true);

}  // namespace
}  // namespace tg
