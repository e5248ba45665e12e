// Tests of nn::init (in-place initialisers: bounds and moments from the fans, the same
// values for the same seed on any dtype, the parameter's identity kept) and of freezing a
// module (Module::requires_grad_).
#include <cmath>

#include "util.h"

namespace test_init {

using namespace tg;

namespace {

double mean_of(const Tensor& t) {
  double s = 0;
  for (double v : tgt::values(t)) s += v;
  return s / static_cast<double>(t.numel());
}
double std_of(const Tensor& t) {
  const double m = mean_of(t);
  double s = 0;
  for (double v : tgt::values(t)) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(t.numel()));
}
double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : tgt::values(t)) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

TEST_CASE("nn::init fills in place from the fans", "[nn][init]") {
  nn::Linear lin(300, 200, true, {}, 1);  // weight [200, 300]: fan_in 300, fan_out 200
  Tensor w = lin.weight;
  const TensorImpl* id = &w.impl();
  REQUIRE(nn::init::fans(w) == std::pair<std::int64_t, std::int64_t>{300, 200});
  REQUIRE(nn::init::fans(zeros({4, 3, 5, 5})) == std::pair<std::int64_t, std::int64_t>{75, 100});

  const double xa = std::sqrt(6.0 / 500.0);
  nn::init::xavier_uniform_(w, 7);
  CHECK(max_abs(w) <= xa);
  CHECK(max_abs(w) > 0.99 * xa);  // 60000 draws reach the bound
  CHECK(std::abs(std_of(w) - xa / std::sqrt(3.0)) < 0.01 * xa);
  nn::init::xavier_normal_(w, 8, 2.0);
  CHECK(std::abs(std_of(w) - 2.0 * std::sqrt(2.0 / 500.0)) < 0.02 * 2.0 * std::sqrt(2.0 / 500.0));
  nn::init::kaiming_normal_(w, 9);
  CHECK(std::abs(std_of(w) - std::sqrt(2.0 / 300.0)) < 0.02 * std::sqrt(2.0 / 300.0));
  CHECK(std::abs(mean_of(w)) < 0.01 * std::sqrt(2.0 / 300.0) * 10);
  nn::init::kaiming_uniform_(w, 10);
  CHECK(max_abs(w) <= std::sqrt(2.0) * std::sqrt(3.0 / 300.0));
  // The parameter is the same tensor, still a leaf requiring grad; no graph recorded.
  REQUIRE(&lin.weight.impl() == id);
  REQUIRE(lin.weight.requires_grad());
  REQUIRE(lin.weight.is_leaf());
  nn::init::zeros_(lin.bias);
  REQUIRE(tgt::max_abs_diff(lin.bias, zeros({200})) == 0.0);
  nn::init::constant_(lin.bias, 0.5);
  REQUIRE(tgt::max_abs_diff(lin.bias, full({200}, 0.5)) == 0.0);

  // The same seed gives the same values in another dtype (rounded).
  Tensor a = zeros({64, 32}), b = zeros({64, 32}, {.dtype = DType::bf16});
  nn::init::normal_(a, 1.0, 0.1, 3);
  nn::init::normal_(b, 1.0, 0.1, 3);
  tgt::require_close(to_dtype(b, DType::f32), a, 1e-2, 1e-3);

  tgt::require_throws<ShapeError>([] { nn::init::fans(zeros({5})); }, {"nn::init::fans", "2 dims", "[5]"});
  tgt::require_throws<DTypeError>(
      [] {
        Tensor i = zeros({2, 2}, {.dtype = DType::i32});
        nn::init::xavier_uniform_(i, 1);
      },
      {"nn::init::xavier_uniform_", "floating", "i32"});
}

TEST_CASE("Module::requires_grad_ freezes and unfreezes", "[nn][init]") {
  nn::Linear a(4, 3, true, {.dtype = DType::f64}, 1), b(3, 2, true, {.dtype = DType::f64}, 2);
  optim::SGD opt(
      [&] {
        auto p = a.parameters();
        for (auto& t : b.parameters()) p.push_back(t);
        return p;
      }(),
      0.1);
  a.requires_grad_(false);  // freeze the first layer
  const Tensor a_before = clone(a.weight), b_before = clone(b.weight);
  Tensor x = tgt::rand64({5, 4}, 3);
  sum(b(gelu(a(x)))).backward();
  REQUIRE_FALSE(a.weight.grad().defined());
  REQUIRE(b.weight.grad().defined());
  opt.step();
  REQUIRE(tgt::max_abs_diff(a.weight, a_before) == 0.0);  // skipped: no gradient
  REQUIRE(tgt::max_abs_diff(b.weight, b_before) > 0.0);
  a.requires_grad_(true);
  opt.zero_grad();
  sum(b(gelu(a(x)))).backward();
  REQUIRE(a.weight.grad().defined());
}

}  // namespace test_init
