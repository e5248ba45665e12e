// CUDA flash attention against the CPU backend: the same random inputs (rounded to the
// tested dtype) through the public flash_attention_with_lse and its backward on both
// devices, the CPU in f64. Covers the tensor-core kernels (bf16, f16) for every compiled
// head-dim pair and the f32 kernels, uniform and variable block sizes, every option,
// GQA / MQA / cross-attention, empty rows, extents that are not multiples of the tiles,
// deterministic mode (bit-identical twice), misaligned inputs and the head-dim restriction.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "attention_cases.h"
#include "autograd/grad_mode.h"
#include "ops/attention/attention.h"
#include "ops/attention/kernel_choice.h"
#include "util.h"

namespace test_attention_cuda {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

struct Shape4 {
  std::int64_t B = 1, Hq = 2, Hkv = 2, sq = 64, sk = 64, d = 64, dv = 64;
};

// f64 master inputs on the CPU.
struct Inputs {
  Shape4 s;
  Tensor q, k, v, dout;
};

Inputs make_inputs(const Shape4& s, std::uint64_t seed) {
  return {s, tgt::rand64({s.B * s.Hq, s.sq, s.d}, seed, -2.0, 2.0),
          tgt::rand64({s.B * s.Hkv, s.sk, s.d}, seed + 1, -2.0, 2.0), tgt::rand64({s.B * s.Hkv, s.sk, s.dv}, seed + 2),
          tgt::rand64({s.B * s.Hq, s.sq, s.dv}, seed + 3)};
}

// A pattern mask [P, Qb, Kb] with each pair visited with probability percent/100.
Tensor pattern_mask(std::int64_t P, std::int64_t Qb, std::int64_t Kb, int percent, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<bool> m(at(P * Qb * Kb));
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<int>(rng() % 100) < percent;
  return from_vector(m, {P, Qb, Kb});
}

AttentionPattern uniform_pattern(std::int64_t P, std::int64_t sq, std::int64_t sk, std::int64_t bq, std::int64_t bk,
                                 int percent, std::uint64_t seed) {
  return AttentionPattern::uniform(pattern_mask(P, sq / bq, sk / bk, percent, seed), bq, bk);
}

Tensor segments(std::int64_t B, std::int64_t S, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> ids(at(B * S));
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t id = 0;
    for (std::int64_t i = 0; i < S; ++i) {
      if (i > 0 && rng() % 23 == 0) ++id;
      ids[at(b * S + i)] = id;
    }
  }
  return from_vector(ids, {B, S});
}

// Outputs and gradients of one run, on the CPU in f64.
struct Result {
  Tensor out, lse, dq, dk, dv, dbias, dsinks;
};

// Runs forward and backward on `dev` with q, k, v, dout, bias in `dt` (sinks in f32, or f64
// for an f64 run) from the master inputs.
Result run(const Inputs& in, const AttentionPattern& pat, const AttentionOptions& opt, DType dt, Device dev) {
  auto leaf = [&](const Tensor& t, DType to) { return t.to(to).to(dev).detach().requires_grad_(); };
  Tensor q = leaf(in.q, dt), k = leaf(in.k, dt), v = leaf(in.v, dt);
  AttentionOptions o = opt;
  Tensor bias_data, sinks;
  if (opt.bias.defined()) {
    bias_data = leaf(opt.bias.data(), dt);
    o.bias = BlockSparseTensor(bias_data, opt.bias.layout());
  }
  if (opt.sinks.defined()) {
    sinks = leaf(opt.sinks, dt == DType::f64 ? DType::f64 : DType::f32);
    o.sinks = sinks;
  }
  for (Tensor* t : {&o.q_lens, &o.k_lens, &o.seg_q, &o.seg_k})
    if (t->defined()) *t = t->to(dev);
  if (opt.mask.defined()) o.mask = BlockSparseTensor(opt.mask.data().to(dev), opt.mask.layout());
  AttentionResult r = flash_attention_with_lse(q, k, v, pat, o);
  r.out.backward(in.dout.to(dt).to(dev));
  auto host = [](const Tensor& t) { return t.defined() ? t.to(Device::cpu()).to(DType::f64) : Tensor(); };
  return {host(r.out),
          host(r.lse),
          host(q.grad()),
          host(k.grad()),
          host(v.grad()),
          bias_data.defined() ? host(bias_data.grad()) : Tensor(),
          sinks.defined() ? host(sinks.grad()) : Tensor()};
}

// The master inputs rounded to dt (so both devices see the same values).
Inputs rounded(const Inputs& in, DType dt) {
  auto r = [&](const Tensor& t) { return t.to(dt).to(DType::f64); };
  return {in.s, r(in.q), r(in.k), r(in.v), r(in.dout)};
}

AttentionOptions options_rounded(const AttentionOptions& opt, DType dt) {
  AttentionOptions o = opt;
  if (opt.bias.defined()) o.bias = BlockSparseTensor(opt.bias.data().to(dt).to(DType::f64), opt.bias.layout());
  if (opt.sinks.defined()) o.sinks = opt.sinks.to(DType::f32).to(DType::f64);
  return o;
}

// |got - want| <= tol · max|want| elementwise (same non-finite values).
void require_near(const char* what, const Tensor& got, const Tensor& want, double tol) {
  INFO(what);
  REQUIRE(got.defined() == want.defined());
  if (!want.defined()) return;
  REQUIRE(got.shape() == want.shape());
  const auto g = tgt::values(got), w = tgt::values(want);
  double scale = 1e-3;
  for (double x : w)
    if (std::isfinite(x)) scale = std::max(scale, std::fabs(x));
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const bool ok = std::isfinite(w[i]) ? std::fabs(g[i] - w[i]) <= tol * scale : g[i] == w[i];
    if (!ok && bad++ == 0) first = i;
  }
  INFO(bad << " of " << w.size() << " differ (tolerance " << tol << " x " << scale << "); first at " << first
           << ": got " << (bad ? g[first] : 0.0) << ", want " << (bad ? w[first] : 0.0));
  REQUIRE(bad == 0);
}

double tolerance(DType dt) { return dt == DType::bf16 ? 2.5e-2 : dt == DType::f16 ? 5e-3 : 1e-4; }

// CUDA in dt against the CPU in f64 on the same rounded inputs: outputs, lse, every gradient.
void check_cuda(const std::string& name, const Inputs& master, const AttentionPattern& pat, const AttentionOptions& opt,
                std::vector<DType> dtypes = {DType::bf16, DType::f16, DType::f32}) {
  for (DType dt : dtypes) {
    INFO(name << " in " << dtype_name(dt));
    const Inputs in = rounded(master, dt);
    const AttentionOptions o = options_rounded(opt, dt);
    const Result want = run(in, pat, o, DType::f64, Device::cpu());
    const Result got = run(in, pat, o, dt, Device::cuda());
    const double tol = tolerance(dt);
    require_near("out", got.out, want.out, tol);
    require_near("lse", got.lse, want.lse, 1e-4);
    require_near("dq", got.dq, want.dq, 2 * tol);
    require_near("dk", got.dk, want.dk, 2 * tol);
    require_near("dv", got.dv, want.dv, 2 * tol);
    require_near("dbias", got.dbias, want.dbias, 2 * tol);
    require_near("dsinks", got.dsinks, want.dsinks, 2 * tol);
  }
}

}  // namespace

TEST_CASE("flash_attention CUDA matches the CPU for every head-dim pair", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  for (std::int64_t d : {32, 64, 128}) {
    for (std::int64_t dv : {32, 64, 128}) {
      Shape4 s;
      s.sq = 96;
      s.sk = 80;
      s.d = d;
      s.dv = dv;
      const Inputs in = make_inputs(s, static_cast<std::uint64_t>(d * 7 + dv));
      const AttentionPattern pat = uniform_pattern(1, 96, 80, 32, 16, 70, static_cast<std::uint64_t>(d + dv));
      check_cuda("D " + std::to_string(d) + ", Dv " + std::to_string(dv), in, pat, {},
                 d == dv ? std::vector<DType>{DType::bf16, DType::f16, DType::f32} : std::vector<DType>{DType::bf16});
    }
  }
}

TEST_CASE("flash_attention CUDA: block sizes, variable blocks and ragged extents", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  Shape4 s;
  s.Hq = 2;
  s.Hkv = 1;
  s.sq = 256;
  s.sk = 256;
  const Inputs in = make_inputs(s, 10);
  for (std::int64_t bq : {16, 32, 64, 128}) {
    const std::int64_t bk = bq == 16 ? 128 : bq == 128 ? 32 : bq;
    check_cuda("uniform bq " + std::to_string(bq) + " bk " + std::to_string(bk), in,
               uniform_pattern(2, 256, 256, bq, bk, 60, static_cast<std::uint64_t>(bq)), {}, {DType::bf16});
  }
  // variable blocks (a query block longer than a tile, tiny key blocks), per-head
  std::vector<std::int64_t> qz{5, 150, 40, 61}, kz{1, 63, 64, 7, 121};
  check_cuda("variable blocks", in, AttentionPattern::variable(pattern_mask(2, 4, 5, 70, 11), qz, kz), {},
             {DType::bf16, DType::f32});
  // Sq, Sk not multiples of the tiles; dense blocks with short tails
  Shape4 r;
  r.sq = 200;
  r.sk = 136;
  r.Hq = 1;
  r.Hkv = 1;
  check_cuda("ragged dense", make_inputs(r, 12), AttentionPattern::dense(200, 136, 64), {});
  r.sq = 17;
  r.sk = 250;
  check_cuda("ragged uniform 16", make_inputs(r, 13), AttentionPattern::dense(17, 250, 16), {},
             {DType::bf16, DType::f32});
}

