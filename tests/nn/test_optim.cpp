#include <cmath>

#include "util.h"

namespace test_optim {

using namespace tg;

namespace {
// Independent AdamW reference for one parameter vector.
struct RefAdam {
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g, const optim::AdamWOptions& o) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      double mh = m[i] / (1 - std::pow(o.beta1, t)), vh = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= o.lr * (mh / (std::sqrt(vh) + o.eps) + o.weight_decay * p[i]);
    }
  }
};
}  // namespace

TEST_CASE("AdamW matches an independent reference over several steps", "[optim]") {
  Tensor p = tgt::rand64({7}, 1).requires_grad_();
  Tensor q = tgt::rand64({2, 3}, 2).requires_grad_();
  optim::AdamWOptions o{.lr = 0.1, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1};
  optim::AdamW opt({p, q}, o);
  std::vector<double> rp = tgt::values(p), rq = tgt::values(q);
  RefAdam ap, aq;
  for (int s = 0; s < 4; ++s) {
    opt.zero_grad();
    sum(mul(p, p)).backward();  // grad 2p; q has no grad in odd steps
    if (s % 2 == 0) sum(q * 3.0).backward();
    std::vector<double> gp(rp.size());
    for (std::size_t i = 0; i < rp.size(); ++i) gp[i] = 2 * rp[i];
    opt.step();
    ap.step(rp, gp, o);
    if (s % 2 == 0) aq.step(rq, std::vector<double>(rq.size(), 3.0), o);
    REQUIRE(tgt::max_abs_diff(p, from_vector(rp, {7})) < 1e-12);
  }
  // q was stepped only when it had a gradient, with the optimizer's global step count
  REQUIRE(opt.step_count() == 4);
  REQUIRE(tgt::values(q) != tgt::values(tgt::rand64({2, 3}, 2)));
}

TEST_CASE("AdamW, SGD and clipping on parameters the CPU splits over threads", "[optim]") {
  // 100003 elements: the CPU kernels walk them in ranges of 2^15 (four ranges, the last
  // one short); every element against the reference, the norm against an f64 sum
  const std::int64_t n = 100003;
  Tensor p = tgt::rand64({n}, 11).requires_grad_();
  optim::AdamWOptions o{.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01};
  optim::AdamW opt({p}, o);
  std::vector<double> rp = tgt::values(p);
  RefAdam ref;
  for (int s = 0; s < 2; ++s) {
    opt.zero_grad();
    sum(mul(p, p)).backward();
    std::vector<double> g(rp.size());
    for (std::size_t i = 0; i < rp.size(); ++i) g[i] = 2 * rp[i];
    opt.step();
    ref.step(rp, g, o);
    REQUIRE(tgt::max_abs_diff(p, from_vector(rp, {n})) < 1e-12);
  }
  Tensor q = tgt::rand64({n}, 12).requires_grad_();
  optim::SGD sgd({q}, 0.1);
  std::vector<double> rq = tgt::values(q);
  sum(mul(q, q)).backward();
  sgd.step();
  for (double& x : rq) x -= 0.1 * 2 * x;
  REQUIRE(tgt::max_abs_diff(q, from_vector(rq, {n})) < 1e-12);
  // clipping: q's gradient is 2 q (before the step), in f32 too
  Tensor h = tgt::rand64({n}, 13).to(DType::f32).detach().requires_grad_();
  sum(mul(h, h) * 0.5).backward();  // grad = h
  double sq = 0;
  for (double x : tgt::values(h)) sq += x * x;
  const double norm = optim::clip_grad_norm({h}, 1.0);
  REQUIRE(norm == Approx(std::sqrt(sq)).epsilon(1e-5));
  std::vector<double> hv = tgt::values(h), gv = tgt::values(h.grad());
  for (std::size_t i = 0; i < hv.size(); ++i) REQUIRE(gv[i] == Approx(hv[i] / norm).epsilon(1e-4).margin(1e-7));
}

TEST_CASE("SGD with momentum and weight decay", "[optim]") {
  Tensor p = from_vector<double>({1.0, -2.0}, {2}).requires_grad_();
  optim::SGD opt({p}, 0.1, 0.9, 0.01);
  std::vector<double> ref{1.0, -2.0}, buf{0, 0};
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    sum(p * p).backward();
    opt.step();
    for (int i = 0; i < 2; ++i) {
      double d = 2 * ref[static_cast<std::size_t>(i)] + 0.01 * ref[static_cast<std::size_t>(i)];
      buf[static_cast<std::size_t>(i)] = 0.9 * buf[static_cast<std::size_t>(i)] + d;
      ref[static_cast<std::size_t>(i)] -= 0.1 * buf[static_cast<std::size_t>(i)];
    }
  }
  tgt::require_close(p, from_vector(ref, {2}), 1e-12, 1e-14);
}

