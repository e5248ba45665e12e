// Tests of block-sparse flash attention (ops/attention) on the CPU: an independent dense f64
// reference that expands the pattern and every option to element visibility, each option
// alone and in combination, random / per-head / variable patterns with empty rows, f64 /
// f32 / bf16, gradchecks, determinism, the block-sparse overload, AttentionPattern, and bad
// inputs.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention_cases.h"
#include "ops/attention/attention.h"
#include "ops/sparse_nn/sparse_nn.h"
#include "util.h"

namespace test_attention {

using namespace tg;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

struct Qkv {
  Tensor q, k, v;  // f64
};

Qkv make_qkv(std::int64_t bhq, std::int64_t bhkv, std::int64_t sq, std::int64_t sk, std::int64_t d, std::int64_t dv,
             std::uint64_t seed) {
  return {tgt::rand64({bhq, sq, d}, seed, -1.5, 1.5), tgt::rand64({bhkv, sk, d}, seed + 1, -1.5, 1.5),
          tgt::rand64({bhkv, sk, dv}, seed + 2)};
}

// Values of a block-sparse tensor as a dense f64 [B, M, N] host array (0 where absent).
std::vector<double> dense_values(const BlockSparseTensor& x) {
  return tgt::values(to_dense(BlockSparseTensor(x.data().detach().to(DType::f64), x.layout())));
}

// Index of the block holding position i, from the block boundaries.
std::int64_t block_of(const std::vector<std::int64_t>& starts, std::int64_t i) {
  std::int64_t r = 0;
  while (starts[at(r + 1)] <= i) ++r;
  return r;
}

struct RefOut {
  Tensor o, lse;
};

// The definition of attention.h written out per element in f64.
RefOut reference(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionPattern& pat,
                 const AttentionOptions& opt) {
  const auto Q = tgt::values(q), K = tgt::values(k), V = tgt::values(v);
  const std::int64_t bhq = q.size(0), sq = q.size(1), d = q.size(2), bhkv = k.size(0), sk = k.size(1), dv = v.size(2);
  const std::int64_t heads = opt.num_heads ? opt.num_heads : opt.sinks.defined() ? opt.sinks.numel() : bhq;
  const std::int64_t group = bhq / bhkv;
  const double scale = opt.scale.value_or(1.0 / std::sqrt(static_cast<double>(d)));
  const std::vector<double> bias = opt.bias.defined() ? dense_values(opt.bias) : std::vector<double>();
  const std::vector<double> mask = opt.mask.defined() ? dense_values(opt.mask) : std::vector<double>();
  const std::int64_t mask_rows = opt.mask.defined() ? opt.mask.shape()[0] : 0;
  const auto ql = opt.q_lens.defined() ? opt.q_lens.to_vector<std::int64_t>() : std::vector<std::int64_t>();
  const auto kl = opt.k_lens.defined() ? opt.k_lens.to_vector<std::int64_t>() : std::vector<std::int64_t>();
  const auto sgq = opt.seg_q.defined() ? opt.seg_q.to_vector<std::int64_t>() : std::vector<std::int64_t>();
  const auto sgk = opt.seg_k.defined() ? opt.seg_k.to_vector<std::int64_t>() : std::vector<std::int64_t>();
  const auto sinks = opt.sinks.defined() ? opt.sinks.to_vector<double>() : std::vector<double>();
  std::vector<double> o(at(bhq * sq * dv), 0.0), lse(at(bhq * sq), -kInf);
  for (std::int64_t bh = 0; bh < bhq; ++bh) {
    const std::int64_t b = bh / heads, h = bh % heads, kv = bh / group, prow = pat.count() == 1 ? 0 : bh;
    for (std::int64_t i = 0; i < sq; ++i) {
      std::vector<double> s(at(sk), -kInf);
      double mx = sinks.empty() ? -kInf : sinks[at(h)];
      for (std::int64_t j = 0; j < sk; ++j) {
        bool vis = pat.visited(prow, block_of(pat.q_starts(), i), block_of(pat.k_starts(), j));
        if (vis && opt.mask_fn) vis = !opt.mask_fn(bh, i, j);
        if (opt.causal && j > i) vis = false;
        if (opt.window_left >= 0 && j < i - opt.window_left) vis = false;
        if (opt.window_right >= 0 && j > i + opt.window_right) vis = false;
        if (!ql.empty() && i >= ql[at(b)]) vis = false;
        if (!kl.empty() && j >= kl[at(b)]) vis = false;
        if (!sgq.empty() && sgq[at(b * sq + i)] != sgk[at(b * sk + j)]) vis = false;
        if (!mask.empty() && mask[at(((mask_rows == 1 ? 0 : bh) * sq + i) * sk + j)] != 0) vis = false;
        if (!vis) continue;
        double t = 0;
        for (std::int64_t x = 0; x < d; ++x) t += Q[at((bh * sq + i) * d + x)] * K[at((kv * sk + j) * d + x)];
        t *= scale;
        if (!bias.empty()) t += bias[at((bh * sq + i) * sk + j)];
        s[at(j)] = opt.softcap > 0 ? opt.softcap * std::tanh(t / opt.softcap) : t;
        mx = std::max(mx, s[at(j)]);
      }
      if (mx == -kInf) continue;  // no visible key and no sink: o = 0, lse = -inf
      double z = sinks.empty() ? 0.0 : std::exp(sinks[at(h)] - mx);
      for (std::int64_t j = 0; j < sk; ++j) z += std::exp(s[at(j)] - mx);
      const double L = mx + std::log(z);
      lse[at(bh * sq + i)] = L;
      for (std::int64_t j = 0; j < sk; ++j) {
        if (s[at(j)] == -kInf) continue;
        double w = std::exp(s[at(j)] - L);
        if (opt.dropout_p > 0) {
          const auto e = static_cast<std::uint64_t>((bh * sq + i) * sk + j);
          // 16 bits a decision: half e % 2 of word (e / 2) % 4 of block e / 8, read as k / 2^16
          const philox::U32x4 blk = philox::block(opt.seed, opt.offset, e >> 3);
          const std::uint32_t word = philox::word(blk, static_cast<int>((e >> 1) & 3));
          const double u = static_cast<double>((e & 1) ? word >> 16 : word & 0xFFFFu) / 65536.0;
          w = u >= opt.dropout_p ? w / (1.0 - opt.dropout_p) : 0.0;
        }
        for (std::int64_t x = 0; x < dv; ++x) o[at((bh * sq + i) * dv + x)] += w * V[at((kv * sk + j) * dv + x)];
      }
    }
  }
  return {from_vector(o, {bhq, sq, dv}), from_vector(lse, {bhq, sq})};
}

// The options with bias and sinks stored in dtype dt (their values rounded to it).
AttentionOptions options_in(const AttentionOptions& opt, DType dt) {
  AttentionOptions o = opt;
  if (opt.bias.defined()) o.bias = BlockSparseTensor(opt.bias.data().to(dt), opt.bias.layout());
  if (opt.sinks.defined()) o.sinks = opt.sinks.to(dt);
  return o;
}

// Runs flash_attention_with_lse in each dtype and compares it with the f64 reference on
// the same (rounded) inputs.
void check_case(const std::string& name, const Qkv& in, const AttentionPattern& pat, const AttentionOptions& opt,
                const std::vector<DType>& dtypes = {DType::f64, DType::f32, DType::bf16}) {
  for (DType dt : dtypes) {
    INFO(name << " in " << dtype_name(dt));
    const Tensor q = in.q.to(dt), k = in.k.to(dt), v = in.v.to(dt);
    const AttentionOptions o = options_in(opt, dt);
    const AttentionResult r = flash_attention_with_lse(q, k, v, pat, o);
    const AttentionOptions o64 = options_in(o, DType::f64);
    const RefOut ref = reference(q.to(DType::f64), k.to(DType::f64), v.to(DType::f64), pat, o64);
    REQUIRE(r.out.dtype() == dt);
    REQUIRE(r.lse.dtype() == (dt == DType::f64 ? DType::f64 : DType::f32));
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-5 : 1.5e-2;
    const double lse_tol = dt == DType::f64 ? 1e-12 : 2e-5;
    tgt::require_close(r.out, ref.o, tol, tol);
    tgt::require_close(r.lse, ref.lse, lse_tol, lse_tol);
  }
}

// A pattern mask [P, Qb, Kb] with each pair visited with probability percent/100; the
// first query block of every row visits nothing.
Tensor random_pattern_mask(std::int64_t P, std::int64_t Qb, std::int64_t Kb, int percent, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<bool> m(at(P * Qb * Kb));
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t r = 0; r < Qb; ++r)
      for (std::int64_t c = 0; c < Kb; ++c) m[at((p * Qb + r) * Kb + c)] = r != 0 && static_cast<int>(rng() % 100) < percent;
  return from_vector(m, {P, Qb, Kb});
}

