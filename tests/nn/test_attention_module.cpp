// nn::MultiHeadAttention: output against a hand-written f64 reference from the module's own
// weights (fused and separate projections, GQA, causal, patterns), gradcheck, parameter
// names and shapes, dropout in training / eval mode, and bad arguments.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "util.h"

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// y [B·S, n] = x [B·S, c] Wᵀ + b, on host vectors.
std::vector<double> affine(const std::vector<double>& x, std::int64_t rows, std::int64_t c, const Tensor& w,
                           const Tensor& b) {
  const auto W = tgt::values(w);
  const std::int64_t n = w.size(0);
  const auto bv = b.defined() ? tgt::values(b) : std::vector<double>(at(n), 0.0);
  std::vector<double> y(at(rows * n));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t o = 0; o < n; ++o) {
      double s = bv[at(o)];
      for (std::int64_t i = 0; i < c; ++i) s += x[at(r * c + i)] * W[at(o * c + i)];
      y[at(r * n + o)] = s;
    }
  return y;
}

struct Weights {
  Tensor wq, bq, wk, bk, wv, bv, wo, bo;
};

Weights weights_of(const nn::MultiHeadAttention& m) {
  Weights w;
  const std::int64_t d = m.d_model, kv = m.num_kv_heads * m.head_dim;
  if (m.qkv) {
    w.wq = slice(m.qkv->weight, 0, 0, d);
    w.wk = slice(m.qkv->weight, 0, d, d + kv);
    w.wv = slice(m.qkv->weight, 0, d + kv, d + 2 * kv);
    if (m.qkv->bias.defined()) {
      w.bq = slice(m.qkv->bias, 0, 0, d);
      w.bk = slice(m.qkv->bias, 0, d, d + kv);
      w.bv = slice(m.qkv->bias, 0, d + kv, d + 2 * kv);
    }
  } else {
    w.wq = m.q->weight, w.bq = m.q->bias, w.wk = m.k->weight, w.bk = m.k->bias, w.wv = m.v->weight, w.bv = m.v->bias;
  }
  w.wo = m.proj->weight;
  w.bo = m.proj->bias;
  return w;
}

// Multi-head attention written out for x [B, S, d]: head h of batch b reads kv head
// h / (H / Hkv); key j is visible to query i iff visible(b·H + h, i, j).
Tensor reference(const nn::MultiHeadAttention& m, const Tensor& x,
                 const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& visible) {
  const std::int64_t B = x.size(0), S = x.size(1), d = m.d_model, H = m.num_heads, Hkv = m.num_kv_heads,
                     dh = m.head_dim, kv = Hkv * dh;
  const Weights w = weights_of(m);
  const auto X = tgt::values(x);
  const auto Q = affine(X, B * S, d, w.wq, w.bq), K = affine(X, B * S, d, w.wk, w.bk), V = affine(X, B * S, d, w.wv, w.bv);
  std::vector<double> O(at(B * S * d), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t g = h / (H / Hkv);
      for (std::int64_t i = 0; i < S; ++i) {
        std::vector<double> s(at(S), -std::numeric_limits<double>::infinity());
        double mx = s[0], z = 0;
        for (std::int64_t j = 0; j < S; ++j) {
          if (!visible(b * H + h, i, j)) continue;
          double t = 0;
          for (std::int64_t e = 0; e < dh; ++e) t += Q[at((b * S + i) * d + h * dh + e)] * K[at((b * S + j) * kv + g * dh + e)];
          s[at(j)] = t / std::sqrt(static_cast<double>(dh));
          mx = std::max(mx, s[at(j)]);
        }
        if (!std::isfinite(mx)) continue;
        for (std::int64_t j = 0; j < S; ++j) z += std::exp(s[at(j)] - mx);
        for (std::int64_t j = 0; j < S; ++j) {
          const double p = std::exp(s[at(j)] - mx) / z;
          for (std::int64_t e = 0; e < dh; ++e) O[at((b * S + i) * d + h * dh + e)] += p * V[at((b * S + j) * kv + g * dh + e)];
        }
      }
    }
  return from_vector(affine(O, B * S, d, w.wo, w.bo), {B, S, d});
}

