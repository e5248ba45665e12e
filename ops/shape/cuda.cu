// CUDA kernels of the shape family: a vectorised strided row copy (cat, slice, slice
// backward), a vectorised 4-d strided copy (split_heads / merge_heads) and a shared-memory
// tiled transpose. All move raw words: dtype-agnostic.
#include <algorithm>
#include <cstdint>

#include "ops/shape/kernels.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

constexpr int kCopyThreads = 256;
constexpr std::int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

// Unit i of the flat [rows, units_per_row] index space moves one W-sized word. Index is
// 32-bit when the whole space fits, to keep the division cheap.
template <typename W, typename Index>
__global__ void copy_rows_kernel(const W* __restrict__ src, W* __restrict__ dst, Index total, Index units_per_row,
                                 Index src_pitch, Index dst_pitch) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const Index r = i / units_per_row;
    const Index c = i - r * units_per_row;
    dst[r * dst_pitch + c] = src[r * src_pitch + c];
  }
}

template <typename W>
void launch_copy(const char* s, char* d, const Copy2dParams& p, cudaStream_t st) {
  constexpr std::int64_t w = sizeof(W);
  const std::int64_t upr = p.row_bytes / w, total = p.rows * upr;
  const unsigned grid =
      static_cast<unsigned>(std::min<std::int64_t>((total + kCopyThreads - 1) / kCopyThreads, kMaxBlocks));
  const W* src = reinterpret_cast<const W*>(s);
  W* dst = reinterpret_cast<W*>(d);
  // Every index stays below max(total, rows·pitch); 32-bit only when all of those fit.
  const std::int64_t span = std::max({total, p.rows * (p.src_pitch / w), p.rows * (p.dst_pitch / w)});
  if (span < (std::int64_t{1} << 31) - kMaxBlocks * kCopyThreads) {
    copy_rows_kernel<W, std::uint32_t><<<grid, kCopyThreads, 0, st>>>(
        src, dst, static_cast<std::uint32_t>(total), static_cast<std::uint32_t>(upr),
        static_cast<std::uint32_t>(p.src_pitch / w), static_cast<std::uint32_t>(p.dst_pitch / w));
  } else {
    copy_rows_kernel<W, std::int64_t><<<grid, kCopyThreads, 0, st>>>(src, dst, total, upr, p.src_pitch / w,
                                                                      p.dst_pitch / w);
  }
  TG_CUDA_CHECK_LAST();
}

void copy_2d_cuda(const Tensor& src, const Tensor& dst, const Copy2dParams& p_in) {
  if (p_in.rows == 0 || p_in.row_bytes == 0) return;
  Copy2dParams p = p_in;
  if (p.src_pitch == p.row_bytes && p.dst_pitch == p.row_bytes) {
    // Back-to-back rows on both sides: one long row.
    p.row_bytes *= p.rows;
    p.src_pitch = p.dst_pitch = p.row_bytes;
    p.rows = 1;
  }
  const char* s = static_cast<const char*>(src.data_ptr()) + p.src_offset;
  char* d = static_cast<char*>(dst.data_ptr()) + p.dst_offset;
  // The widest word that divides both addresses, the row length and both pitches.
  auto fits = [&](std::int64_t w) {
    return reinterpret_cast<std::uintptr_t>(s) % w == 0 && reinterpret_cast<std::uintptr_t>(d) % w == 0 &&
           p.row_bytes % w == 0 && p.src_pitch % w == 0 && p.dst_pitch % w == 0;
  };
  tg::cuda::DeviceGuard guard(dst.device().index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dst.device().index);
  if (fits(16)) launch_copy<int4>(s, d, p, st);
  else if (fits(8)) launch_copy<int2>(s, d, p, st);
  else if (fits(4)) launch_copy<int>(s, d, p, st);
  else if (fits(2)) launch_copy<short>(s, d, p, st);
  else launch_copy<char>(s, d, p, st);
}

// ---- 4-d strided copy ---------------------------------------------------------------------

// Division by a fixed divisor d > 0 of any 32-bit n as a multiply-high, add and shift
// (round-up reciprocal m with l = ceil(log2 d)); the 4-d decode divides three times per
// 16-byte unit, which at plain division speed would cost more than the memory traffic.
struct FastDiv {
  std::uint32_t d = 1, m = 1, l = 0;
  FastDiv() = default;
  explicit FastDiv(std::uint32_t d_) : d(d_) {
    while ((std::uint64_t{1} << l) < d) ++l;
    m = static_cast<std::uint32_t>(((std::uint64_t{1} << 32) * ((std::uint64_t{1} << l) - d)) / d + 1);
  }
  __device__ __forceinline__ std::uint32_t div(std::uint32_t n) const {
    return static_cast<std::uint32_t>((static_cast<std::uint64_t>(__umulhi(n, m)) + n) >> l);
  }
};