Tensor i64s(const std::vector<std::int64_t>& v, const Shape& s) { return from_vector(v, s); }

// Segment ids [B, S]: runs of random lengths.
Tensor segments(std::int64_t B, std::int64_t S, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> ids(at(B * S));
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t id = 0;
    for (std::int64_t i = 0; i < S; ++i) {
      if (i > 0 && rng() % 7 == 0) ++id;
      ids[at(b * S + i)] = id;
    }
  }
  return from_vector(ids, {B, S});
}

}  // namespace

TEST_CASE("flash_attention: plain attention matches the dense f64 reference", "[ops][attention]") {
  // one dense block, uniform blocks, and a dense pattern whose last blocks are shorter
  check_case("one block", make_qkv(2, 2, 16, 16, 8, 8, 1), AttentionPattern::dense(16, 16, 16), {});
  check_case("uniform 16", make_qkv(3, 3, 48, 80, 16, 8, 4), AttentionPattern::dense(48, 80, 16), {},
             {DType::f64, DType::f32, DType::bf16, DType::f16});
  check_case("dense block 32, short tail", make_qkv(2, 1, 48, 80, 8, 12, 7), AttentionPattern::dense(48, 80, 32), {});
  // a query block of 100 rows is processed in several chunks
  check_case("long query block", make_qkv(1, 1, 100, 24, 8, 8, 10), AttentionPattern::dense(100, 24, 128), {});
  const Qkv small = make_qkv(1, 1, 4, 4, 2, 2, 13);
  AttentionResult r = flash_attention_with_lse(small.q.detach().requires_grad_(), small.k, small.v,
                                               AttentionPattern::dense(4, 4, 4));
  REQUIRE(r.out.requires_grad());
  REQUIRE_FALSE(r.lse.requires_grad());
}

