// Tests of the element-wise ops (ops/elementwise): plain f64 references, broadcasting,
// edge values, gradchecks, bad inputs, and CUDA against the CPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "util.h"

namespace test_elementwise {

using namespace tg;

namespace {

const std::vector<DType> kFloating = {DType::f64, DType::f32, DType::bf16, DType::f16};

double tol_for(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-12;
    case DType::f32: return 2e-6;
    case DType::bf16: return 1e-2;
    default: return 2e-3;
  }
}

using Fn1 = std::function<double(double)>;
using Fn2 = std::function<double(double, double)>;

struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> op;
  Fn1 ref;        // value
  Fn1 dref;       // derivative
  double lo, hi;  // input range
};

const double kPi = 3.14159265358979323846;

std::vector<UnaryCase> unary_cases() {
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  auto gelu_tanh = [](double x) {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x)));
  };
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, [](double) { return -1.0; }, -3, 3},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); },
       [](double x) { return std::exp(x); }, -3, 3},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); },
       [](double x) { return 1.0 / x; }, 0.1, 4},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); },
       [](double x) { return 0.5 / std::sqrt(x); }, 0.1, 4},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1.0 / std::sqrt(x); },
       [](double x) { return -0.5 * std::pow(x, -1.5); }, 0.1, 4},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
       [](double x) { return x > 0 ? 1.0 : 0.0; }, -2, 2},
      {"gelu", [](const Tensor& x) { return gelu(x); },
       [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); },
       [](double x) {
         return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi);
       },
       -4, 4},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApprox::Tanh); }, gelu_tanh,
       [gelu_tanh](double x) { return (gelu_tanh(x + 1e-6) - gelu_tanh(x - 1e-6)) / 2e-6; }, -4, 4},
      {"silu", [](const Tensor& x) { return silu(x); }, [sig](double x) { return x * sig(x); },
       [sig](double x) { return sig(x) * (1.0 + x * (1.0 - sig(x))); }, -5, 5},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); },
       [](double x) { return 1.0 - std::tanh(x) * std::tanh(x); }, -3, 3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, sig,
       [sig](double x) { return sig(x) * (1.0 - sig(x)); }, -6, 6},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); },
       [](double x) { return x > 0 ? 1.0 : -1.0; }, -2, 2},
      {"pow2.5", [](const Tensor& x) { return pow(x, 2.5); }, [](double x) { return std::pow(x, 2.5); },
       [](double x) { return 2.5 * std::pow(x, 1.5); }, 0.1, 3},
      {"pow2", [](const Tensor& x) { return pow(x, 2.0); }, [](double x) { return x * x; },
       [](double x) { return 2 * x; }, -3, 3},
      {"pow3", [](const Tensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; },
       [](double x) { return 3 * x * x; }, -2, 2},
      {"pow-1", [](const Tensor& x) { return pow(x, -1.0); }, [](double x) { return 1.0 / x; },
       [](double x) { return -1.0 / (x * x); }, 0.5, 3},
      {"pow0", [](const Tensor& x) { return pow(x, 0.0); }, [](double) { return 1.0; }, [](double) { return 0.0; },
       -2, 2},
      {"pow-0.5", [](const Tensor& x) { return pow(x, -0.5); }, [](double x) { return 1.0 / std::sqrt(x); },
       [](double x) { return -0.5 * std::pow(x, -1.5); }, 0.2, 3},
      {"add_s", [](const Tensor& x) { return add(x, 1.75); }, [](double x) { return x + 1.75; },
       [](double) { return 1.0; }, -2, 2},
      {"sub_s", [](const Tensor& x) { return sub(x, 0.5); }, [](double x) { return x - 0.5; },
       [](double) { return 1.0; }, -2, 2},
      {"mul_s", [](const Tensor& x) { return mul(x, -3.0); }, [](double x) { return -3.0 * x; },
       [](double) { return -3.0; }, -2, 2},
      {"div_s", [](const Tensor& x) { return div(x, 4.0); }, [](double x) { return x / 4.0; },
       [](double) { return 0.25; }, -2, 2},
      {"rsub_s", [](const Tensor& x) { return 2.0 - x; }, [](double x) { return 2.0 - x; },
       [](double) { return -1.0; }, -2, 2},
      {"rdiv_s", [](const Tensor& x) { return 2.0 / x; }, [](double x) { return 2.0 / x; },
       [](double x) { return -2.0 / (x * x); }, 0.5, 2},
  };
}

struct BinaryCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  Fn2 ref;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double a, double b) { return a + b; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double a, double b) { return a - b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double a, double b) { return a * b; }},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double a, double b) { return a / b; }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double a, double b) { return a >= b ? a : b; }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double a, double b) { return a <= b ? a : b; }},
  };
}

