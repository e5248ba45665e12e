// Tests of cross_entropy and mse_loss (ops/loss): plain-loop f64 references, ignored rows,
// empty inputs, gradchecks, host-side target validation, and CUDA against the CPU.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "util.h"

namespace test_loss {

using namespace tg;

namespace {

Tensor rand_t(const Shape& s, std::uint64_t seed, DType dt = DType::f64, Device dev = Device::cpu(),
              double lo = -3.0, double hi = 3.0) {
  return tgt::rand64(s, seed, lo, hi).to(dt).to(dev);
}

using tgt::vec_t;

Tensor targets(const std::vector<std::int64_t>& t, DType dt = DType::i64) {
  return from_vector<std::int64_t>(t, {static_cast<std::int64_t>(t.size())}).to(dt);
}

// Deterministic targets in [0, C), every `ignore_every`-th row set to ignore_index.
std::vector<std::int64_t> make_targets(std::int64_t n, std::int64_t classes, int ignore_every, std::int64_t ignore) {
  std::vector<std::int64_t> t(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < n; ++r) {
    t[r] = (r * 7919 + 13) % classes;
    if (ignore_every > 0 && r % ignore_every == ignore_every - 1) t[r] = ignore;
  }
  return t;
}

struct CeRef {
  double loss;
  std::vector<double> grad;  // d loss / d logits
};

CeRef ref_cross_entropy(const Tensor& logits, const std::vector<std::int64_t>& t, std::int64_t ignore) {
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  auto x = logits.to_vector<double>();
  CeRef r{0.0, std::vector<double>(x.size(), 0.0)};
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; ++i) count += t[i] != ignore;
  for (std::int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore) continue;
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t c = 0; c < classes; ++c) m = std::max(m, x[i * classes + c]);
    double s = 0;
    for (std::int64_t c = 0; c < classes; ++c) s += std::exp(x[i * classes + c] - m);
    const double lse = m + std::log(s);
    r.loss += (lse - x[i * classes + t[i]]) / static_cast<double>(count);
    for (std::int64_t c = 0; c < classes; ++c) {
      r.grad[i * classes + c] =
          (std::exp(x[i * classes + c] - lse) - (c == t[i] ? 1.0 : 0.0)) / static_cast<double>(count);
    }
  }
  return r;
}

}  // namespace

TEST_CASE("cross_entropy matches a plain f64 loop (i64 and i32 targets, ignored rows)", "[ops][loss]") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (DType tdt : {DType::i64, DType::i32}) {
      for (std::int64_t ignore : {std::int64_t{-100}, std::int64_t{2}}) {
        INFO("dtype " << dt << ", target " << tdt << ", ignore_index " << ignore);
        const std::int64_t n = 13, classes = 6;
        Tensor logits = rand_t({n, classes}, 4, dt).requires_grad_();
        auto t = make_targets(n, classes, 4, ignore);
        Tensor loss = cross_entropy(logits, targets(t, tdt), ignore);
        REQUIRE(loss.shape() == Shape{});
        REQUIRE(loss.dtype() == dt);
        auto ref = ref_cross_entropy(logits.detach(), t, ignore);
        const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 1e-2;
        CHECK(loss.item<double>() == Approx(ref.loss).epsilon(tol).margin(tol));
        loss.backward();
        tgt::require_close(logits.grad().to(DType::f64), vec_t(ref.grad, {n, classes}), tol, tol);
        // ignored rows get exactly zero gradient
        auto g = logits.grad().to_vector<double>();
        for (std::int64_t r = 0; r < n; ++r) {
          if (t[r] != ignore) continue;
          for (std::int64_t c = 0; c < classes; ++c) CHECK(g[r * classes + c] == 0.0);
        }
      }
    }
  }
}

