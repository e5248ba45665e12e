// Range checks of index tensors on their own device: the kernel finds the smallest and
// largest value, a verdict on the host judges them (on CUDA once the kernel has run,
// runtime/deferred_checks.h).
#pragma once

#include <cstdint>
#include <functional>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// A check of an index tensor's values, given their smallest and largest value once they
/// are known; throws a tg::Error when they are out of range.
using RangeVerdict = std::function<void(std::int64_t lo, std::int64_t hi)>;

/// Hands the smallest and largest value of a non-empty i32/i64 tensor (contiguous, any
/// shape) to `verdict`: on the CPU before returning, on CUDA through runtime::defer_check.
using IndexRangeFn = void(const Tensor& idx, const RangeVerdict& verdict);

TG_DECLARE_KERNEL(index_range_kernel, IndexRangeFn);

/// The smallest and largest value of an i32/i64 tensor in host memory (lo > hi when empty).
void index_range_host(const Tensor& idx, std::int64_t& lo, std::int64_t& hi);

/// The text a range error appends on `device`: where the values were checked and how to
/// make the op itself throw (empty on the CPU or with sync checks on).
const char* deferred_check_note(const Device& device);

}  // namespace tg::ops
