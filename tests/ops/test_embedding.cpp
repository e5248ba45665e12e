// embedding: plain gather / scatter-add references, gradcheck with repeated indices, edge
// cases, bad inputs (index errors with position, value and V), and [cuda] parity.
#include <algorithm>
#include <cmath>
#include <vector>

#include "util.h"

namespace test_embedding {

using namespace tg;

namespace {

const std::vector<DType> kEmbDtypes = {DType::f64, DType::f32, DType::bf16, DType::f16};

Tensor make_indices(const std::vector<std::int64_t>& v, const Shape& s, DType dt, Device dev = Device::cpu()) {
  return from_vector(v, s).to(dt).to(dev);
}

std::vector<double> gather_reference(const std::vector<double>& w, const std::vector<std::int64_t>& idx,
                                     std::int64_t D) {
  std::vector<double> out;
  for (std::int64_t i : idx)
    for (std::int64_t c = 0; c < D; ++c) out.push_back(w[static_cast<std::size_t>(i * D + c)]);
  return out;
}

std::vector<double> scatter_reference(const std::vector<double>& g, const std::vector<std::int64_t>& idx,
                                      std::int64_t V, std::int64_t D) {
  std::vector<double> dw(static_cast<std::size_t>(V * D), 0.0);
  for (std::size_t i = 0; i < idx.size(); ++i)
    for (std::int64_t c = 0; c < D; ++c)
      dw[static_cast<std::size_t>(idx[i] * D + c)] += g[i * static_cast<std::size_t>(D) + static_cast<std::size_t>(c)];
  return dw;
}

// n indices uniform in [0, V).
std::vector<std::int64_t> random_indices(std::int64_t n, std::int64_t V, std::uint64_t seed) {
  std::vector<std::int64_t> r;
  for (double u : rand_seeded({n}, seed, {.dtype = DType::f64}, 0.0, static_cast<double>(V)).to_vector<double>())
    r.push_back(std::min<std::int64_t>(V - 1, static_cast<std::int64_t>(u)));
  return r;
}

}  // namespace

TEST_CASE("embedding gathers rows and scatter-adds gradients like a plain reference", "[ops][embedding]") {
  std::uint64_t seed = 20;
  const std::int64_t V = 11, D = 6;
  const std::vector<std::int64_t> idx = {3, 0, 10, 3, 3, 7};  // repeats: 3 three times
  for (DType wdt : kEmbDtypes) {
    for (DType idt : {DType::i32, DType::i64}) {
      for (const Shape& s : std::vector<Shape>{{6}, {2, 3}, {3, 1, 2}}) {
        INFO(wdt << " indices " << idt << " " << s);
        Tensor w = rand_seeded({V, D}, ++seed, {.dtype = wdt}, -1, 1).requires_grad_();
        Tensor ind = make_indices(idx, s, idt);
        Tensor y = embedding(w, ind);
        std::vector<std::int64_t> out_dims = s.dims();
        out_dims.push_back(D);
        REQUIRE(y.shape() == Shape(out_dims));
        REQUIRE(y.dtype() == wdt);
        // A gather is exact.
        tgt::require_close(y, from_vector(gather_reference(tgt::values(w), idx, D), Shape(out_dims)), 0, 0);
        Tensor g = rand_seeded(Shape(out_dims), ++seed, {.dtype = wdt}, -1, 1);
        y.backward(g);
        REQUIRE(w.grad().shape() == Shape{V, D});
        REQUIRE(w.grad().dtype() == wdt);
        const double t = wdt == DType::f64 ? 1e-14 : wdt == DType::f32 ? 1e-6 : wdt == DType::bf16 ? 8e-3 : 1e-3;
        tgt::require_close(w.grad(), from_vector(scatter_reference(tgt::values(g), idx, V, D), {V, D}), t, t);
      }
    }
  }
}

TEST_CASE("embedding gradcheck with repeated indices", "[ops][embedding]") {
  Tensor w = tgt::rand64({5, 3}, 1).requires_grad_();
  Tensor ind = make_indices({4, 1, 1, 4, 0, 4, 2, 2}, {2, 4}, DType::i64);
  auto res = autograd::gradcheck([&](const std::vector<Tensor>& in) { return embedding(in[0], ind); }, {w});
  INFO(res.report);
  REQUIRE(res.ok);
  // Composed with another op on the output.
  auto res2 = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return mul(embedding(in[0], ind), embedding(in[0], ind)); }, {w});
  INFO(res2.report);
  REQUIRE(res2.ok);
}

