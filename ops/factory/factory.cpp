// Tensor factories: validation, output allocation, dispatch.
#include "ops/factory/factory.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "ops/common.h"
#include "ops/copy/cast.h"
#include "ops/copy/copy.h"
#include "ops/factory/kernels.h"
#include "runtime/philox.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(fill, FillFn)
TG_DEFINE_KERNEL(rand_uniform, RandUniformFn)
TG_DEFINE_KERNEL(rand_normal, RandNormalFn)
TG_DEFINE_KERNEL(rand_int, RandIntFn)
}  // namespace ops

namespace {

void check_shape(const char* op, const Shape& shape) {
  for (auto d : shape.dims()) {
    if (d < 0) TG_THROW(ShapeError, op, ": shape must have non-negative extents, got ", shape);
  }
}

void check_options(const char* op, const TensorOptions& opts) {
  if (opts.requires_grad && !is_floating(opts.dtype)) {
    TG_THROW(DTypeError, op, ": requires_grad needs a floating dtype (f32, f64, bf16, f16), got ", opts.dtype);
  }
  if (opts.device.index < 0 || (opts.device.is_cuda() && opts.device.index >= cuda_device_count())) {
    TG_THROW(DeviceError, op, ": device ", opts.device, " does not exist (", cuda_device_count(),
             " CUDA device(s) visible)");
  }
}

void check_floating_dtype(const char* op, DType dtype) {
  if (!is_floating(dtype)) {
    TG_THROW(DTypeError, op, ": dtype must be floating (f32, f64, bf16, f16), got ", dtype);
  }
}

void check_finite(const char* op, const char* arg, double v) {
  if (!std::isfinite(v)) TG_THROW(ValueError, op, ": ", arg, " must be finite, got ", v);
}

Tensor alloc(const Shape& shape, const TensorOptions& opts) {
  return empty(shape, {.dtype = opts.dtype, .device = opts.device});
}

Tensor finish(Tensor t, const TensorOptions& opts) {
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

}  // namespace

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  check_shape("full", shape);
  check_options("full", opts);
  Tensor t = alloc(shape, opts);
  if (t.numel() > 0) ops::fill()(t.device())(t, value);
  return finish(std::move(t), opts);
}

Tensor zeros(const Shape& shape, TensorOptions opts) { return full(shape, 0.0, opts); }
Tensor ones(const Shape& shape, TensorOptions opts) { return full(shape, 1.0, opts); }

Tensor full_like(const Tensor& t, double value) {
  ops::check_defined("full_like", "t", t);
  return full(t.shape(), value, {.dtype = t.dtype(), .device = t.device()});
}
Tensor zeros_like(const Tensor& t) {
  ops::check_defined("zeros_like", "t", t);
  return full(t.shape(), 0.0, {.dtype = t.dtype(), .device = t.device()});
}
Tensor ones_like(const Tensor& t) {
  ops::check_defined("ones_like", "t", t);
  return full(t.shape(), 1.0, {.dtype = t.dtype(), .device = t.device()});
}

Tensor arange(double start, double end, double step, TensorOptions opts) {
  check_finite("arange", "start", start);
  check_finite("arange", "end", end);
  check_finite("arange", "step", step);
  if (step == 0.0) TG_THROW(ValueError, "arange: step must be non-zero");
  check_options("arange", opts);
  // Like NumPy: an empty result when end is not beyond start in the direction of step.
  const double count = std::ceil((end - start) / step);
  if (count > 1e15) TG_THROW(ValueError, "arange: [", start, ", ", end, ") with step ", step, " has too many elements");
  const std::int64_t n = count > 0 ? static_cast<std::int64_t>(count) : 0;
  // Built on the host (cheap: arange is for indices and tests), then moved.
  Tensor host = empty({n}, {.dtype = opts.dtype, .device = Device::cpu()});
  TG_DISPATCH_ALL(opts.dtype, "arange", [&] {
    scalar_t* p = static_cast<scalar_t*>(host.data_ptr());
    for (std::int64_t i = 0; i < n; ++i) p[i] = ops::cast_value<scalar_t>(start + static_cast<double>(i) * step);
  });
  return finish(to_device(host, opts.device), opts);
}