// Broadcast pairs: (a shape, b shape, expected result shape).
struct BShapes {
  Shape a, b, out;
};
const std::vector<BShapes> kBroadcastCases = {
    {{3, 4}, {3, 4}, {3, 4}},          // equal
    {{3, 4}, {1}, {3, 4}},             // one element
    {{3, 4}, Shape{}, {3, 4}},         // 0-d
    {Shape{}, {2, 5}, {2, 5}},         // 0-d on the left
    {{3, 4}, {4}, {3, 4}},             // trailing row
    {{4}, {2, 3, 4}, {2, 3, 4}},       // row on the left
    {{2, 3, 4}, {1, 3, 4}, {2, 3, 4}}, // row with a leading 1
    {{3, 4}, {3, 1}, {3, 4}},          // column
    {{2, 1, 4}, {3, 1}, {2, 3, 4}},    // both broadcast
    {{1, 3, 1}, {2, 1, 5}, {2, 3, 5}}, // both broadcast, middle
    {{2, 3, 1, 5}, {3, 4, 1}, {2, 3, 4, 5}},
    {{5}, {5}, {5}},
    {{1}, {1}, {1}},
};

// Plain-loop broadcast reference in f64.
Tensor ref_binary(const Tensor& a, const Tensor& b, const Shape& out, const Fn2& f) {
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  const int nd = out.ndim();
  std::vector<double> r(static_cast<std::size_t>(out.numel()));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(nd), 0);
  auto flat = [&](const Shape& s) {
    std::int64_t o = 0;
    for (int d = 0; d < s.ndim(); ++d) {
      const std::int64_t i = idx[static_cast<std::size_t>(nd - s.ndim() + d)];
      o = o * s[d] + (s[d] == 1 ? 0 : i);
    }
    return o;
  };
  for (std::size_t i = 0; i < r.size(); ++i) {
    std::int64_t rem = static_cast<std::int64_t>(i);
    for (int d = nd - 1; d >= 0; --d) {
      idx[static_cast<std::size_t>(d)] = rem % out[d];
      rem /= out[d];
    }
    r[i] = f(va[static_cast<std::size_t>(flat(a.shape()))], vb[static_cast<std::size_t>(flat(b.shape()))]);
  }
  return from_vector<double>(r, out);
}

// Plain-loop sum of x (shape xs) into shape `to`.
Tensor ref_sum_to(const Tensor& x, const Shape& to) {
  auto vx = x.to_vector<double>();
  const Shape& xs = x.shape();
  const int nd = xs.ndim(), off = nd - to.ndim();
  std::vector<double> r(static_cast<std::size_t>(to.numel()), 0.0);
  for (std::size_t i = 0; i < vx.size(); ++i) {
    std::int64_t rem = static_cast<std::int64_t>(i), o = 0, mul = 1;
    for (int d = nd - 1; d >= 0; --d) {
      const std::int64_t id = rem % xs[d];
      rem /= xs[d];
      if (d >= off) {
        const std::int64_t e = to[d - off];
        o += (e == 1 ? 0 : id) * mul;
        mul *= e;
      }
    }
    r[static_cast<std::size_t>(o)] += vx[i];
  }
  return from_vector<double>(r, to);
}

Tensor ref_unary(const Tensor& x, const Fn1& f) {
  auto v = x.to_vector<double>();
  for (double& e : v) e = f(e);
  return from_vector<double>(v, x.shape());
}

Tensor rand_dt(const Shape& s, std::uint64_t seed, DType dt, double lo, double hi, Device dev = Device::cpu()) {
  return rand_seeded(s, seed, {.dtype = dt, .device = dev}, lo, hi);
}

}  // namespace

TEST_CASE("unary ops match an f64 reference in every dtype", "[ops][elementwise]") {
  std::uint64_t seed = 100;
  for (const auto& c : unary_cases()) {
    for (DType dt : kFloating) {
      INFO(c.name << " " << dt);
      Tensor x = rand_dt({7, 13}, ++seed, dt, c.lo, c.hi);
      Tensor y = c.op(x);
      REQUIRE(y.dtype() == dt);
      REQUIRE(y.shape() == x.shape());
      // The reference sees the same (rounded) inputs; the result is rounded once more.
      const double tol = tol_for(dt);
      tgt::require_close(y, ref_unary(x, c.ref), tol, tol);
    }
  }
}

