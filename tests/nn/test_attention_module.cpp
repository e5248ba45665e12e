// nn::MultiHeadAttention: output against a hand-written f64 reference from the module's own
// weights (fused and separate projections, GQA, causal, patterns, per-call sinks and
// lengths), gradchecks (fused and separate projections), the CUDA module against the CPU
// one with the same weights, parameter names and shapes, dropout in training / eval mode,
// and bad arguments.
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "util.h"

namespace test_attention_module {

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
// h / (H / Hkv); key j is visible to query i iff visible(b·H + h, i, j); with sinks, head
// h adds exp(sinks[h]) to every softmax denominator.
Tensor reference(const nn::MultiHeadAttention& m, const Tensor& x,
                 const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& visible,
                 const std::vector<double>& sinks = {}) {
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
        double mx = sinks.empty() ? s[0] : sinks[at(h)], z = 0;
        for (std::int64_t j = 0; j < S; ++j) {
          if (!visible(b * H + h, i, j)) continue;
          double t = 0;
          for (std::int64_t e = 0; e < dh; ++e) t += Q[at((b * S + i) * d + h * dh + e)] * K[at((b * S + j) * kv + g * dh + e)];
          s[at(j)] = t / std::sqrt(static_cast<double>(dh));
          mx = std::max(mx, s[at(j)]);
        }
        if (!std::isfinite(mx)) continue;
        if (!sinks.empty()) z += std::exp(sinks[at(h)] - mx);
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

// |got - want| <= tol · max|want| elementwise (shapes equal).
void require_near(const std::string& what, const Tensor& got, const Tensor& want, double tol) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  const auto g = tgt::values(got), w = tgt::values(want);
  double scale = 1e-3;
  for (double v : w) scale = std::max(scale, std::fabs(v));
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < w.size(); ++i)
    if (!(std::fabs(g[i] - w[i]) <= tol * scale) && bad++ == 0) first = i;
  INFO(bad << " of " << w.size() << " differ (tolerance " << tol << " x " << scale << "); first at " << first
            << ": got " << (bad ? g[first] : 0.0) << ", want " << (bad ? w[first] : 0.0));
  REQUIRE(bad == 0);
}

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

