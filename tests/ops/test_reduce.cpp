// Tests of sum / mean / max (ops/reduce): plain-loop f64 references, edge cases (empty,
// one element, nan, -inf, ties), gradchecks, bad inputs, and CUDA against the CPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "util.h"

namespace test_reduce {

using namespace tg;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor rand_t(const Shape& s, std::uint64_t seed, DType dt = DType::f64, Device dev = Device::cpu(),
              double lo = -1.0, double hi = 1.0) {
  return tgt::rand64(s, seed, lo, hi).to(dt).to(dev);
}

// Reference reductions of each row of v viewed as [rows, cols] (cols = 0 allowed).
struct RowRef {
  std::vector<double> sum, mean, max;
  std::vector<std::int64_t> argmax;
};
RowRef row_ref(const std::vector<double>& v, std::int64_t rows, std::int64_t cols) {
  RowRef r;
  for (std::int64_t i = 0; i < rows; ++i) {
    double s = 0, m = -kInf;
    std::int64_t am = 0;
    bool seen_nan = false;
    for (std::int64_t j = 0; j < cols; ++j) {
      const double x = v[static_cast<std::size_t>(i * cols + j)];
      s += x;
      if (seen_nan) continue;
      if (std::isnan(x)) {
        seen_nan = true;
        m = x;
        am = j;
      } else if (j == 0 || x > m) {
        m = x;
        am = j;
      }
    }
    r.sum.push_back(s);
    r.mean.push_back(s / static_cast<double>(cols));
    r.max.push_back(m);
    r.argmax.push_back(am);
  }
  return r;
}

using tgt::vec_t;

}  // namespace

TEST_CASE("sum/mean/max over all elements match a plain f64 loop", "[ops][reduce]") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    INFO("dtype " << dt);
    Tensor x = rand_t({3, 5, 7}, 11, dt);
    auto v = x.to_vector<double>();  // the values actually stored
    auto ref = row_ref(v, 1, static_cast<std::int64_t>(v.size()));
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 1e-2;
    Tensor s = sum(x), m = mean(x), mx = max(x);
    REQUIRE(s.shape() == Shape{});
    REQUIRE(s.dtype() == dt);
    CHECK(s.item<double>() == Approx(ref.sum[0]).epsilon(tol).margin(tol));
    CHECK(m.item<double>() == Approx(ref.mean[0]).epsilon(tol).margin(tol));
    CHECK(mx.item<double>() == ref.max[0]);  // max is exact
  }
}

TEST_CASE("sum of a million f32 values stays accurate (f32 accumulation, pairwise)", "[ops][reduce]") {
  Tensor x = rand_t({1 << 20}, 5, DType::f32, Device::cpu(), 0.0, 1.0);
  auto v = x.to_vector<double>();
  double ref = 0;
  for (double e : v) ref += e;
  CHECK(sum(x).item<double>() == Approx(ref).epsilon(1e-6));
  CHECK(mean(x).item<double>() == Approx(ref / static_cast<double>(v.size())).epsilon(1e-6));
}

TEST_CASE("sum/mean/max over the last dim match a plain f64 loop, with and without keepdim", "[ops][reduce]") {
  struct Case {
    Shape shape, out, out_keep;
  };
  const std::vector<Case> cases = {
      {{7}, {}, {1}},
      {{4, 9}, {4}, {4, 1}},
      {{2, 3, 5}, {2, 3}, {2, 3, 1}},
      {{3, 1}, {3}, {3, 1}},
      {{1, 1, 1}, {1, 1}, {1, 1, 1}},
  };
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    for (const auto& c : cases) {
      INFO("dtype " << dt << ", shape " << c.shape);
      Tensor x = rand_t(c.shape, 21, dt);
      const std::int64_t cols = c.shape[-1];
      const std::int64_t rows = x.numel() / cols;
      auto ref = row_ref(x.to_vector<double>(), rows, cols);
      const Shape rs{rows};
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-6 : 1e-2;
      for (bool keep : {false, true}) {
        Tensor s = sum(x, -1, keep), m = mean(x, c.shape.ndim() - 1, keep), mx = max(x, -1, keep);
        const Shape& want = keep ? c.out_keep : c.out;
        REQUIRE(s.shape() == want);
        REQUIRE(m.shape() == want);
        REQUIRE(mx.shape() == want);
        REQUIRE(s.dtype() == dt);
        tgt::require_close(reshape(s, rs).to(DType::f64), vec_t(ref.sum, rs), tol, tol);
        tgt::require_close(reshape(m, rs).to(DType::f64), vec_t(ref.mean, rs), tol, tol);
        tgt::require_close(reshape(mx, rs).to(DType::f64), vec_t(ref.max, rs), 0, 0);
      }
    }
  }
}