TEST_CASE("unary ops: edge values (nan, inf, zero, extremes)", "[ops][elementwise]") {
  const double inf = std::numeric_limits<double>::infinity();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    INFO(dt);
    auto t = [&](std::vector<double> v) {
      return from_vector<double>(v, {static_cast<std::int64_t>(v.size())}).to(dt);
    };
    auto vals = [](const Tensor& x) { return x.to_vector<double>(); };
    auto l = vals(log(t({0.0, -1.0, inf, 1.0})));
    CHECK(l[0] == -inf);
    CHECK(std::isnan(l[1]));
    CHECK(l[2] == inf);
    CHECK(l[3] == 0.0);
    auto e = vals(exp(t({-inf, inf, -1000.0, 0.0})));
    CHECK(e[0] == 0.0);
    CHECK(e[1] == inf);
    CHECK(e[2] == 0.0);
    CHECK(e[3] == 1.0);
    auto s = vals(sigmoid(t({-1000.0, 1000.0, -inf, inf, 0.0})));
    CHECK(s[0] == 0.0);
    CHECK(s[1] == 1.0);
    CHECK(s[2] == 0.0);
    CHECK(s[3] == 1.0);
    CHECK(s[4] == 0.5);
    auto th = vals(tanh(t({-inf, inf, 50.0})));
    CHECK(th[0] == -1.0);
    CHECK(th[1] == 1.0);
    CHECK(th[2] == 1.0);
    auto r = vals(relu(t({NAN, -inf, inf, -1.0, 0.0})));
    CHECK(std::isnan(r[0]));
    CHECK(r[1] == 0.0);
    CHECK(r[2] == inf);
    CHECK(r[3] == 0.0);
    CHECK(r[4] == 0.0);
    auto sq = vals(sqrt(t({-1.0, 0.0, inf})));
    CHECK(std::isnan(sq[0]));
    CHECK(sq[1] == 0.0);
    CHECK(sq[2] == inf);
    auto rs = vals(rsqrt(t({0.0, inf, 4.0})));
    CHECK(rs[0] == inf);
    CHECK(rs[1] == 0.0);
    CHECK(rs[2] == 0.5);
    CHECK(vals(abs(t({-0.0, -inf})))[1] == inf);
    CHECK(vals(pow(t({NAN}), 0.0))[0] == 1.0);
    CHECK(std::isnan(vals(pow(t({-2.0}), 0.5))[0]));
    auto si = vals(silu(t({-1000.0, 1000.0})));
    CHECK(si[0] == 0.0);
    CHECK(si[1] == 1000.0);
    auto ge = vals(gelu(t({-100.0, 100.0, 0.0})));
    CHECK(ge[0] == 0.0);
    CHECK(ge[1] == 100.0);
    CHECK(ge[2] == 0.0);
    CHECK(std::isnan(vals(exp(t({NAN})))[0]));
    CHECK(std::isnan(vals(gelu(t({NAN}), GeluApprox::Tanh))[0]));
  }
}

TEST_CASE("unary ops: empty and 0-d tensors", "[ops][elementwise]") {
  Tensor e = zeros({0, 3});
  for (const auto& c : unary_cases()) {
    INFO(c.name);
    Tensor y = c.op(e);
    CHECK(y.shape() == Shape{0, 3});
  }
  Tensor s = full(Shape{}, 0.25, {.dtype = DType::f64});
  CHECK(exp(s).shape() == Shape{});
  CHECK(exp(s).item<double>() == Approx(std::exp(0.25)));
}

TEST_CASE("binary ops broadcast NumPy-style and match an f64 reference", "[ops][elementwise]") {
  std::uint64_t seed = 500;
  for (const auto& c : binary_cases()) {
    for (const auto& s : kBroadcastCases) {
      for (DType dt : kFloating) {
        INFO(c.name << " " << s.a << " with " << s.b << " " << dt);
        Tensor a = rand_dt(s.a, ++seed, dt, -2, 2);
        Tensor b = rand_dt(s.b, ++seed, dt, 0.5, 2.5);  // away from 0 for div
        Tensor y = c.op(a, b);
        REQUIRE(y.shape() == s.out);
        REQUIRE(y.dtype() == dt);
        const double tol = tol_for(dt);
        tgt::require_close(y, ref_binary(a, b, s.out, c.ref), tol, tol);
        REQUIRE(broadcast_shapes(s.a, s.b) == s.out);
      }
    }
  }
}

TEST_CASE("element-wise ops on tensors of many parallel ranges match the f64 reference", "[ops][elementwise]") {
  // Sizes several times the CPU map's range (2^15 elements), rows that do not divide it
  // (a range starts mid-row), a column (the strided walk), and the f32 tanh / GELU paths
  // with their backward.
  std::uint64_t seed = 2600;
  const std::vector<BShapes> shapes = {
      {{257, 1000}, {1000}, {257, 1000}},      // trailing row, ranges start mid-row
      {{70001}, {1}, {70001}},                 // one element
      {{3, 333, 101}, {3, 1, 101}, {3, 333, 101}},
      {{400, 300}, {400, 1}, {400, 300}},      // column: the strided walk
  };
  for (const auto& c : binary_cases()) {
    for (const auto& s : shapes) {
      for (DType dt : {DType::f32, DType::f64}) {
        INFO(c.name << " " << s.a << " with " << s.b << " " << dt);
        Tensor a = rand_dt(s.a, ++seed, dt, -2, 2);
        Tensor b = rand_dt(s.b, ++seed, dt, 0.5, 2.5);
        const double tol = tol_for(dt);
        tgt::require_close(c.op(a, b), ref_binary(a, b, s.out, c.ref), tol, tol);
      }
    }
  }
  const std::vector<UnaryCase> cases = unary_cases();
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = rand_dt({300, 1001}, ++seed, DType::f32, c.lo, c.hi);
    const double tol = tol_for(DType::f32);
    tgt::require_close(c.op(x), ref_unary(x, c.ref), tol, tol);
  }
  for (const char* name : {"tanh", "gelu_tanh"}) {
    INFO(name);
    const auto it = std::find_if(cases.begin(), cases.end(), [&](const UnaryCase& u) { return u.name == name; });
    REQUIRE(it != cases.end());
    Tensor x = rand_dt({300, 1001}, ++seed, DType::f32, it->lo, it->hi).requires_grad_();
    Tensor y = it->op(x);
    y.backward(ones(y.shape()));
    tgt::require_close(x.grad(), ref_unary(x.detach(), it->dref), 1e-5, 1e-5);
  }
}

