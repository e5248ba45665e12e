#include "nn/init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/factory/factory.h"

namespace tg::nn::init {

namespace {

void check(const char* op, const Tensor& t) {
  if (!t.defined()) TG_THROW(ValueError, "nn::init::", op, ": the tensor is undefined");
  if (!is_floating(t.dtype())) {
    TG_THROW(DTypeError, "nn::init::", op, ": the tensor must be floating, got ", dtype_name(t.dtype()));
  }
}

// Writes `values` (same shape) into t without recording.
Tensor& fill(Tensor& t, const Tensor& values) {
  NoGradGuard ng;
  copy_bytes(t, values);
  return t;
}

TensorOptions like(const Tensor& t) { return {.dtype = t.dtype(), .device = t.device()}; }

}  // namespace

std::pair<std::int64_t, std::int64_t> fans(const Tensor& w) {
  if (!w.defined() || w.dim() < 2) {
    TG_THROW(ShapeError, "nn::init::fans: a weight needs at least 2 dims, got ",
             w.defined() ? w.shape().str() : std::string("an undefined tensor"));
  }
  std::int64_t field = 1;
  for (int d = 2; d < w.dim(); ++d) field *= w.size(d);
  return {w.size(1) * field, w.size(0) * field};
}

Tensor& uniform_(Tensor& t, double lo, double hi, std::uint64_t seed) {
  check("uniform_", t);
  return fill(t, rand_seeded(t.shape(), seed, like(t), lo, hi));
}

Tensor& normal_(Tensor& t, double mean, double std, std::uint64_t seed) {
  check("normal_", t);
  return fill(t, randn_seeded(t.shape(), seed, like(t), mean, std));
}

Tensor& constant_(Tensor& t, double value) {
  check("constant_", t);
  return fill(t, full(t.shape(), value, like(t)));
}

Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }

Tensor& xavier_uniform_(Tensor& w, std::uint64_t seed, double gain) {
  check("xavier_uniform_", w);
  const auto [in, out] = fans(w);
  const double a = gain * std::sqrt(6.0 / static_cast<double>(in + out));
  return uniform_(w, -a, a, seed);
}

Tensor& xavier_normal_(Tensor& w, std::uint64_t seed, double gain) {
  check("xavier_normal_", w);
  const auto [in, out] = fans(w);
  return normal_(w, 0.0, gain * std::sqrt(2.0 / static_cast<double>(in + out)), seed);
}

Tensor& kaiming_normal_(Tensor& w, std::uint64_t seed, double gain) {
  check("kaiming_normal_", w);
  return normal_(w, 0.0, gain / std::sqrt(static_cast<double>(fans(w).first)), seed);
}

Tensor& kaiming_uniform_(Tensor& w, std::uint64_t seed, double gain) {
  check("kaiming_uniform_", w);
  const double a = gain * std::sqrt(3.0 / static_cast<double>(fans(w).first));
  return uniform_(w, -a, a, seed);
}

}  // namespace tg::nn::init
