// dropout: the mask against philox::uniform computed here, scaling, statistics, gradcheck,
// edge cases, bad inputs, and [cuda]: the same mask and values as the CPU, bit for bit.
#include <cmath>
#include <memory>
#include <vector>

#include "util.h"

namespace test_dropout {

using namespace tg;

namespace {

const std::vector<DType> kDoDtypes = {DType::f64, DType::f32, DType::bf16, DType::f16};

// The mask the op must use: element i is kept iff uniform(seed, offset, i) >= p.
std::vector<bool> reference_mask(std::int64_t n, double p, std::uint64_t seed, std::uint64_t offset) {
  std::vector<bool> keep(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    keep[static_cast<std::size_t>(i)] =
        static_cast<double>(philox::uniform(seed, offset, static_cast<std::uint64_t>(i))) >= p;
  return keep;
}

}  // namespace

TEST_CASE("dropout keeps exactly the elements whose Philox uniform is >= p, scaled by 1/(1-p)",
          "[ops][dropout]") {
  std::uint64_t seed = 10;
  for (DType dt : kDoDtypes) {
    for (const Shape& s : std::vector<Shape>{{1}, {7}, {3, 5}, {2, 3, 61}, {1000}}) {
      for (double p : {0.1, 0.5, 0.75}) {
        INFO(dt << " " << s << " p " << p);
        const std::uint64_t sd = ++seed, off = seed * 3;
        // Never-zero inputs, so zeros in the output are exactly the dropped elements.
        Tensor x = rand_seeded(s, ++seed, {.dtype = dt}, 0.5, 1.5);
        Tensor y = dropout(x, p, sd, off);
        REQUIRE(y.shape() == s);
        REQUIRE(y.dtype() == dt);
        const auto keep = reference_mask(x.numel(), p, sd, off);
        const auto xv = tgt::values(x), yv = tgt::values(y);
        std::vector<double> ref(xv.size());
        for (std::size_t i = 0; i < xv.size(); ++i) {
          if (!keep[i]) REQUIRE(yv[i] == 0.0);
          else REQUIRE(yv[i] != 0.0);
          ref[i] = keep[i] ? xv[i] / (1.0 - p) : 0.0;
        }
        const double t = dt == DType::f64 ? 1e-14 : dt == DType::f32 ? 1e-6 : dt == DType::bf16 ? 8e-3 : 1e-3;
        tgt::require_close(y, from_vector(ref, s), t, 0);
      }
    }
  }
}

TEST_CASE("dropout keeps about 1-p of the elements and preserves the mean", "[ops][dropout]") {
  const std::int64_t n = 200000;
  Tensor x = ones({n});
  for (double p : {0.05, 0.3, 0.5, 0.9}) {
    INFO("p " << p);
    Tensor y = dropout(x, p, 42, 7);
    const auto v = tgt::values(y);
    std::int64_t kept = 0;
    for (double e : v) kept += e != 0.0;
    const double frac = static_cast<double>(kept) / static_cast<double>(n);
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(n));
    REQUIRE(std::fabs(frac - (1 - p)) < 5 * sigma);
    REQUIRE(mean(y).item<double>() == Approx(1.0).margin(5 * sigma / (1 - p)));
  }
}

TEST_CASE("dropout masks depend only on (seed, offset)", "[ops][dropout]") {
  Tensor x = ones({4096});
  auto mask = [&](std::uint64_t s, std::uint64_t o) { return tgt::values(dropout(x, 0.5, s, o)); };
  REQUIRE(mask(1, 2) == mask(1, 2));
  REQUIRE(mask(1, 2) != mask(1, 3));
  REQUIRE(mask(1, 2) != mask(2, 2));
  // The mask of an element does not depend on the tensor's shape or size.
  auto big = mask(5, 9);
  auto small = tgt::values(dropout(ones({8, 8}), 0.5, 5, 9));
  for (std::size_t i = 0; i < small.size(); ++i) REQUIRE(small[i] == big[i]);
}

TEST_CASE("dropout gradient: the same mask and scale, and gradcheck", "[ops][dropout]") {
  Tensor x = tgt::rand64({9, 13}, 3).requires_grad_();
  Tensor y = dropout(x, 0.4, 11, 12);
  Tensor g = tgt::rand64({9, 13}, 4);
  y.backward(g);
  const auto keep = reference_mask(x.numel(), 0.4, 11, 12);
  const auto gv = tgt::values(g), dx = tgt::values(x.grad());
  for (std::size_t i = 0; i < gv.size(); ++i) REQUIRE(dx[i] == Approx(keep[i] ? gv[i] / 0.6 : 0.0).epsilon(1e-14));
  auto res = autograd::gradcheck([](const std::vector<Tensor>& in) { return dropout(in[0], 0.3, 5, 6); },
                                 {tgt::rand64({4, 7}, 5).requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
  // Composed: gradient through dropout of a product.
  auto res2 = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return dropout(mul(in[0], in[1]), 0.5, 8, 1); },
      {tgt::rand64({3, 5}, 6).requires_grad_(), tgt::rand64({3, 5}, 7).requires_grad_()});
  INFO(res2.report);
  REQUIRE(res2.ok);
}

TEST_CASE("dropout edge cases", "[ops][dropout]") {
  Tensor x = tgt::rand64({3, 4}, 1).requires_grad_();
  // p == 0 is the identity (the very same tensor).
  REQUIRE(dropout(x, 0.0, 1, 2).is_same(x));
  // Empty tensors.
  Tensor e = dropout(zeros({0, 5}), 0.5, 1, 2);
  REQUIRE(e.shape() == Shape{0, 5});
  // A single element: kept or dropped as the reference says.
  Tensor one = dropout(full({1}, 2.0, {.dtype = DType::f64}), 0.5, 3, 4);
  REQUIRE(one.item<double>() == (reference_mask(1, 0.5, 3, 4)[0] ? 4.0 : 0.0));
  // Dropped elements are 0 even for inf / nan inputs; kept ones keep them.
  Tensor special = full({64}, INFINITY, {.dtype = DType::f32});
  const auto keep = reference_mask(64, 0.5, 9, 9);
  const auto sv = tgt::values(dropout(special, 0.5, 9, 9));
  for (std::size_t i = 0; i < 64; ++i) REQUIRE(sv[i] == (keep[i] ? INFINITY : 0.0));
  // p very close to 1 keeps only a few elements, scaled a lot.
  Tensor big = dropout(ones({100000}), 0.999, 1, 1);
  REQUIRE(std::isfinite(sum(big).item<double>()));
}

TEST_CASE("dropout rejects bad inputs", "[ops][dropout]") {
  Tensor x = zeros({4});
  tgt::require_throws<ValueError>([&] { (void)dropout(x, 1.0, 0, 0); }, {"dropout", "p", "[0, 1)", "1"});
  tgt::require_throws<ValueError>([&] { (void)dropout(x, -0.1, 0, 0); }, {"dropout", "p", "-0.1"});
  tgt::require_throws<ValueError>([&] { (void)dropout(x, NAN, 0, 0); }, {"dropout", "p", "nan"});
  tgt::require_throws<DTypeError>([&] { (void)dropout(zeros({4}, {.dtype = DType::i64}), 0.5, 0, 0); },
                                  {"dropout", "x", "floating", "i64"});
  tgt::require_throws<ValueError>([&] { (void)dropout(Tensor(), 0.5, 0, 0); }, {"dropout", "x", "undefined"});
}

TEST_CASE("dropout on CUDA uses the same mask as the CPU, bit for bit", "[ops][dropout][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  std::uint64_t seed = 500;
  for (DType dt : kDoDtypes) {
    // Sizes around the 4-element groups and large ones (grid-stride loops).
    for (std::int64_t n : {1, 3, 4, 5, 127, 4096, 100003, 3000001}) {
      for (double p : {0.1, 0.5, 0.9}) {
        INFO(dt << " n " << n << " p " << p);
        const std::uint64_t sd = ++seed, off = (seed << 20) + 12345;
        Tensor xh = rand_seeded({n}, ++seed, {.dtype = dt}, 0.5, 1.5);
        Tensor yh = dropout(xh, p, sd, off);
        Tensor yd = dropout(xh.to(gpu), p, sd, off);
        REQUIRE(yd.device() == gpu);
        // The same arithmetic on both sides: identical values, hence identical masks.
        tgt::require_close(yd.to(Device::cpu()), yh, 0, 0);
        if (n >= 100000) {
          const auto v = tgt::values(yd);
          std::int64_t kept = 0;
          for (double e : v) kept += e != 0.0;
          const double frac = static_cast<double>(kept) / static_cast<double>(n);
          REQUIRE(std::fabs(frac - (1 - p)) < 5 * std::sqrt(p * (1 - p) / static_cast<double>(n)));
        }
        // Backward on both devices: the gradient gets the same mask.
        Tensor gh = rand_seeded({n}, ++seed, {.dtype = dt}, -1, 1);
        Tensor xa = xh.detach().requires_grad_(), xb = xh.to(gpu).detach().requires_grad_();
        dropout(xa, p, sd, off).backward(gh);
        dropout(xb, p, sd, off).backward(gh.to(gpu));
        tgt::require_close(xb.grad().to(Device::cpu()), xa.grad(), 0, 0);
      }
    }
    // Unaligned data pointers (scalar path) give the same result too.
    {
      INFO("misaligned " << dt);
      Tensor base = rand_seeded({1001}, ++seed, {.dtype = dt, .device = gpu}, 0.5, 1.5);
      Tensor xd = tgt::misaligned_view(base, 1, {1000});
      tgt::require_close(dropout(xd, 0.3, 77, 88).to(Device::cpu()), dropout(xd.to(Device::cpu()), 0.3, 77, 88), 0,
                         0);
    }
  }
  // Ones make the mask visible: compare it with the reference computed here.
  const auto keep = reference_mask(10007, 0.25, 123, 456);
  const auto v = tgt::values(dropout(ones({10007}, {.device = gpu}), 0.25, 123, 456));
  for (std::size_t i = 0; i < v.size(); ++i) REQUIRE((v[i] != 0.0) == keep[i]);
  REQUIRE(dropout(zeros({0}, {.device = gpu}), 0.5, 1, 1).numel() == 0);
}

}  // namespace test_dropout