TEST_CASE("binary ops: empty operands, nan and ties in maximum/minimum", "[ops][elementwise]") {
  CHECK((zeros({0, 3}) + ones({3})).shape() == Shape{0, 3});
  CHECK((zeros({2, 0}) * ones({2, 1})).shape() == Shape{2, 0});
  CHECK((zeros({0}) - zeros({1})).shape() == Shape{0});
  Tensor a = from_vector<double>({1, NAN, 3, 2, -0.0}, {5});
  Tensor b = from_vector<double>({NAN, 1, 3, 5, 0.0}, {5});
  auto mx = maximum(a, b).to_vector<double>();
  CHECK(std::isnan(mx[0]));
  CHECK(std::isnan(mx[1]));
  CHECK(mx[2] == 3);
  CHECK(mx[3] == 5);
  auto mn = minimum(a, b).to_vector<double>();
  CHECK(std::isnan(mn[0]));
  CHECK(std::isnan(mn[1]));
  CHECK(mn[3] == 2);
  // Ties: the gradient goes to a.
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = from_vector<double>({1, 5, 0}, {3}).requires_grad_();
  maximum(x, y).backward(ones({3}, {.dtype = DType::f64}));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 0, 1});
  CHECK(y.grad().to_vector<double>() == std::vector<double>{0, 1, 0});
  x.zero_grad();
  y.zero_grad();
  minimum(x, y).backward(ones({3}, {.dtype = DType::f64}));
  CHECK(x.grad().to_vector<double>() == std::vector<double>{1, 1, 0});
  CHECK(y.grad().to_vector<double>() == std::vector<double>{0, 0, 1});
  // Division by zero.
  auto d = (from_vector<float>({1, -1, 0}, {3}) / zeros({3})).to_vector<double>();
  CHECK(d[0] == std::numeric_limits<double>::infinity());
  CHECK(d[1] == -std::numeric_limits<double>::infinity());
  CHECK(std::isnan(d[2]));
}

TEST_CASE("sum_to and broadcast_to match plain loops; sum_to accumulates in f32", "[ops][elementwise]") {
  struct C {
    Shape x, to;
  };
  const std::vector<C> cases = {
      {{3, 4}, {4}},       {{3, 4}, {3, 1}},       {{3, 4}, {1, 1}},    {{3, 4}, Shape{}},
      {{2, 3, 4}, {3, 1}}, {{2, 3, 4}, {2, 1, 4}}, {{2, 3, 4}, {1, 4}}, {{2, 3, 4, 5}, {3, 1, 5}},
      {{5}, {1}},          {{4, 1, 3}, {1, 1, 3}}, {{0, 3}, {3}},       {{3, 0}, {3, 1}},
      {{6, 7}, {6, 7}},
      // outputs the CPU kernel spreads over threads (ranges of ~2^15 / n_red outputs)
      {{4096, 24}, {24}},  {{24, 4096}, {24, 1}}, {{2, 2048, 40}, {1, 1, 40}},
  };
  std::uint64_t seed = 900;
  for (const auto& c : cases) {
    for (DType dt : kFloating) {
      INFO(c.x << " -> " << c.to << " " << dt);
      Tensor x = rand_dt(c.x, ++seed, dt, -1, 1);
      Tensor s = sum_to(x, c.to);
      REQUIRE(s.shape() == c.to);
      REQUIRE(s.dtype() == dt);
      tgt::require_close(s, ref_sum_to(x, c.to), tol_for(dt) * 4, tol_for(dt) * 4);
      // broadcast_to is its adjoint: <sum_to(x), y> == <x, broadcast_to(y)>.
      Tensor y = rand_dt(c.to, ++seed, DType::f64, -1, 1);
      Tensor by = broadcast_to(y, c.x);
      REQUIRE(by.shape() == c.x);
      tgt::require_close(by, ref_binary(zeros(c.x, {.dtype = DType::f64}), y, c.x, [](double, double v) { return v; }),
                         0, 0);
    }
  }
  Tensor x = rand_dt({3, 4}, 1, DType::f32, -1, 1);
  REQUIRE(sum_to(x, {3, 4}).is_same(x));
  // 4096 ones in bf16: an accumulator in bf16 would stop at 256.
  CHECK(sum_to(ones({4096}, {.dtype = DType::bf16}), Shape{}).item<double>() == 4096.0);
  CHECK(sum_to(ones({3, 4096}, {.dtype = DType::f16}), {3, 1}).to_vector<double>() == std::vector<double>(3, 4096.0));
  CHECK(sum_to(ones({4096, 2}, {.dtype = DType::bf16}), {2}).to_vector<double>() == std::vector<double>(2, 4096.0));
}

