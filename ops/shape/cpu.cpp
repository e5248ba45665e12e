// CPU kernels of the shape family: row copies, 4-d strided copies (rows spread over the
// cores) and a cache-blocked transpose.
#include <algorithm>
#include <cstring>

#include "ops/shape/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

void copy_2d_cpu(const Tensor& src, const Tensor& dst, const Copy2dParams& p) {
  const char* s = static_cast<const char*>(src.data_ptr()) + p.src_offset;
  char* d = static_cast<char*>(dst.data_ptr()) + p.dst_offset;
  for (std::int64_t r = 0; r < p.rows; ++r) {
    std::memcpy(d + r * p.dst_pitch, s + r * p.src_pitch, static_cast<std::size_t>(p.row_bytes));
  }
}

// Bytes a range of the 4-d copy moves at least.
constexpr std::int64_t kCopyGrainBytes = 1 << 16;

void copy_4d_cpu(const Tensor& src, const Tensor& dst, const Copy4dParams& p) {
  const char* s = static_cast<const char*>(src.data_ptr()) + p.src_offset;
  char* d = static_cast<char*>(dst.data_ptr()) + p.dst_offset;
  // row i (a contiguous run of n[3] bytes) is (a, b, c) = (i / (n1 n2), i / n2 % n1, i % n2)
  const std::int64_t n12 = p.n[1] * p.n[2], rows = p.n[0] * n12;
  parallel_ranges(rows, std::max<std::int64_t>(1, kCopyGrainBytes / std::max<std::int64_t>(p.n[3], 1)),
                  [&](std::int64_t i0, std::int64_t i1) {
                    for (std::int64_t i = i0; i < i1; ++i) {
                      const std::int64_t a = i / n12, b = i / p.n[2] % p.n[1], c = i % p.n[2];
                      std::memcpy(d + a * p.dst_stride[0] + b * p.dst_stride[1] + c * p.dst_stride[2],
                                  s + a * p.src_stride[0] + b * p.src_stride[1] + c * p.src_stride[2],
                                  static_cast<std::size_t>(p.n[3]));
                    }
                  });
}

// Moves elements as same-sized unsigned words: a transpose never looks at values. Each
// 32 x 32 tile is staged in a small contiguous buffer: reading whole source rows into it
// and writing whole destination rows out of it keeps every access sequential, where a
// direct strided transpose of power-of-two pitches thrashes a few L1 sets.
template <typename W>
void transpose_words(const W* src, W* dst, std::int64_t batch, std::int64_t rows, std::int64_t cols) {
  constexpr std::int64_t kTile = 32;
  W buf[kTile * kTile];
  for (std::int64_t b = 0; b < batch; ++b) {
    const W* s = src + b * rows * cols;
    W* d = dst + b * rows * cols;
    for (std::int64_t r0 = 0; r0 < rows; r0 += kTile) {
      const std::int64_t nr = std::min(kTile, rows - r0);
      for (std::int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const std::int64_t nc = std::min(kTile, cols - c0);
        for (std::int64_t r = 0; r < nr; ++r) {
          const W* row = s + (r0 + r) * cols + c0;
          for (std::int64_t c = 0; c < nc; ++c) buf[c * kTile + r] = row[c];
        }
        for (std::int64_t c = 0; c < nc; ++c) {
          W* out = d + (c0 + c) * rows + r0;
          for (std::int64_t r = 0; r < nr; ++r) out[r] = buf[c * kTile + r];
        }
      }
    }
  }
}

void transpose_cpu(const Tensor& src, const Tensor& dst, std::int64_t batch, std::int64_t rows, std::int64_t cols) {
  const void* s = src.data_ptr();
  void* d = dst.data_ptr();
  switch (dtype_size(src.dtype())) {
    case 1: transpose_words(static_cast<const std::uint8_t*>(s), static_cast<std::uint8_t*>(d), batch, rows, cols); break;
    case 2: transpose_words(static_cast<const std::uint16_t*>(s), static_cast<std::uint16_t*>(d), batch, rows, cols); break;
    case 4: transpose_words(static_cast<const std::uint32_t*>(s), static_cast<std::uint32_t*>(d), batch, rows, cols); break;
    case 8: transpose_words(static_cast<const std::uint64_t*>(s), static_cast<std::uint64_t*>(d), batch, rows, cols); break;
    default: TG_THROW(DTypeError, "transpose: unsupported element size ", dtype_size(src.dtype()), " of dtype ", src.dtype());
  }
}

}  // namespace

TG_REGISTER_KERNEL(shape_copy_2d, CPU, &copy_2d_cpu);
TG_REGISTER_KERNEL(shape_transpose, CPU, &transpose_cpu);
TG_REGISTER_KERNEL(shape_copy_4d, CPU, &copy_4d_cpu);

}  // namespace tg::ops
