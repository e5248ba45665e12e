#include "runtime/cuda/tensor_map.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <mutex>

#include "runtime/cuda/cuda_check.h"
#include "runtime/error.h"

namespace tg::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    TG_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found));
    if (found == cudaDriverEntryPointSuccess) fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  if (fn == nullptr) TG_THROW(DeviceError, "TMA: the CUDA driver has no cuTensorMapEncodeTiled (driver too old)");
  return fn;
}

CUtensorMapDataType type_16bit(bool bf16) {
  return bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
}

// Encodes a rank-`rank` map of `type` elements with `swizzle`: dims / box innermost first,
// strides in bytes of dims 1.. (the innermost stride is the element).
CUtensorMap encode(const void* base, CUtensorMapDataType type, int rank, const cuuint64_t* dims,
                   const cuuint64_t* strides, const cuuint32_t* box,
                   CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  CUtensorMap map{};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r = encode_fn()(&map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), dims, strides, box,
                                 elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    TG_THROW(DeviceError, "TMA: cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r), ") for a rank-", rank,
             " map of ", dims[rank - 1], " x ... x ", dims[0], ", box ", box[0], " x ", box[1]);
  }
  return map;
}

}  // namespace

CUtensorMap tensor_map_2d_16bit(const void* base, bool bf16, std::uint64_t rows, std::uint64_t cols, std::uint64_t ld,
                                std::uint32_t box_cols, std::uint32_t box_rows) {
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0 || (ld * 2) % 16 != 0 || rows >= (1ull << 31) ||
      cols >= (1ull << 31) || (box_cols != 16 && box_cols != 32 && box_cols != 64) || box_rows > 256 || cols > ld)
    TG_THROW(DeviceError, "TMA: internal error: unsupported matrix (", rows, " x ", cols, ", ld ", ld, ", box ", box_cols,
             " x ", box_rows, ")");
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {ld * 2};
  const cuuint32_t box[2] = {box_cols, box_rows};
  // the box's lines are the swizzle's span: 32, 64 or 128 bytes
  const CUtensorMapSwizzle swizzle = box_cols == 64   ? CU_TENSOR_MAP_SWIZZLE_128B
                                     : box_cols == 32 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                      : CU_TENSOR_MAP_SWIZZLE_32B;
  return encode(base, type_16bit(bf16), 2, dims, strides, box, swizzle);
}

CUtensorMap tensor_map_3d(const void* base, TmaElem elem, std::uint64_t planes, std::uint64_t rows,
                          std::uint64_t cols, std::uint32_t box_cols, std::uint32_t box_rows) {
  const std::uint64_t bytes = elem == TmaElem::f32 ? 4 : 2;
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0 || (cols * bytes) % 16 != 0 || planes >= (1ull << 31) ||
      rows >= (1ull << 31) || cols >= (1ull << 31) || box_cols * bytes > 128 || box_rows > 256)
    TG_THROW(DeviceError, "TMA: internal error: unsupported tensor (", planes, " x ", rows, " x ", cols, " of ", bytes,
             "-byte elements, box ", box_cols, " x ", box_rows, ")");
  const cuuint64_t dims[3] = {cols, rows, planes};
  const cuuint64_t strides[2] = {cols * bytes, rows * cols * bytes};
  const cuuint32_t box[3] = {box_cols, box_rows, 1};
  const CUtensorMapDataType type = elem == TmaElem::f32 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : type_16bit(elem == TmaElem::bf16);
  return encode(base, type, 3, dims, strides, box);
}

}  // namespace tg::cuda