TEST_CASE("optimizer state round trip, clipping, schedules and errors", "[optim]") {
  Tensor p = tgt::rand64({5}, 3).requires_grad_();
  optim::AdamW a({p});
  sum(p * p).backward();
  a.step();
  optim::AdamW b({p});
  b.load_state(a.state());
  REQUIRE(b.step_count() == 1);
  REQUIRE(tgt::values(b.state()[1].second) == tgt::values(a.state()[1].second));

  Tensor g1 = from_vector<double>({3.0, 0.0}, {2}).requires_grad_();
  Tensor g2 = from_vector<double>({4.0}, {1}).requires_grad_();
  sum(g1 * g1 * 0.5).backward();  // grad = g1 = (3, 0)
  sum(g2 * g2 * 0.5).backward();  // grad = (4)
  double norm = optim::clip_grad_norm({g1, g2}, 1.0);
  REQUIRE(norm == Approx(5.0));
  REQUIRE(tgt::values(g1.grad())[0] == Approx(0.6).epsilon(1e-5));
  REQUIRE(tgt::values(g2.grad())[0] == Approx(0.8).epsilon(1e-5));
  // mixed dtypes (f32 and bf16 sum in f32, f64 in f64) and a parameter without a gradient
  Tensor h1 = from_vector<float>({1.0f, 2.0f}, {2}).requires_grad_();
  Tensor h2 = from_vector<double>({2.0}, {1}).requires_grad_();
  Tensor h3 = from_vector<float>({4.0f}, {1}).to(DType::bf16).detach().requires_grad_();
  Tensor h4 = from_vector<double>({9.0}, {1}).requires_grad_();
  sum(h1 * h1 * 0.5).backward();
  sum(h2 * h2 * 0.5).backward();
  sum(h3 * h3 * 0.5).backward();
  REQUIRE(optim::clip_grad_norm({h1, h2, h3, h4}, 100.0) == Approx(5.0));  // sqrt(1 + 4 + 4 + 16)
  REQUIRE(tgt::values(h1.grad())[1] == 2.0);                                // below max_norm: unchanged
  // the tensor form: a 0-d f64 norm; no gradients at all: 0
  const Tensor n = optim::clip_grad_norm_({h1, h2, h3, h4}, 2.5);
  REQUIRE(n.dim() == 0);
  REQUIRE(n.dtype() == DType::f64);
  REQUIRE(n.item<double>() == Approx(5.0));
  REQUIRE(tgt::values(h2.grad())[0] == Approx(1.0).epsilon(1e-5));  // 2 * 2.5 / 5
  REQUIRE(optim::clip_grad_norm_({h4}, 1.0).item<double>() == 0.0);

  REQUIRE(optim::warmup_cosine_lr(0, 10, 110, 1.0) == Approx(0.1));
  REQUIRE(optim::warmup_cosine_lr(10, 10, 110, 1.0) == Approx(1.0));
  REQUIRE(optim::warmup_cosine_lr(60, 10, 110, 1.0, 0.0) == Approx(0.5));
  REQUIRE(optim::warmup_cosine_lr(500, 10, 110, 1.0, 0.1) == Approx(0.1));

  tgt::require_throws<ValueError>([] { optim::SGD({from_vector<double>({1}, {1})}, 0.1); },
                                  {"optimizer", "parameter 0", "requiring grad"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({p}, {.beta1 = 1.0}); }, {"AdamW", "betas"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({p}).load_state({}); }, {"missing state", "step"});
}

TEST_CASE("AdamW and SGD on CUDA match the CPU", "[optim][cuda]") {
  TG_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    std::vector<Tensor> cpu_p, gpu_p;
    for (std::int64_t n : {1, 300, 70000}) {  // 70000 spans two chunks
      Tensor base = rand_seeded({n}, static_cast<std::uint64_t>(n), {.dtype = dt});
      cpu_p.push_back(base.detach().clone().requires_grad_());
      gpu_p.push_back(base.to(Device::cuda()).detach().requires_grad_());
    }
    optim::AdamW oc(cpu_p, {.lr = 0.01}), og(gpu_p, {.lr = 0.01});
    optim::SGD sc(cpu_p, 0.05, 0.9), sg(gpu_p, 0.05, 0.9);
    for (int s = 0; s < 3; ++s) {
      for (std::size_t i = 0; i < cpu_p.size(); ++i) {
        Tensor g = rand_seeded(cpu_p[i].shape(), 100 + static_cast<std::uint64_t>(s), {.dtype = dt});
        cpu_p[i].set_grad(g);
        gpu_p[i].set_grad(g.to(Device::cuda()));
      }
      oc.step();
      og.step();
      sc.step();
      sg.step();
    }
    double tol = dt == DType::f32 ? 1e-6 : 1e-2;
    for (std::size_t i = 0; i < cpu_p.size(); ++i) tgt::require_close(gpu_p[i], cpu_p[i], tol, tol);
  }
}