bool all_pairs(std::int64_t, std::int64_t, std::int64_t) { return true; }

}  // namespace

TEST_CASE("MultiHeadAttention matches a hand-written reference", "[nn][attention_module]") {
  const Tensor x = tgt::rand64({2, 12, 16}, 1);
  SECTION("fused qkv, plain") {
    nn::MultiHeadAttention m(16, 4, {.tensor = {.dtype = DType::f64}, .seed = 3});
    tgt::require_close(m(x), reference(m, x, all_pairs), 1e-12, 1e-12);
  }
  SECTION("fused qkv, GQA, causal") {
    nn::MultiHeadAttention m(16, 4, {.num_kv_heads = 2, .causal = true, .tensor = {.dtype = DType::f64}, .seed = 4});
    tgt::require_close(m(x), reference(m, x, [](auto, auto i, auto j) { return j <= i; }), 1e-12, 1e-12);
  }
  SECTION("separate projections, MQA, no bias, pattern at construction") {
    // query block r (of 4 rows) sees key blocks r and 0
    Tensor pm = from_vector(std::vector<bool>{true, false, false, true, true, false, true, false, true}, {1, 3, 3});
    nn::MultiHeadAttention m(16, 4,
                             {.num_kv_heads = 1, .fused_qkv = false, .bias = false,
                              .pattern = AttentionPattern::uniform(pm, 4, 4), .tensor = {.dtype = DType::f64}, .seed = 5});
    auto vis = [](std::int64_t, std::int64_t i, std::int64_t j) { return j / 4 == i / 4 || j / 4 == 0; };
    tgt::require_close(m(x), reference(m, x, vis), 1e-12, 1e-12);
    // a pattern per call wins over the constructor's; per-call options pass through
    Tensor pc = from_vector(std::vector<bool>{true, false, false, false, true, false, false, false, true}, {1, 3, 3});
    AttentionOptions o;
    o.window_left = 2;
    auto vis2 = [](std::int64_t, std::int64_t i, std::int64_t j) { return j / 4 == i / 4 && j >= i - 2; };
    tgt::require_close(m(x, AttentionPattern::uniform(pc, 4, 4), o), reference(m, x, vis2), 1e-12, 1e-12);
  }
  SECTION("f32 module") {
    nn::MultiHeadAttention m(16, 2, {.num_kv_heads = 1, .seed = 6});
    REQUIRE(m.qkv->weight.dtype() == DType::f32);
    Tensor y = m(x.to(DType::f32));
    REQUIRE(y.dtype() == DType::f32);
    nn::MultiHeadAttention m64(16, 2, {.num_kv_heads = 1, .seed = 6});
    m64.to(DType::f64);
    tgt::require_close(y, reference(m64, x, all_pairs), 1e-4, 1e-5);
  }
}