TEST_CASE("flash_attention CUDA: each option matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  const std::int64_t B = 2, H = 2, S = 128;
  Shape4 s;
  s.B = B;
  s.Hq = H;
  s.Hkv = H;
  s.sq = S;
  s.sk = S;
  const Inputs in = make_inputs(s, 20);
  const AttentionPattern dense = AttentionPattern::dense(S, S, 32);
  const AttentionPattern sparse = uniform_pattern(B * H, S, S, 32, 32, 60, 21);
  const std::vector<DType> both{DType::bf16, DType::f32};
  AttentionOptions o;
  o.causal = true;
  check_cuda("causal", in, dense, o);
  o = {};
  o.causal = true;
  o.window_left = 40;
  check_cuda("causal window", in, dense, o, both);
  o = {};
  o.window_left = 3;
  o.window_right = 20;
  check_cuda("two-sided window", in, sparse, o, both);
  o = {};
  o.num_heads = H;
  o.q_lens = from_vector(std::vector<std::int64_t>{100, 0}, {B});
  o.k_lens = from_vector(std::vector<std::int64_t>{77, 128}, {B});
  check_cuda("lens", in, dense, o, both);
  o = {};
  o.num_heads = H;
  o.seg_q = segments(B, S, 22);
  o.seg_k = o.seg_q;
  check_cuda("segments", in, sparse, o, both);
  o = {};
  o.mask = tgt::random_element_mask(1, S, S, 16, 23);
  check_cuda("shared element mask", in, dense, o, both);
  o.mask = tgt::random_element_mask(B * H, S, S, 8, 24);
  check_cuda("per-head element mask", in, sparse, o, both);
  o = {};
  o.mask_fn = [](std::int64_t bh, std::int64_t i, std::int64_t j) { return (i * 7 + j * 3 + bh) % 5 == 0; };
  check_cuda("mask_fn", in, dense, o, both);
  o = {};
  o.bias = tgt::random_bias(B * H, S, S, 32, 25);
  check_cuda("bias", in, sparse, o);
  o.bias = tgt::random_bias(B * H, S, S, 4, 26);
  check_cuda("bias, block 4", in, dense, o, both);
  o = {};
  o.softcap = 3.0;
  o.scale = 0.5;
  check_cuda("softcap", in, dense, o);
  o = {};
  o.sinks = tgt::rand64({H}, 27, -1.0, 2.0);
  check_cuda("sinks", in, sparse, o);
  o = {};
  o.dropout_p = 0.25;
  o.seed = 123;
  o.offset = 9;
  check_cuda("dropout", in, sparse, o);
  o = {};
  o.num_heads = H;
  o.causal = true;
  o.window_left = 50;
  o.q_lens = from_vector(std::vector<std::int64_t>{120, 64}, {B});
  o.seg_q = segments(B, S, 28);
  o.seg_k = o.seg_q;
  o.mask = tgt::random_element_mask(1, S, S, 16, 29);
  o.bias = tgt::random_bias(B * H, S, S, 16, 30);
  o.softcap = 4.0;
  o.sinks = tgt::rand64({H}, 31);
  o.dropout_p = 0.1;
  o.seed = 5;
  check_cuda("everything at once", in, sparse, o);
}

TEST_CASE("flash_attention CUDA: GQA, MQA, cross-attention, empty rows", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  Shape4 g;
  g.B = 2;
  g.Hq = 4;
  g.Hkv = 2;
  g.sq = 96;
  g.sk = 96;
  AttentionOptions o;
  o.causal = true;
  o.sinks = tgt::rand64({g.Hq}, 49, -1.0, 2.0);  // num_heads from the sinks: B = 2
  check_cuda("GQA causal sinks", make_inputs(g, 40), uniform_pattern(1, 96, 96, 32, 32, 80, 41), o);
  g.Hkv = 1;
  g.sq = 64;
  g.sk = 160;
  g.dv = 32;
  check_cuda("MQA cross-attention", make_inputs(g, 42), uniform_pattern(8, 64, 160, 16, 32, 50, 43), {},
             {DType::bf16, DType::f32});
  // rows without any visible key: the first query blocks visit nothing; a pattern of nothing
  Shape4 e;
  e.sq = 128;
  e.sk = 64;
  Tensor m = pattern_mask(1, 4, 2, 100, 44);
  std::vector<bool> mv(8, true);
  mv[0] = mv[1] = mv[2] = mv[3] = false;
  const AttentionPattern half = AttentionPattern::uniform(from_vector(mv, {1, 4, 2}), 32, 32);
  AttentionOptions sk;
  sk.sinks = tgt::rand64({2}, 45);
  check_cuda("empty rows", make_inputs(e, 46), half, {});
  check_cuda("empty rows with sinks", make_inputs(e, 46), half, sk);
  const AttentionPattern none = AttentionPattern::uniform(zeros({1, 4, 2}, {.dtype = DType::boolean}), 32, 32);
  check_cuda("empty pattern", make_inputs(e, 47), none, {}, {DType::bf16, DType::f32});
  check_cuda("empty pattern with sinks", make_inputs(e, 47), none, sk, {DType::bf16});
  // exact zeros and -inf where nothing is visible
  const Inputs in = rounded(make_inputs(e, 48), DType::bf16);
  const Result r = run(in, half, {}, DType::bf16, Device::cuda());
  const auto out = tgt::values(r.out), lse = tgt::values(r.lse);
  for (std::int64_t bh = 0; bh < 2; ++bh)
    for (std::int64_t i = 0; i < 64; ++i) {
      REQUIRE(lse[at(bh * 128 + i)] == -INFINITY);
      for (std::int64_t c = 0; c < 64; ++c) REQUIRE(out[at((bh * 128 + i) * 64 + c)] == 0.0);
    }
}

TEST_CASE("flash_attention CUDA deterministic mode is bit-identical run to run", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  Shape4 s;
  s.B = 2;
  s.Hq = 4;
  s.Hkv = 2;
  s.sq = 160;
  s.sk = 160;
  const Inputs master = make_inputs(s, 60);
  AttentionOptions o;
  o.causal = true;
  o.deterministic = true;
  o.sinks = tgt::rand64({4}, 61);
  o.bias = tgt::random_bias(8, 160, 160, 32, 62);
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    INFO(dtype_name(dt));
    const Inputs in = rounded(master, dt);
    const AttentionOptions oo = options_rounded(o, dt);
    const AttentionPattern pat = uniform_pattern(1, 160, 160, 32, 32, 80, 63);
    const Result a = run(in, pat, oo, dt, Device::cuda()), b = run(in, pat, oo, dt, Device::cuda());
    const std::vector<std::pair<Tensor, Tensor>> pairs{{a.out, b.out}, {a.dq, b.dq},       {a.dk, b.dk},
                                                       {a.dv, b.dv},   {a.dbias, b.dbias}, {a.dsinks, b.dsinks}};
    for (const auto& [x, y] : pairs) tgt::require_close(x, y, 0, 0);
    const Result want = run(in, pat, oo, DType::f64, Device::cpu());
    require_near("out", a.out, want.out, tolerance(dt));
    require_near("dq", a.dq, want.dq, 2 * tolerance(dt));
    require_near("dk", a.dk, want.dk, 2 * tolerance(dt));
    require_near("dv", a.dv, want.dv, 2 * tolerance(dt));
    require_near("dbias", a.dbias, want.dbias, 2 * tolerance(dt));
    require_near("dsinks", a.dsinks, want.dsinks, 2 * tolerance(dt));
  }
  check_cuda("deterministic with plain options", master, AttentionPattern::dense(160, 160, 64),
             [] {
               AttentionOptions d;
               d.deterministic = true;
               return d;
             }(),
             {DType::bf16, DType::f16});
}

TEST_CASE("flash_attention CUDA: repeated calls, misaligned inputs, head dims", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  Shape4 s;
  s.sq = 64;
  s.sk = 64;
  const Inputs in = rounded(make_inputs(s, 70), DType::bf16);
  const AttentionPattern pat = uniform_pattern(1, 64, 64, 16, 16, 50, 71);
  // the cached work lists of one pattern serve later calls; another pattern gets its own
  const Result a = run(in, pat, {}, DType::bf16, gpu), b = run(in, pat, {}, DType::bf16, gpu);
  tgt::require_close(a.out, b.out, 0, 0);
  const AttentionPattern other = uniform_pattern(1, 64, 64, 16, 16, 50, 72);
  require_near("other pattern", run(in, other, {}, DType::bf16, gpu).out,
               run(in, other, {}, DType::f64, Device::cpu()).out, tolerance(DType::bf16));
  // inputs whose data is not 16-byte aligned
  const Tensor q = in.q.to(DType::bf16).to(gpu), k = in.k.to(DType::bf16).to(gpu), v = in.v.to(DType::bf16).to(gpu);
  Tensor big = empty({q.numel() + 3}, {.dtype = DType::bf16, .device = gpu});
  Tensor qm = tgt::misaligned_view(big, 3, q.shape());
  copy_bytes(qm, q);
  tgt::require_close(flash_attention(qm, k, v, pat), flash_attention(q, k, v, pat), 0, 0);
  // a backward whose incoming gradient is not 16-byte aligned: the delta pass's scalar body
  // (the aligned one reads 16-byte vectors), against the CPU in f64
  {
    const Result want = run(in, pat, {}, DType::f64, Device::cpu());
    Tensor qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
    const Tensor dout = in.dout.to(DType::bf16).to(gpu);
    Tensor big_dout = empty({dout.numel() + 3}, {.dtype = DType::bf16, .device = gpu});
    Tensor dm = tgt::misaligned_view(big_dout, 3, dout.shape());
    copy_bytes(dm, dout);
    flash_attention(qg, kg, vg, pat).backward(dm);
    auto host = [](const Tensor& t) { return t.to(Device::cpu()).to(DType::f64); };
    require_near("dq, misaligned dout", host(qg.grad()), want.dq, tolerance(DType::bf16));
    require_near("dk, misaligned dout", host(kg.grad()), want.dk, tolerance(DType::bf16));
    require_near("dv, misaligned dout", host(vg.grad()), want.dv, tolerance(DType::bf16));
  }
  // head dims without tensor-core kernels
  const Tensor q48 = zeros({2, 64, 48}, {.dtype = DType::bf16, .device = gpu});
  const Tensor k48 = zeros({2, 64, 48}, {.dtype = DType::bf16, .device = gpu});
  tgt::require_throws<ValueError>([&] { (void)flash_attention(q48, k48, v, pat); },
                                  {"flash_attention", "32, 64 or 128", "D = 48"});
  const Tensor q256 = zeros({2, 64, 256}, {.dtype = DType::f32, .device = gpu});
  tgt::require_throws<ValueError>([&] { (void)flash_attention(q256, q256, q256, pat); },
                                  {"flash_attention", "at most 128", "D = 256"});
  // f32 takes any head dim up to 128
  Shape4 f;
  f.sq = 40;
  f.sk = 40;
  f.d = 8;
  f.dv = 12;
  check_cuda("f32 small head dims", make_inputs(f, 73), AttentionPattern::dense(40, 40, 16), {}, {DType::f32});
}

