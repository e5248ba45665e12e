// Host side of the Hopper TMA: encoding the tensor maps (CUtensorMap) that kernels pass to
// cp.async.bulk.tensor. The driver function that encodes them is looked up once through
// the runtime (no link against the driver library).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace tg::cuda {

/// The tensor map of a row-major matrix of `rows` x `cols` 16-bit elements (bf16 when
/// `bf16`, else f16) at `base`, `ld` elements between rows, read (or stored) in boxes of
/// `box_cols` x `box_rows` (at most 256) elements, in shared memory with the swizzle whose
/// span is a box line: box_cols 64 (128-byte lines: the swizzle wgmma reads), 32 (64-byte
/// swizzle) or 16 (32-byte). Requirements (checked): base 16-byte aligned, ld * 2 a
/// multiple of 16, rows and cols below 2^31, box_cols one of those. Throws tg::DeviceError
/// when the driver refuses the map or has no TMA support.
CUtensorMap tensor_map_2d_16bit(const void* base, bool bf16, std::uint64_t rows, std::uint64_t cols, std::uint64_t ld,
                                std::uint32_t box_cols, std::uint32_t box_rows);

/// Element types of the 3-d tensor maps.
enum class TmaElem { bf16, f16, f32 };

/// The tensor map of `planes` row-major matrices of `rows` x `cols` elements of `elem`
/// stored one after the other (plane p at base + p * rows * cols), read (or reduced into)
/// in boxes of `box_cols` x `box_rows` of one plane with 128-byte swizzling (box_cols of at
/// most one 128-byte line: 64 16-bit or 32 f32 elements). Rows past `rows` of a plane read
/// as zeros and are skipped by reductions, not taken from the next plane. Requirements
/// (checked): base 16-byte aligned, a row a multiple of 16 bytes, every extent below 2^31.
/// Throws tg::DeviceError as tensor_map_2d_16bit.
CUtensorMap tensor_map_3d(const void* base, TmaElem elem, std::uint64_t planes, std::uint64_t rows,
                          std::uint64_t cols, std::uint32_t box_cols, std::uint32_t box_rows);

}  // namespace tg::cuda
