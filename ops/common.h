// Validation helpers shared by op implementations. Messages follow DESIGN.md: op,
// argument, expected, given.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace tg::ops {

/// Throws tg::ValueError when `t` is undefined.
void check_defined(const char* op, const char* arg, const Tensor& t);
/// Throws tg::DTypeError unless `t` has a floating dtype.
void check_floating(const char* op, const char* arg, const Tensor& t);
/// Throws tg::DTypeError unless `t.dtype() == dt`.
void check_dtype(const char* op, const char* arg, const Tensor& t, DType dt);
/// Throws tg::DTypeError unless a and b have the same dtype.
void check_same_dtype(const char* op, const char* arg_a, const Tensor& a, const char* arg_b, const Tensor& b);
/// Throws tg::DeviceError unless a and b are on the same device.
void check_same_device(const char* op, const char* arg_a, const Tensor& a, const char* arg_b, const Tensor& b);
/// Throws tg::ShapeError unless t.dim() == ndim.
void check_ndim(const char* op, const char* arg, const Tensor& t, int ndim);
/// Throws tg::ShapeError unless t.dim() is in [lo, hi].
void check_ndim_range(const char* op, const char* arg, const Tensor& t, int lo, int hi);

/// The environment variable `name` holding one of two choices: 0 when unset or empty, 1
/// for `first`, 2 for `second`. Throws tg::ValueError naming `op`, the variable, both
/// choices and what it holds otherwise. (Kernel-choice knobs read it once, into a static.)
int env_choice(const char* op, const char* name, const char* first, const char* second);
/// The environment variable `name` holding a power of two in [1, max]: 0 when unset or
/// empty. Throws tg::ValueError naming `op`, the variable, the range and what it holds
/// otherwise. (A tuning knob to measure a geometry by hand; read it once, into a static.)
std::int64_t env_power_of_two(const char* op, const char* name, std::int64_t max);

/// An uninitialised tensor like `t` (same device), with `shape` and `dtype`.
Tensor empty_like(const Tensor& t, const Shape& shape, DType dtype);
inline Tensor empty_like(const Tensor& t) { return empty_like(t, t.shape(), t.dtype()); }

/// Element 0 of `t` as T; throws tg::ValueError where `t` is undefined. No dtype check,
/// unlike Tensor::data: the caller has dispatched on t.dtype(), maybe to a device type of the
/// same layout (e.g. a CUDA 16-bit type for tg::bfloat16).
template <typename T>
const T* cptr(const Tensor& t) {
  return static_cast<const T*>(t.data_ptr());
}
/// As cptr, but null where `t` is undefined (an optional input).
template <typename T>
const T* cptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
/// Writable element 0 of `t` as T, or null where `t` is undefined (an output not asked for).
template <typename T>
T* mptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace tg::ops