TEST_CASE("flash_attention: each option alone matches the reference", "[ops][attention]") {
  const std::int64_t B = 2, H = 2, sq = 48, sk = 48, bs = 16;
  const Qkv in = make_qkv(B * H, B * H, sq, sk, 16, 8, 20);
  const AttentionPattern dense = AttentionPattern::dense(sq, sk, bs);
  AttentionOptions o;
  o.scale = 0.37;
  check_case("scale", in, dense, o);
  o = {};
  o.causal = true;
  check_case("causal", in, dense, o);
  o = {};
  o.num_heads = H;
  o.q_lens = i64s({40, 0}, {B});
  check_case("q_lens", in, dense, o);
  o = {};
  o.num_heads = H;
  o.causal = true;
  o.q_lens = i64s({45, 17}, {B}).to(DType::i32);
  o.k_lens = i64s({30, 48}, {B});
  check_case("causal + q_lens + k_lens (i32 and i64)", in, dense, o);
  o = {};
  o.window_left = 5;
  o.window_right = 2;
  check_case("window", in, dense, o);
  o = {};
  o.window_left = 7;
  check_case("window left only", in, dense, o);
  o = {};
  o.mask = tgt::random_element_mask(1, sq, sk, 8, 21);
  check_case("shared element mask", in, dense, o);
  o.mask = tgt::random_element_mask(B * H, sq, sk, 16, 22);
  check_case("per-head element mask", in, dense, o);
  o = {};
  o.mask_fn = [](std::int64_t bh, std::int64_t i, std::int64_t j) { return (i * 7 + j * 3 + bh) % 5 == 0; };
  check_case("mask_fn", in, dense, o);
  o = {};
  o.bias = tgt::random_bias(B * H, sq, sk, 16, 23);
  check_case("bias", in, dense, o);
  o.bias = tgt::random_bias(B * H, sq, sk, 8, 24);
  check_case("bias, block 8", in, dense, o);
  o = {};
  o.softcap = 1.5;
  o.scale = 2.0;
  check_case("softcap", in, dense, o);
  o = {};
  o.sinks = tgt::rand64({H}, 25, -1.0, 2.0);  // num_heads from sinks: B = 2
  check_case("sinks", in, dense, o);
  o = {};
  o.num_heads = H;
  o.seg_q = segments(B, sq, 26);
  o.seg_k = o.seg_q.to(DType::i32);
  check_case("segments", in, dense, o);
  o = {};
  o.dropout_p = 0.3;
  o.seed = 77;
  o.offset = 5;
  check_case("dropout", in, dense, o);
  // p within 2^-16 of 1: no 16-bit draw reaches the threshold 2^16, every element is dropped
  o.dropout_p = 1.0 - std::ldexp(1.0, -17);
  check_case("dropout, p within 2^-16 of 1", in, dense, o);
}

TEST_CASE("flash_attention: GQA, MQA, cross-attention and per-head patterns", "[ops][attention]") {
  // GQA: 4 query heads share 2 kv heads per batch (kv row = bh / 2)
  check_case("GQA", make_qkv(8, 4, 32, 32, 8, 8, 30), AttentionPattern::dense(32, 32, 16), {});
  // MQA: one kv head for 4 query heads
  AttentionOptions mqa;
  mqa.num_heads = 4;
  check_case("MQA", make_qkv(4, 1, 32, 48, 8, 4, 31), AttentionPattern::dense(32, 48, 16), mqa);
  // cross-attention, Sq != Sk, Dv != D, random pattern
  AttentionPattern cross = AttentionPattern::uniform(random_pattern_mask(1, 5, 3, 70, 32), 16, 16);
  check_case("cross-attention", make_qkv(2, 2, 80, 48, 8, 12, 33), cross, {});
  // per-head patterns P = B·Hq, and an all-empty one
  check_case("per-head pattern", make_qkv(6, 3, 48, 64, 8, 8, 34),
             AttentionPattern::uniform(random_pattern_mask(6, 3, 4, 60, 35), 16, 16), {});
  check_case("empty pattern", make_qkv(2, 2, 32, 32, 8, 8, 36),
             AttentionPattern::uniform(zeros({2, 2, 2}, {.dtype = DType::boolean}), 16, 16), {});
  // variable block sizes, including one longer than a work chunk
  std::vector<std::int64_t> qz{3, 20, 70, 7}, kz{5, 11, 32};
  Tensor vm = random_pattern_mask(2, 4, 3, 75, 37);
  check_case("variable blocks", make_qkv(2, 1, 100, 48, 8, 8, 38), AttentionPattern::variable(vm, qz, kz), {});
  // from a Layout (square blocks), as the pattern builders make
  check_case("from_layout causal", make_qkv(2, 2, 64, 64, 8, 8, 39),
             AttentionPattern::from_layout(causal_pattern(1, 64, 64, 16)), {});
}

TEST_CASE("flash_attention: option combinations match the reference", "[ops][attention]") {
  const std::int64_t B = 2, H = 4;
  // causal + GQA + sinks
  {
    AttentionOptions o;
    o.causal = true;
    o.sinks = tgt::rand64({H}, 40, -1.0, 1.0);
    check_case("causal + GQA + sinks", make_qkv(B * H, B * 2, 48, 48, 8, 8, 41), AttentionPattern::dense(48, 48, 16), o);
  }
  // window + segments + softcap on a random pattern with empty rows
  {
    AttentionOptions o;
    o.num_heads = H;
    o.window_left = 9;
    o.window_right = 4;
    o.seg_q = segments(B, 64, 42);
    o.seg_k = o.seg_q;
    o.softcap = 2.0;
    AttentionPattern pat = AttentionPattern::uniform(random_pattern_mask(B * H, 4, 4, 70, 43), 16, 16);
    check_case("window + segments + softcap", make_qkv(B * H, B * H, 64, 64, 8, 8, 44), pat, o);
  }
  // element mask + bias (+ mask_fn on top of the mask)
  {
    AttentionOptions o;
    o.mask = tgt::random_element_mask(B * H, 32, 48, 16, 45);
    o.bias = tgt::random_bias(B * H, 32, 48, 8, 46);
    check_case("mask + bias", make_qkv(B * H, B * H, 32, 48, 8, 8, 47), AttentionPattern::dense(32, 48, 16), o);
    o.mask = tgt::random_element_mask(1, 32, 48, 8, 48);
    o.mask_fn = [](std::int64_t, std::int64_t i, std::int64_t j) { return (i + j) % 3 == 0; };
    check_case("mask + mask_fn + bias", make_qkv(B * H, B * H, 32, 48, 8, 8, 47), AttentionPattern::dense(32, 48, 16),
               o);
  }
  // cross-attention with variable blocks, lens, dropout and sinks
  {
    AttentionOptions o;
    o.num_heads = 2;
    o.k_lens = i64s({33, 20}, {2});
    o.q_lens = i64s({50, 9}, {2});
    o.sinks = tgt::rand64({2}, 49);
    o.dropout_p = 0.2;
    o.seed = 3;
    std::vector<std::int64_t> qz{16, 9, 31}, kz{8, 32, 8};
    AttentionPattern pat = AttentionPattern::variable(random_pattern_mask(4, 3, 3, 80, 50), qz, kz);
    check_case("cross, variable, lens, dropout, sinks", make_qkv(4, 2, 56, 48, 8, 8, 51), pat, o);
  }
  // everything at once, with a causal window on a causal pattern
  {
    AttentionOptions o;
    o.num_heads = H;
    o.causal = true;
    o.window_left = 20;
    o.q_lens = i64s({48, 30}, {B});
    o.k_lens = i64s({40, 48}, {B});
    o.seg_q = segments(B, 48, 52);
    o.seg_k = segments(B, 48, 57);
    o.mask = tgt::random_element_mask(1, 48, 48, 16, 53);
    o.bias = tgt::random_bias(B * H, 48, 48, 16, 54);
    o.softcap = 3.0;
    o.sinks = tgt::rand64({H}, 55);
    o.dropout_p = 0.1;
    o.seed = 9;
    check_case("all options", make_qkv(B * H, B, 48, 48, 8, 8, 56),
               AttentionPattern::from_layout(causal_pattern(1, 48, 48, 16)), o);
  }
}