TEST_CASE("cross_entropy over rows the CPU splits over threads matches a plain f64 loop", "[ops][loss]") {
  // 5000 rows of 20 classes: the CPU kernels take ranges of 1638 rows (four ranges)
  const std::int64_t n = 5000, classes = 20;
  for (DType dt : {DType::f64, DType::f32}) {
    INFO("dtype " << dt);
    Tensor logits = rand_t({n, classes}, 5, dt).requires_grad_();
    auto t = make_targets(n, classes, 7, -100);
    Tensor loss = cross_entropy(logits, targets(t), -100);
    auto ref = ref_cross_entropy(logits.detach(), t, -100);
    const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
    CHECK(loss.item<double>() == Approx(ref.loss).epsilon(tol).margin(tol));
    loss.backward();
    tgt::require_close(logits.grad().to(DType::f64), vec_t(ref.grad, {n, classes}), tol, tol * 1e-3);
  }
}

TEST_CASE("cross_entropy: all rows ignored gives 0 and zero gradient; no rows gives 0", "[ops][loss]") {
  Tensor logits = rand_t({3, 4}, 1).requires_grad_();
  Tensor loss = cross_entropy(logits, targets({-100, -100, -100}));
  CHECK(loss.item<double>() == 0.0);
  loss.backward();
  for (double v : logits.grad().to_vector<double>()) CHECK(v == 0.0);
  Tensor none = empty({0, 5}, {.dtype = DType::f32});
  CHECK(cross_entropy(none, targets({})).item<double>() == 0.0);
  // no classes at all is fine when every row is ignored
  CHECK(cross_entropy(empty({2, 0}, {.dtype = DType::f32}), targets({-1, -1}), -1).item<double>() == 0.0);
  // one row, one class: loss 0
  CHECK(cross_entropy(vec_t({5.0}, {1, 1}), targets({0})).item<double>() == 0.0);
}

TEST_CASE("cross_entropy: extreme logits stay finite; -inf logits of other classes are fine", "[ops][loss]") {
  const double inf = std::numeric_limits<double>::infinity();
  Tensor logits = vec_t({1000, -1000, 0, /**/ -inf, 3, -inf}, {2, 3}, DType::f32);
  const double l = cross_entropy(logits, targets({0, 1})).item<double>();
  CHECK(l == Approx(0.0).margin(1e-6));
  const double l2 = cross_entropy(logits, targets({1, 1})).item<double>();
  CHECK(l2 == Approx(1000.0));  // (2000 + 0) / 2
}

TEST_CASE("cross_entropy gradient passes gradcheck", "[ops][loss]") {
  Tensor logits = tgt::rand64({5, 4}, 12).requires_grad_();
  Tensor t = targets({3, -100, 0, 1, 3});
  auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t); }, {logits});
  INFO(r.report);
  REQUIRE(r);
  Tensor t32 = targets({0, 0, 2, 2, 1}, DType::i32);
  auto r2 = autograd::gradcheck([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t32, 2); }, {logits});
  INFO(r2.report);
  REQUIRE(r2);
}

TEST_CASE("cross_entropy rejects bad inputs before any kernel runs", "[ops][loss]") {
  Tensor logits = rand_t({4, 5}, 2);
  tgt::require_throws<ValueError>([&] { (void)cross_entropy(logits, targets({0, 1, 7, 2})); },
                                  {"cross_entropy", "target[2]", "= 7", "C = 5"});
  tgt::require_throws<ValueError>([&] { (void)cross_entropy(logits, targets({0, -3, 1, 2}, DType::i32)); },
                                  {"cross_entropy", "target[1]", "= -3", "C = 5"});
  // -100 is only allowed as the ignore_index
  tgt::require_throws<ValueError>([&] { (void)cross_entropy(logits, targets({0, -100, 1, 2}), -1); },
                                  {"cross_entropy", "target[1]", "-100"});
  tgt::require_throws<ValueError>([&] { (void)cross_entropy(logits, targets({5, 0, 0, 0})); },
                                  {"target[0]", "= 5", "C = 5"});
  tgt::require_throws<DTypeError>([&] { (void)cross_entropy(logits, rand_t({4}, 1, DType::f32)); },
                                  {"cross_entropy", "target", "i64 or i32", "f32"});
  tgt::require_throws<ShapeError>([&] { (void)cross_entropy(logits, targets({0, 1, 2})); },
                                  {"cross_entropy", "target", "[4]", "[3]"});
  tgt::require_throws<ShapeError>([&] { (void)cross_entropy(rand_t({5}, 1), targets({0})); },
                                  {"cross_entropy", "logits", "2-d", "[5]"});
  tgt::require_throws<DTypeError>(
      [&] { (void)cross_entropy(targets({0, 1}).to(DType::i32), targets({0, 1})); },
      {"cross_entropy", "logits", "floating"});
}