TEST_CASE("clip_grad_norm on CUDA matches the CPU: many tensors, mixed dtypes, odd sizes", "[optim][cuda]") {
  TG_REQUIRE_CUDA();
  std::vector<Tensor> cpu_p, gpu_p;
  std::uint64_t seed = 200;
  for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::f16}) {
    for (std::int64_t n : {1, 3, 300, 70001}) {  // unaligned tails, two chunks
      Tensor base = rand_seeded({n}, ++seed, {.dtype = dt});
      cpu_p.push_back(base.detach().clone().requires_grad_());
      gpu_p.push_back(base.to(Device::cuda()).detach().requires_grad_());
      Tensor g = rand_seeded({n}, ++seed, {.dtype = dt}, -2, 2);
      cpu_p.back().set_grad(g);
      gpu_p.back().set_grad(g.to(Device::cuda()));
    }
  }
  // a misaligned gradient (a view one element in) takes the scalar path
  Tensor big = rand_seeded({1001}, ++seed, {.dtype = DType::f32});
  Tensor mis = tgt::misaligned_view(big, 1, {1000});
  cpu_p.push_back(zeros({1000}).requires_grad_());
  gpu_p.push_back(zeros({1000}, {.device = Device::cuda()}).requires_grad_());
  cpu_p.back().set_grad(mis.clone());
  gpu_p.back().set_grad(tgt::misaligned_view(big.to(Device::cuda()), 1, {1000}));
  // the f64 reference of the norm
  double want = 0;
  for (const Tensor& p : cpu_p)
    for (double v : tgt::values(p.grad())) want += v * v;
  want = std::sqrt(want);
  // squares of f32 / 16-bit tensors summed in f32 over 70001 elements: ~1e-5 relative
  const double nc = optim::clip_grad_norm(cpu_p, 1.0), ng = optim::clip_grad_norm(gpu_p, 1.0);
  REQUIRE(nc == Approx(want).epsilon(1e-4));
  REQUIRE(ng == Approx(want).epsilon(1e-4));
  REQUIRE(ng == Approx(nc).epsilon(1e-4));
  REQUIRE(want > 10);  // so both clipped
  for (std::size_t i = 0; i < cpu_p.size(); ++i) {
    INFO("parameter " << i << " " << dtype_name(cpu_p[i].dtype()));
    const double tol = cpu_p[i].dtype() == DType::f32 || cpu_p[i].dtype() == DType::f64 ? 1e-6 : 1e-2;
    tgt::require_close(gpu_p[i].grad(), cpu_p[i].grad(), tol, tol);
  }
  // the clipped norm is max_norm
  double after = 0;
  for (const Tensor& p : gpu_p)
    for (double v : tgt::values(p.grad())) after += v * v;
  REQUIRE(std::sqrt(after) == Approx(1.0).epsilon(1e-2));
  // clip_grad_norm_: the norm stays on the device, the factor is applied there; below
  // max_norm nothing is written
  const Tensor n2 = optim::clip_grad_norm_(gpu_p, 0.5);
  REQUIRE(n2.device() == Device::cuda());
  REQUIRE(n2.dim() == 0);
  REQUIRE(n2.item<double>() == Approx(1.0).epsilon(1e-2));
  const std::vector<double> before = tgt::values(gpu_p[2].grad());
  REQUIRE(optim::clip_grad_norm_(gpu_p, 10.0).item<double>() == Approx(0.5).epsilon(1e-2));
  REQUIRE(tgt::values(gpu_p[2].grad()) == before);
}