namespace {

// The cases the Hopper kernels are checked on at head dim d (D = Dv): patterns dense,
// causal, windows, random and variable blocks, sinks, lens + segments + element mask, GQA
// cross-attention with ragged extents, a query block that sees nothing. Returns the number
// of GPU runs (one forward and one backward each).
std::int64_t run_hopper_cases(std::int64_t d) {
  const std::string dn = " D " + std::to_string(d);
  const std::vector<DType> half_types{DType::bf16, DType::f16};
  std::int64_t runs = 0;
  auto check = [&](const std::string& name, const Inputs& in, const AttentionPattern& pat, const AttentionOptions& o,
                   const std::vector<DType>& dts) {
    check_cuda(name + dn, in, pat, o, dts);
    runs += static_cast<std::int64_t>(dts.size());
  };
  Shape4 s;
  s.B = 2;
  s.Hq = 2;
  s.Hkv = 2;
  s.sq = 384;
  s.sk = 384;
  s.d = s.dv = d;
  const Inputs in = make_inputs(s, static_cast<std::uint64_t>(60 + d));
  const AttentionPattern dense = AttentionPattern::dense(384, 384, 64);
  check("dense", in, dense, {}, half_types);
  AttentionOptions o;
  o.causal = true;
  check("causal", in, dense, o, half_types);
  o.window_left = 100;
  check("causal window", in, dense, o, half_types);
  o = {};
  o.window_left = 30;
  o.window_right = 70;
  check("two-sided window, random 64-blocks", in, uniform_pattern(4, 384, 384, 64, 64, 30, 61), o, half_types);
  check("random 32 x 128 blocks", in, uniform_pattern(4, 384, 384, 32, 128, 50, 62), {}, half_types);
  o = {};
  o.sinks = tgt::rand64({2}, 63, -1.0, 2.0);
  o.scale = 0.3;
  check("sinks, scale", in, uniform_pattern(4, 384, 384, 64, 64, 40, 64), o, half_types);
  o = {};
  o.num_heads = 2;
  o.causal = true;
  o.q_lens = from_vector(std::vector<std::int64_t>{300, 0}, {2});
  o.k_lens = from_vector(std::vector<std::int64_t>{200, 384}, {2});
  o.seg_q = segments(2, 384, 65);
  o.seg_k = o.seg_q;
  o.mask = tgt::random_element_mask(1, 384, 384, 16, 66);
  check("lens, segments, element mask", in, dense, o, {DType::bf16});
  std::vector<std::int64_t> qz{5, 150, 40, 189}, kz{1, 63, 64, 7, 249};
  check("variable blocks", in, AttentionPattern::variable(pattern_mask(4, 4, 5, 70, 67), qz, kz), {}, {DType::bf16});
  Shape4 g;
  g.B = 1;
  g.Hq = 4;
  g.Hkv = 2;
  g.sq = 200;
  g.sk = 136;
  g.d = g.dv = d;
  o = {};
  o.causal = true;
  check("GQA cross-attention, ragged", make_inputs(g, 68), AttentionPattern::dense(200, 136, 64), o, {DType::bf16});
  std::vector<bool> mv(4 * 3, true);
  for (int i = 0; i < 3; ++i) mv[static_cast<std::size_t>(i)] = false;  // query block 0 sees nothing
  o = {};
  o.sinks = tgt::rand64({4}, 69);
  check("empty query block, sinks", make_inputs(g, 70),
        AttentionPattern::variable(from_vector(mv, {1, 4, 3}), {64, 64, 64, 8}, {64, 64, 8}), o, {DType::bf16});
  return runs;
}

// Skips the test case unless a compute capability 9.0 device runs the Hopper kernels of `what`
// (forward or backward).
#define TG_REQUIRE_HOPPER(what)                                                                        \
  do {                                                                                                 \
    TG_REQUIRE_CUDA();                                                                                 \
    if (cuda_compute_capability(0) != 90)                                                              \
      TG_SKIP("not a compute capability 9.0 device: the Hopper attention " what " does not run here"); \
  } while (0)

// Forces a kernel-choice knob (kernel_choice.h) for its lifetime, then restores Auto.
template <typename E>
class ForceKnob {
 public:
  ForceKnob(void (*set)(E), E value) : set_(set) { set_(value); }
  ~ForceKnob() { set_(E::Auto); }
  ForceKnob(const ForceKnob&) = delete;
  ForceKnob& operator=(const ForceKnob&) = delete;

 private:
  void (*set_)(E);
};

// Dense B 1 x H 2 problems at head dim d with sq from `sqs` and sk = 1090 - sq (short and long
// query and key lists, partial tiles; causal where sq > 500), inputs seeded from seed + sq, in
// each of dts. Returns the number of GPU runs.
std::int64_t check_list_lengths(std::int64_t d, std::initializer_list<std::int64_t> sqs, std::uint64_t seed,
                                const std::vector<DType>& dts) {
  std::int64_t runs = 0;
  for (std::int64_t sq : sqs) {
    Shape4 sh;
    sh.B = 1;
    sh.Hq = sh.Hkv = 2;
    sh.sq = sq;
    sh.sk = 1090 - sq;
    sh.d = sh.dv = d;
    AttentionOptions o;
    o.causal = sq > 500;
    check_cuda("sq " + std::to_string(sq) + " D " + std::to_string(d),
               make_inputs(sh, seed + static_cast<std::uint64_t>(sq)), AttentionPattern::dense(sh.sq, sh.sk, 64), o,
               dts);
    runs += static_cast<std::int64_t>(dts.size());
  }
  return runs;
}

// B 2 x H 2, S 256, D = Dv = d: the shape of the general-transform cases below.
Shape4 general_shape(std::int64_t d) {
  Shape4 s;
  s.B = 2;
  s.Hq = s.Hkv = 2;
  s.sq = s.sk = 256;
  s.d = s.dv = d;
  return s;
}

// Options of the general shape with per-row extents: every head's lengths (230 and 100 queries)
// and one segment-id array (from `seed`) shared by queries and keys.
AttentionOptions lens_and_segments(const Shape4& g, std::uint64_t seed) {
  AttentionOptions o;
  o.num_heads = g.Hq;
  o.q_lens = from_vector(std::vector<std::int64_t>{230, 100}, {g.B});
  o.seg_q = segments(g.B, g.sq, seed);
  o.seg_k = o.seg_q;
  return o;
}

// The general transform on the Hopper kernels at head dim d: bias (its gradient too, at
// blocks 64 and 4), soft cap, dropout, a negative scale, and all of it with causal window,
// lens, segments, element mask and sinks. Returns the number of GPU runs.
std::int64_t run_general_cases(std::int64_t d) {
  const Shape4 s = general_shape(d);
  const std::int64_t BH = s.B * s.Hq, S = s.sq;
  const Inputs in = make_inputs(s, static_cast<std::uint64_t>(76 + d));
  const AttentionPattern sparse = uniform_pattern(BH, S, S, 64, 64, 60, 75);
  const AttentionPattern dense = AttentionPattern::dense(S, S, 64);
  const std::string dn = " D " + std::to_string(d);
  std::int64_t runs = 0;
  auto check = [&](const std::string& name, const AttentionPattern& pat, const AttentionOptions& o,
                   const std::vector<DType>& dts) {
    check_cuda(name + dn, in, pat, o, dts);
    runs += static_cast<std::int64_t>(dts.size());
  };
  AttentionOptions o;
  o.bias = tgt::random_bias(BH, S, S, 64, 77);
  check("bias", sparse, o, {DType::bf16, DType::f16});
  o.bias = tgt::random_bias(BH, S, S, 4, 78);
  check("bias, block 4", dense, o, {DType::bf16});
  o = {};
  o.softcap = 3.0;
  o.scale = 0.5;
  check("softcap", dense, o, {DType::bf16});
  o = {};
  o.dropout_p = 0.25;
  o.seed = 123;
  o.offset = 9;
  check("dropout", sparse, o, {DType::bf16, DType::f16});
  {
    // sk not a multiple of 8: 8 consecutive keys no longer share a Philox block, the
    // per-element decisions run instead of the pre-pass
    Shape4 r = s;
    r.sk = 250;
    check_cuda("dropout, 250 keys" + dn, make_inputs(r, static_cast<std::uint64_t>(90 + d)),
               AttentionPattern::dense(S, 250, 64), o, {DType::bf16});
    runs += 1;
  }
  // a negative scale: the general transform (the plain forward takes its row maxima before
  // scaling, which only a positive scale allows)
  o = {};
  o.num_heads = s.Hq;
  o.sinks = tgt::rand64({s.Hq}, 63, -1.0, 2.0);
  o.scale = -0.4;
  check("sinks, negative scale", dense, o, {DType::bf16});
  o = {};
  o.num_heads = s.Hq;
  o.causal = true;
  o.window_left = 50;
  o.q_lens = from_vector(std::vector<std::int64_t>{220, 64}, {s.B});
  o.seg_q = segments(s.B, S, 79);
  o.seg_k = o.seg_q;
  o.mask = tgt::random_element_mask(1, S, S, 16, 80);
  o.bias = tgt::random_bias(BH, S, S, 16, 81);
  o.softcap = 4.0;
  o.sinks = tgt::rand64({s.Hq}, 82);
  o.dropout_p = 0.1;
  o.seed = 5;
  check("everything at once", sparse, o, {DType::bf16});
  return runs;
}

}  // namespace