TEST_CASE("flash_attention: empty rows give 0 and lse -inf or the sink", "[ops][attention]") {
  const Qkv in = make_qkv(2, 2, 32, 32, 4, 4, 60);
  // query block 0 visits nothing; with q_lens some rows are padded
  Tensor m = from_vector(std::vector<bool>{false, false, true, true}, {1, 2, 2});
  AttentionOptions o;
  o.q_lens = i64s({20, 20}, {2});
  o.num_heads = 1;
  AttentionResult r = flash_attention_with_lse(in.q, in.k, in.v, AttentionPattern::uniform(m, 16, 16), o);
  auto ov = tgt::values(r.out), lv = tgt::values(r.lse);
  for (std::int64_t bh = 0; bh < 2; ++bh)
    for (std::int64_t i = 0; i < 32; ++i) {
      const bool empty = i < 16 || i >= 20;
      INFO("bh " << bh << " i " << i);
      REQUIRE((lv[at(bh * 32 + i)] == -kInf) == empty);
      for (std::int64_t x = 0; x < 4; ++x) {
        REQUIRE(std::isfinite(ov[at((bh * 32 + i) * 4 + x)]));
        if (empty) REQUIRE(ov[at((bh * 32 + i) * 4 + x)] == 0.0);
      }
    }
  // with sinks the lse of an empty row is the sink logit; the output is still 0
  o.sinks = from_vector(std::vector<double>{0.75}, {1});
  r = flash_attention_with_lse(in.q, in.k, in.v, AttentionPattern::uniform(m, 16, 16), o);
  REQUIRE(tgt::values(r.lse)[0] == 0.75);
  REQUIRE(tgt::values(r.out)[0] == 0.0);
  // no keys at all (Sk = 0), forward and backward
  Tensor q = tgt::rand64({2, 8, 4}, 61).requires_grad_(), k = zeros({2, 0, 4}, {.dtype = DType::f64}),
         v = zeros({2, 0, 3}, {.dtype = DType::f64});
  AttentionOptions os;
  os.sinks = from_vector(std::vector<double>{-0.5, 0.5}, {2});
  r = flash_attention_with_lse(q, k, v, AttentionPattern::dense(8, 0), os);
  tgt::require_close(r.out, zeros({2, 8, 3}, {.dtype = DType::f64}), 0, 0);
  REQUIRE(tgt::values(r.lse)[8] == 0.5);
  sum(r.out).backward();
  tgt::require_close(q.grad(), zeros({2, 8, 4}, {.dtype = DType::f64}), 0, 0);
}

TEST_CASE("flash_attention gradcheck", "[ops][attention][gradcheck]") {
  // B = 2, Hq = 2, Hkv = 1 (GQA), Sq = 6, Sk = 8 with blocks of 2; a random pattern with an
  // empty query block
  const std::int64_t B = 2, H = 2, sq = 6, sk = 8, d = 3, dv = 2;
  const Qkv in = make_qkv(B * H, B, sq, sk, d, dv, 70);
  const AttentionPattern pat = AttentionPattern::uniform(random_pattern_mask(B * H, 3, 4, 75, 71), 2, 2);
  const BlockSparseTensor bias = tgt::random_bias(B * H, sq, sk, 2, 72);
  const Tensor sinks = tgt::rand64({H}, 73);
  auto check = [&](const char* what, const AttentionOptions& base, bool with_bias, bool with_sinks) {
    INFO(what);
    std::vector<Tensor> inputs{in.q.detach().requires_grad_(), in.k.detach().requires_grad_(),
                               in.v.detach().requires_grad_()};
    if (with_bias) inputs.push_back(bias.data().detach().requires_grad_());
    if (with_sinks) inputs.push_back(sinks.detach().requires_grad_());
    auto f = [&](const std::vector<Tensor>& x) {
      AttentionOptions o = base;
      o.num_heads = H;
      std::size_t n = 3;
      if (with_bias) o.bias = BlockSparseTensor(x[n++], bias.layout());
      if (with_sinks) o.sinks = x[n++];
      return flash_attention(x[0], x[1], x[2], pat, o);
    };
    auto res = autograd::gradcheck(f, inputs);
    INFO(res.report);
    REQUIRE(res.ok);
  };
  check("plain", {}, false, false);
  AttentionOptions o;
  o.causal = true;
  check("causal + bias + sinks", o, true, true);
  o = {};
  o.softcap = 1.2;
  o.scale = 1.5;
  check("softcap + bias", o, true, false);
  o = {};
  o.dropout_p = 0.25;
  o.seed = 5;
  o.window_left = 3;
  o.mask_fn = [](std::int64_t, std::int64_t i, std::int64_t j) { return i == j + 1; };
  check("dropout + window + mask_fn + sinks", o, false, true);
  o = {};
  o.q_lens = i64s({5, 6}, {B});
  o.k_lens = i64s({7, 3}, {B});
  o.seg_q = i64s({0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 1, 1}, {B, sq});
  o.seg_k = i64s({0, 0, 0, 1, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1, 1, 1}, {B, sk});
  o.softcap = 2.0;
  check("lens + segments + softcap + sinks", o, false, true);
}

