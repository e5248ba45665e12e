// nn::MultiHeadAttention::forward_cross: queries from x, keys and values from another
// sequence, against cross-attention written out in f64 from the module's own weights
// (fused and separate projections, GQA, a pattern over [Sq, Sk]), a gradcheck through x,
// memory and the fused weight, self-attention as the special case memory = x, bad shapes.
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "nn/attention.h"
#include "util.h"

namespace test_attention_cross {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Rows [a, b) of a row-major [*, c] matrix (or of a vector when c == 1).
std::vector<double> rows(const std::vector<double>& m, std::int64_t c, std::int64_t a, std::int64_t b) {
  return std::vector<double>(m.begin() + a * c, m.begin() + b * c);
}

// Cross-attention of x [B, Sq, d] over memory [B, Sk, d] by hand: query head h reads kv head
// h / (H / Hkv); key j visible to query i iff visible(i, j); scale 1/sqrt(dh).
Tensor reference(const nn::MultiHeadAttention& m, const Tensor& x, const Tensor& mem,
                 const std::function<bool(std::int64_t, std::int64_t)>& visible) {
  const std::int64_t B = x.size(0), Sq = x.size(1), Sk = mem.size(1), d = m.d_model, H = m.num_heads,
                     Hkv = m.num_kv_heads, dh = m.head_dim, kv = Hkv * dh;
  std::vector<double> wq, bq, wk, bk, wv, bv;
  if (m.qkv) {
    const auto W = tgt::values(m.qkv->weight), b = tgt::values(m.qkv->bias);
    wq = rows(W, d, 0, d), wk = rows(W, d, d, d + kv), wv = rows(W, d, d + kv, d + 2 * kv);
    bq = rows(b, 1, 0, d), bk = rows(b, 1, d, d + kv), bv = rows(b, 1, d + kv, d + 2 * kv);
  } else {
    wq = tgt::values(m.q->weight), wk = tgt::values(m.k->weight), wv = tgt::values(m.v->weight);
    if (m.q->bias.defined()) bq = tgt::values(m.q->bias), bk = tgt::values(m.k->bias), bv = tgt::values(m.v->bias);
  }
  const auto X = tgt::values(x), M = tgt::values(mem);
  const auto Q = tgt::affine(X, B * Sq, d, wq, bq, d), K = tgt::affine(M, B * Sk, d, wk, bk, kv),
             V = tgt::affine(M, B * Sk, d, wv, bv, kv);
  std::vector<double> O(at(B * Sq * d), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t g = h / (H / Hkv);
      for (std::int64_t i = 0; i < Sq; ++i) {
        std::vector<double> s(at(Sk), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity(), z = 0;
        for (std::int64_t j = 0; j < Sk; ++j) {
          if (!visible(i, j)) continue;
          double t = 0;
          for (std::int64_t e = 0; e < dh; ++e) t += Q[at((b * Sq + i) * d + h * dh + e)] * K[at((b * Sk + j) * kv + g * dh + e)];
          s[at(j)] = t / std::sqrt(static_cast<double>(dh));
          mx = std::max(mx, s[at(j)]);
        }
        if (!std::isfinite(mx)) continue;  // no visible key: 0
        for (std::int64_t j = 0; j < Sk; ++j) z += std::exp(s[at(j)] - mx);
        for (std::int64_t j = 0; j < Sk; ++j) {
          const double p = std::exp(s[at(j)] - mx) / z;
          for (std::int64_t e = 0; e < dh; ++e) O[at((b * Sq + i) * d + h * dh + e)] += p * V[at((b * Sk + j) * kv + g * dh + e)];
        }
      }
    }
  const auto Wo = tgt::values(m.proj->weight);
  const auto bo = m.proj->bias.defined() ? tgt::values(m.proj->bias) : std::vector<double>();
  return from_vector(tgt::affine(O, B * Sq, d, Wo, bo, d), {B, Sq, d});
}

}  // namespace

TEST_CASE("MultiHeadAttention cross-attention matches a hand-written reference", "[nn][attention_module]") {
  const Tensor x = tgt::rand64({2, 12, 16}, 11), mem = tgt::rand64({2, 20, 16}, 12);
  SECTION("fused qkv, GQA, every pair") {
    nn::MultiHeadAttention m(16, 4, {.num_kv_heads = 2, .tensor = {.dtype = DType::f64}, .seed = 13});
    tgt::require_close(m.forward_cross(x, mem), reference(m, x, mem, [](auto, auto) { return true; }), 1e-12, 1e-12);
  }
  SECTION("separate projections, MQA, no bias, a pattern over [Sq, Sk] and a window") {
    nn::MultiHeadAttention m(16, 4,
                             {.num_kv_heads = 1, .fused_qkv = false, .bias = false, .tensor = {.dtype = DType::f64},
                              .seed = 14});
    // query blocks of 4, key blocks of 4: query block r sees key blocks r and r + 2
    std::vector<bool> pm(3 * 5, false);
    for (std::size_t r = 0; r < 3; ++r) pm[r * 5 + r] = pm[r * 5 + r + 2] = true;
    const AttentionPattern pat = AttentionPattern::uniform(from_vector(pm, {1, 3, 5}), 4, 4);
    AttentionOptions o;
    o.window_left = 5;
    o.window_right = 6;
    const auto vis = [](std::int64_t i, std::int64_t j) {
      return (j / 4 == i / 4 || j / 4 == i / 4 + 2) && j >= i - 5 && j <= i + 6;
    };
    tgt::require_close(m.forward_cross(x, mem, pat, o), reference(m, x, mem, vis), 1e-12, 1e-12);
  }
  SECTION("memory = x is self-attention") {
    nn::MultiHeadAttention m(16, 4, {.num_kv_heads = 2, .causal = true, .tensor = {.dtype = DType::f64}, .seed = 15});
    tgt::require_close(m.forward_cross(x, x), m(x), 1e-12, 1e-12);
  }
}

TEST_CASE("MultiHeadAttention cross-attention gradcheck", "[nn][attention_module][gradcheck]") {
  nn::MultiHeadAttention m(4, 2, {.num_kv_heads = 1, .tensor = {.dtype = DType::f64}, .seed = 16});
  std::vector<Tensor> inputs{tgt::rand64({2, 3, 4}, 17).requires_grad_(), tgt::rand64({2, 5, 4}, 18).requires_grad_(),
                             m.qkv->weight.detach().requires_grad_(), m.qkv->bias.detach().requires_grad_()};
  auto f = [&](const std::vector<Tensor>& in) {
    m.qkv->weight = in[2];
    m.qkv->bias = in[3];
    return m.forward_cross(in[0], in[1]);
  };
  auto r = autograd::gradcheck(f, inputs);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("MultiHeadAttention cross-attention bad shapes", "[nn][attention_module]") {
  nn::MultiHeadAttention m(16, 4);
  const Tensor x = zeros({2, 6, 16});
  tgt::require_throws<ShapeError>([&] { m.forward_cross(x, zeros({3, 6, 16})); },
                                  {"forward_cross", "memory", "B = 2", "[3, 6, 16]"});
  tgt::require_throws<ShapeError>([&] { m.forward_cross(x, zeros({2, 6, 8})); },
                                  {"forward_cross", "memory", "d_model = 16", "[2, 6, 8]"});
  tgt::require_throws<ShapeError>([&] { m.forward_cross(zeros({2, 6}), x); }, {"forward_cross", "x", "[2, 6]"});
}

}  // namespace test_attention_cross