TEST_CASE("element-wise gradients pass gradcheck", "[ops][elementwise]") {
  std::uint64_t seed = 1300;
  for (const auto& c : unary_cases()) {
    INFO(c.name);
    Tensor x = tgt::rand64({3, 5}, ++seed, c.lo, c.hi).requires_grad_();
    auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, {x});
    INFO(r.report);
    REQUIRE(r);
    // The analytic derivative against the test's own formula.
    Tensor y = c.op(x);
    y.backward(ones(y.shape(), {.dtype = DType::f64}));
    tgt::require_close(x.grad(), ref_unary(x, c.dref), 1e-5, 1e-6);
  }
  for (const auto& c : binary_cases()) {
    for (const auto& s : kBroadcastCases) {
      INFO(c.name << " " << s.a << " with " << s.b);
      Tensor a = tgt::rand64(s.a, ++seed, -2, 2).requires_grad_();
      Tensor b = tgt::rand64(s.b, ++seed, 0.5, 2.5).requires_grad_();
      auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); }, {a, b});
      INFO(r.report);
      REQUIRE(r);
      // Only one side requiring grad.
      Tensor bc = b.detach();
      auto r1 = autograd::gradcheck([&](const std::vector<Tensor>& in) { return c.op(in[0], bc); }, {a});
      INFO(r1.report);
      REQUIRE(r1);
    }
  }
  {
    Tensor x = tgt::rand64({2, 3, 4}, ++seed).requires_grad_();
    auto r = autograd::gradcheck([](const std::vector<Tensor>& in) { return sum_to(in[0], {3, 1}); }, {x});
    INFO(r.report);
    REQUIRE(r);
    Tensor y = tgt::rand64({3, 1}, ++seed).requires_grad_();
    auto r2 = autograd::gradcheck([](const std::vector<Tensor>& in) { return broadcast_to(in[0], {2, 3, 4}); }, {y});
    INFO(r2.report);
    REQUIRE(r2);
  }
  {
    // A composite: the same input through several ops and both sides of a product.
    Tensor x = tgt::rand64({4, 3}, ++seed).requires_grad_();
    Tensor w = tgt::rand64({3}, ++seed).requires_grad_();
    auto r = autograd::gradcheck(
        [](const std::vector<Tensor>& in) { return gelu(in[0] * in[1] + in[1]) / (exp(in[0]) + 1.0) - in[0]; },
        {x, w});
    INFO(r.report);
    REQUIRE(r);
  }
}

TEST_CASE("element-wise ops: bad inputs", "[ops][elementwise]") {
  Tensor i = from_vector<std::int32_t>({1, 2}, {2});
  Tensor f = from_vector<float>({1, 2}, {2});
  Tensor d = from_vector<double>({1, 2}, {2});
  tgt::require_throws<DTypeError>([&] { (void)exp(i); }, {"exp", "x", "floating", "i32"});
  tgt::require_throws<DTypeError>([&] { (void)gelu(i); }, {"gelu", "i32"});
  tgt::require_throws<DTypeError>([&] { (void)mul(i, 2.0); }, {"mul_scalar", "i32"});
  tgt::require_throws<DTypeError>([&] { (void)add(f, i); }, {"add", "b", "i32"});
  tgt::require_throws<DTypeError>([&] { (void)sub(f, d); }, {"sub", "same dtype", "f32", "f64"});
  tgt::require_throws<ShapeError>([&] { (void)mul(zeros({2, 3}), zeros({4})); },
                                  {"mul", "[2, 3]", "[4]", "do not broadcast"});
  tgt::require_throws<ShapeError>([&] { (void)maximum(zeros({2, 3, 4}), zeros({3, 1, 5})); },
                                  {"maximum", "[2, 3, 4]", "[3, 1, 5]"});
  tgt::require_throws<ShapeError>([&] { (void)broadcast_shapes({3}, {4}, "myop"); }, {"myop", "[3]", "[4]"});
  tgt::require_throws<ShapeError>([&] { (void)sum_to(zeros({3, 4}), {3}); }, {"sum_to", "[3]", "[3, 4]"});
  tgt::require_throws<ShapeError>([&] { (void)sum_to(zeros({4}), {2, 4}); }, {"sum_to", "[2, 4]"});
  tgt::require_throws<ShapeError>([&] { (void)broadcast_to(zeros({3}), {2, 4}); }, {"broadcast_to", "[3]", "[2, 4]"});
  tgt::require_throws<DTypeError>([&] { (void)sum_to(i, {1}); }, {"sum_to", "i32"});
  tgt::require_throws<ValueError>([&] { (void)relu(Tensor()); }, {"relu", "undefined"});
  tgt::require_throws<ValueError>([&] { (void)add(f, Tensor()); }, {"add", "b", "undefined"});
  // More than 8 broadcast dims that cannot be merged.
  Shape a9({2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2});
  Shape b9({1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1});
  tgt::require_throws<ShapeError>([&] { (void)add(zeros(a9), zeros(b9)); }, {"add", "at most 8"});
}