TEST_CASE("flash_attention gradcheck: variable blocks, element mask, cross-attention", "[ops][attention][gradcheck]") {
  // B = 2, Hq = 2, Hkv = 1; Sq = 6 in query blocks {1, 3, 2}, Sk = 8 in key blocks {3, 5};
  // a per-head pattern whose first query block (one row) visits nothing; a per-head element
  // mask and a bias at block 2 (which straddles the pattern's block boundaries)
  const std::int64_t B = 2, H = 2, sq = 6, sk = 8, d = 3, dv = 2;
  const Qkv in = make_qkv(B * H, B, sq, sk, d, dv, 130);
  const AttentionPattern pat =
      AttentionPattern::variable(random_pattern_mask(B * H, 3, 2, 80, 131), {1, 3, 2}, {3, 5});
  REQUIRE(pat.bq() == 0);
  const BlockSparseTensor mask = tgt::random_element_mask(B * H, sq, sk, 2, 132);
  const BlockSparseTensor bias = tgt::random_bias(B * H, sq, sk, 2, 133);
  const Tensor sinks = tgt::rand64({H}, 134);
  auto check = [&](const char* what, AttentionOptions base, bool with_sinks) {
    INFO(what);
    base.num_heads = H;
    base.mask = mask;
    // the forward against the f64 reference, then the gradients against finite differences
    AttentionOptions fwd = base;
    fwd.bias = bias;
    if (with_sinks) fwd.sinks = sinks;
    check_case(what, in, pat, fwd, {DType::f64});
    std::vector<Tensor> inputs{in.q.detach().requires_grad_(), in.k.detach().requires_grad_(),
                               in.v.detach().requires_grad_(), bias.data().detach().requires_grad_()};
    if (with_sinks) inputs.push_back(sinks.detach().requires_grad_());
    auto f = [&](const std::vector<Tensor>& x) {
      AttentionOptions o = base;
      o.bias = BlockSparseTensor(x[3], bias.layout());
      if (with_sinks) o.sinks = x[4];
      return flash_attention(x[0], x[1], x[2], pat, o);
    };
    auto res = autograd::gradcheck(f, inputs);
    INFO(res.report);
    REQUIRE(res.ok);
  };
  check("mask + bias + sinks", {}, true);
  AttentionOptions o;
  o.causal = true;
  o.softcap = 1.5;
  check("mask + bias + causal + softcap", o, false);
}

TEST_CASE("flash_attention: Sq, Sk above 128 and not multiples of 128, variable blocks", "[ops][attention]") {
  // Sq = 200, Sk = 136; query blocks longer than 128 and of one row, per-head random pattern
  // (query block 0 of every head visits nothing: empty rows), GQA, and padded queries
  const std::int64_t B = 1, H = 2;
  std::vector<std::int64_t> qz{5, 130, 1, 64}, kz{70, 1, 65};
  const AttentionPattern pat = AttentionPattern::variable(random_pattern_mask(B * H, 4, 3, 70, 140), qz, kz);
  const Qkv in = make_qkv(B * H, B, 200, 136, 16, 16, 141);
  check_case("variable blocks, Sq 200, Sk 136", in, pat, {});
  AttentionOptions o;
  o.num_heads = H;
  o.q_lens = i64s({190}, {B});
  o.sinks = tgt::rand64({H}, 142);
  check_case("variable blocks, Sq 200, Sk 136, q_lens + sinks", in, pat, o, {DType::f64, DType::f32});
  // the empty rows are exact zeros with lse -inf
  const AttentionResult r = flash_attention_with_lse(in.q, in.k, in.v, pat);
  const auto ov = tgt::values(r.out), lv = tgt::values(r.lse);
  for (std::int64_t bh = 0; bh < B * H; ++bh)
    for (std::int64_t i = 0; i < qz[0]; ++i) {
      INFO("bh " << bh << " i " << i);
      REQUIRE(lv[at(bh * 200 + i)] == -kInf);
      for (std::int64_t x = 0; x < 16; ++x) REQUIRE(ov[at((bh * 200 + i) * 16 + x)] == 0.0);
    }
}

TEST_CASE("flash_attention backward matches a dense composition at larger sizes", "[ops][attention]") {
  // softmax(q kᵀ · scale + additive mask) v with matmul/softmax; every row sees >= 1 key.
  const std::int64_t B = 2, H = 2, sq = 100, sk = 80, d = 8;
  const Qkv in = make_qkv(B * H, B, sq, sk, d, d, 80);
  std::vector<std::int64_t> qz{4, 90, 6}, kz{16, 16, 48};
  Tensor pm = from_vector(std::vector<bool>{true, false, true, true, true, false, false, true, true}, {1, 3, 3});
  const AttentionPattern pat = AttentionPattern::variable(pm, qz, kz);
  AttentionOptions o;
  o.num_heads = H;
  o.window_left = 80;
  Tensor q = in.q.detach().requires_grad_(), k = in.k.detach().requires_grad_(), v = in.v.detach().requires_grad_();
  Tensor w = tgt::rand64({B * H, sq, d}, 81);
  sum(mul(flash_attention(q, k, v, pat, o), w)).backward();

  std::vector<double> am(at(sq * sk));
  for (std::int64_t i = 0; i < sq; ++i)
    for (std::int64_t j = 0; j < sk; ++j) {
      const bool vis = pat.visited(0, block_of(pat.q_starts(), i), block_of(pat.k_starts(), j)) && j >= i - 80;
      am[at(i * sk + j)] = vis ? 0.0 : -kInf;
    }
  Tensor mask = from_vector(am, {sq, sk});
  Tensor q2 = in.q.detach().requires_grad_(), k2 = in.k.detach().requires_grad_(), v2 = in.v.detach().requires_grad_();
  // GQA by repeating each kv row for its 2 query heads
  auto rep = [&](const Tensor& t) {
    Tensor t4 = reshape(t, {B, 1, t.size(1), t.size(2)});
    return reshape(cat({t4, t4}, 1), {B * H, t.size(1), t.size(2)});
  };
  Tensor att = softmax(add(matmul(q2, rep(k2), false, true), mask), 1.0 / std::sqrt(static_cast<double>(d)));
  sum(mul(matmul(att, rep(v2)), w)).backward();
  tgt::require_close(q.grad(), q2.grad(), 1e-10, 1e-10);
  tgt::require_close(k.grad(), k2.grad(), 1e-10, 1e-10);
  tgt::require_close(v.grad(), v2.grad(), 1e-10, 1e-10);
}