// The index space and strides of Copy4dParams counted in W-sized units.
struct Copy4dUnits {
  FastDiv inner, n2, n1;  // units per innermost run, extents of dims 2 and 1
  long long src_stride[3], dst_stride[3];
};

constexpr int kUnroll = 4;  // units per thread per step: their loads are in flight together

// Unit i of the flat [n0, n1, n2, inner] space; kUnroll units a thread, all loaded before
// any is stored (the restrict pointers let the loads run ahead).
template <typename W>
__global__ void copy_4d_kernel(const W* __restrict__ src, W* __restrict__ dst, const Copy4dUnits p,
                               std::uint32_t total) {
  const std::uint32_t step = gridDim.x * blockDim.x * kUnroll;
  for (std::uint32_t base = blockIdx.x * blockDim.x * kUnroll + threadIdx.x; base < total; base += step) {
    W v[kUnroll];
    long long to[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::uint32_t i = base + static_cast<std::uint32_t>(u) * blockDim.x;
      if (i >= total) break;
      const std::uint32_t r = p.inner.div(i), i3 = i - r * p.inner.d;
      const std::uint32_t q = p.n2.div(r), i2 = r - q * p.n2.d;
      const std::uint32_t i0 = p.n1.div(q), i1 = q - i0 * p.n1.d;
      v[u] = src[i0 * p.src_stride[0] + i1 * p.src_stride[1] + i2 * p.src_stride[2] + i3];
      to[u] = i0 * p.dst_stride[0] + i1 * p.dst_stride[1] + i2 * p.dst_stride[2] + i3;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + static_cast<std::uint32_t>(u) * blockDim.x >= total) break;
      dst[to[u]] = v[u];
    }
  }
}

template <typename W>
void launch_copy_4d(const char* s, char* d, const Copy4dParams& p, cudaStream_t st) {
  constexpr std::int64_t w = sizeof(W);
  Copy4dUnits u;
  u.inner = FastDiv(static_cast<std::uint32_t>(p.n[3] / w));
  u.n2 = FastDiv(static_cast<std::uint32_t>(p.n[2]));
  u.n1 = FastDiv(static_cast<std::uint32_t>(p.n[1]));
  for (int i = 0; i < 3; ++i) {
    u.src_stride[i] = p.src_stride[i] / w;
    u.dst_stride[i] = p.dst_stride[i] / w;
  }
  const std::int64_t total = p.n[0] * p.n[1] * p.n[2] * (p.n[3] / w);
  const std::int64_t per_block = std::int64_t{kCopyThreads} * kUnroll;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>((total + per_block - 1) / per_block, kMaxBlocks));
  copy_4d_kernel<W><<<grid, kCopyThreads, 0, st>>>(reinterpret_cast<const W*>(s), reinterpret_cast<W*>(d), u,
                                                   static_cast<std::uint32_t>(total));
  TG_CUDA_CHECK_LAST();
}

void copy_4d_cuda(const Tensor& src, const Tensor& dst, const Copy4dParams& p) {
  const std::int64_t span = p.n[0] * p.n[1] * p.n[2] * p.n[3];
  if (span == 0) return;
  // The unit index is 32-bit (with room for the last step's overshoot); byte-wise units
  // of a larger copy are split along dim 0.
  constexpr std::int64_t kMaxUnits = (std::int64_t{1} << 32) - 2 * kMaxBlocks * kCopyThreads * kUnroll;
  const char* s = static_cast<const char*>(src.data_ptr()) + p.src_offset;
  char* d = static_cast<char*>(dst.data_ptr()) + p.dst_offset;
  auto fits = [&](std::int64_t w) {
    bool ok = reinterpret_cast<std::uintptr_t>(s) % w == 0 && reinterpret_cast<std::uintptr_t>(d) % w == 0 &&
              p.n[3] % w == 0;
    for (int i = 0; i < 3; ++i) ok = ok && p.src_stride[i] % w == 0 && p.dst_stride[i] % w == 0;
    return ok;
  };
  const std::int64_t w = fits(16) ? 16 : fits(8) ? 8 : fits(4) ? 4 : fits(2) ? 2 : 1;
  const std::int64_t per_outer = p.n[1] * p.n[2] * (p.n[3] / w);
  TG_CHECK(per_outer <= kMaxUnits, ShapeError, "split_heads / merge_heads: a copy of ", per_outer * w,
           " bytes per batch entry is too large for one kernel launch");
  const std::int64_t chunk = std::max<std::int64_t>(1, kMaxUnits / per_outer);
  tg::cuda::DeviceGuard guard(dst.device().index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dst.device().index);
  for (std::int64_t a0 = 0; a0 < p.n[0]; a0 += chunk) {
    Copy4dParams q = p;
    q.n[0] = std::min(chunk, p.n[0] - a0);
    const char* sq = s + a0 * p.src_stride[0];
    char* dq = d + a0 * p.dst_stride[0];
    switch (w) {
      case 16: launch_copy_4d<int4>(sq, dq, q, st); break;
      case 8: launch_copy_4d<int2>(sq, dq, q, st); break;
      case 4: launch_copy_4d<int>(sq, dq, q, st); break;
      case 2: launch_copy_4d<short>(sq, dq, q, st); break;
      default: launch_copy_4d<char>(sq, dq, q, st); break;
    }
  }
}