TEST_CASE("MultiHeadAttention gradcheck, separate projections and per-call options", "[nn][attention_module][gradcheck]") {
  // fused_qkv = false, GQA (2 query heads on 1 kv head), per-call sinks (differentiable
  // through the module) and query lengths (batch 1 has a padded query)
  nn::MultiHeadAttention m(4, 2, {.num_kv_heads = 1, .fused_qkv = false, .tensor = {.dtype = DType::f64}, .seed = 12});
  REQUIRE(m.q);
  REQUIRE_FALSE(m.qkv);
  const Tensor x = tgt::rand64({2, 4, 4}, 13);
  std::vector<Tensor> inputs{x.detach().requires_grad_()};
  std::vector<Tensor*> slots{&m.q->weight, &m.q->bias, &m.k->weight, &m.k->bias,
                             &m.v->weight, &m.v->bias, &m.proj->weight, &m.proj->bias};
  for (Tensor* t : slots) inputs.push_back(t->detach().requires_grad_());
  inputs.push_back(tgt::rand64({2}, 14).requires_grad_());
  const Tensor q_lens = from_vector(std::vector<std::int64_t>{4, 3}, {2});
  auto f = [&](const std::vector<Tensor>& in) {
    for (std::size_t i = 0; i < slots.size(); ++i) *slots[i] = in[i + 1];
    AttentionOptions o;
    o.sinks = in.back();
    o.q_lens = q_lens;
    return m(in[0], AttentionPattern(), o);
  };
  auto r = autograd::gradcheck(f, inputs);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("MultiHeadAttention: per-head pattern, GQA and per-call sinks and lengths match the reference",
          "[nn][attention_module]") {
  // B = 2, H = 4 on Hkv = 2, S = 12: a per-call pattern per batch·head (blocks of 4, some
  // query blocks visit nothing), the module's causal flag, per-call sinks, q_lens, k_lens
  const std::int64_t B = 2, H = 4, S = 12;
  const Tensor x = tgt::rand64({B, S, 16}, 15);
  std::mt19937_64 rng(16);
  std::vector<bool> pm(at(B * H * 3 * 3));
  for (std::size_t i = 0; i < pm.size(); ++i) pm[i] = rng() % 10 < 6;
  pm[at((1 * 3 + 1) * 3 + 0)] = pm[at((1 * 3 + 1) * 3 + 1)] = pm[at((1 * 3 + 1) * 3 + 2)] = false;  // bh 1, block 1
  const AttentionPattern pat = AttentionPattern::uniform(from_vector(pm, {B * H, 3, 3}), 4, 4);
  const std::vector<std::int64_t> ql{12, 9}, kl{10, 7};
  const Tensor sinks = tgt::rand64({H}, 17, -1.0, 1.0);
  AttentionOptions o;
  o.sinks = sinks;
  o.q_lens = from_vector(ql, {B});
  o.k_lens = from_vector(kl, {B});
  auto vis = [&](std::int64_t bh, std::int64_t i, std::int64_t j) {
    const std::int64_t b = bh / H;
    return pat.visited(bh, i / 4, j / 4) && j <= i && i < ql[at(b)] && j < kl[at(b)];
  };
  for (bool fused : {true, false}) {
    INFO("fused_qkv " << fused);
    nn::MultiHeadAttention m(16, H, {.num_kv_heads = 2, .fused_qkv = fused, .causal = true,
                                     .tensor = {.dtype = DType::f64}, .seed = 18});
    const Tensor y = m(x, pat, o);
    tgt::require_close(y, reference(m, x, vis, tgt::values(sinks)), 1e-12, 1e-12);
    // the per-call options matter: without the sinks the output differs
    AttentionOptions no_sinks = o;
    no_sinks.sinks = Tensor();
    REQUIRE(tgt::max_abs_diff(m(x, pat, no_sinks), y) > 1e-3);
    tgt::require_close(m(x, pat, no_sinks), reference(m, x, vis), 1e-12, 1e-12);
  }
}

TEST_CASE("MultiHeadAttention on CUDA matches the CPU module with the same weights", "[nn][attention_module][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda(), cpu = Device::cpu();
  // head dim 32 (a tensor-core size for bf16), GQA, causal, a per-call block pattern and sinks
  const std::int64_t B = 2, S = 64, d = 64, H = 2;
  const AttentionPattern pat = AttentionPattern::from_layout(causal_pattern(1, S, S, 16));
  const Tensor x64 = tgt::rand64({B, S, d}, 20), w64 = tgt::rand64({B, S, d}, 21);
  const Tensor sinks = tgt::rand64({H}, 22).to(DType::f32).to(DType::f64);
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool fused : {true, false}) {
      INFO(dtype_name(dt) << ", fused_qkv " << fused);
      const double tol = dt == DType::bf16 ? 3e-2 : 1e-3;
      auto rounded = [&](const Tensor& t) { return t.to(dt).to(DType::f64); };
      nn::MultiHeadAttentionOptions base{.num_kv_heads = 1, .fused_qkv = fused, .causal = true};
      nn::MultiHeadAttentionOptions oc = base, og = base;
      oc.tensor = {.dtype = DType::f64};
      oc.seed = 23;
      og.tensor = {.dtype = dt, .device = gpu};
      og.seed = 24;  // other initial weights: the copy below makes them equal
      nn::MultiHeadAttention mc(d, H, oc), mg(d, H, og);
      const std::vector<Tensor> pc = mc.parameters(), pg = mg.parameters();
      REQUIRE(pc.size() == pg.size());
      {
        NoGradGuard ng;
        for (std::size_t i = 0; i < pc.size(); ++i) {
          const Tensor r = rounded(pc[i]);
          copy_bytes(pc[i], r);
          copy_bytes(pg[i], r.to(dt).to(gpu));
        }
      }
      AttentionOptions ac, ag;
      ac.sinks = sinks;
      ag.sinks = sinks.to(DType::f32).to(gpu);
      const Tensor x = rounded(x64), w = rounded(w64);
      const Tensor yc = mc(x, pat, ac), yg = mg(x.to(dt).to(gpu), pat, ag);
      REQUIRE(yg.device() == gpu);
      REQUIRE(yg.dtype() == dt);
      require_near("output", yg.to(cpu).to(DType::f64), yc, tol);
      sum(mul(yc, w)).backward();
      sum(mul(yg, w.to(dt).to(gpu))).backward();
      const auto names = mc.named_parameters();
      for (std::size_t i = 0; i < pc.size(); ++i) {
        REQUIRE(pg[i].grad().defined());
        require_near("gradient of " + names[i].first, pg[i].grad().to(cpu).to(DType::f64), pc[i].grad(), tol);
      }
    }
  }
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

}  // namespace test_attention_module