TEST_CASE("element-wise ops on CUDA match the CPU, forward and backward", "[ops][elementwise][cuda]") {
  TG_REQUIRE_CUDA();
  const Device g = Device::cuda();
  std::uint64_t seed = 7000;
  auto tol = [](DType dt) { return dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1.6e-2; };
  // Sizes: tiny, odd (tail of the vector path), and a few hundred thousand (many blocks).
  const std::vector<Shape> shapes = {{1}, {3, 7}, {1000, 33}, {301, 1003}};
  for (DType dt : kFloating) {
    for (const auto& c : unary_cases()) {
      for (const Shape& s : shapes) {
        INFO(c.name << " " << dt << " " << s);
        Tensor xc = rand_dt(s, ++seed, dt, c.lo, c.hi);
        Tensor x = xc.to(g).requires_grad_();
        Tensor xcpu = xc.detach().requires_grad_();
        Tensor y = c.op(x), ycpu = c.op(xcpu);
        REQUIRE(y.device() == g);
        tgt::require_close(y.to(Device::cpu()), ycpu, tol(dt), tol(dt));
        Tensor go = rand_dt(s, ++seed, dt, -1, 1);
        y.backward(go.to(g));
        ycpu.backward(go);
        REQUIRE(x.grad().device() == g);
        tgt::require_close(x.grad().to(Device::cpu()), xcpu.grad(), tol(dt), tol(dt));
      }
    }
    for (const auto& c : binary_cases()) {
      std::vector<BShapes> cases = kBroadcastCases;
      cases.push_back({{301, 1003}, {301, 1003}, {301, 1003}});
      cases.push_back({{301, 1003}, {1003}, {301, 1003}});
      cases.push_back({{300, 1024}, {1024}, {300, 1024}});  // row path with vector loads
      cases.push_back({{301, 1003}, {301, 1}, {301, 1003}});
      // Strided inputs whose innermost extent is a multiple of every chunk length: the
      // general path's 16-byte chunks (one index unravelling a chunk).
      cases.push_back({{300, 1024}, {300, 1}, {300, 1024}});
      cases.push_back({{6, 1, 136}, {1, 40, 136}, {6, 40, 136}});
      cases.push_back({{2, 1, 3, 16}, {5, 1, 16}, {2, 5, 3, 16}});
      cases.push_back({{77, 1, 130}, {1, 55, 130}, {77, 55, 130}});
      cases.push_back({{1}, {301, 1003}, {301, 1003}});
      for (const auto& s : cases) {
        INFO(c.name << " " << dt << " " << s.a << " with " << s.b);
        Tensor ac = rand_dt(s.a, ++seed, dt, -2, 2), bc = rand_dt(s.b, ++seed, dt, 0.5, 2.5);
        Tensor a = ac.to(g).requires_grad_(), b = bc.to(g).requires_grad_();
        Tensor ah = ac.detach().requires_grad_(), bh = bc.detach().requires_grad_();
        Tensor y = c.op(a, b), yh = c.op(ah, bh);
        tgt::require_close(y.to(Device::cpu()), yh, tol(dt), tol(dt));
        Tensor go = rand_dt(s.out, ++seed, dt, -1, 1);
        y.backward(go.to(g));
        yh.backward(go);
        // Gradients of broadcast operands are sums of n terms: allow for f32 accumulation
        // on the GPU (the CPU sums in f64).
        auto gtol = [&](const Shape& operand) {
          const double n = static_cast<double>(s.out.numel()) / static_cast<double>(std::max<std::int64_t>(1, operand.numel()));
          return tol(dt) * 4 + (dt == DType::f64 ? 0.0 : 1e-8 * n);
        };
        tgt::require_close(a.grad().to(Device::cpu()), ah.grad(), tol(dt) * 4, gtol(s.a));
        tgt::require_close(b.grad().to(Device::cpu()), bh.grad(), tol(dt) * 4, gtol(s.b));
      }
    }
    // sum_to shapes that use one or several chunks, inner and outer reductions.
    struct C {
      Shape x, to;
    };
    for (const C& c : std::vector<C>{{{1000000}, Shape{}},
                                     {{4096, 3}, {3}},
                                     {{3, 100000}, {3, 1}},
                                     {{512, 1024}, {1024}},
                                     {{512, 1024}, {512, 1}},
                                     {{8, 64, 33}, {64, 1}},
                                     {{8, 64, 33}, {8, 1, 33}},
                                     {{0, 5}, {5}},
                                     {{7, 9}, {7, 9}}}) {
      INFO("sum_to " << c.x << " -> " << c.to << " " << dt);
      Tensor xc = rand_dt(c.x, ++seed, dt, -1, 1);
      Tensor sg = sum_to(xc.to(g), c.to);
      Tensor sc = sum_to(xc, c.to);
      const double n = static_cast<double>(std::max<std::int64_t>(1, c.x.numel() / std::max<std::int64_t>(1, c.to.numel())));
      const double t = dt == DType::f64 ? 1e-10 : 1e-5 * n + tol(dt);
      tgt::require_close(sg.to(Device::cpu()), sc, tol(dt), t);
      Tensor bt = broadcast_to(sc.to(g), c.x);
      tgt::require_close(bt.to(Device::cpu()), broadcast_to(sc, c.x), 0, 0);
    }
    // Operands whose data pointers are not 16-byte aligned (the kernels' scalar path).
    {
      INFO("misaligned " << dt);
      Tensor base_a = rand_dt({1000 * 37 + 3}, ++seed, dt, -2, 2, g);
      Tensor base_b = rand_dt({1000 * 37 + 1}, ++seed, dt, 0.5, 2, g);
      Tensor a = tgt::misaligned_view(base_a, 3, {1000, 37}), b = tgt::misaligned_view(base_b, 1, {1000, 37});
      Tensor ah = a.to(Device::cpu()), bh = b.to(Device::cpu());
      tgt::require_close((a * b).to(Device::cpu()), ah * bh, tol(dt), tol(dt));
      tgt::require_close(gelu(a).to(Device::cpu()), gelu(ah), tol(dt), tol(dt));
      Tensor row = tgt::misaligned_view(base_b, 1, {37});
      tgt::require_close((a + row).to(Device::cpu()), ah + row.to(Device::cpu()), tol(dt), tol(dt));
      // a broadcast (strided) input whose innermost runs are not 16-byte aligned
      Tensor s3 = tgt::misaligned_view(base_a, 3, {100, 1, 40});
      Tensor big = rand_dt({100, 6, 40}, ++seed, dt, -2, 2, g);
      tgt::require_close((s3 * big).to(Device::cpu()), s3.to(Device::cpu()) * big.to(Device::cpu()), tol(dt), tol(dt));
    }
  }
  // Mixed devices.
  tgt::require_throws<DeviceError>([&] { (void)add(zeros({2}, {.device = g}), zeros({2})); },
                                   {"add", "same device", "cuda:0", "cpu"});
}

