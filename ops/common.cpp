#include "ops/common.h"

#include <cstdlib>

namespace tg::ops {

void check_defined(const char* op, const char* arg, const Tensor& t) {
  if (!t.defined()) TG_THROW(ValueError, op, ": ", arg, " is an undefined tensor");
}

void check_floating(const char* op, const char* arg, const Tensor& t) {
  check_defined(op, arg, t);
  if (!is_floating(t.dtype())) {
    TG_THROW(DTypeError, op, ": ", arg, " must have a floating dtype (f32, f64, bf16, f16), got ", t.dtype());
  }
}

void check_dtype(const char* op, const char* arg, const Tensor& t, DType dt) {
  check_defined(op, arg, t);
  if (t.dtype() != dt) TG_THROW(DTypeError, op, ": ", arg, " must have dtype ", dt, ", got ", t.dtype());
}

void check_same_dtype(const char* op, const char* arg_a, const Tensor& a, const char* arg_b, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    TG_THROW(DTypeError, op, ": ", arg_a, " and ", arg_b, " must have the same dtype, got ", a.dtype(), " and ",
             b.dtype());
  }
}

void check_same_device(const char* op, const char* arg_a, const Tensor& a, const char* arg_b, const Tensor& b) {
  if (a.device() != b.device()) {
    TG_THROW(DeviceError, op, ": ", arg_a, " and ", arg_b, " must be on the same device, got ", a.device(),
             " and ", b.device());
  }
}

void check_ndim(const char* op, const char* arg, const Tensor& t, int ndim) {
  check_defined(op, arg, t);
  if (t.dim() != ndim) {
    TG_THROW(ShapeError, op, ": ", arg, " must be ", ndim, "-d, got shape ", t.shape());
  }
}

void check_ndim_range(const char* op, const char* arg, const Tensor& t, int lo, int hi) {
  check_defined(op, arg, t);
  if (t.dim() < lo || t.dim() > hi) {
    TG_THROW(ShapeError, op, ": ", arg, " must have between ", lo, " and ", hi, " dims, got shape ", t.shape());
  }
}

Tensor empty_like(const Tensor& t, const Shape& shape, DType dtype) {
  return empty(shape, {.dtype = dtype, .device = t.device()});
}

int env_choice(const char* op, const char* name, const char* first, const char* second) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  const std::string s(v);
  if (s == first) return 1;
  if (s == second) return 2;
  TG_THROW(ValueError, op, ": environment variable ", name, ": expected ", first, " or ", second, ", got '", s, "'");
}

std::int64_t env_power_of_two(const char* op, const char* name, std::int64_t max) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 1 || n > max || (n & (n - 1)) != 0) {
    TG_THROW(ValueError, op, ": environment variable ", name, ": expected a power of two in [1, ", max, "], got '", v,
             "'");
  }
  return n;
}

}  // namespace tg::ops