TEST_CASE("parameter groups: their own weight decay and learning-rate factor", "[optim]") {
  Tensor w = tgt::rand64({3, 4}, 60).requires_grad_(), b = tgt::rand64({4}, 61).requires_grad_();
  Tensor g = tgt::rand64({5}, 62).requires_grad_();
  const optim::AdamWOptions o{.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.2};
  std::vector<optim::ParamGroup> groups = optim::decay_groups({w, b}, 0.3);
  REQUIRE(groups.size() == 2);
  REQUIRE(groups[0].params.size() == 1);  // w: two dims
  REQUIRE(groups[0].weight_decay == 0.3);
  REQUIRE(groups[1].weight_decay == 0.0);  // b: a bias
  groups.push_back({.params = {g}, .lr_scale = 0.5});  // the optimizer's decay, half the lr
  optim::AdamW opt(groups, o);
  REQUIRE(opt.num_groups() == 3);
  REQUIRE(opt.params().size() == 3);
  std::vector<double> rw = tgt::values(w), rb = tgt::values(b), rg = tgt::values(g);
  RefAdam aw, ab, ag;
  optim::AdamWOptions ow = o, ob = o, og = o;
  ow.weight_decay = 0.3;
  ob.weight_decay = 0.0;
  og.lr = 0.025;
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    sum(w * w).backward();
    sum(b * 2.0).backward();
    sum(g * g * g).backward();
    std::vector<double> gw(rw.size()), gb(rb.size(), 2.0), gg(rg.size());
    for (std::size_t i = 0; i < rw.size(); ++i) gw[i] = 2 * rw[i];
    for (std::size_t i = 0; i < rg.size(); ++i) gg[i] = 3 * rg[i] * rg[i];
    opt.step();
    aw.step(rw, gw, ow);
    ab.step(rb, gb, ob);
    ag.step(rg, gg, og);
    REQUIRE(tgt::max_abs_diff(w, from_vector(rw, {3, 4})) < 1e-12);
    REQUIRE(tgt::max_abs_diff(b, from_vector(rb, {4})) < 1e-12);
    REQUIRE(tgt::max_abs_diff(g, from_vector(rg, {5})) < 1e-12);
  }
  // The state of grouped parameters round-trips under the same names.
  optim::AdamW other(optim::decay_groups({w, b}, 0.3), o);
  REQUIRE(other.state().size() == 1 + 2 * 2);

  // SGD: a group without decay and with a tenth of the lr.
  Tensor p = from_vector<double>({1.0, -2.0}, {2}).requires_grad_(), q = from_vector<double>({3.0}, {1}).requires_grad_();
  optim::SGD sgd({{.params = {p}}, {.params = {q}, .weight_decay = 0.0, .lr_scale = 0.1}}, 0.5, 0.0, 0.1);
  sum(p * p).backward();
  sum(q * q).backward();
  sgd.step();
  // p -= 0.5 (2p + 0.1 p); q -= 0.05 · 2q
  tgt::require_close(p, from_vector<double>({1.0 - 0.5 * 2.1, -2.0 + 0.5 * 4.2}, {2}), 1e-15, 1e-15);
  tgt::require_close(q, from_vector<double>({3.0 - 0.05 * 6.0}, {1}), 1e-15, 1e-15);

  // Bad groups, each named.
  tgt::require_throws<ValueError>([&] { optim::AdamW({{.params = {w}}, {.params = {b, w}}}, o); },
                                  {"parameter 2", "group 1", "parameter 0 again"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({{.params = {w}, .lr_scale = -1.0}}, o); },
                                  {"group 0", "lr_scale -1"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({{.params = {w}, .weight_decay = -0.1}}, o); },
                                  {"group 0", "weight_decay -0.1"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({w, w}, o); }, {"parameter 1", "parameter 0 again"});
  // Not a leaf requiring grad: each of the three ways says which, the copy names the cure.
  tgt::require_throws<ValueError>([&] { optim::AdamW({w, Tensor()}, o); }, {"parameter 1", "undefined"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({zeros({2})}, o); }, {"parameter 0", "does not require grad"});
  tgt::require_throws<ValueError>([&] { optim::AdamW({mul(w, 2.0).requires_grad_()}, o); },
                                  {"parameter 0", "not a leaf", "detach()"});
}