TEST_CASE("flash_attention: deterministic gradients and lower-precision backward", "[ops][attention]") {
  const std::int64_t B = 2, H = 4;
  const Qkv in = make_qkv(B * H, B * 2, 48, 48, 16, 16, 90);
  AttentionOptions o;
  o.causal = true;
  o.deterministic = true;
  o.sinks = tgt::rand64({H}, 91).to(DType::f32);
  const BlockSparseTensor b64 = tgt::random_bias(B * H, 48, 48, 16, 92);
  o.bias = BlockSparseTensor(b64.data().to(DType::f32), b64.layout());
  Tensor w = tgt::rand64({B * H, 48, 16}, 93);
  auto grads = [&](DType dt) {
    Tensor q = in.q.to(dt).detach().requires_grad_(), k = in.k.to(dt).detach().requires_grad_(),
           v = in.v.to(dt).detach().requires_grad_();
    AttentionOptions oo = o;
    Tensor bd = o.bias.data().to(dt).detach().requires_grad_(), s = o.sinks.detach().requires_grad_();
    oo.bias = BlockSparseTensor(bd, o.bias.layout());
    oo.sinks = s;
    sum(mul(flash_attention(q, k, v, AttentionPattern::dense(48, 48, 16), oo), w.to(dt))).backward();
    return std::vector<Tensor>{q.grad(), k.grad(), v.grad(), bd.grad(), s.grad()};
  };
  auto a = grads(DType::f32), b = grads(DType::f32), ref = grads(DType::f64);
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("gradient " << i);
    tgt::require_close(a[i], b[i], 0, 0);
    tgt::require_close(a[i], ref[i].to(a[i].dtype()), 1e-4, 1e-4);
  }
  auto h = grads(DType::bf16);
  for (std::size_t i = 0; i < h.size(); ++i) {
    INFO("bf16 gradient " << i);
    REQUIRE(h[i].dtype() == (i == 4 ? DType::f32 : DType::bf16));
    tgt::require_close(h[i].to(DType::f64), ref[i], 5e-2, 5e-2);
  }
}

TEST_CASE("flash_attention on row-striped block-sparse q, k, v", "[ops][attention]") {
  const std::int64_t bs = 16;
  Layout lq = tgt::layout_where(2, 3, 1, bs, [](auto b, auto r, auto) { return !(b == 1 && r == 2); });
  Layout lk = full_layout(2, 2, 1, bs);
  const Qkv in = make_qkv(2, 2, 48, 32, 16, 16, 100);
  BlockSparseTensor q = to_sparse(in.q, lq), k = to_sparse(in.k, lk), v = to_sparse(in.v, lk);
  q.requires_grad_();
  k.requires_grad_();
  AttentionPattern pat = AttentionPattern::dense(48, 32, 16);
  Tensor out = flash_attention(q, k, v, pat);
  tgt::require_close(out, flash_attention(to_dense(q), in.k, in.v, pat), 1e-14, 1e-14);
  sum(out).backward();
  REQUIRE(q.grad().data().shape() == q.data().shape());
  REQUIRE(k.grad().data().defined());
  BlockSparseTensor bad = to_sparse(in.q, tgt::layout_where(2, 6, 2, 8, [](auto, auto, auto c) { return c == 0; }));
  tgt::require_throws<LayoutError>([&] { flash_attention(bad, k, v, pat); }, {"flash_attention", "q", "row-striped"});
}