TEST_CASE("reductions of a 0-d tensor and of one element", "[ops][reduce]") {
  Tensor x = vec_t({2.5}, Shape{});
  CHECK(sum(x).item<double>() == 2.5);
  CHECK(mean(x).item<double>() == 2.5);
  CHECK(max(x).item<double>() == 2.5);
  Tensor s = sum(x, -1);
  CHECK(s.shape() == Shape{});
  CHECK(s.item<double>() == 2.5);
  CHECK(max(x, 0, true).item<double>() == 2.5);
  Tensor one = vec_t({-4.0}, {1});
  CHECK(sum(one).item<double>() == -4.0);
  CHECK(max(one, -1).item<double>() == -4.0);
}

TEST_CASE("empty inputs: sum 0, mean nan, max throws", "[ops][reduce]") {
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    INFO("dtype " << dt);
    Tensor e = empty({0, 4}, {.dtype = dt});
    CHECK(sum(e).item<double>() == 0.0);
    CHECK(std::isnan(mean(e).item<double>()));
    tgt::require_throws<ShapeError>([&] { (void)max(e); }, {"max", "at least one element", "[0, 4]"});
    // rows of extent 0: sum 0 and mean nan per row; no rows: empty results
    Tensor z = empty({3, 0}, {.dtype = dt});
    auto sv = sum(z, -1).to_vector<double>();
    REQUIRE(sv.size() == 3);
    for (double v : sv) CHECK(v == 0.0);
    for (double v : mean(z, -1).to_vector<double>()) CHECK(std::isnan(v));
    tgt::require_throws<ShapeError>([&] { (void)max(z, -1); }, {"max", "extent 0", "[3, 0]"});
    CHECK(sum(e, -1).shape() == Shape{0});
    CHECK(max(e, -1, true).shape() == Shape{0, 1});
  }
}

TEST_CASE("max: nan propagates, -inf rows, ties give the gradient to the first maximum", "[ops][reduce]") {
  Tensor x = vec_t({1, 3, 3, 2, /**/ -kInf, -kInf, -kInf, -kInf, /**/ 0, NAN, 5, NAN}, {3, 4}).requires_grad_();
  Tensor m = max(x, -1);
  auto mv = m.to_vector<double>();
  CHECK(mv[0] == 3.0);
  CHECK(mv[1] == -kInf);
  CHECK(std::isnan(mv[2]));
  m.backward(vec_t({10, 20, 30}, {3}));
  auto g = x.grad().to_vector<double>();
  const std::vector<double> want = {0, 10, 0, 0, 20, 0, 0, 0, 0, 30, 0, 0};
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i);
    CHECK(g[i] == want[i]);
  }
  // over all elements: the first nan is the maximum
  Tensor y = vec_t({1, 7, 7, 2}, {4}).requires_grad_();
  max(y).backward();
  auto gy = y.grad().to_vector<double>();
  CHECK(gy == std::vector<double>{0, 1, 0, 0});
  CHECK(std::isnan(max(vec_t({1, NAN, 2}, {3})).item<double>()));
  CHECK(std::isnan(sum(vec_t({1, NAN, 2}, {3})).item<double>()));
  CHECK(sum(vec_t({1, kInf, 2}, {3})).item<double>() == kInf);
}

TEST_CASE("sum and mean backward broadcast the gradient", "[ops][reduce]") {
  Tensor x = rand_t({2, 3}, 3).requires_grad_();
  mean(x, -1, true).backward(vec_t({6, 12}, {2, 1}));
  auto g = x.grad().to_vector<double>();
  const std::vector<double> want = {2, 2, 2, 4, 4, 4};
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(g[i] == Approx(want[i]));
  Tensor y = rand_t({5}, 4).requires_grad_();
  sum(y).backward(vec_t({3}, Shape{}));
  for (double v : y.grad().to_vector<double>()) CHECK(v == 3.0);
}