// The 16-bit GELU (erf) kernels evaluate Phi through a fast erfc on the GPU: compare them
// with the exact function in f64 of the same 16-bit inputs, to half an ulp of the storage
// type plus 1e-5 relative (the f32 math must be within ~1e-6 of exact before rounding).
TEST_CASE("CUDA gelu (erf) on 16-bit types is within half an ulp of the exact function", "[ops][elementwise][cuda]") {
  TG_REQUIRE_CUDA();
  const Device g = Device::cuda();
  const double inv_sqrt2 = 0.70710678118654752440, inv_sqrt2pi = 0.39894228040143267794;
  auto cdf = [&](double x) { return 0.5 * std::erfc(-x * inv_sqrt2); };
  std::uint64_t seed = 9100;
  // Lengths: a multiple of the 8-element chunk, chunk-aligned tails of 1..7 elements, one
  // chunk short of a full 2-chunk thread, and several grid blocks' worth.
  for (DType dt : {DType::bf16, DType::f16}) {
    const double half_ulp = dt == DType::bf16 ? 1.0 / 256 : 1.0 / 2048;
    const double tiny = dt == DType::bf16 ? 1e-37 : 3e-8;  // flushed / subnormal outputs
    for (std::int64_t n : {std::int64_t{8}, std::int64_t{13}, std::int64_t{4088}, std::int64_t{4096 + 7},
                           std::int64_t{300001}}) {
      for (double range : {4.0, 14.0}) {
        INFO("dtype " << dt << ", n " << n << ", range " << range);
        Tensor xc = rand_dt({n}, ++seed, dt, -range, range);
        Tensor go = rand_dt({n}, ++seed, dt, -1, 1);
        Tensor x = xc.to(g).requires_grad_();
        Tensor y = gelu(x);
        y.backward(go.to(g));
        const auto xv = xc.to_vector<double>(), gv = go.to_vector<double>();
        std::vector<double> ye(xv.size()), ge(xv.size());
        for (std::size_t i = 0; i < xv.size(); ++i) {
          ye[i] = xv[i] * cdf(xv[i]);
          ge[i] = gv[i] * (cdf(xv[i]) + xv[i] * std::exp(-0.5 * xv[i] * xv[i]) * inv_sqrt2pi);
        }
        tgt::require_close(y.to(Device::cpu()).to(DType::f64), from_vector<double>(ye, {n}), half_ulp + 1e-5, tiny);
        // The derivative crosses 0 near x = -0.75 (a difference of O(1) terms): 2e-6 absolute.
        tgt::require_close(x.grad().to(Device::cpu()).to(DType::f64), from_vector<double>(ge, {n}), half_ulp + 1e-5,
                           2e-6);
      }
    }
    // Special values against the CPU: zeros, infinities, nan, huge and tiny magnitudes.
    INFO("special values " << dt);
    const std::vector<double> sv = {0.0,   -0.0,  INFINITY, -INFINITY, NAN,   1e4,    -1e4, 60000, -60000,
                                    1e-6,  -1e-6, 3.0,      -3.0,      -5.5,  -8.0,   -12.0, 20.0,  -0.75,
                                    0.125, 1.0,   -1.0,     2.5,       -2.5,  0.0625, 7.0,   -7.0,  -13.0};
    Tensor xs = from_vector<double>(sv, {static_cast<std::int64_t>(sv.size())}).to(dt);
    Tensor xg = xs.to(g).requires_grad_(), xh = xs.detach().requires_grad_();
    Tensor yg = gelu(xg), yh = gelu(xh);
    tgt::require_close(yg.to(Device::cpu()), yh, 2 * half_ulp, 1e-6);
    Tensor ones = full_like(xs, 1.0);
    yg.backward(ones.to(g));
    yh.backward(ones);
    tgt::require_close(xg.grad().to(Device::cpu()), xh.grad(), 2 * half_ulp, 1e-6);
    // A misaligned view (the scalar path of the same kernel).
    Tensor base = rand_dt({1000 * 37 + 3}, ++seed, dt, -6, 6, g);
    Tensor a = tgt::misaligned_view(base, 3, {1000, 37});
    tgt::require_close(gelu(a).to(Device::cpu()), gelu(a.to(Device::cpu())), 2 * half_ulp, 1e-6);
  }
}