void manual_seed(std::uint64_t seed) { default_generator().manual_seed(seed); }

namespace {

Tensor rand_impl(const Shape& shape, std::uint64_t seed, std::uint64_t offset, TensorOptions opts,
                 double lo, double hi) {
  Tensor t = alloc(shape, opts);
  if (t.numel() > 0) ops::rand_uniform()(t.device())(t, seed, offset, lo, hi);
  return finish(std::move(t), opts);
}

void check_rand(const char* op, const Shape& shape, const TensorOptions& opts, double lo, double hi) {
  check_shape(op, shape);
  check_floating_dtype(op, opts.dtype);
  check_options(op, opts);
  check_finite(op, "lo", lo);
  check_finite(op, "hi", hi);
  if (!(lo < hi)) TG_THROW(ValueError, op, ": expected lo < hi, got lo = ", lo, ", hi = ", hi);
}

Tensor randn_impl(const Shape& shape, std::uint64_t seed, std::uint64_t offset, TensorOptions opts, double mean,
                  double std) {
  Tensor t = alloc(shape, opts);
  if (t.numel() > 0) ops::rand_normal()(t.device())(t, seed, offset, mean, std);
  return finish(std::move(t), opts);
}

void check_randn(const char* op, const Shape& shape, const TensorOptions& opts, double mean, double std) {
  check_shape(op, shape);
  check_floating_dtype(op, opts.dtype);
  check_options(op, opts);
  check_finite(op, "mean", mean);
  check_finite(op, "std", std);
  if (std < 0) TG_THROW(ValueError, op, ": std must be >= 0, got ", std);
}

}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, double lo, double hi) {
  check_rand("rand", shape, opts, lo, hi);
  Generator& g = default_generator();
  const std::uint64_t offset = g.next_offset();
  return rand_impl(shape, g.seed(), offset, opts, lo, hi);
}

Tensor rand_seeded(const Shape& shape, std::uint64_t seed, TensorOptions opts, double lo, double hi) {
  check_rand("rand_seeded", shape, opts, lo, hi);
  return rand_impl(shape, seed, 0, opts, lo, hi);
}

Tensor randn(const Shape& shape, TensorOptions opts, double mean, double std) {
  check_randn("randn", shape, opts, mean, std);
  Generator& g = default_generator();
  const std::uint64_t offset = g.next_offset();
  return randn_impl(shape, g.seed(), offset, opts, mean, std);
}

Tensor randn_seeded(const Shape& shape, std::uint64_t seed, TensorOptions opts, double mean, double std) {
  check_randn("randn_seeded", shape, opts, mean, std);
  return randn_impl(shape, seed, 0, opts, mean, std);
}

Tensor randint(std::int64_t lo, std::int64_t hi, const Shape& shape, TensorOptions opts) {
  check_shape("randint", shape);
  if (opts.dtype == DType::boolean) TG_THROW(DTypeError, "randint: dtype must not be bool");
  check_options("randint", opts);
  if (!(lo < hi)) TG_THROW(ValueError, "randint: expected lo < hi, got lo = ", lo, ", hi = ", hi);
  if (opts.dtype == DType::i32 &&
      (lo < std::numeric_limits<std::int32_t>::min() || hi - 1 > std::numeric_limits<std::int32_t>::max())) {
    TG_THROW(ValueError, "randint: [", lo, ", ", hi, ") does not fit dtype i32");
  }
  Generator& g = default_generator();
  const std::uint64_t offset = g.next_offset();
  Tensor t = alloc(shape, opts);
  if (t.numel() > 0) ops::rand_int()(t.device())(t, g.seed(), offset, lo, hi);
  return finish(std::move(t), opts);
}

}  // namespace tg