TEST_CASE("parameter groups on CUDA match the CPU", "[optim][cuda]") {
  TG_REQUIRE_CUDA();
  const optim::AdamWOptions o{.lr = 0.01, .weight_decay = 0.1};
  Tensor wc = rand_seeded({64, 32}, 70).requires_grad_(), bc = rand_seeded({32}, 71).requires_grad_();
  Tensor wg = to_device(wc.detach(), Device::cuda()).requires_grad_();
  Tensor bg = to_device(bc.detach(), Device::cuda()).requires_grad_();
  optim::AdamW cpu(optim::decay_groups({wc, bc}, 0.5), o), gpu(optim::decay_groups({wg, bg}, 0.5), o);
  for (int s = 0; s < 3; ++s) {
    cpu.zero_grad();
    gpu.zero_grad();
    sum(wc * wc).backward();
    sum(bc * bc * bc).backward();
    sum(wg * wg).backward();
    sum(bg * bg * bg).backward();
    cpu.step();
    gpu.step();
  }
  tgt::require_close(to_device(wg, Device::cpu()), wc, 1e-5, 1e-6);
  tgt::require_close(to_device(bg, Device::cpu()), bc, 1e-5, 1e-6);
}

TEST_CASE("AdamW master weights keep updates smaller than a bf16 step", "[optim]") {
  // Updates of ~1e-4 on weights near 1, where bf16 steps by 2^-7: lost without master
  // weights, accumulated with them exactly as an f32 run accumulates them.
  const TensorOptions bf{.dtype = DType::bf16};
  Tensor plain = ones({8}, bf).requires_grad_(), mastered = ones({8}, bf).requires_grad_();
  Tensor reference = ones({8}).requires_grad_();  // f32, the same gradients
  const optim::AdamWOptions o{.lr = 1e-4, .weight_decay = 0.0};
  optim::AdamW a(std::vector<Tensor>{plain}, o), b({mastered}, {.lr = 1e-4, .weight_decay = 0.0, .master_weights = true}),
      r({reference}, o);
  for (int s = 0; s < 50; ++s) {
    for (auto* opt : {&a, &b, &r}) opt->zero_grad();
    for (Tensor* t : {&plain, &mastered, &reference}) sum(*t * 1.0).backward();
    a.step();
    b.step();
    r.step();
  }
  REQUIRE(tgt::max_abs_diff(plain, ones({8}, bf)) == 0.0);  // every update rounded away
  // The master copy is the f32 run; the parameter its rounding (~0.995 -> 0.99609375).
  const auto st = b.state();
  const auto master = std::find_if(st.begin(), st.end(), [](const auto& e) { return e.first == "master.0"; });
  REQUIRE(master != st.end());
  tgt::require_close(master->second, reference, 0.0, 0.0);
  tgt::require_close(mastered, to_dtype(reference, DType::bf16), 0.0, 0.0);
  REQUIRE(tgt::values(mastered)[0] == 0.99609375);

  // f32 parameters have no master copy; the state round-trips the masters, and a state
  // without them starts them from the parameters.
  Tensor f = ones({3}).requires_grad_();
  optim::AdamW mixed({f, mastered}, {.master_weights = true});
  REQUIRE(mixed.state().size() == 1 + 2 * 2 + 1);
  optim::AdamW restored({mastered}, {.lr = 1e-4, .weight_decay = 0.0, .master_weights = true});
  restored.load_state(st);
  REQUIRE(restored.state().back().first == "master.0");
  tgt::require_close(restored.state().back().second, reference, 0.0, 0.0);
  auto without = st;
  without.pop_back();  // "master.0" comes last
  restored.load_state(without);
  tgt::require_close(restored.state().back().second, to_dtype(mastered, DType::f32), 0.0, 0.0);

  // A value written into the parameter outside the optimizer: sync_master_weights keeps it.
  {
    NoGradGuard ng;
    copy_bytes(mastered, full({8}, 0.5, bf));
  }
  b.sync_master_weights();
  b.zero_grad();
  sum(mastered * 1.0).backward();
  b.step();
  REQUIRE(std::abs(tgt::values(mastered)[0] - 0.5) < 1e-2);
}

TEST_CASE("AdamW master weights on CUDA match the CPU", "[optim][cuda]") {
  TG_REQUIRE_CUDA();
  const TensorOptions bf{.dtype = DType::bf16};
  Tensor c = rand_seeded({4099}, 5, bf).requires_grad_(), g = to_device(c.detach(), Device::cuda()).requires_grad_();
  const optim::AdamWOptions o{.lr = 1e-3, .weight_decay = 0.1, .master_weights = true};
  optim::AdamW oc({c}, o), og({g}, o);
  for (int s = 0; s < 5; ++s) {
    oc.zero_grad();
    og.zero_grad();
    sum(c * c).backward();
    sum(g * g).backward();
    oc.step();
    og.step();
  }
  tgt::require_close(to_device(og.state().back().second, Device::cpu()), oc.state().back().second, 1e-5, 1e-6);
  tgt::require_close(to_device(g, Device::cpu()), c, 1e-2, 1e-2);
}

}  // namespace test_optim