TEST_CASE("flash_attention CUDA: the Hopper (wgmma) forward matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("forward");
  struct Restore {
    ~Restore() {
      ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Auto);
      ops::attn::set_tile_height(ops::attn::TileHeight::Auto);
    }
  } restore;
  ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Wgmma);
  const std::int64_t before = ops::attn::launches(ops::attn::Path::WgmmaFwd);
  // D 64: every pattern on 64-row query tiles
  const std::int64_t narrow64_before = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow);
  std::int64_t runs = run_hopper_cases(64);
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow) - narrow64_before == runs);
  // D 128: the random 64-block patterns on 64-row query tiles, the others on 128-row ones
  const std::int64_t narrow_before = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow);
  const std::int64_t runs128 = run_hopper_cases(128);
  runs += runs128;
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwd) - before == runs);  // the Hopper kernel ran every time
  const std::int64_t narrow = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow) - narrow_before;
  CHECK(narrow > 0);
  CHECK(narrow < runs128);
  const std::int64_t narrow_mid = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow);
  check_cuda("dense: 128-row tiles", make_inputs(general_shape(128), 85), AttentionPattern::dense(256, 256, 64), {},
             {DType::bf16});
  runs += 1;
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow) == narrow_mid);
  // it also runs bias, soft cap and dropout
  for (std::int64_t d : {64, 128}) runs += run_general_cases(d);
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwd) - before == runs);
  // forced tile heights: a dense pattern on 64-row tiles, a random 64-block one on 128-row ones
  for (std::int64_t d : {64, 128}) {
    ops::attn::set_tile_height(ops::attn::TileHeight::Half);
    const std::int64_t h0 = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow);
    check_cuda("64-row tiles forced", make_inputs(general_shape(d), 86), AttentionPattern::dense(256, 256, 64), {},
               {DType::bf16});
    CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow) > h0);
    ops::attn::set_tile_height(ops::attn::TileHeight::Full);
    const std::int64_t h1 = ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow);
    check_cuda("128-row tiles forced", make_inputs(general_shape(d), 87), uniform_pattern(4, 256, 256, 64, 64, 30, 88),
               {}, {DType::bf16});
    CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwdNarrow) == h1);
  }
  ops::attn::set_tile_height(ops::attn::TileHeight::Auto);
  // the mma.sync kernel when asked for
  ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Mma);
  const std::int64_t mid = ops::attn::launches(ops::attn::Path::WgmmaFwd);
  check_cuda("mma.sync when asked", make_inputs(general_shape(64), 83), AttentionPattern::dense(256, 256, 64), {},
             {DType::bf16});
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwd) == mid);
  // the default takes the Hopper kernel, with dropout too (the training example's case),
  // unless the environment says otherwise
  ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Auto);
  if (ops::attn::fwd_kernel() == ops::attn::FwdKernel::Wgmma) {
    AttentionOptions o;
    o.dropout_p = 0.1;
    o.seed = 5;
    check_cuda("default with dropout", make_inputs(general_shape(64), 84), AttentionPattern::dense(256, 256, 64), o,
               {DType::bf16});
    CHECK(ops::attn::launches(ops::attn::Path::WgmmaFwd) > mid);
  }
}

namespace {

// Scores that grow (or shrink) along the keys by `slope` natural-log units a key over a
// noise of ±1: q near 0.5 everywhere, k a ramp plus noise, so that q·k·scale ramps.
Inputs ramp_inputs(const Shape4& s, double slope, std::uint64_t seed) {
  Inputs in = make_inputs(s, seed);
  std::vector<double> q(at(s.B * s.Hq * s.sq * s.d)), k(at(s.B * s.Hkv * s.sk * s.d));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (double& x : q) x = 0.5 + 0.1 * u(rng);
  const double per_key = slope / (0.5 * static_cast<double>(s.d)) * std::sqrt(static_cast<double>(s.d));
  for (std::int64_t r = 0; r < s.B * s.Hkv; ++r)
    for (std::int64_t j = 0; j < s.sk; ++j)
      for (std::int64_t c = 0; c < s.d; ++c)
        k[at((r * s.sk + j) * s.d + c)] = per_key * static_cast<double>(j) + 0.5 * u(rng);
  in.q = from_vector(q, {s.B * s.Hq, s.sq, s.d});
  in.k = from_vector(k, {s.B * s.Hkv, s.sk, s.d});
  return rounded(in, DType::bf16);
}

// The forward alone in bf16 on the GPU against the CPU in f64 on the same inputs: out and lse.
void check_forward(const std::string& name, const Inputs& in, const AttentionPattern& pat,
                   const AttentionOptions& opt) {
  INFO(name);
  auto outputs = [&](DType dt, Device dev) {
    AttentionOptions o = options_rounded(opt, DType::bf16);
    if (o.sinks.defined()) o.sinks = o.sinks.to(dt == DType::f64 ? DType::f64 : DType::f32).to(dev);
    const AttentionResult r =
        flash_attention_with_lse(in.q.to(dt).to(dev), in.k.to(dt).to(dev), in.v.to(dt).to(dev), pat, o);
    return std::pair{r.out.to(Device::cpu()).to(DType::f64), r.lse.to(Device::cpu()).to(DType::f64)};
  };
  const auto [want_out, want_lse] = outputs(DType::f64, Device::cpu());
  const auto [got_out, got_lse] = outputs(DType::bf16, Device::cuda());
  require_near("out", got_out, want_out, tolerance(DType::bf16));
  require_near("lse", got_lse, want_lse, 1e-4);
}

// The ramp cases: scores rising by 0.14 a key (~13 in log2 units a tile of 64) move a row's
// reference on every tile, falling ones never after the first tile, a slope of 0.02 (~1.8 a
// tile) every four or five tiles, not in every warp at once. Forward only (see the test below).
void ramp_cases() {
  for (std::int64_t d : {64, 128}) {
    Shape4 s;
    s.sq = 200;
    s.sk = 384;
    s.d = s.dv = d;
    for (double slope : {0.14, -0.14, 0.02}) {
      INFO("D " << d << ", slope " << slope);
      const Inputs in = ramp_inputs(s, slope, static_cast<std::uint64_t>(300 + d));
      const AttentionPattern dense = AttentionPattern::dense(200, 384, 64);
      check_forward("dense", in, dense, {});
      AttentionOptions o;
      o.causal = true;
      check_forward("causal", in, dense, o);
      o = {};
      o.sinks = tgt::rand64({s.Hq}, 310, -1.0, 2.0);
      check_forward("sinks", in, dense, o);
      o = {};
      o.softcap = 50.0;  // the general transform's scores, in range of the soft cap
      check_forward("soft cap", in, dense, o);
    }
  }
}

}  // namespace

TEST_CASE("flash_attention CUDA: the Hopper forward's reference maximum moves within a row", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("forward");
  const ForceKnob<ops::attn::FwdKernel> kernel(ops::attn::set_fwd_kernel, ops::attn::FwdKernel::Wgmma);
  // the tile maxima at both head dims (D 64 takes the row sums by default; they have their own test)
  const ForceKnob<ops::attn::FwdSoftmax> maxima(ops::attn::set_fwd_softmax, ops::attn::FwdSoftmax::Max);
  // The forward keeps a row's reference maximum until a tile's exceeds it by more than 8
  // in log2 units (kMaxSlack); ramp_cases move it on every tile, never, or every few tiles.
  // Only the forward is compared: the backward takes the row's log-sum-exp, not the
  // forward's reference, and its dQ = Σ dS·k sums bf16-rounded dS (Σ dS = 0 per row) against
  // ramped keys of up to ~13, an error of ~5% of dQ's range from the inputs' conditioning
  // alone (the backward's kernels have their own tests on well-conditioned inputs).
  ramp_cases();
}

TEST_CASE("flash_attention CUDA: the Hopper forward bounding P by row sums matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("forward");
  namespace at = ops::attn;
  const ForceKnob<at::FwdKernel> kernel(at::set_fwd_kernel, at::FwdKernel::Wgmma);
  const ForceKnob<at::FwdSoftmax> sums(at::set_fwd_softmax, at::FwdSoftmax::Sums);
  const std::int64_t runs0 = at::launches(at::Path::WgmmaFwdSums);
  // whole tiles without row maxima: the ramps send warps to the fallback (their S again by
  // mma.sync, then the maxima) on every tile, never, or every few tiles
  ramp_cases();
  // scores 128 or more (log2 units) above their row's reference: P overflows and the
  // fallback recomputes S. Every element of the keys of the last 64-block is 320 / sqrt(D),
  // against q ≈ 0.5: scores of ≈ 0.5 · 320 = 160 nats (230 in log2 units) above the others.
  for (std::int64_t d : {64, 128}) {
    Shape4 s;
    s.sq = 130;
    s.sk = 320;
    s.d = s.dv = d;
    Inputs in = ramp_inputs(s, -0.02, static_cast<std::uint64_t>(330 + d));
    std::vector<double> k = tgt::values(in.k);
    for (std::int64_t r = 0; r < s.B * s.Hkv; ++r)
      for (std::int64_t j = 256; j < 320; ++j)
        for (std::int64_t c = 0; c < d; ++c)
          k[static_cast<std::size_t>((r * s.sk + j) * d + c)] = 320.0 / std::sqrt(static_cast<double>(d));
    in.k = from_vector(k, {s.B * s.Hkv, s.sk, d});
    in = rounded(in, DType::bf16);
    INFO("D " << d << ", a jump of ~160 nats in the last key block");
    check_forward("dense", in, AttentionPattern::dense(s.sq, s.sk, 64), {});
    AttentionOptions o;
    o.sinks = tgt::rand64({s.Hq}, 331, -1.0, 2.0);
    check_forward("sinks", in, AttentionPattern::dense(s.sq, s.sk, 64), o);
  }
  // the usual patterns and options, gradients too (the backward takes the forward's lse)
  for (std::int64_t d : {64, 128}) {
    const std::string dn = " D " + std::to_string(d);
    const Shape4 g = general_shape(d);
    check_cuda("dense" + dn, make_inputs(g, static_cast<std::uint64_t>(340 + d)),
               AttentionPattern::dense(g.sq, g.sk, 64), {}, {DType::bf16, DType::f16});
    AttentionOptions o;
    o.causal = true;
    o.window_left = 100;
    check_cuda("causal window" + dn, make_inputs(g, static_cast<std::uint64_t>(350 + d)),
               AttentionPattern::dense(g.sq, g.sk, 64), o, {DType::bf16});
    o = lens_and_segments(g, 361);
    o.sinks = tgt::rand64({g.Hq}, 362);
    check_cuda("lens, segments, sinks" + dn, make_inputs(g, static_cast<std::uint64_t>(360 + d)),
               uniform_pattern(g.B * g.Hq, g.sq, g.sk, 64, 64, 60, static_cast<std::uint64_t>(363 + d)), o,
               {DType::bf16});
    {  // 128-row tiles (two warpgroups a CTA) at D 64 too
      const ForceKnob<at::TileHeight> full(at::set_tile_height, at::TileHeight::Full);
      check_cuda("128-row tiles" + dn, make_inputs(g, static_cast<std::uint64_t>(370 + d)),
                 AttentionPattern::dense(g.sq, g.sk, 64), {}, {DType::bf16});
    }
  }
  CHECK(at::launches(at::Path::WgmmaFwdSums) > runs0);
}

