#include <memory>

#include "util.h"

namespace test_engine {

using namespace tg;

TEST_CASE("backward accumulates into leaves", "[autograd]") {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = sum(x * x);  // dy/dx = 2x
  y.backward();
  tgt::require_close(x.grad(), from_vector<double>({2, 4, 6}, {3}));
  sum(x * 3.0).backward();  // accumulates +3
  tgt::require_close(x.grad(), from_vector<double>({5, 7, 9}, {3}));
  x.zero_grad();
  REQUIRE_FALSE(x.grad().defined());
}

TEST_CASE("a tensor used twice gets the sum of both paths", "[autograd]") {
  Tensor x = from_vector<double>({0.5, -1.5}, {2}).requires_grad_();
  Tensor a = exp(x);
  Tensor y = sum(a * a + a);  // d/dx = 2 e^{2x} + e^x
  y.backward();
  auto g = tgt::values(x.grad());
  REQUIRE(g[0] == Approx(2 * std::exp(1.0) + std::exp(0.5)));
  REQUIRE(g[1] == Approx(2 * std::exp(-3.0) + std::exp(-1.5)));
}

TEST_CASE("backward prunes nodes that lead to no leaf requiring grad", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor c = from_vector<double>({3, 4}, {2});
  Tensor y = sum(x * c);
  y.backward();
  REQUIRE_FALSE(c.grad().defined());
  tgt::require_close(x.grad(), c);
}

TEST_CASE("second backward through a freed graph throws; retain_graph allows it", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = sum(x * x);
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  tgt::require_close(x.grad(), from_vector<double>({4, 8}, {2}));
  tgt::require_throws<ValueError>([&] { y.backward(); }, {"already freed", "retain_graph"});
}

TEST_CASE("NoGradGuard stops recording", "[autograd]") {
  Tensor x = from_vector<double>({1}, {1}).requires_grad_();
  {
    NoGradGuard g;
    Tensor y = x * 2.0;
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(y.grad_fn() == nullptr);
  }
  Tensor z = x * 2.0;
  REQUIRE(z.requires_grad());
  REQUIRE(z.grad_fn() != nullptr);
  REQUIRE(grad_enabled());
}

TEST_CASE("graphs are freed when their outputs go away", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  std::weak_ptr<autograd::Node> node;
  {
    Tensor y = exp(x) * x;
    node = y.grad_fn();
    REQUIRE_FALSE(node.expired());
  }
  REQUIRE(node.expired());
}

TEST_CASE("backward argument errors", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}, {2});
  tgt::require_throws<ValueError>([&] { x.backward(); }, {"backward", "does not require grad"});
  Tensor w = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = w * 2.0;
  tgt::require_throws<ShapeError>([&] { y.backward(); }, {"backward", "one-element", "[2]"});
  tgt::require_throws<ShapeError>([&] { y.backward(from_vector<double>({1, 2, 3}, {3})); }, {"grad must match", "[3]"});
  tgt::require_throws<DTypeError>([&] { from_vector<std::int64_t>({1}, {1}).requires_grad_(); },
                                  {"requires_grad_", "i64"});
  tgt::require_throws<ValueError>([&] { y.requires_grad_(false); }, {"non-leaf"});
}

TEST_CASE("explicit root gradient", "[autograd]") {
  Tensor w = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = w * w;
  y.backward(from_vector<double>({1, 0, -1}, {3}));
  tgt::require_close(w.grad(), from_vector<double>({2, 0, -6}, {3}));
}

TEST_CASE("to_dot exports ops and named leaves", "[autograd]") {
  Tensor w = from_vector<double>({1, 2}, {2}).requires_grad_().set_name("weight");
  Tensor y = sum(relu(w) * 2.0);
  std::string dot = autograd::to_dot(y);
  REQUIRE(dot.find("digraph") != std::string::npos);
  REQUIRE(dot.find("weight") != std::string::npos);
  REQUIRE(dot.find("relu") != std::string::npos);
  REQUIRE(dot.find("->") != std::string::npos);
}

TEST_CASE("gradcheck detects a wrong backward", "[autograd][gradcheck]") {
  // A deliberately wrong op: forward 2x, backward claims 3 * grad.
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor x = in[0];
    Tensor out;
    {
      NoGradGuard g;
      out = x * 2.0;
    }
    if (autograd::needs_grad({x})) {
      autograd::record("wrong", {x}, {out}, [](const std::vector<Tensor>& g) {
        return std::vector<Tensor>{g[0] * 3.0};
      });
    }
    return out;
  };
  Tensor x = tgt::rand64({3}, 1).requires_grad_();
  auto res = autograd::gradcheck(wrong, {x});
  REQUIRE_FALSE(res.ok);
  REQUIRE(res.report.find("analytic") != std::string::npos);

  auto right = [](const std::vector<Tensor>& in) { return in[0] * 2.0; };
  auto ok = autograd::gradcheck(right, {x});
  INFO(ok.report);
  REQUIRE(ok.ok);
}

TEST_CASE("gradcheck along random directions", "[autograd][gradcheck]") {
  // f(x, y) = sum over rows of x * y (a product of two inputs): right and one wrong element
  auto right = [](const std::vector<Tensor>& in) { return tanh(in[0]) * in[1]; };
  // a backward wrong by 1e-4 in one element of x's gradient only
  auto wrong = [&](const std::vector<Tensor>& in) {
    Tensor out;
    {
      NoGradGuard g;
      out = right(in);
    }
    if (autograd::needs_grad({in[0], in[1]})) {
      const Tensor x = in[0].detach(), y = in[1].detach();
      autograd::record("wrong_one", {in[0], in[1]}, {out}, [x, y](const std::vector<Tensor>& g) {
        Tensor t = tanh(x);
        Tensor dx = g[0] * y * (1.0 - t * t);
        std::vector<double> v = dx.to_vector<double>();
        v[5] += 1e-4;
        return std::vector<Tensor>{from_vector(v, dx.shape()), g[0] * t};
      });
    }
    return out;
  };
  Tensor x = tgt::rand64({6, 7}, 11).requires_grad_(), y = tgt::rand64({6, 7}, 12).requires_grad_();
  autograd::GradcheckOptions opts;
  opts.directions = 4;
  opts.atol = 1e-8;
  opts.rtol = 1e-6;
  auto ok = autograd::gradcheck(right, {x, y}, opts);
  INFO(ok.report);
  REQUIRE(ok.ok);
  auto bad = autograd::gradcheck(wrong, {x, y}, opts);
  REQUIRE_FALSE(bad.ok);
  REQUIRE(bad.report.find("input 0 direction") != std::string::npos);
  REQUIRE(bad.report.find("input 1") == std::string::npos);  // y's gradient is right
  opts.directions = -1;
  tgt::require_throws<ValueError>([&] { autograd::gradcheck(right, {x, y}, opts); },
                                  {"gradcheck", "directions", "-1"});
}

TEST_CASE("a gradient of the wrong shape from an op is reported as a bug", "[autograd]") {
  Tensor x = from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor out;
  {
    NoGradGuard g;
    out = x * 1.0;
  }
  autograd::record("broken", {x}, {out}, [](const std::vector<Tensor>&) {
    return std::vector<Tensor>{from_vector<double>({1}, {1})};
  });
  tgt::require_throws<Error>([&] { sum(out).backward(); }, {"broken", "input 0"});
}

}  // namespace test_engine