TEST_CASE("reduction gradients pass gradcheck", "[ops][reduce]") {
  Tensor x = tgt::rand64({3, 4, 5}, 99).requires_grad_();
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  const std::vector<std::pair<const char*, F>> fs = {
      {"sum", [](const std::vector<Tensor>& in) { return sum(in[0]); }},
      {"mean", [](const std::vector<Tensor>& in) { return mean(in[0]); }},
      {"max", [](const std::vector<Tensor>& in) { return max(in[0]); }},
      {"sum(-1)", [](const std::vector<Tensor>& in) { return sum(in[0], -1); }},
      {"mean(-1, keep)", [](const std::vector<Tensor>& in) { return mean(in[0], -1, true); }},
      {"max(2)", [](const std::vector<Tensor>& in) { return max(in[0], 2); }},
      {"max(-1, keep)", [](const std::vector<Tensor>& in) { return max(in[0], -1, true); }},
  };
  for (const auto& [name, f] : fs) {
    INFO(name);
    auto r = autograd::gradcheck(f, {x});
    INFO(r.report);
    REQUIRE(r);
  }
}

TEST_CASE("reductions reject bad inputs", "[ops][reduce]") {
  Tensor xi = from_vector<std::int64_t>({1, 2, 3}, {3});
  tgt::require_throws<DTypeError>([&] { (void)sum(xi); }, {"sum", "x", "floating", "i64"});
  tgt::require_throws<DTypeError>([&] { (void)max(xi, -1); }, {"max", "x", "floating"});
  Tensor x = rand_t({2, 3, 4}, 1);
  tgt::require_throws<ShapeError>([&] { (void)sum(x, 1); }, {"sum", "only the last dim", "got dim 1", "[2, 3, 4]"});
  tgt::require_throws<ShapeError>([&] { (void)mean(x, 0, true); }, {"mean", "last dim", "dim 0"});
  tgt::require_throws<ShapeError>([&] { (void)max(x, 3); }, {"max", "dim 3", "out of range"});
  tgt::require_throws<ShapeError>([&] { (void)sum(x, -4); }, {"sum", "-4", "out of range"});
  Tensor s = vec_t({1}, Shape{});
  tgt::require_throws<ShapeError>([&] { (void)sum(s, 1); }, {"sum", "dim 1", "0-d"});
  tgt::require_throws<ValueError>([&] { (void)sum(Tensor()); }, {"sum", "x", "undefined"});
}

// ---- CUDA against the CPU ------------------------------------------------------------------

TEST_CASE("CUDA reductions match the CPU (all elements, every dtype, large sizes)", "[ops][reduce][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (std::int64_t n : {std::int64_t{1}, std::int64_t{7}, std::int64_t{1000}, std::int64_t{(1 << 20) + 3},
                           std::int64_t{5'000'011}}) {
      INFO("dtype " << dt << ", n " << n);
      Tensor x = rand_t({n}, static_cast<std::uint64_t>(n) + 1, dt, Device::cpu(), -2.0, 2.0);
      Tensor xg = x.to(gpu);
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-4 : 2e-2;
      const double ref_sum = sum(x.to(DType::f64)).item<double>();
      const double atol = tol * (1.0 + std::sqrt(static_cast<double>(n)));
      CHECK(sum(xg).item<double>() == Approx(ref_sum).epsilon(tol).margin(atol));
      CHECK(mean(xg).item<double>() == Approx(ref_sum / static_cast<double>(n)).epsilon(tol).margin(tol));
      CHECK(max(xg).item<double>() == max(x).item<double>());
      // gradients
      Tensor a = x.detach().requires_grad_(), b = xg.detach().requires_grad_();
      max(a).backward();
      max(b).backward();
      tgt::require_close(b.grad().to(Device::cpu()), a.grad(), 0, 0);
    }
  }
  // empty and nan on the device
  Tensor e = empty({0}, {.dtype = DType::f32, .device = gpu});
  CHECK(sum(e).item<double>() == 0.0);
  CHECK(std::isnan(mean(e).item<double>()));
  tgt::require_throws<ShapeError>([&] { (void)max(e); }, {"max"});
  Tensor xn = vec_t({1, NAN, 5, NAN, 9}, {5}, DType::f32).to(gpu).requires_grad_();
  Tensor mn = max(xn);
  CHECK(std::isnan(mn.item<double>()));
  mn.backward();
  CHECK(xn.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 0, 0});
  // ties over a large tensor: the first maximum gets the gradient
  std::vector<double> tv(300000, 1.0);
  tv[123457] = tv[200000] = tv[299999] = 4.0;
  Tensor xt = vec_t(tv, {300000}, DType::f32).to(gpu).requires_grad_();
  max(xt).backward();
  auto gt = xt.grad().to_vector<double>();
  CHECK(gt[123457] == 1.0);
  CHECK(gt[200000] == 0.0);
  CHECK(sum(xt.grad()).item<double>() == 1.0);
}