TEST_CASE("flash_attention CUDA: the Hopper (wgmma) forward's schedules and key tiles match the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("forward");
  namespace at = ops::attn;
  struct Restore {
    ~Restore() {
      at::set_fwd_kernel(at::FwdKernel::Auto);
      at::set_fwd_schedule(at::FwdSchedule::Auto);
      at::set_fwd_keys(at::FwdKeys::Auto);
      at::set_fwd_rows(at::FwdRows::Auto);
    }
  } restore;
  const auto schedule = GENERATE(at::FwdSchedule::Serial, at::FwdSchedule::Overlap);
  const auto keys = GENERATE(at::FwdKeys::K64, at::FwdKeys::K128);
  const auto rows = GENERATE(at::FwdRows::R128, at::FwdRows::R192);
  if (schedule == at::FwdSchedule::Serial && keys == at::FwdKeys::K64) return;  // the other test's kernels
  if (keys == at::FwdKeys::K64 && rows == at::FwdRows::R192) return;            // 192 rows go with 128 keys
  const bool overlap = schedule == at::FwdSchedule::Overlap, wide = keys == at::FwdKeys::K128;
  const bool tall = rows == at::FwdRows::R192;
  INFO("schedule " << (overlap ? "overlap" : "serial") << ", key tiles of " << (wide ? 128 : 64) << ", "
                   << (tall ? 192 : 128) << "-row tiles at D 64");
  at::set_fwd_kernel(at::FwdKernel::Wgmma);
  at::set_fwd_schedule(schedule);
  at::set_fwd_keys(keys);
  at::set_fwd_rows(rows);
  const std::int64_t over0 = at::launches(at::Path::WgmmaFwdOverlap), wide0 = at::launches(at::Path::WgmmaFwdWideKeys);
  const std::int64_t tall0 = at::launches(at::Path::WgmmaFwdTall);
  const std::int64_t narrow0 = at::launches(at::Path::WgmmaFwdNarrow);
  // causal and window tiles that one warpgroup of a tile does not see, random blocks on
  // 64-row tiles (which keep 64-key tiles), sinks, GQA, lengths, segments
  std::int64_t runs = 0;
  for (std::int64_t d : {64, 128}) runs += run_hopper_cases(d);
  const std::int64_t narrow = at::launches(at::Path::WgmmaFwdNarrow) - narrow0;
  CHECK(narrow > 0);
  CHECK(at::launches(at::Path::WgmmaFwdOverlap) - over0 == (overlap ? runs : 0));
  CHECK(at::launches(at::Path::WgmmaFwdWideKeys) - wide0 == (wide ? runs - narrow : 0));
  // 192-row tiles at D 64 only: some of the wide-key launches, not all
  const std::int64_t tall_runs = at::launches(at::Path::WgmmaFwdTall) - tall0;
  if (tall) {
    CHECK(tall_runs > 0);
    CHECK(tall_runs < runs - narrow);
  } else {
    CHECK(tall_runs == 0);
  }
  // one key tile, part of one, and long lists (the loops' first and last tiles, stages
  // reused, a last tile of 128 keys half past sk)
  for (std::int64_t d : {64, 128}) {
    for (std::int64_t sk : {64, 40, 1000, 1090}) {
      Shape4 s;
      s.B = 1;
      s.Hq = s.Hkv = 2;
      s.sq = 200;
      s.sk = sk;
      s.d = s.dv = d;
      check_cuda("sk " + std::to_string(sk) + " D " + std::to_string(d),
                 make_inputs(s, static_cast<std::uint64_t>(90 + d + sk)), AttentionPattern::dense(200, sk, 64), {},
                 {DType::bf16});
      ++runs;
    }
  }
  CHECK(at::launches(at::Path::WgmmaFwdOverlap) - over0 == (overlap ? runs : 0));
  // the general transform keeps the serial schedule and 64-key tiles
  const std::int64_t over1 = at::launches(at::Path::WgmmaFwdOverlap), wide1 = at::launches(at::Path::WgmmaFwdWideKeys);
  AttentionOptions o;
  o.softcap = 3.0;
  check_cuda("softcap keeps the serial schedule", make_inputs(general_shape(64), 92),
             AttentionPattern::dense(256, 256, 64), o, {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaFwdOverlap) == over1);
  CHECK(at::launches(at::Path::WgmmaFwdWideKeys) == wide1);
}

TEST_CASE("flash_attention CUDA: the Hopper (wgmma) backward kv pass matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  struct Restore {
    ~Restore() {
      ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Auto);
      ops::attn::set_tile_height(ops::attn::TileHeight::Auto);
      ops::attn::set_bwd_warps(ops::attn::BwdWarps::Auto);
    }
  } restore;
  ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Wgmma);
  const std::int64_t before = ops::attn::launches(ops::attn::Path::WgmmaBwd);
  // D 64 without the general transform, the uniform kernel (the default takes the producer
  // where the lists say; its own tests cover that): every pattern on 64-key tiles
  ops::attn::set_bwd_warps(ops::attn::BwdWarps::Uniform);
  const std::int64_t narrow_before = ops::attn::launches(ops::attn::Path::NarrowKv);
  const std::int64_t runs64 = run_hopper_cases(64);
  CHECK(ops::attn::launches(ops::attn::Path::NarrowKv) - narrow_before == runs64);
  ops::attn::set_bwd_warps(ops::attn::BwdWarps::Auto);
  // D 128: the random 64-block patterns on 64-key tiles, the others on 128-key ones
  const std::int64_t narrow128_before = ops::attn::launches(ops::attn::Path::NarrowKv);
  const std::int64_t runs128 = run_hopper_cases(128);
  const std::int64_t narrow128 = ops::attn::launches(ops::attn::Path::NarrowKv) - narrow128_before;
  CHECK(narrow128 > 0);
  CHECK(narrow128 < runs128);
  std::int64_t runs = runs64 + runs128;
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaBwd) - before == runs);
  // the general transform: bias (its gradient too), soft cap, dropout, all at once
  for (std::int64_t d : {64, 128}) runs += run_general_cases(d);
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaBwd) - before == runs);
  // the mma.sync kv pass on 64-key tiles too (D 128, random 64-blocks), when chosen
  ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Mma);
  const std::int64_t narrow_mid = ops::attn::launches(ops::attn::Path::NarrowKv);
  const std::int64_t mma_mid = ops::attn::launches(ops::attn::Path::WgmmaBwd);
  check_cuda("mma.sync kv pass, 64-key tiles", make_inputs(general_shape(128), 93),
             uniform_pattern(4, 256, 256, 64, 64, 30, 94), {}, {DType::bf16});
  CHECK(ops::attn::launches(ops::attn::Path::NarrowKv) > narrow_mid);
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaBwd) == mma_mid);
  ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Wgmma);
  // deterministic mode keeps the mma.sync kv pass (and the q pass)
  const std::int64_t mid = ops::attn::launches(ops::attn::Path::WgmmaBwd);
  const std::int64_t q_pass_mid = ops::attn::launches(ops::attn::Path::DqPass);
  const AttentionPattern dense = AttentionPattern::dense(256, 256, 64);
  AttentionOptions o;
  o.deterministic = true;
  check_cuda("deterministic falls back", make_inputs(general_shape(64), 84), dense, o, {DType::bf16});
  check_cuda("deterministic falls back", make_inputs(general_shape(128), 92), dense, o, {DType::bf16});
  CHECK(ops::attn::launches(ops::attn::Path::WgmmaBwd) == mid);
  CHECK(ops::attn::launches(ops::attn::Path::DqPass) > q_pass_mid);
  // forced tile heights: a random 64-block pattern on 128-key tiles, a dense one on 64-key ones
  const AttentionPattern random64 = uniform_pattern(4, 256, 256, 64, 64, 30, 95);
  for (std::int64_t d : {64, 128}) {
    ops::attn::set_tile_height(ops::attn::TileHeight::Full);
    const std::int64_t n0 = ops::attn::launches(ops::attn::Path::NarrowKv);
    check_cuda("128-key tiles forced", make_inputs(general_shape(d), 96), random64, {}, {DType::bf16});
    CHECK(ops::attn::launches(ops::attn::Path::NarrowKv) == n0);
    ops::attn::set_tile_height(ops::attn::TileHeight::Half);
    check_cuda("64-key tiles forced", make_inputs(general_shape(d), 97), dense, {}, {DType::bf16});
    CHECK(ops::attn::launches(ops::attn::Path::NarrowKv) > n0);
  }
}

namespace {

// For a kv-pass variant the caller forces at head dim d: the Hopper cases at d (key tiles that
// one warpgroup does not see: causal and window diagonals, random 32 x 128 blocks; a query
// block that sees nothing, rows past sq, GQA) and long and short lists (every stage and staging
// buffer reused many times, partial tiles; inputs from `seed`, in list_dts), each counted by
// `path` unless on 64-key tiles, which keep their kernel.
void check_kv_variant(ops::attn::Path path, std::int64_t d, std::uint64_t seed, const std::vector<DType>& list_dts) {
  namespace at = ops::attn;
  INFO("D " << d);
  const std::int64_t path0 = at::launches(path), narrow0 = at::launches(at::Path::NarrowKv);
  const std::int64_t dq_pass0 = at::launches(at::Path::DqPass);
  const std::int64_t runs = run_hopper_cases(d);
  const std::int64_t narrow = at::launches(at::Path::NarrowKv) - narrow0;
  CHECK(narrow > 0);
  CHECK(at::launches(path) - path0 == runs - narrow);
  const std::int64_t lists = check_list_lengths(d, {40, 1000}, seed, list_dts);
  CHECK(at::launches(path) - path0 == runs - narrow + lists);
  // every Hopper kv pass adds dQ by atomics: no case may run the dQ pass besides it
  CHECK(at::launches(at::Path::DqPass) == dq_pass0);
}

// A soft cap (the general transform) keeps its kernel: inputs from `seed`.
void check_softcap_keeps_kernel(ops::attn::Path path, std::uint64_t seed) {
  namespace at = ops::attn;
  const std::int64_t before = at::launches(path);
  AttentionOptions cap;
  cap.softcap = 3.0;
  check_cuda("softcap keeps its kernel", make_inputs(general_shape(128), seed), AttentionPattern::dense(256, 256, 64),
             cap, {DType::bf16});
  CHECK(at::launches(path) == before);
}

}  // namespace

TEST_CASE("flash_attention CUDA: the Hopper kv pass with dQ split by columns matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Uniform);
  const ForceKnob<at::BwdDq> split(at::set_bwd_dq, at::BwdDq::Columns);
  for (const at::BwdStep step : {at::BwdStep::Serial, at::BwdStep::Pipelined}) {
    const bool serial = step == at::BwdStep::Serial;
    INFO((serial ? "serial step" : "pipelined step"));
    const ForceKnob<at::BwdStep> order(at::set_bwd_step, step);
    check_kv_variant(at::Path::WgmmaBwdDqColumns, 128, serial ? 95 : 395, {DType::bf16});
    // D 64 and a soft cap keep their kernels
    const std::int64_t mid = at::launches(at::Path::WgmmaBwdDqColumns);
    run_hopper_cases(64);
    CHECK(at::launches(at::Path::WgmmaBwdDqColumns) == mid);
    check_softcap_keeps_kernel(at::Path::WgmmaBwdDqColumns, serial ? 96 : 396);
  }
}