TEST_CASE("AttentionPattern builders and accessors", "[ops][attention]") {
  Tensor m = from_vector(std::vector<std::int32_t>{1, 0, 0, 2, 3, 0}, {1, 2, 3});
  AttentionPattern u = AttentionPattern::uniform(m, 16, 32);
  REQUIRE(u.defined());
  REQUIRE(u.count() == 1);
  REQUIRE(u.q_blocks() == 2);
  REQUIRE(u.k_blocks() == 3);
  REQUIRE(u.sq() == 32);
  REQUIRE(u.sk() == 96);
  REQUIRE(u.bq() == 16);
  REQUIRE(u.bk() == 32);
  REQUIRE(u.q_starts() == std::vector<std::int64_t>{0, 16, 32});
  REQUIRE(u.k_starts() == std::vector<std::int64_t>{0, 32, 64, 96});
  REQUIRE(u.mask().dtype() == DType::boolean);
  REQUIRE(u.mask_host() == std::vector<std::uint8_t>{1, 0, 0, 1, 1, 0});
  REQUIRE(u.visited(0, 1, 1));
  REQUIRE_FALSE(u.visited(0, 0, 1));
  REQUIRE(u.density() == Approx(3.0 / 6.0));
  tgt::require_throws<ValueError>([&] { (void)u.visited(1, 0, 0); }, {"visited", "(1, 0, 0)"});

  AttentionPattern v = AttentionPattern::variable(m, {10, 6}, {1, 2, 5});
  REQUIRE(v.bq() == 0);
  REQUIRE(v.sq() == 16);
  REQUIRE(v.sk() == 8);
  REQUIRE(v.density() == Approx((10.0 * 1 + 6 * 2 + 6 * 1) / (16.0 * 8)));
  AttentionPattern e = AttentionPattern::variable(m, {4, 4}, {8, 8, 8});
  REQUIRE(e.bq() == 4);
  REQUIRE(e.bk() == 8);

  AttentionPattern d = AttentionPattern::dense(48, 80, 32);
  REQUIRE(d.q_starts() == std::vector<std::int64_t>{0, 32, 48});
  REQUIRE(d.bq() == 0);
  REQUIRE(d.density() == 1.0);
  REQUIRE(AttentionPattern::dense(64, 64, 32).bq() == 32);

  AttentionPattern l = AttentionPattern::from_layout(causal_pattern(3, 64, 64, 16));
  REQUIRE(l.count() == 3);
  REQUIRE(l.bq() == 16);
  REQUIRE(l.visited(2, 3, 0));
  REQUIRE_FALSE(l.visited(2, 0, 3));

  // ids: copies share one, builders make new ones; expansion is remembered
  AttentionPattern u2 = u;
  REQUIRE(u2.id() == u.id());
  REQUIRE(d.id() != u.id());
  REQUIRE(AttentionPattern().id() == 0);
  AttentionPattern x1 = u.expanded(4), x2 = u.expanded(4);
  REQUIRE(x1.count() == 4);
  REQUIRE(x1.id() == x2.id());
  REQUIRE(x1.id() != u.id());
  REQUIRE(x1.visited(3, 1, 1));
  REQUIRE(l.expanded(3).id() == l.id());
  tgt::require_throws<ShapeError>([&] { (void)l.expanded(6); }, {"expanded", "P = 3", "6"});

  tgt::require_throws<ValueError>([&] { AttentionPattern::uniform(m, 12, 16); }, {"uniform", "powers of two", "12"});
  tgt::require_throws<ShapeError>([&] { AttentionPattern::uniform(zeros({2, 2}), 16, 16); }, {"uniform", "3-d", "[2, 2]"});
  tgt::require_throws<ValueError>([&] { AttentionPattern::uniform(Tensor(), 16, 16); }, {"uniform", "undefined"});
  tgt::require_throws<ShapeError>([&] { AttentionPattern::variable(m, {8}, {1, 2, 3}); },
                                  {"variable", "[1, 1, 3]", "[1, 2, 3]"});
  tgt::require_throws<ValueError>([&] { AttentionPattern::variable(m, {8, 0}, {1, 2, 3}); },
                                  {"variable", "q_sizes[1]", "positive", "0"});
  tgt::require_throws<ValueError>([&] { AttentionPattern::variable(m, {8, 8}, {1, -2, 3}); },
                                  {"variable", "k_sizes[1]", "-2"});
  tgt::require_throws<ValueError>([&] { AttentionPattern::dense(8, 8, 0); }, {"dense", "block", "0"});
  tgt::require_throws<ValueError>([&] { AttentionPattern::from_layout(Layout()); }, {"from_layout", "undefined"});
}