TEST_CASE("embedding edge cases", "[ops][embedding]") {
  Tensor w = tgt::rand64({4, 3}, 2).requires_grad_();
  SECTION("empty indices give an empty result and a zero gradient") {
    Tensor y = embedding(w, zeros({0}, {.dtype = DType::i64}));
    REQUIRE(y.shape() == Shape{0, 3});
    sum(y).backward();
    tgt::require_close(w.grad(), zeros({4, 3}, {.dtype = DType::f64}), 0, 0);
    REQUIRE(embedding(w, zeros({2, 0}, {.dtype = DType::i32})).shape() == Shape{2, 0, 3});
  }
  SECTION("a 0-d index selects one row") {
    Tensor y = embedding(w, from_vector<std::int64_t>({2}, Shape{}));
    REQUIRE(y.shape() == Shape{3});
    auto wv = tgt::values(w), yv = tgt::values(y);
    for (std::size_t c = 0; c < 3; ++c) REQUIRE(yv[c] == wv[6 + c]);
  }
  SECTION("one row, unused rows get zero gradient") {
    Tensor w1 = tgt::rand64({1, 5}, 3).requires_grad_();
    Tensor y = embedding(w1, zeros({4}, {.dtype = DType::i64}));
    REQUIRE(y.shape() == Shape{4, 5});
    sum(y).backward();
    tgt::require_close(w1.grad(), full({1, 5}, 4.0, {.dtype = DType::f64}), 0, 0);
    Tensor y2 = embedding(w, from_vector<std::int64_t>({1}, {1}));
    sum(y2).backward();
    auto gv = tgt::values(w.grad());
    for (std::size_t i = 0; i < gv.size(); ++i) REQUIRE(gv[i] == (i / 3 == 1 ? 1.0 : 0.0));
  }
  SECTION("no gradient is recorded when weight does not require grad") {
    Tensor y = embedding(w.detach(), from_vector<std::int64_t>({0, 1}, {2}));
    REQUIRE_FALSE(y.requires_grad());
  }
}

TEST_CASE("embedding rejects bad inputs", "[ops][embedding]") {
  Tensor w = zeros({5, 3});
  tgt::require_throws<ValueError>([&] { (void)embedding(w, make_indices({0, 1, 2, 3, 4, 5}, {2, 3}, DType::i64)); },
                                  {"embedding", "indices[1, 2]", "5", "V = 5"});
  tgt::require_throws<ValueError>([&] { (void)embedding(w, make_indices({0, -1}, {2}, DType::i32)); },
                                  {"embedding", "indices[1]", "-1", "V = 5"});
  tgt::require_throws<ValueError>([&] { (void)embedding(zeros({0, 3}), make_indices({0}, {1}, DType::i64)); },
                                  {"embedding", "indices[0]", "V = 0"});
  tgt::require_throws<DTypeError>([&] { (void)embedding(w, zeros({2})); }, {"embedding", "indices", "i32 or i64", "f32"});
  tgt::require_throws<DTypeError>([&] { (void)embedding(zeros({5, 3}, {.dtype = DType::i64}), make_indices({0}, {1}, DType::i64)); },
                                  {"embedding", "weight", "floating", "i64"});
  tgt::require_throws<ShapeError>([&] { (void)embedding(zeros({5}), make_indices({0}, {1}, DType::i64)); },
                                  {"embedding", "weight", "2-d", "[5]"});
  tgt::require_throws<ValueError>([&] { (void)embedding(w, Tensor()); }, {"embedding", "indices", "undefined"});
}