TEST_CASE("flash_attention CUDA: the Hopper kv pass with the producer warpgroup matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Producer);
  // both head dims (dQ by columns at D 128, by keys at D 64); both types on the long lists:
  // every mbarrier's phase wraps many times
  check_kv_variant(at::Path::WgmmaBwdProducer, 128, 295, {DType::bf16, DType::f16});
  {  // at D 64 with K and V from shared memory (not the default there)
    const ForceKnob<at::BwdOperands> shared(at::set_bwd_operands, at::BwdOperands::Shared);
    const std::int64_t before = at::launches(at::Path::WgmmaBwdRegKV);
    check_kv_variant(at::Path::WgmmaBwdProducer, 64, 495, {DType::bf16, DType::f16});
    CHECK(at::launches(at::Path::WgmmaBwdRegKV) == before);
  }
  {  // at D 64 with K and V as register operands (the default operands there)
    const ForceKnob<at::BwdOperands> regs(at::set_bwd_operands, at::BwdOperands::Registers);
    check_kv_variant(at::Path::WgmmaBwdRegKV, 64, 595, {DType::bf16, DType::f16});
    const std::int64_t regs_mid = at::launches(at::Path::WgmmaBwdRegKV);
    check_cuda("D 128 keeps shared operands", make_inputs(general_shape(128), 596),
               AttentionPattern::dense(256, 256, 128), {}, {DType::bf16});
    CHECK(at::launches(at::Path::WgmmaBwdRegKV) == regs_mid);
  }
  check_softcap_keeps_kernel(at::Path::WgmmaBwdProducer, 296);
  const std::int64_t mid = at::launches(at::Path::WgmmaBwdProducer);
  AttentionOptions drop;
  drop.dropout_p = 0.1;
  drop.seed = 7;
  for (std::int64_t d : {64, 128}) {
    check_cuda("dropout keeps its kernel, D " + std::to_string(d), make_inputs(general_shape(d), 297),
               AttentionPattern::dense(256, 256, 64), drop, {DType::bf16});
  }
  CHECK(at::launches(at::Path::WgmmaBwdProducer) == mid);
  {  // 64-key tiles where asked keep theirs
    const ForceKnob<at::TileHeight> half(at::set_tile_height, at::TileHeight::Half);
    check_cuda("64-key tiles forced", make_inputs(general_shape(64), 298), AttentionPattern::dense(256, 256, 128), {},
               {DType::bf16});
    CHECK(at::launches(at::Path::WgmmaBwdProducer) == mid);
  }
}

TEST_CASE("flash_attention CUDA: the D 64 producer kv pass with dQ by keys and K, V in registers matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Producer);
  const ForceKnob<at::BwdOperands> regs(at::set_bwd_operands, at::BwdOperands::Registers);
  // each warpgroup hands its own dQ tile over every step (not the default, turns): every Hopper
  // case and the long lists, both types
  const ForceKnob<at::ProducerDq> keys(at::set_producer_dq, at::ProducerDq::Keys);
  const std::int64_t t0 = at::launches(at::Path::ProducerDqTurns);
  check_kv_variant(at::Path::WgmmaBwdRegKV, 64, 695, {DType::bf16, DType::f16});
  CHECK(at::launches(at::Path::ProducerDqTurns) == t0);
}

TEST_CASE("flash_attention CUDA: the D 64 producer kv pass with dQ in turns matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Producer);
  const ForceKnob<at::BwdOperands> regs(at::set_bwd_operands, at::BwdOperands::Registers);
  // the warpgroups take turns at dQ over all 128 keys (the long lists: each warpgroup's
  // dq_full / dq_empty phases wrap many times)
  const ForceKnob<at::ProducerDq> turns(at::set_producer_dq, at::ProducerDq::Turns);
  const std::int64_t r0 = at::launches(at::Path::WgmmaBwdRegKV);
  const std::int64_t t0 = at::launches(at::Path::ProducerDqTurns);
  check_kv_variant(at::Path::ProducerDqTurns, 64, 1095, {DType::bf16, DType::f16});
  CHECK(at::launches(at::Path::ProducerDqTurns) - t0 == at::launches(at::Path::WgmmaBwdRegKV) - r0);
  {  // K and V from shared memory keep dQ by keys
    const std::int64_t t1 = at::launches(at::Path::ProducerDqTurns);
    const ForceKnob<at::BwdOperands> shared(at::set_bwd_operands, at::BwdOperands::Shared);
    AttentionOptions causal;
    causal.causal = true;
    check_cuda("shared operands keep dQ by keys", make_inputs(general_shape(64), 1096),
               AttentionPattern::dense(256, 256, 64), causal, {DType::bf16});
    CHECK(at::launches(at::Path::ProducerDqTurns) == t1);
  }
  // D 128 keeps dQ by columns
  const std::int64_t t2 = at::launches(at::Path::ProducerDqTurns);
  run_hopper_cases(128);
  CHECK(at::launches(at::Path::ProducerDqTurns) == t2);
}

TEST_CASE("flash_attention CUDA: BwdWarps::Lists (D 64's default) takes the D 64 producer where the lists say so",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Lists);
  const Inputs in = make_inputs(general_shape(64), 901);
  auto runs = [&](const std::string& name, const AttentionPattern& pat, const AttentionOptions& o, bool producer) {
    INFO(name);
    const std::int64_t p0 = at::launches(at::Path::WgmmaBwdProducer), n0 = at::launches(at::Path::NarrowKv);
    check_cuda(name, in, pat, o, {DType::bf16});
    CHECK(at::launches(at::Path::WgmmaBwdProducer) - p0 == (producer ? 1 : 0));
    CHECK(at::launches(at::Path::NarrowKv) - n0 == (producer ? 0 : 1));
  };
  // dense: the same area on either key tile, nothing checked
  runs("dense", AttentionPattern::dense(256, 256, 128), {}, true);
  // a short window: the 128-key tiles cover far more than the 64-key ones
  AttentionOptions window;
  window.causal = true;
  window.window_left = 30;
  runs("window 30", AttentionPattern::dense(256, 256, 128), window, false);
  // blocks of 192 and 64, block-causal: key tile 128..255 straddles the boundary, so query
  // rows of the first block check the pattern there (the 64-key tiles need no check)
  std::vector<bool> m{true, false, true, true};
  runs("blocks of 192 and 64", AttentionPattern::variable(from_vector(m, {1, 2, 2}), {192, 64}, {192, 64}), {},
       false);
  const std::int64_t p0 = at::launches(at::Path::WgmmaBwdProducer), n0 = at::launches(at::Path::NarrowKv);
  {  // 128-key tiles forced: the rule is not asked, and Lists is the uniform kernel there
    const ForceKnob<at::TileHeight> full(at::set_tile_height, at::TileHeight::Full);
    check_cuda("128-key tiles forced", in, AttentionPattern::dense(256, 256, 128), {}, {DType::bf16});
    CHECK(at::launches(at::Path::WgmmaBwdProducer) == p0);
    CHECK(at::launches(at::Path::NarrowKv) == n0);
  }
  // at D 128, Lists is the producer
  check_cuda("D 128", make_inputs(general_shape(128), 902), AttentionPattern::dense(256, 256, 128), {},
             {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaBwdProducer) - p0 == 1);
}

TEST_CASE("flash_attention CUDA: the default kv pass takes the producer warpgroup at D 128, at D 64 by the lists",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Auto);
  const std::int64_t p0 = at::launches(at::Path::WgmmaBwdProducer), n0 = at::launches(at::Path::NarrowKv);
  const AttentionPattern dense = AttentionPattern::dense(256, 256, 128);
  // (the environment's TG_ATTENTION_BWD_WARPS, where set, decides instead of the defaults;
  // at D 64 the default, Lists, takes the producer on dense and 64-key tiles on a short window)
  const bool held = std::getenv("TG_ATTENTION_BWD_WARPS") != nullptr;
  const bool prod128 = held ? at::bwd_warps(128) == at::BwdWarps::Producer : true;
  const bool prod64 = held ? at::bwd_warps(64) == at::BwdWarps::Producer : true;
  const bool window_prod64 = held && prod64;
  check_cuda("D 128", make_inputs(general_shape(128), 299), dense, {}, {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaBwdProducer) - p0 == (prod128 ? 1 : 0));
  check_cuda("D 64", make_inputs(general_shape(64), 300), dense, {}, {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaBwdProducer) - p0 == (prod128 ? 1 : 0) + (prod64 ? 1 : 0));
  CHECK(at::launches(at::Path::NarrowKv) - n0 == (prod64 ? 0 : 1));
  AttentionOptions window;
  window.causal = true;
  window.window_left = 30;
  check_cuda("D 64, window 30", make_inputs(general_shape(64), 301), dense, window, {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaBwdProducer) - p0 ==
        (prod128 ? 1 : 0) + (prod64 ? 1 : 0) + (window_prod64 ? 1 : 0));
  CHECK(at::launches(at::Path::NarrowKv) - n0 == (prod64 ? 0 : 1) + (window_prod64 ? 0 : 1));
}