TEST_CASE("mse_loss matches a plain f64 loop; gradients in both arguments", "[ops][loss]") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    INFO("dtype " << dt);
    Tensor a = rand_t({3, 7}, 1, dt).requires_grad_(), b = rand_t({3, 7}, 2, dt).requires_grad_();
    auto av = a.to_vector<double>(), bv = b.to_vector<double>();
    double ref = 0;
    for (std::size_t i = 0; i < av.size(); ++i) ref += (av[i] - bv[i]) * (av[i] - bv[i]);
    ref /= static_cast<double>(av.size());
    Tensor l = mse_loss(a, b);
    REQUIRE(l.shape() == Shape{});
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-6 : 1e-2;
    CHECK(l.item<double>() == Approx(ref).epsilon(tol));
    l.backward(vec_t({3.0}, Shape{}, dt));
    std::vector<double> want(av.size());
    for (std::size_t i = 0; i < av.size(); ++i) want[i] = 3.0 * 2.0 * (av[i] - bv[i]) / static_cast<double>(av.size());
    tgt::require_close(a.grad().to(DType::f64), vec_t(want, {3, 7}), tol, tol);
    for (double& w : want) w = -w;
    tgt::require_close(b.grad().to(DType::f64), vec_t(want, {3, 7}), tol, tol);
  }
  CHECK(std::isnan(mse_loss(empty({0, 3}), empty({0, 3})).item<double>()));
  CHECK(mse_loss(vec_t({2}, Shape{}), vec_t({5}, Shape{})).item<double>() == 9.0);
  // only one side requiring grad
  Tensor a = rand_t({4}, 3).requires_grad_();
  mse_loss(a, rand_t({4}, 4)).backward();
  CHECK(a.grad().shape() == Shape{4});
}

TEST_CASE("mse_loss passes gradcheck and rejects bad inputs", "[ops][loss]") {
  Tensor a = tgt::rand64({2, 5}, 7).requires_grad_(), b = tgt::rand64({2, 5}, 8).requires_grad_();
  auto r = autograd::gradcheck([](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); }, {a, b});
  INFO(r.report);
  REQUIRE(r);
  tgt::require_throws<ShapeError>([&] { (void)mse_loss(rand_t({2, 5}, 1), rand_t({5, 2}, 1)); },
                                  {"mse_loss", "same shape", "[2, 5]", "[5, 2]"});
  tgt::require_throws<DTypeError>([&] { (void)mse_loss(rand_t({2}, 1), rand_t({2}, 1, DType::f32)); },
                                  {"mse_loss", "same dtype", "f64", "f32"});
  tgt::require_throws<DTypeError>([&] { (void)mse_loss(targets({1, 2}), targets({1, 2})); },
                                  {"mse_loss", "a", "floating"});
}

// ---- CUDA against the CPU ------------------------------------------------------------------