// ---- transpose ------------------------------------------------------------------------------

constexpr int kTile = 32;
constexpr int kRowsPerPass = 8;  // a 32 x 8 thread block moves a 32 x 32 tile in 4 passes

// One 32x32 tile per block iteration (grid-stride over batch x tile-rows x tile-cols).
// Reads are coalesced along src rows, writes along dst rows; the +1 column of padding
// puts the column reads of the shared tile into distinct banks.
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, std::int64_t batch,
                                 std::int64_t rows, std::int64_t cols, std::int64_t tiles_r, std::int64_t tiles_c) {
  __shared__ T tile[kTile][kTile + 1];
  const std::int64_t per_mat = tiles_r * tiles_c, total = batch * per_mat;
  for (std::int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const std::int64_t b = t / per_mat, rem = t - b * per_mat;
    const std::int64_t r0 = (rem / tiles_c) * kTile, c0 = (rem % tiles_c) * kTile;
    const T* s = src + b * rows * cols;
    T* d = dst + b * rows * cols;
    for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
      const std::int64_t r = r0 + i, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[i][threadIdx.x] = s[r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
      const std::int64_t c = c0 + i, r = r0 + threadIdx.x;
      if (c < cols && r < rows) d[c * rows + r] = tile[threadIdx.x][i];
    }
    __syncthreads();  // the tile is reused by the next iteration
  }
}

template <typename T>
void launch_transpose(const Tensor& src, const Tensor& dst, std::int64_t batch, std::int64_t rows, std::int64_t cols,
                      cudaStream_t st) {
  const std::int64_t tiles_r = (rows + kTile - 1) / kTile, tiles_c = (cols + kTile - 1) / kTile;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(batch * tiles_r * tiles_c, kMaxBlocks));
  transpose_kernel<T><<<grid, dim3(kTile, kRowsPerPass), 0, st>>>(static_cast<const T*>(src.data_ptr()),
                                                                   static_cast<T*>(dst.data_ptr()), batch, rows, cols,
                                                                   tiles_r, tiles_c);
  TG_CUDA_CHECK_LAST();
}

void transpose_cuda(const Tensor& src, const Tensor& dst, std::int64_t batch, std::int64_t rows, std::int64_t cols) {
  tg::cuda::DeviceGuard guard(dst.device().index);
  cudaStream_t st = tg::cuda::current_cuda_stream(dst.device().index);
  switch (dtype_size(src.dtype())) {
    case 1: launch_transpose<std::uint8_t>(src, dst, batch, rows, cols, st); break;
    case 2: launch_transpose<std::uint16_t>(src, dst, batch, rows, cols, st); break;
    case 4: launch_transpose<std::uint32_t>(src, dst, batch, rows, cols, st); break;
    case 8: launch_transpose<std::uint64_t>(src, dst, batch, rows, cols, st); break;
    default: TG_THROW(DTypeError, "transpose: unsupported element size ", dtype_size(src.dtype()), " of dtype ", src.dtype());
  }
}

}  // namespace

TG_REGISTER_KERNEL(shape_copy_2d, CUDA, &copy_2d_cuda);
TG_REGISTER_KERNEL(shape_transpose, CUDA, &transpose_cuda);
TG_REGISTER_KERNEL(shape_copy_4d, CUDA, &copy_4d_cuda);

}  // namespace tg::ops