TEST_CASE("MultiHeadAttention gradcheck", "[nn][attention_module][gradcheck]") {
  nn::MultiHeadAttention m(4, 2, {.num_kv_heads = 1, .causal = true, .tensor = {.dtype = DType::f64}, .seed = 7});
  const Tensor x = tgt::rand64({2, 4, 4}, 8);
  std::vector<Tensor> inputs{x.detach().requires_grad_(), m.qkv->weight.detach().requires_grad_(),
                             m.qkv->bias.detach().requires_grad_(), m.proj->weight.detach().requires_grad_(),
                             m.proj->bias.detach().requires_grad_()};
  auto f = [&](const std::vector<Tensor>& in) {
    m.qkv->weight = in[1];
    m.qkv->bias = in[2];
    m.proj->weight = in[3];
    m.proj->bias = in[4];
    return m(in[0]);
  };
  auto r = autograd::gradcheck(f, inputs);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("MultiHeadAttention parameters, GQA shapes and gradients", "[nn][attention_module]") {
  auto names = [](const nn::Module& mod) {
    std::vector<std::string> n;
    for (auto& [name, t] : mod.named_parameters()) n.push_back(name);
    return n;
  };
  nn::MultiHeadAttention fused(16, 4, {.num_kv_heads = 2});
  REQUIRE(names(fused) == std::vector<std::string>{"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"});
  REQUIRE(fused.head_dim == 4);
  REQUIRE(fused.qkv->weight.shape() == Shape{16 + 2 * 8, 16});
  REQUIRE(fused.proj->weight.shape() == Shape{16, 16});
  nn::MultiHeadAttention sep(16, 4, {.num_kv_heads = 1, .fused_qkv = false});
  REQUIRE(names(sep) == std::vector<std::string>{"q.weight", "q.bias", "k.weight", "k.bias", "v.weight", "v.bias",
                                                 "proj.weight", "proj.bias"});
  REQUIRE(sep.k->weight.shape() == Shape{4, 16});
  REQUIRE(sep.num_parameters() == 16 * 16 + 16 + 2 * (4 * 16 + 4) + 16 * 16 + 16);
  nn::MultiHeadAttention nob(8, 2, {.bias = false});
  REQUIRE(names(nob) == std::vector<std::string>{"qkv.weight", "proj.weight"});
  REQUIRE(nob.num_kv_heads == 2);

  Tensor x = rand_seeded({3, 20, 16}, 9);
  Tensor y = fused(x);
  REQUIRE(y.shape() == Shape{3, 20, 16});
  sum(y).backward();
  for (const Tensor& p : fused.parameters()) {
    REQUIRE(p.grad().defined());
    REQUIRE(p.grad().shape() == p.shape());
  }
}

TEST_CASE("MultiHeadAttention dropout in training and eval mode", "[nn][attention_module]") {
  const Tensor x = tgt::rand64({2, 8, 8}, 10);
  nn::MultiHeadAttention m(8, 2, {.dropout = 0.5, .tensor = {.dtype = DType::f64}, .seed = 11});
  nn::MultiHeadAttention plain(8, 2, {.tensor = {.dtype = DType::f64}, .seed = 11});
  m.eval();
  tgt::require_close(m(x), plain(x), 0, 0);
  m.train();
  Tensor a = m(x), b = m(x);
  REQUIRE(tgt::max_abs_diff(a, plain(x)) > 1e-3);
  REQUIRE(tgt::max_abs_diff(a, b) > 1e-3);  // a fresh mask per call
  // an explicit dropout in the call options replaces the module's
  AttentionOptions o;
  o.dropout_p = 0.25;
  o.seed = 1;
  tgt::require_close(m(x, AttentionPattern(), o), m(x, AttentionPattern(), o), 0, 0);
}

TEST_CASE("MultiHeadAttention bad arguments", "[nn][attention_module]") {
  tgt::require_throws<ShapeError>([] { nn::MultiHeadAttention(10, 4); }, {"MultiHeadAttention", "d_model = 10", "num_heads = 4"});
  tgt::require_throws<ShapeError>([] { nn::MultiHeadAttention(16, 4, {.num_kv_heads = 3}); },
                                  {"MultiHeadAttention", "num_kv_heads", "4", "3"});
  tgt::require_throws<ValueError>([] { nn::MultiHeadAttention(16, 4, {.dropout = 1.0}); }, {"MultiHeadAttention", "dropout", "1"});
  nn::MultiHeadAttention m(16, 4);
  tgt::require_throws<ShapeError>([&] { (void)m(zeros({2, 5, 12})); }, {"MultiHeadAttention", "d_model = 16", "[2, 5, 12]"});
  tgt::require_throws<ShapeError>([&] { (void)m(zeros({5, 16})); }, {"MultiHeadAttention", "[5, 16]"});
  tgt::require_throws<ShapeError>([&] { (void)m(zeros({2, 5, 16}), AttentionPattern::dense(8, 8, 4)); },
                                  {"flash_attention", "pattern", "5 x 5", "8 x 8"});
}