TEST_CASE("CUDA cross_entropy matches the CPU (warp and block rows, every dtype, both index types)",
          "[ops][loss][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const std::vector<std::int64_t> class_sizes = {1, 3, 10, 32, 33, 1000, 1024, 1025, 5000, 50257};
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (std::int64_t classes : class_sizes) {
      for (DType tdt : {DType::i64, DType::i32}) {
        const std::int64_t n = classes >= 5000 ? 9 : 77;
        INFO("dtype " << dt << ", classes " << classes << ", target " << tdt);
        Tensor logits = rand_t({n, classes}, static_cast<std::uint64_t>(classes) + 5, dt, Device::cpu(), -5.0, 5.0);
        Tensor t = targets(make_targets(n, classes, 3, -100), tdt);
        Tensor a = logits.detach().requires_grad_(), b = logits.to(gpu).detach().requires_grad_();
        Tensor la = cross_entropy(a, t), lb = cross_entropy(b, t.to(gpu));
        REQUIRE(lb.device() == gpu);
        const bool half = dt == DType::bf16 || dt == DType::f16;
        const double tol = dt == DType::f64 ? 1e-12 : half ? 1e-2 : 1e-5;
        CHECK(lb.item<double>() == Approx(la.item<double>()).epsilon(tol).margin(tol));
        la.backward(vec_t({2.0}, Shape{}, dt));
        lb.backward(vec_t({2.0}, Shape{}, dt).to(gpu));
        tgt::require_close(b.grad().to(Device::cpu()), a.grad(), tol, dt == DType::f64 ? 1e-14 : half ? 1e-3 : 1e-7);
      }
    }
  }
  // all rows ignored, no rows, and out-of-range targets on device tensors
  Tensor lg = rand_t({3, 4}, 1, DType::f32, gpu);
  CHECK(cross_entropy(lg, targets({-100, -100, -100}).to(gpu)).item<double>() == 0.0);
  CHECK(cross_entropy(empty({0, 4}, {.dtype = DType::f32, .device = gpu}), targets({}).to(gpu)).item<double>() ==
        0.0);
  // Out-of-range targets: counted on the GPU and raised at the next synchronisation (the
  // first bad one named), or by the call with sync checks on; ignored rows never count.
  for (DType tdt : {DType::i64, DType::i32}) {
    INFO("target " << tdt);
    {
      tgt::SyncChecksGuard mode(false);
      Tensor l;
      REQUIRE_NOTHROW(l = cross_entropy(lg, targets({0, 4, 7}, tdt).to(gpu)));
      tgt::require_throws<ValueError>([&] { (void)l.item<double>(); },
                                      {"cross_entropy", "target[1]", "= 4", "C = 4", "after the op returned"});
      REQUIRE_NOTHROW(synchronize(gpu));
      tgt::require_throws<ValueError>(
          tgt::synced([&] { (void)cross_entropy(lg, targets({-100, -5, 1}, tdt).to(gpu)); }),
          {"cross_entropy", "target[1]", "= -5"});
      tgt::require_throws<ValueError>(
          tgt::synced([&] { (void)cross_entropy(lg, targets({-100, 1, 2}, tdt).to(gpu), 1); }),
          {"cross_entropy", "target[0]", "= -100"});
      CHECK(cross_entropy(lg, targets({3, 1, 2}, tdt).to(gpu), 1).item<double>() ==
            Approx(cross_entropy(lg.to(Device::cpu()), targets({3, 1, 2}, tdt), 1).item<double>()).epsilon(1e-6));
    }
    tgt::SyncChecksGuard mode(true);
    tgt::require_throws<ValueError>([&] { (void)cross_entropy(lg, targets({0, 4, 1}, tdt).to(gpu)); },
                                    {"cross_entropy", "target[1]", "= 4", "C = 4"});
  }
  tgt::require_throws<DeviceError>([&] { (void)cross_entropy(lg, targets({0, 1, 1})); },
                                   {"cross_entropy", "same device"});
}

TEST_CASE("CUDA mse_loss matches the CPU", "[ops][loss][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{3'000'017}}) {
      INFO("dtype " << dt << ", n " << n);
      Tensor a = rand_t({n}, 1, dt), b = rand_t({n}, 2, dt);
      Tensor ac = a.detach().requires_grad_(), ag = a.to(gpu).detach().requires_grad_();
      Tensor bg = b.to(gpu).detach().requires_grad_();
      Tensor lc = mse_loss(ac, b), lg = mse_loss(ag, bg);
      const bool half = dt == DType::bf16 || dt == DType::f16;
      const double tol = dt == DType::f64 ? 1e-12 : half ? 1e-2 : 1e-5;
      CHECK(lg.item<double>() == Approx(lc.item<double>()).epsilon(tol));
      lc.backward();
      lg.backward();
      tgt::require_close(ag.grad().to(Device::cpu()), ac.grad(), tol, 1e-12);
      tgt::require_close(bg.grad().to(Device::cpu()), neg(ac.grad()), tol, 1e-12);
    }
  }
  CHECK(std::isnan(mse_loss(empty({0}, {.dtype = DType::f32, .device = gpu}),
                            empty({0}, {.dtype = DType::f32, .device = gpu}))
                       .item<double>()));
}

}  // namespace test_loss
