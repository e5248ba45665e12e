// Shared helpers for the test suite.
//
// The test files compile in batches of several files each (a unity build, tests/CMakeLists.txt):
// a test file puts everything after its includes in a namespace named for the file
// (`namespace test_reduce { ... }`), so that its helpers cannot clash with another file's.
#pragma once

#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "catch.h"
#include "tilegrad.h"

namespace tgt {

/// Skips the current test case unless a CUDA device is present.
#define TG_REQUIRE_CUDA()                                                  \
  do {                                                                     \
    if (!::tg::cuda_available()) TG_SKIP("no CUDA device: [cuda] test skipped"); \
  } while (0)

/// Host copy of all values as f64.
inline std::vector<double> values(const tg::Tensor& t) { return t.to_vector<double>(); }

/// max |a - b| over elements (inf on a shape mismatch, nan when either holds a nan that the other does not).
inline double max_abs_diff(const tg::Tensor& a, const tg::Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  auto va = values(a), vb = values(b);
  double m = 0;
  for (std::size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) != std::isnan(vb[i])) return NAN;
    if (std::isnan(va[i])) continue;
    if (std::isinf(va[i]) || std::isinf(vb[i])) {
      if (va[i] != vb[i]) return INFINITY;
      continue;
    }
    m = std::max(m, std::fabs(va[i] - vb[i]));
  }
  return m;
}

/// REQUIREs that `got` matches `expected` elementwise within atol + rtol*|expected|
/// (same shape; nan where expected has nan; equal infinities).
inline void require_close(const tg::Tensor& got, const tg::Tensor& expected, double rtol = 1e-5,
                          double atol = 1e-6) {
  INFO("got shape " << got.shape() << ", expected shape " << expected.shape());
  REQUIRE(got.shape() == expected.shape());
  auto g = values(got), e = values(expected);
  std::size_t bad = 0, first = 0;
  double worst = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    bool ok;
    if (std::isnan(e[i])) ok = std::isnan(g[i]);
    else if (std::isinf(e[i])) ok = g[i] == e[i];
    else ok = std::fabs(g[i] - e[i]) <= atol + rtol * std::fabs(e[i]);
    if (!ok) {
      if (!bad) first = i;
      ++bad;
      if (std::isfinite(g[i]) && std::isfinite(e[i])) worst = std::max(worst, std::fabs(g[i] - e[i]));
    }
  }
  INFO(bad << " of " << g.size() << " elements differ; first at flat index " << first << ": got "
            << (bad ? g[first] : 0.0) << ", expected " << (bad ? e[first] : 0.0) << "; worst abs diff " << worst);
  REQUIRE(bad == 0);
}

/// Runs f, REQUIREs that it throws E, and that the message contains every part.
template <typename E, typename F>
void require_throws(F&& f, const std::vector<std::string>& parts) {
  bool threw = false;
  std::string msg;
  try {
    f();
  } catch (const E& e) {
    threw = true;
    msg = e.what();
  }
  INFO("expected an exception of the requested tg::Error type");
  REQUIRE(threw);
  for (const auto& p : parts) {
    INFO("message: \"" << msg << "\" should contain \"" << p << "\"");
    CHECK(msg.find(p) != std::string::npos);
  }
}

/// Sets tg::set_sync_checks for a scope.
struct SyncChecksGuard {
  explicit SyncChecksGuard(bool on) : prev_(tg::sync_checks()) { tg::set_sync_checks(on); }
  ~SyncChecksGuard() { tg::set_sync_checks(prev_); }
  SyncChecksGuard(const SyncChecksGuard&) = delete;
  SyncChecksGuard& operator=(const SyncChecksGuard&) = delete;

 private:
  bool prev_;
};

/// f, then a synchronisation with the GPU: a check of device values that f queued has
/// thrown by then, with sync checks on or off (runtime/deferred_checks.h).
template <typename F>
std::function<void()> synced(F f) {
  return [f] {
    f();
    tg::synchronize(tg::Device::cuda());
  };
}

/// y [n, o] = x [n, c] · Wᵀ + b for W [o, c] (and b [o], or empty), row-major host values,
/// in f64 loops: the reference of linear layers.
inline std::vector<double> affine(const std::vector<double>& x, std::int64_t n, std::int64_t c,
                                  const std::vector<double>& w, const std::vector<double>& b, std::int64_t o) {
  const auto at = [](std::int64_t i) { return static_cast<std::size_t>(i); };
  std::vector<double> y(at(n * o));
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t k = 0; k < o; ++k) {
      double s = b.empty() ? 0.0 : b[at(k)];
      for (std::int64_t i = 0; i < c; ++i) s += x[at(r * c + i)] * w[at(k * c + i)];
      y[at(r * o + k)] = s;
    }
  return y;
}

/// Options of an f64 CPU tensor (the dtype of the references).
inline const tg::TensorOptions kF64{.dtype = tg::DType::f64};

/// CPU tensor of shape s holding the f64 values v (row-major), converted to dt.
inline tg::Tensor vec_t(const std::vector<double>& v, const tg::Shape& s, tg::DType dt = tg::DType::f64) {
  return tg::from_vector<double>(v, s).to(dt);
}

/// Random f64 CPU tensor in [lo, hi).
inline tg::Tensor rand64(const tg::Shape& s, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return tg::rand_seeded(s, seed, {.dtype = tg::DType::f64}, lo, hi);
}

/// A view of `base`'s storage starting `skip` elements in: its data pointer is not 16-byte
/// aligned, which forces kernels off their vectorised paths.
inline tg::Tensor misaligned_view(const tg::Tensor& base, std::int64_t skip, const tg::Shape& shape) {
  auto impl = std::make_shared<tg::TensorImpl>();
  impl->storage = base.impl().storage;
  impl->offset = base.impl().offset + static_cast<std::size_t>(skip) * tg::dtype_size(base.dtype());
  impl->shape = shape;
  impl->dtype = base.dtype();
  impl->device = base.device();
  return tg::Tensor(impl);
}

/// A layout [B, Mb, Nb] at block size bs whose block (b, r, c) is active iff on(b, r, c).
inline tg::Layout layout_where(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs,
                               const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& on) {
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t r = 0; r < Mb; ++r)
      for (std::int64_t c = 0; c < Nb; ++c) m[static_cast<std::size_t>((b * Mb + r) * Nb + c)] = on(b, r, c);
  return tg::Layout(tg::from_vector<bool>(m, {B, Mb, Nb}), bs);
}

/// A layout with each block active with probability percent/100 (std::mt19937_64 with seed).
inline tg::Layout rand_mask_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs, int percent,
                                   std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb));
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<int>(rng() % 100) < percent;
  return tg::Layout(tg::from_vector(m, {B, Mb, Nb}), bs);
}

}  // namespace tgt
