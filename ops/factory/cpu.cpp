// CPU kernels of the factory family.
#include <cstdint>

#include "ops/copy/cast.h"
#include "ops/factory/kernels.h"
#include "ops/factory/random_math.h"

namespace tg::ops {
namespace {

void fill_cpu(const Tensor& out, double value) {
  TG_DISPATCH_ALL(out.dtype(), "fill", [&] {
    const scalar_t v = cast_value<scalar_t>(value);
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    const std::int64_t n = out.numel();
    for (std::int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

void rand_uniform_cpu(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) {
  TG_DISPATCH_FLOATING(out.dtype(), "rand", [&] {
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    const std::int64_t n = out.numel();
    for (std::int64_t i = 0; i < n; ++i) p[i] = uniform_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), lo, hi);
  });
}

void rand_normal_cpu(const Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) {
  TG_DISPATCH_FLOATING(out.dtype(), "randn", [&] {
    scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
    const std::int64_t n = out.numel();
    for (std::int64_t i = 0; i < n; ++i) {
      p[i] = normal_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), mean, std);
    }
  });
}

void rand_int_cpu(const Tensor& out, std::uint64_t seed, std::uint64_t offset, std::int64_t lo, std::int64_t hi) {
  TG_DISPATCH_ALL(out.dtype(), "randint", [&] {
    if constexpr (!std::is_same_v<scalar_t, bool>) {
      scalar_t* p = static_cast<scalar_t*>(out.data_ptr());
      const std::int64_t n = out.numel();
      for (std::int64_t i = 0; i < n; ++i) {
        p[i] = randint_value<scalar_t>(seed, offset, static_cast<std::uint64_t>(i), lo, hi);
      }
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(fill, CPU, &fill_cpu);
TG_REGISTER_KERNEL(rand_uniform, CPU, &rand_uniform_cpu);
TG_REGISTER_KERNEL(rand_normal, CPU, &rand_normal_cpu);
TG_REGISTER_KERNEL(rand_int, CPU, &rand_int_cpu);

}  // namespace tg::ops