TEST_CASE("flash_attention bad inputs", "[ops][attention]") {
  const Qkv in = make_qkv(4, 2, 32, 48, 8, 4, 110);
  const Tensor &q = in.q, &k = in.k, &v = in.v;
  const AttentionPattern pat = AttentionPattern::dense(32, 48, 16);
  auto fa = [&](const Tensor& a, const Tensor& b, const Tensor& c, const AttentionPattern& p, const AttentionOptions& o) {
    (void)flash_attention(a, b, c, p, o);
  };
  const AttentionOptions none;
  // q, k, v
  tgt::require_throws<ValueError>([&] { fa(Tensor(), k, v, pat, none); }, {"flash_attention", "q", "undefined"});
  tgt::require_throws<DTypeError>([&] { fa(q.to(DType::i32), k, v, pat, none); }, {"flash_attention", "q", "floating", "i32"});
  tgt::require_throws<ShapeError>([&] { fa(reshape(q, {4, 32, 2, 4}), k, v, pat, none); },
                                  {"flash_attention", "q", "3-d", "[4, 32, 2, 4]"});
  tgt::require_throws<DTypeError>([&] { fa(q, k.to(DType::f32), v, pat, none); }, {"flash_attention", "q", "k", "f64", "f32"});
  tgt::require_throws<DTypeError>([&] { fa(q, k, v.to(DType::bf16), pat, none); }, {"flash_attention", "v", "bf16"});
  tgt::require_throws<ShapeError>([&] { fa(q, tgt::rand64({2, 48, 6}, 1), v, pat, none); },
                                  {"flash_attention", "k", "D = 8", "[2, 48, 6]"});
  tgt::require_throws<ShapeError>([&] { fa(q, k, tgt::rand64({2, 40, 4}, 1), pat, none); },
                                  {"flash_attention", "v", "[2, 48, Dv]", "[2, 40, 4]"});
  tgt::require_throws<ShapeError>([&] { fa(q, tgt::rand64({3, 48, 8}, 1), tgt::rand64({3, 48, 4}, 2), pat, none); },
                                  {"flash_attention", "B·Hq = 4", "B·Hkv = 3"});
  tgt::require_throws<ShapeError>([&] { fa(tgt::rand64({4, 32, 0}, 1), tgt::rand64({2, 48, 0}, 1), v, pat, none); },
                                  {"flash_attention", "D = 0"});
  // pattern
  tgt::require_throws<ValueError>([&] { fa(q, k, v, AttentionPattern(), none); }, {"flash_attention", "pattern", "undefined"});
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, AttentionPattern::dense(32, 32, 16), none); },
                                  {"flash_attention", "pattern", "32 x 48", "32 x 32"});
  tgt::require_throws<ShapeError>(
      [&] { fa(q, k, v, AttentionPattern::uniform(ones({2, 2, 3}, {.dtype = DType::boolean}), 16, 16), none); },
      {"flash_attention", "pattern", "P = 1 or B·Hq = 4", "P = 2"});
  // heads
  AttentionOptions o;
  o.num_heads = 3;
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "Hq = 3", "num_heads", "4"});
  o.num_heads = 1;  // B = 4 batches of one query head cannot share 2 kv rows
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "Hq = 1", "GQA group size", "2"});
  o.num_heads = -1;
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.num_heads", "-1"});
  // scalar options
  o = {};
  o.scale = std::nan("");
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.scale", "finite", "nan"});
  o = {};
  o.softcap = -1.0;
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.softcap", ">= 0", "-1"});
  o = {};
  o.dropout_p = 1.0;
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.dropout_p", "[0, 1)", "1"});
  o.dropout_p = std::nan("");
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.dropout_p", "nan"});
  // lens and segments
  o = {};
  o.num_heads = 2;
  o.q_lens = i64s({3, 4, 5}, {3});
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.q_lens", "[B] = [2]", "[3]"});
  o.q_lens = Tensor();
  o.k_lens = from_vector(std::vector<float>{3, 4}, {2});
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.k_lens", "i32 or i64", "f32"});
  o.k_lens = Tensor();
  o.seg_q = zeros({2, 32}, {.dtype = DType::i64});
  tgt::require_throws<ValueError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "seg_q", "seg_k", "together"});
  o.seg_k = zeros({2, 32}, {.dtype = DType::i64});
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); },
                                  {"flash_attention", "options.seg_k", "[B, Sk] = [2, 48]", "[2, 32]"});
  o.seg_k = zeros({2, 48}, {.dtype = DType::boolean});
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.seg_k", "i32 or i64", "bool"});
  // mask
  o = {};
  o.mask = BlockSparseTensor(zeros({0, 16, 16}, {.dtype = DType::boolean}), random_layout(2, 2, 3, 16, 0.0, 1));
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); },
                                  {"flash_attention", "options.mask", "[1 or B·Hq, Sq, Sk] = [1 or 4, 32, 48]", "[2, 32, 48]"});
  o.mask = BlockSparseTensor(zeros({0, 16, 16}), random_layout(1, 2, 3, 16, 0.0, 1));
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.mask", "bool", "f32"});
  // bias
  o = {};
  o.bias = BlockSparseTensor(zeros({0, 16, 16}, {.dtype = DType::f64}), random_layout(3, 2, 3, 16, 0.0, 1));
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); },
                                  {"flash_attention", "options.bias", "B·Hq = 4, Sq = 32, Sk = 48", "[3, 32, 48]"});
  o.bias = BlockSparseTensor(zeros({0, 16, 16}, {.dtype = DType::bf16}), random_layout(4, 2, 3, 16, 0.0, 1));
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.bias", "f64", "or f32", "bf16"});
  // sinks
  o = {};
  o.sinks = zeros({3}, {.dtype = DType::f64});
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "Hq = 3", "options.sinks", "4"});
  o.num_heads = 2;
  tgt::require_throws<ShapeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.sinks", "[Hq] = [2]", "[3]"});
  o.sinks = zeros({2}, {.dtype = DType::bf16});
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.sinks", "f64", "bf16"});
  o.sinks = zeros({2}, {.dtype = DType::i64});
  tgt::require_throws<DTypeError>([&] { fa(q, k, v, pat, o); }, {"flash_attention", "options.sinks", "floating", "i64"});
}

TEST_CASE("flash_attention mixed devices throw; any pattern block size runs on CUDA", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  const Qkv in = make_qkv(2, 2, 32, 32, 8, 8, 120);
  const Device gpu = Device::cuda();
  const AttentionPattern pat = AttentionPattern::dense(32, 32, 16);
  tgt::require_throws<DeviceError>([&] { (void)flash_attention(in.q.to(DType::f32).to(gpu), in.k.to(DType::f32), in.v.to(DType::f32), pat); },
                                   {"flash_attention", "q", "k", "same device"});
  tgt::require_throws<DTypeError>([&] { (void)flash_attention(in.q.to(gpu), in.k.to(gpu), in.v.to(gpu), pat); },
                                  {"flash_attention", "f64", "CPU only"});
  const Tensor q = in.q.to(DType::f32).to(gpu), k = in.k.to(DType::f32).to(gpu), v = in.v.to(DType::f32).to(gpu);
  // Any pattern block size works on CUDA (the kernels tile on their own and look the
  // pattern up per element): bq = bk = 8, causal, matches the CPU.
  {
    const AttentionPattern p8 = AttentionPattern::uniform(ones({1, 4, 4}, {.dtype = DType::boolean}), 8, 8);
    const Device cpu = Device::cpu();
    AttentionOptions c;
    c.causal = true;
    tgt::require_close(flash_attention(q, k, v, p8, c).to(cpu), flash_attention(q.to(cpu), k.to(cpu), v.to(cpu), p8, c),
                       1e-4, 1e-5);
  }
  AttentionOptions o;
  o.sinks = zeros({2});
  tgt::require_throws<DeviceError>([&] { (void)flash_attention(q, k, v, pat, o); },
                                   {"flash_attention", "options.sinks", "same device"});
  o = {};
  o.q_lens = zeros({1}, {.dtype = DType::i64});  // the CPU is fine for lens and the mask
  o.mask = tgt::random_element_mask(1, 32, 32, 16, 121);
  REQUIRE(flash_attention(q, k, v, pat, o).device() == gpu);
  o.bias = tgt::random_bias(2, 32, 32, 16, 122);
  tgt::require_throws<DeviceError>([&] { (void)flash_attention(q, k, v, pat, o); },
                                   {"flash_attention", "options.bias", "same device"});
  o = {};
  REQUIRE(flash_attention(q, k, v, pat, o).device() == gpu);
}

}  // namespace test_attention