TEST_CASE("CUDA last-dim reductions match the CPU (warp and block rows, aligned or not)", "[ops][reduce][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // 16-bit sums of aligned rows up to 8192 (multiples of 8) take one warp per row.
  const std::vector<std::int64_t> col_sizes = {1,    3,    8,    16,   31,   32,   33,   100,  1000,
                                               1024, 1025, 2048, 2056, 4096, 4099, 6000, 8192, 8200, 20000};
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    for (std::int64_t cols : col_sizes) {
      const std::int64_t rows = cols >= 4096 ? 37 : 301;
      INFO("dtype " << dt << ", rows " << rows << ", cols " << cols);
      Tensor x = rand_t({rows, cols}, static_cast<std::uint64_t>(cols) * 7 + 1, dt);
      Tensor xg = x.to(gpu);
      const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-5 : 1e-2;
      tgt::require_close(sum(xg, -1).to(Device::cpu()), sum(x, -1), tol, tol * 10);
      tgt::require_close(mean(xg, -1, true).to(Device::cpu()), mean(x, -1, true), tol, tol);
      tgt::require_close(max(xg, -1).to(Device::cpu()), max(x, -1), 0, 0);
      Tensor go = rand_t({rows}, 5, dt);
      for (int which = 0; which < 3; ++which) {
        INFO("op " << (which == 0 ? "sum" : which == 1 ? "mean" : "max"));
        Tensor a = x.detach().requires_grad_(), b = xg.detach().requires_grad_();
        auto f = [which](const Tensor& t) { return which == 0 ? sum(t, -1) : which == 1 ? mean(t, -1) : max(t, -1); };
        f(a).backward(go);
        f(b).backward(go.to(gpu));
        tgt::require_close(b.grad().to(Device::cpu()), a.grad(), 1e-6, 1e-7);
      }
    }
  }
  // rows with ties, -inf and nan
  Tensor x = vec_t({2, 5, 5, 5, /**/ -kInf, -kInf, -kInf, -kInf, /**/ 1, NAN, 3, NAN}, {3, 4}, DType::f32);
  Tensor b = x.to(gpu).requires_grad_();
  Tensor m = max(b, -1);
  tgt::require_close(m.to(Device::cpu()), max(x, -1), 0, 0);
  m.backward(vec_t({1, 1, 1}, {3}, DType::f32).to(gpu));
  CHECK(b.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0});
  // no rows and empty rows on the device
  Tensor z = empty({4, 0}, {.dtype = DType::f32, .device = gpu});
  CHECK(sum(z, -1).to_vector<double>() == std::vector<double>(4, 0.0));
  CHECK(sum(empty({0, 5}, {.dtype = DType::f32, .device = gpu}), -1).shape() == Shape{0});
}

TEST_CASE("CUDA 16-bit row sums: many rows and misaligned views", "[ops][reduce][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::bf16, DType::f16}) {
    for (std::int64_t cols : {std::int64_t{2048}, std::int64_t{264}}) {
      INFO("dtype " << dt << ", cols " << cols);
      Tensor x = rand_t({5000, cols}, static_cast<std::uint64_t>(cols) + 3, dt);
      tgt::require_close(sum(x.to(gpu), -1).to(Device::cpu()), sum(x, -1), 1e-2, 0.1);
      tgt::require_close(mean(x.to(gpu), -1).to(Device::cpu()), mean(x, -1), 1e-2, 1e-2);
    }
    INFO("misaligned " << dt);
    Tensor base = rand_t({300 * 2048 + 1}, 17, dt).to(gpu);
    Tensor xm = tgt::misaligned_view(base, 1, {300, 2048});
    tgt::require_close(sum(xm, -1).to(Device::cpu()), sum(xm.to(Device::cpu()), -1), 1e-2, 0.1);
  }
}

}  // namespace test_reduce