TEST_CASE("embedding on CUDA matches the CPU, forward and backward", "[ops][embedding][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  std::uint64_t seed = 900;
  struct Case {
    std::int64_t V, D, n;
  };
  // D multiple of the vector width and not; few rows hit many times (atomics contend);
  // many rows.
  const std::vector<Case> cases = {{10, 8, 37}, {7, 13, 1000}, {3, 64, 5000}, {1000, 768, 2048}, {50000, 33, 777}, {1, 1, 9}};
  for (DType wdt : kEmbDtypes) {
    for (DType idt : {DType::i32, DType::i64}) {
      for (const Case& c : cases) {
        INFO(wdt << " " << idt << " V " << c.V << " D " << c.D << " n " << c.n);
        const auto idx = random_indices(c.n, c.V, ++seed);
        Tensor wh = rand_seeded({c.V, c.D}, ++seed, {.dtype = wdt}, -1, 1);
        Tensor wa = wh.detach().requires_grad_(), wb = wh.to(gpu).detach().requires_grad_();
        Tensor ih = make_indices(idx, {c.n}, idt), id = make_indices(idx, {c.n}, idt, gpu);
        Tensor ya = embedding(wa, ih), yb = embedding(wb, id);
        REQUIRE(yb.device() == gpu);
        tgt::require_close(yb.to(Device::cpu()), ya, 0, 0);
        Tensor g = rand_seeded({c.n, c.D}, ++seed, {.dtype = wdt}, -1, 1);
        ya.backward(g);
        yb.backward(g.to(gpu));
        // Sums of up to n / V rows in a different order (f32 accumulation both sides).
        const double rows_per = static_cast<double>(c.n) / static_cast<double>(c.V) + 1;
        const double t = wdt == DType::f64 ? 1e-12 : wdt == DType::f32 ? 1e-5 : wdt == DType::bf16 ? 1e-2 : 2e-3;
        tgt::require_close(wb.grad().to(Device::cpu()), wa.grad(), t, t + 1e-6 * rows_per);
      }
    }
  }
  // Index errors: checked on the GPU, raised at the next synchronisation (the first bad
  // index named), or by the call with sync checks on; the kernels read zeros meanwhile.
  Tensor w = zeros({4, 2}, {.device = gpu});
  for (DType it : {DType::i64, DType::i32}) {
    INFO("indices " << it);
    {
      tgt::SyncChecksGuard mode(false);
      Tensor out;
      REQUIRE_NOTHROW(out = embedding(w, make_indices({0, 4, 9, 1}, {2, 2}, it, gpu)));
      tgt::require_throws<ValueError>([&] { (void)out.to(Device::cpu()); },
                                      {"embedding", "indices[0, 1]", "= 4", "V = 4", "after the op returned"});
      REQUIRE_NOTHROW(synchronize(gpu));
      tgt::require_throws<ValueError>(tgt::synced([&] { (void)embedding(w, make_indices({-2}, {1}, it, gpu)); }),
                                      {"embedding", "indices[0]", "-2"});
    }
    tgt::SyncChecksGuard mode(true);
    tgt::require_throws<ValueError>([&] { (void)embedding(w, make_indices({0, 4}, {2}, it, gpu)); },
                                    {"embedding", "indices[1]", "4", "V = 4"});
    REQUIRE_NOTHROW(embedding(w, make_indices({3, 0}, {2}, it, gpu)));
  }
  tgt::require_throws<DeviceError>([&] { (void)embedding(w, make_indices({0}, {1}, DType::i64)); },
                                   {"embedding", "same device", "cuda:0", "cpu"});
  REQUIRE(embedding(w, zeros({0}, {.dtype = DType::i64, .device = gpu})).shape() == Shape{0, 2});
}

}  // namespace test_embedding