TEST_CASE("flash_attention CUDA: the backward's programmatic launches match the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::LaunchOverlap> overlap(at::set_launch_overlap, at::LaunchOverlap::Programmatic);
  const std::int64_t p0 = at::launches(at::Path::ProgrammaticBwd);
  // every Hopper case at both head dims on the default kv passes (the producer at D 128, at
  // D 64 by the lists), then on the uniform warpgroups with the pipelined step
  std::int64_t runs = run_hopper_cases(64) + run_hopper_cases(128);
  {
    const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Uniform);
    const ForceKnob<at::BwdStep> step(at::set_bwd_step, at::BwdStep::Pipelined);
    runs += run_hopper_cases(64) + run_hopper_cases(128);
  }
  // long lists, and dropout (its decisions drawn between the delta pass and the kv pass)
  runs += check_list_lengths(64, {1000}, 911, {DType::bf16}) + check_list_lengths(128, {1000}, 912, {DType::f16});
  AttentionOptions drop;
  drop.dropout_p = 0.1;
  drop.seed = 9;
  check_cuda("dropout", make_inputs(general_shape(128), 913), AttentionPattern::dense(256, 256, 64), drop,
             {DType::bf16});
  ++runs;
  CHECK(at::launches(at::Path::ProgrammaticBwd) - p0 == runs);
  {  // plain launches where asked: the same kernels, not counted
    const ForceKnob<at::LaunchOverlap> plain(at::set_launch_overlap, at::LaunchOverlap::Plain);
    check_cuda("plain launches", make_inputs(general_shape(128), 915), AttentionPattern::dense(256, 256, 64), {},
               {DType::bf16});
    CHECK(at::launches(at::Path::ProgrammaticBwd) - p0 == runs);
  }

  // Two layers, so that the second backward's kernels follow the first's in the stream with no
  // host synchronisation between: o2 = attn(attn(q, k, v), k, v), causal, against the CPU in f64.
  const Inputs master = make_inputs({.B = 2, .Hq = 2, .Hkv = 2, .sq = 320, .sk = 320, .d = 64, .dv = 64}, 914);
  const AttentionPattern pat = AttentionPattern::dense(320, 320, 64);
  AttentionOptions causal;
  causal.causal = true;
  for (DType dt : {DType::bf16, DType::f16}) {
    INFO("two layers in " << dtype_name(dt));
    const Inputs in = rounded(master, dt);
    auto grads = [&](DType t, Device dev) {
      auto leaf = [&](const Tensor& x) { return x.to(t).to(dev).detach().requires_grad_(); };
      Tensor q = leaf(in.q), k = leaf(in.k), v = leaf(in.v);
      const Tensor o1 = flash_attention(q, k, v, pat, causal);
      flash_attention(o1, k, v, pat, causal).backward(in.dout.to(t).to(dev));
      auto host = [](const Tensor& x) { return x.to(Device::cpu()).to(DType::f64); };
      return std::array<Tensor, 3>{host(q.grad()), host(k.grad()), host(v.grad())};
    };
    const std::int64_t before = at::launches(at::Path::ProgrammaticBwd);
    const auto got = grads(dt, Device::cuda());
    CHECK(at::launches(at::Path::ProgrammaticBwd) - before == 2);
    const auto want = grads(DType::f64, Device::cpu());
    const double tol = 4 * tolerance(dt);  // two layers of rounding
    require_near("dq", got[0], want[0], tol);
    require_near("dk", got[1], want[1], tol);
    require_near("dv", got[2], want[2], tol);
  }
}

TEST_CASE("flash_attention CUDA: the Hopper kv pass with the pipelined step matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Uniform);
  const ForceKnob<at::BwdStep> step(at::set_bwd_step, at::BwdStep::Pipelined);
  const std::int64_t p0 = at::launches(at::Path::WgmmaBwdPipelined), narrow0 = at::launches(at::Path::NarrowKv);
  // both head dims, both key tiles (invisible steps skipped: causal and window diagonals,
  // random blocks, a query block that sees nothing; rows past sq; GQA)
  const std::int64_t runs = run_hopper_cases(64) + run_hopper_cases(128);
  CHECK(at::launches(at::Path::WgmmaBwdPipelined) - p0 == runs);
  CHECK(at::launches(at::Path::NarrowKv) - narrow0 > 0);
  {
    const ForceKnob<at::TileHeight> full(at::set_tile_height, at::TileHeight::Full);
    CHECK(run_hopper_cases(64) > 0);  // the 128-key tiles at D 64 too
  }
  // long and short query lists (every stage reused many times), partial tiles
  const std::int64_t lists = check_list_lengths(64, {40, 1000}, 195, {DType::bf16, DType::f16}) +
                             check_list_lengths(128, {100, 1000}, 196, {DType::bf16});
  CHECK(lists == 6);
  const std::int64_t mid = at::launches(at::Path::WgmmaBwdPipelined);
  // the general transform and dQ by columns (counted as such on either step) keep their kernels
  AttentionOptions cap;
  cap.softcap = 3.0;
  check_cuda("softcap keeps the serial step", make_inputs(general_shape(128), 197),
             AttentionPattern::dense(256, 256, 64), cap, {DType::bf16});
  {
    const ForceKnob<at::BwdDq> cols(at::set_bwd_dq, at::BwdDq::Columns);
    check_cuda("dQ by columns keeps its kernel", make_inputs(general_shape(128), 198),
               AttentionPattern::dense(256, 256, 128), {}, {DType::bf16});
  }
  CHECK(at::launches(at::Path::WgmmaBwdPipelined) == mid);
}

TEST_CASE("flash_attention CUDA: the Hopper kv pass with the serial step matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdWarps> warps(at::set_bwd_warps, at::BwdWarps::Uniform);
  const ForceKnob<at::BwdStep> step(at::set_bwd_step, at::BwdStep::Serial);
  const std::int64_t p0 = at::launches(at::Path::WgmmaBwdPipelined), bwd0 = at::launches(at::Path::WgmmaBwd);
  // both head dims, both key tiles, long lists: the step the pipelined default replaced
  const std::int64_t runs =
      run_hopper_cases(64) + run_hopper_cases(128) + check_list_lengths(128, {100, 1000}, 199, {DType::bf16});
  CHECK(at::launches(at::Path::WgmmaBwd) - bwd0 == runs);
  CHECK(at::launches(at::Path::WgmmaBwdPipelined) == p0);
}

namespace {

// A dropout case checked against the CPU, then run twice more on the GPU: the kv pass reading
// the forward's decisions, and drawing its own (keep_dropout_mask off). dK and dV have no
// atomics: with the same decisions they are bit-identical, which a single differing bit would
// break. `drawn_run` runs the second of those (a callable taking a Result() callable), so
// that a test can count the launches around it. Three GPU runs in all.
template <typename DrawnRun>
void check_read_and_drawn(const std::string& name, const Inputs& master, const AttentionPattern& pat,
                          AttentionOptions o, DType dt, DrawnRun drawn_run) {
  INFO(name << " in " << dtype_name(dt));
  check_cuda(name, master, pat, o, {dt});
  const Inputs in = rounded(master, dt);
  o = options_rounded(o, dt);
  const Result with = run(in, pat, o, dt, Device::cuda());
  o.keep_dropout_mask = false;
  const Result without = drawn_run([&] { return run(in, pat, o, dt, Device::cuda()); });
  tgt::require_close(with.out, without.out, 0, 0);
  tgt::require_close(with.dk, without.dk, 0, 0);
  tgt::require_close(with.dv, without.dv, 0, 0);
  require_near("dq", with.dq, without.dq, 1e-5);
}

// The dropout cases both Hopper dropout tests run at head dim d, through
// check(name, inputs, pattern, options, dtype): GQA cross-attention, causal, ragged extents
// (rows past sq, a partial key tile, sk not a multiple of 32: the last word of a row half
// used), and random blocks (query blocks that see nothing) under a window in f16. Seeds from
// `seed` (inputs, pattern) and `drop_seed` (dropout).
template <typename Check>
void shared_dropout_cases(std::int64_t d, std::uint64_t seed, std::uint64_t drop_seed, Check check) {
  const std::string dn = " D " + std::to_string(d);
  const auto ud = static_cast<std::uint64_t>(d);
  Shape4 s;
  s.B = 2;
  s.Hq = 4;
  s.Hkv = 2;
  s.sq = 200;
  s.sk = 328;
  s.d = s.dv = d;
  AttentionOptions o;
  o.num_heads = s.Hq;
  o.causal = true;
  o.dropout_p = 0.2;
  o.seed = drop_seed;
  o.offset = 3;
  check("GQA, causal, ragged" + dn, make_inputs(s, seed + ud), AttentionPattern::dense(s.sq, s.sk, 64), o, DType::bf16);
  const Shape4 g = general_shape(d);
  o = {};
  o.window_left = 70;
  o.window_right = 30;
  o.dropout_p = 0.1;
  o.seed = drop_seed + 1;
  check("random blocks, window" + dn, make_inputs(g, seed + 10 + ud),
        uniform_pattern(g.B * g.Hq, g.sq, g.sk, 64, 64, 40, seed + 11), o, DType::f16);
}

}  // namespace