// The broadcast paths of the 16-bit map kernel (2 chunks per thread) and the 16-byte
// column sums of sum_to, on shapes that hit every branch: bias rows whose length is or is
// not a multiple of 8, aligned or not, partial last blocks, and the column-sum fallbacks.
TEST_CASE("CUDA bias-row adds and column sums (16-bit vector paths) match the CPU", "[ops][elementwise][cuda]") {
  TG_REQUIRE_CUDA();
  const Device g = Device::cuda();
  std::uint64_t seed = 9500;
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    const double tol = dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1.6e-2;
    struct B {
      Shape a, b;
    };
    for (const B& c : std::vector<B>{{{256, 4096}, {4096}},
                                     {{33, 264}, {264}},
                                     {{7, 8}, {8}},
                                     {{5, 7, 64}, {7, 64}},
                                     {{41, 1003}, {1003}},
                                     {{3, 5, 16}, {5, 1}},
                                     {{4097}, Shape{}}}) {
      INFO("add " << dt << " " << c.a << " + " << c.b);
      Tensor ac = rand_dt(c.a, ++seed, dt, -2, 2), bc = rand_dt(c.b, ++seed, dt, -2, 2);
      Tensor ag = ac.to(g).requires_grad_(), bg = bc.to(g).requires_grad_();
      Tensor ah = ac.detach().requires_grad_(), bh = bc.detach().requires_grad_();
      Tensor yg = ag + bg, yh = ah + bh;
      tgt::require_close(yg.to(Device::cpu()), yh, tol, tol);
      tgt::require_close((ag * bg).to(Device::cpu()), ah * bh, tol, tol);
      // The gradient of the broadcast operand is a sum_to (column sums for the bias rows).
      Tensor go = rand_dt(c.a, ++seed, dt, -1, 1);
      yg.backward(go.to(g));
      yh.backward(go);
      const double n = static_cast<double>(c.a.numel()) / static_cast<double>(std::max<std::int64_t>(1, c.b.numel()));
      tgt::require_close(bg.grad().to(Device::cpu()), bh.grad(), tol * 4, tol * 4 + 1e-5 * n);
    }
    // A 16-byte-multiple row whose data pointer is misaligned: per-element row reads.
    {
      INFO("misaligned row " << dt);
      Tensor base = rand_dt({64 + 1}, ++seed, dt, -2, 2, g);
      Tensor row = tgt::misaligned_view(base, 1, {64});
      Tensor a = rand_dt({300, 64}, ++seed, dt, -2, 2, g);
      tgt::require_close((a + row).to(Device::cpu()), a.to(Device::cpu()) + row.to(Device::cpu()), tol, tol);
    }
    // Column sums: the vector path (outputs a multiple of 8 and adjacent), a partial last
    // block of outputs, one or many row chunks, empty input, and the fallbacks.
    struct C {
      Shape x, to;
    };
    for (const C& c : std::vector<C>{{{1024, 4096}, {4096}},
                                     {{3000, 264}, {264}},
                                     {{100, 6, 8}, {6, 8}},
                                     {{9, 8}, {8}},
                                     {{20000, 16}, {1, 16}},
                                     {{0, 16}, {16}},
                                     {{64, 12}, {12}},
                                     {{4, 3, 40}, {4, 1, 40}}}) {
      INFO("sum_to " << c.x << " -> " << c.to << " " << dt);
      Tensor xc = rand_dt(c.x, ++seed, dt, -1, 1);
      const double n = static_cast<double>(std::max<std::int64_t>(1, c.x.numel() / std::max<std::int64_t>(1, c.to.numel())));
      tgt::require_close(sum_to(xc.to(g), c.to).to(Device::cpu()), sum_to(xc, c.to), tol, 1e-5 * n + tol);
    }
    {
      INFO("sum_to of a misaligned view " << dt);
      Tensor base = rand_dt({200 * 64 + 1}, ++seed, dt, -1, 1, g);
      Tensor x = tgt::misaligned_view(base, 1, {200, 64});
      tgt::require_close(sum_to(x, {64}).to(Device::cpu()), sum_to(x.to(Device::cpu()), {64}), tol, 2e-3 + tol);
    }
  }
}

}  // namespace test_elementwise