TEST_CASE("flash_attention CUDA: the Hopper backward reads the dropout decisions its forward kept",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::FwdKernel> fwd(at::set_fwd_kernel, at::FwdKernel::Wgmma);
  const ForceKnob<at::BwdKernel> bwd(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  // on the general transform's kernels (the plain-score ones, the default: the next test)
  const ForceKnob<at::DropoutKernels> general(at::set_dropout_kernels, at::DropoutKernels::General);
  auto kept = [] { return at::launches(at::Path::DropoutKept); };
  auto read = [] { return at::launches(at::Path::DropoutRead); };
  auto drawn = [] { return at::launches(at::Path::DropoutDrawn); };
  const std::int64_t kept0 = kept(), read0 = read();
  std::int64_t runs = 0;
  // the drawn run neither keeps nor reads; it draws twice (the forward's and the backward's own)
  auto drawn_run = [&](auto run_without) {
    const std::int64_t k = kept(), r = read(), dr = drawn();
    Result without = run_without();
    CHECK(kept() == k);
    CHECK(read() == r);
    CHECK(drawn() - dr == 2);
    return without;
  };
  auto check = [&](const std::string& name, const Inputs& master, const AttentionPattern& pat,
                   const AttentionOptions& o, DType dt) {
    check_read_and_drawn(name, master, pat, o, dt, drawn_run);
    runs += 2;  // check_cuda's GPU run and `with` kept and read; the drawn run neither
  };
  for (std::int64_t d : {64, 128}) {
    const std::string dn = " D " + std::to_string(d);
    shared_dropout_cases(d, 300, 11, check);
    // with the rest of the general transform: bias, soft cap, lens, segments, sinks
    const Shape4 g = general_shape(d);
    AttentionOptions o = lens_and_segments(g, 312);
    o.bias = tgt::random_bias(g.B * g.Hq, g.sq, g.sk, 32, 313);
    o.softcap = 5.0;
    o.sinks = tgt::rand64({g.Hq}, 314);
    o.dropout_p = 0.3;
    o.seed = 13;
    check("with bias, soft cap, lens, segments, sinks" + dn, make_inputs(g, static_cast<std::uint64_t>(320 + d)),
          AttentionPattern::dense(g.sq, g.sk, 64), o, DType::bf16);
  }
  {
    // p within 2^-16 of 1: the pre-pass's threshold 2^16 drops every element, as on the CPU
    AttentionOptions o;
    o.dropout_p = 1.0 - std::ldexp(1.0, -17);
    o.seed = 15;
    check_cuda("p within 2^-16 of 1", make_inputs(general_shape(64), 333), AttentionPattern::dense(256, 256, 64), o,
               {DType::bf16});
    ++runs;
  }
  CHECK(kept() - kept0 == runs);
  CHECK(read() - read0 == runs);

  // nothing kept: sk not a multiple of 8 (decisions drawn in the kernels, per element), no
  // gradient to compute (drawn ahead for the forward alone), the mma.sync forward (the
  // backward draws ahead for itself)
  const std::int64_t k1 = kept(), r1 = read(), d1 = drawn();
  Shape4 s = general_shape(64);
  s.sk = 250;
  AttentionOptions o;
  o.dropout_p = 0.25;
  o.seed = 14;
  check_cuda("250 keys", make_inputs(s, 330), AttentionPattern::dense(s.sq, s.sk, 64), o, {DType::bf16});
  CHECK(drawn() == d1);
  {
    NoGradGuard ng;
    const Inputs in = make_inputs(general_shape(64), 331);
    auto dev = [](const Tensor& t) { return t.to(DType::bf16).to(Device::cuda()); };
    const Tensor out = flash_attention(dev(in.q), dev(in.k), dev(in.v), AttentionPattern::dense(256, 256, 64), o);
    CHECK(out.shape() == Shape{4, 256, 64});
    CHECK(drawn() == d1 + 1);
  }
  {
    const ForceKnob<at::FwdKernel> mma(at::set_fwd_kernel, at::FwdKernel::Mma);
    check_cuda("mma.sync forward", make_inputs(general_shape(64), 332), AttentionPattern::dense(256, 256, 64), o,
               {DType::bf16});
    CHECK(drawn() == d1 + 2);
  }
  CHECK(kept() == k1);
  CHECK(read() == r1);
}

TEST_CASE("flash_attention CUDA: dropout on the plain-score Hopper kernels matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("forward and backward");
  namespace at = ops::attn;
  const ForceKnob<at::FwdKernel> fwd(at::set_fwd_kernel, at::FwdKernel::Wgmma);
  const ForceKnob<at::BwdKernel> bwd(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::DropoutKernels> plain(at::set_dropout_kernels, at::DropoutKernels::Plain);
  auto fwd_runs = [] { return at::launches(at::Path::DropoutPlainFwd); };
  auto bwd_runs = [] { return at::launches(at::Path::DropoutPlainBwd); };
  const std::int64_t f0 = fwd_runs(), b0 = bwd_runs();
  std::int64_t runs = 0;
  auto check = [&](const std::string& name, const Inputs& master, const AttentionPattern& pat,
                   const AttentionOptions& o, DType dt) {
    check_read_and_drawn(name, master, pat, o, dt, [](auto run_without) { return run_without(); });
    runs += 3;  // each on the plain kernels
  };
  for (std::int64_t d : {64, 128}) {
    const std::string dn = " D " + std::to_string(d);
    shared_dropout_cases(d, 400, 21, check);
    // the per-element options on the plain scores: lens, segments, element mask, sinks
    const Shape4 g = general_shape(d);
    AttentionOptions o = lens_and_segments(g, 412);
    o.mask = tgt::random_element_mask(1, g.sq, g.sk, 16, 413);
    o.sinks = tgt::rand64({g.Hq}, 414);
    o.dropout_p = 0.3;
    o.seed = 23;
    check("lens, segments, mask, sinks" + dn, make_inputs(g, static_cast<std::uint64_t>(420 + d)),
          AttentionPattern::dense(g.sq, g.sk, 64), o, DType::bf16);
    // 128-row query tiles and 128-key kv tiles forced (D 64 takes 64 of both by default)
    {
      const ForceKnob<at::TileHeight> full(at::set_tile_height, at::TileHeight::Full);
      o = {};
      o.causal = true;
      o.dropout_p = 0.15;
      o.seed = 24;
      check("128-row tiles" + dn, make_inputs(g, static_cast<std::uint64_t>(430 + d)),
            AttentionPattern::dense(g.sq, g.sk, 64), o, DType::bf16);
    }
  }
  CHECK(fwd_runs() - f0 == runs);
  CHECK(bwd_runs() - b0 == runs);
  // the general transform's kernels where the plain ones do not apply: with a bias or a soft
  // cap, sk not a multiple of 8 (no decisions drawn ahead), a negative scale
  const std::int64_t f1 = fwd_runs(), b1 = bwd_runs();
  const Shape4 g = general_shape(64);
  AttentionOptions o;
  o.dropout_p = 0.2;
  o.seed = 25;
  o.softcap = 5.0;
  check_cuda("soft cap", make_inputs(g, 440), AttentionPattern::dense(g.sq, g.sk, 64), o, {DType::bf16});
  o.softcap = 0.0;
  o.bias = tgt::random_bias(g.B * g.Hq, g.sq, g.sk, 64, 441);
  check_cuda("bias", make_inputs(g, 442), AttentionPattern::dense(g.sq, g.sk, 64), o, {DType::bf16});
  o.bias = {};
  o.scale = -0.3;
  check_cuda("negative scale", make_inputs(g, 443), AttentionPattern::dense(g.sq, g.sk, 64), o, {DType::bf16});
  o.scale = 0.125;
  Shape4 r = g;
  r.sk = 250;
  check_cuda("250 keys", make_inputs(r, 444), AttentionPattern::dense(r.sq, r.sk, 64), o, {DType::bf16});
  CHECK(fwd_runs() == f1);
  CHECK(bwd_runs() == b1);
}

TEST_CASE("flash_attention CUDA: the D 128 kv pass on 64-key tiles with dQ staged in the stage matches the CPU",
          "[ops][attention][cuda]") {
  TG_REQUIRE_HOPPER("backward");
  namespace at = ops::attn;
  const ForceKnob<at::FwdKernel> fwd(at::set_fwd_kernel, at::FwdKernel::Wgmma);
  const ForceKnob<at::BwdKernel> kernel(at::set_bwd_kernel, at::BwdKernel::Wgmma);
  const ForceKnob<at::BwdStep> step(at::set_bwd_step, at::BwdStep::Pipelined);
  const ForceKnob<at::BwdDqStaging> staging(at::set_bwd_dq_staging, at::BwdDqStaging::Stage);
  // every pattern on 64-key tiles: causal and window diagonals, random blocks, a query block that
  // sees nothing, rows past sq, GQA (all with plain scores)
  const ForceKnob<at::TileHeight> half(at::set_tile_height, at::TileHeight::Half);
  auto staged = [] { return at::launches(at::Path::WgmmaBwdDqInStage); };
  const std::int64_t s0 = staged(), p0 = at::launches(at::Path::WgmmaBwdPipelined);
  const std::int64_t n0 = at::launches(at::Path::NarrowKv);
  const std::int64_t runs = run_hopper_cases(128);
  CHECK(staged() - s0 == runs);
  CHECK(at::launches(at::Path::WgmmaBwdPipelined) - p0 == runs);
  CHECK(at::launches(at::Path::NarrowKv) - n0 == runs);
  // long and short query lists: each stage refilled many times, each time after the reductions of
  // the dQ staged in it have read it; partial tiles
  const std::int64_t s1 = staged();
  const std::int64_t lists = check_list_lengths(128, {40, 1000}, 1301, {DType::bf16, DType::f16});
  CHECK(staged() - s1 == lists);
  // dropout on the plain scores keeps the tile of its own (decisions read from the forward and
  // drawn by the kv pass)
  {
    const ForceKnob<at::DropoutKernels> plain(at::set_dropout_kernels, at::DropoutKernels::Plain);
    const std::int64_t s2 = staged(), d2 = at::launches(at::Path::DropoutPlainBwd);
    std::int64_t drop_runs = 0;
    shared_dropout_cases(128, 1310, 27,
                         [&](const std::string& name, const Inputs& master, const AttentionPattern& pat,
                             const AttentionOptions& o, DType dt) {
                           check_read_and_drawn(name, master, pat, o, dt,
                                                [](auto run_without) { return run_without(); });
                           drop_runs += 3;
                         });
    CHECK(drop_runs > 0);
    CHECK(staged() == s2);
    CHECK(at::launches(at::Path::DropoutPlainBwd) - d2 == drop_runs);
  }
  // D 64, the general transform, the serial step and a forced tile of its own keep their kernels
  const std::int64_t s3 = staged();
  const AttentionPattern random64 = uniform_pattern(4, 256, 256, 64, 64, 30, 1320);
  check_cuda("D 64", make_inputs(general_shape(64), 1321), random64, {}, {DType::bf16});
  AttentionOptions cap;
  cap.softcap = 3.0;
  check_cuda("soft cap", make_inputs(general_shape(128), 1324), random64, cap, {DType::bf16});
  {
    const ForceKnob<at::BwdStep> serial(at::set_bwd_step, at::BwdStep::Serial);
    check_cuda("serial step", make_inputs(general_shape(128), 1322), random64, {}, {DType::bf16});
  }
  {
    const ForceKnob<at::BwdDqStaging> tile(at::set_bwd_dq_staging, at::BwdDqStaging::Tile);
    check_cuda("own tile", make_inputs(general_shape(128), 1323), random64, {}, {DType::bf16});
  }
  CHECK(staged() == s3);
}

TEST_CASE("flash_attention kernel choices: a forced value wins, Auto resolves to a kernel", "[ops][attention]") {
  struct Restore {
    ~Restore() {
      ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Auto);
      ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Auto);
    }
  } restore;
  for (auto k : {ops::attn::FwdKernel::Mma, ops::attn::FwdKernel::Wgmma}) {
    ops::attn::set_fwd_kernel(k);
    CHECK(ops::attn::fwd_kernel() == k);
  }
  ops::attn::set_fwd_kernel(ops::attn::FwdKernel::Auto);
  CHECK(ops::attn::fwd_kernel() != ops::attn::FwdKernel::Auto);
  for (auto k : {ops::attn::BwdKernel::Mma, ops::attn::BwdKernel::Wgmma}) {
    ops::attn::set_bwd_kernel(k);
    CHECK(ops::attn::bwd_kernel() == k);
  }
  ops::attn::set_bwd_kernel(ops::attn::BwdKernel::Auto);
  CHECK(ops::attn::bwd_kernel() != ops::attn::BwdKernel::Auto);
  for (auto k : {ops::attn::BwdDqStaging::Tile, ops::attn::BwdDqStaging::Stage}) {
    ops::attn::set_bwd_dq_staging(k);
    CHECK(ops::attn::bwd_dq_staging() == k);
  }
  ops::attn::set_bwd_dq_staging(ops::attn::BwdDqStaging::Auto);
  CHECK(ops::attn::bwd_dq_staging() != ops::attn::BwdDqStaging::Auto);
}

}  // namespace test_attention_cuda
