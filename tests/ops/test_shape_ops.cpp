// Tests of reshape / transpose / cat / slice / split_heads / merge_heads (ops/shape):
// index-mapping references for every dtype, edge cases, gradchecks, bad inputs, and CUDA
// against the CPU.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "util.h"

namespace test_shape_ops {

using namespace tg;

namespace {

const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::boolean};

// Random values representable in `dt` (integers for integer dtypes, a true/false mix for bool).
Tensor make(const Shape& s, DType dt, std::uint64_t seed) {
  if (dt == DType::boolean) return tgt::rand64(s, seed, -1.5, 1.5).to(DType::i32).to(DType::boolean);
  if (dt == DType::i32 || dt == DType::i64) return tgt::rand64(s, seed, -1000, 1000).to(dt);
  return tgt::rand64(s, seed).to(dt);
}

std::vector<std::int64_t> strides_of(const Shape& s) {
  std::vector<std::int64_t> st(static_cast<std::size_t>(s.ndim()), 1);
  for (int i = s.ndim() - 2; i >= 0; --i) st[i] = st[i + 1] * s.dims()[i + 1];
  return st;
}

// The multi-index of flat position `flat` in `s`.
std::vector<std::int64_t> unravel(std::int64_t flat, const Shape& s) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(s.ndim()));
  for (int i = s.ndim() - 1; i >= 0; --i) {
    idx[i] = flat % s.dims()[i];
    flat /= s.dims()[i];
  }
  return idx;
}

std::int64_t ravel(const std::vector<std::int64_t>& idx, const Shape& s) {
  auto st = strides_of(s);
  std::int64_t f = 0;
  for (std::size_t i = 0; i < idx.size(); ++i) f += idx[i] * st[i];
  return f;
}

// Exact equality of values and shape (data movement must not change a bit of any value we use).
void require_equal(const Tensor& got, const std::vector<double>& expected, const Shape& shape) {
  REQUIRE(got.shape() == shape);
  auto g = got.to_vector<double>();
  REQUIRE(g.size() == expected.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < g.size(); ++i) bad += g[i] != expected[i];
  INFO(bad << " of " << g.size() << " elements differ");
  REQUIRE(bad == 0);
}

std::vector<double> ref_transpose(const Tensor& x) {
  const Shape& s = x.shape();
  auto v = x.to_vector<double>();
  Shape os = s;
  std::swap(os.dims()[s.ndim() - 1], os.dims()[s.ndim() - 2]);
  std::vector<double> out(v.size());
  for (std::int64_t f = 0; f < x.numel(); ++f) {
    auto idx = unravel(f, s);
    std::swap(idx[idx.size() - 1], idx[idx.size() - 2]);
    out[static_cast<std::size_t>(ravel(idx, os))] = v[static_cast<std::size_t>(f)];
  }
  return out;
}

// Output element at multi-index idx comes from the input whose range along d holds idx[d].
std::vector<double> ref_cat(const std::vector<Tensor>& xs, int d, const Shape& out_shape) {
  std::vector<std::vector<double>> vs;
  for (const auto& x : xs) vs.push_back(x.to_vector<double>());
  std::vector<double> out(static_cast<std::size_t>(out_shape.numel()));
  for (std::int64_t f = 0; f < out_shape.numel(); ++f) {
    auto idx = unravel(f, out_shape);
    std::size_t i = 0;
    while (idx[d] >= xs[i].size(d)) idx[d] -= xs[i++].size(d);
    out[static_cast<std::size_t>(f)] = vs[i][static_cast<std::size_t>(ravel(idx, xs[i].shape()))];
  }
  return out;
}

std::vector<double> ref_slice(const Tensor& x, int d, std::int64_t lo, std::int64_t hi, Shape* out_shape) {
  Shape os = x.shape();
  os.dims()[d] = hi - lo;
  *out_shape = os;
  auto v = x.to_vector<double>();
  std::vector<double> out(static_cast<std::size_t>(os.numel()));
  for (std::int64_t f = 0; f < os.numel(); ++f) {
    auto idx = unravel(f, os);
    idx[d] += lo;
    out[static_cast<std::size_t>(f)] = v[static_cast<std::size_t>(ravel(idx, x.shape()))];
  }
  return out;
}

// split_heads by its definition: part p, row b·h + j, position s, feature e is x[b, s,
// col_p + j·dh + e] with col_p the parts' running column offset.
std::vector<std::vector<double>> ref_split_heads(const Tensor& x, const std::vector<std::int64_t>& heads,
                                                 std::int64_t dh) {
  const std::int64_t B = x.size(0), S = x.size(1), W = x.size(2);
  auto v = x.to_vector<double>();
  std::vector<std::vector<double>> out;
  std::int64_t col = 0;
  for (std::int64_t h : heads) {
    std::vector<double> o(static_cast<std::size_t>(B * h * S * dh));
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < h; ++j)
        for (std::int64_t s = 0; s < S; ++s)
          for (std::int64_t e = 0; e < dh; ++e)
            o[static_cast<std::size_t>(((b * h + j) * S + s) * dh + e)] =
                v[static_cast<std::size_t>((b * S + s) * W + col + j * dh + e)];
    out.push_back(std::move(o));
    col += h * dh;
  }
  return out;
}

}  // namespace

// ---- reshape ------------------------------------------------------------------------------

TEST_CASE("reshape: same values, shared storage, one -1 inferred, any dtype", "[ops][shape]") {
  for (DType dt : kAllDTypes) {
    INFO("dtype " << dt);
    Tensor x = make({2, 3, 4}, dt, 1);
    Tensor y = reshape(x, {4, -1});
    REQUIRE(y.shape() == Shape{4, 6});
    CHECK(y.dtype() == dt);
    CHECK(y.data_ptr() == x.data_ptr());
    require_equal(y, x.to_vector<double>(), {4, 6});
    CHECK(reshape(x, {-1}).shape() == Shape{24});
    CHECK(reshape(x, {2, 12}).shape() == Shape{2, 12});
    CHECK(reshape(x, {1, 24, 1}).shape() == Shape{1, 24, 1});
  }
  CHECK(reshape(make({1}, DType::f32, 2), Shape{}).shape() == Shape{});
  CHECK(reshape(make({}, DType::f32, 2), Shape{1, 1}).shape() == Shape{1, 1});
  CHECK(reshape(make({0, 3}, DType::f32, 2), {3, 0, 5}).shape() == Shape{3, 0, 5});
  CHECK(reshape(make({0, 3}, DType::f32, 2), {-1, 3}).shape() == Shape{0, 3});
}

TEST_CASE("reshape: gradcheck and bad inputs", "[ops][shape][gradcheck]") {
  Tensor x = tgt::rand64({2, 3, 2}, 3).requires_grad_(true);
  auto res = autograd::gradcheck([](const std::vector<Tensor>& in) { return reshape(in[0], {3, -1}); }, {x});
  INFO(res.report);
  REQUIRE(res);
  Tensor y = make({2, 3}, DType::f32, 4);
  tgt::require_throws<ShapeError>([&] { reshape(y, {4, 2}); }, {"reshape", "[4, 2]", "8", "[2, 3]", "6"});
  tgt::require_throws<ShapeError>([&] { reshape(y, {-1, -1}); }, {"reshape", "at most one", "-1"});
  tgt::require_throws<ShapeError>([&] { reshape(y, {-2, -3}); }, {"reshape", ">= 0"});
  tgt::require_throws<ShapeError>([&] { reshape(y, {4, -1}); }, {"reshape", "infer", "[4, -1]", "[2, 3]"});
  tgt::require_throws<ShapeError>([&] { reshape(make({0, 3}, DType::f32, 2), {0, -1}); }, {"reshape", "infer"});
  tgt::require_throws<ValueError>([&] { reshape(Tensor(), {1}); }, {"reshape", "x", "undefined"});
}

// ---- transpose ----------------------------------------------------------------------------

TEST_CASE("transpose: swaps the last two dims for every dtype and rank", "[ops][shape]") {
  for (DType dt : kAllDTypes) {
    for (const Shape& s : std::vector<Shape>{{1, 1}, {3, 5}, {37, 70}, {2, 33, 31}, {2, 3, 4, 5}, {1, 64, 1}}) {
      INFO("dtype " << dt << " shape " << s);
      Tensor x = make(s, dt, 5);
      Shape os = s;
      std::swap(os.dims()[s.ndim() - 1], os.dims()[s.ndim() - 2]);
      Tensor y = transpose(x);
      CHECK(y.dtype() == dt);
      require_equal(y, ref_transpose(x), os);
    }
  }
}

TEST_CASE("transpose: empty tensors, gradcheck, bad inputs", "[ops][shape][gradcheck]") {
  CHECK(transpose(make({0, 3}, DType::f32, 1)).shape() == Shape{3, 0});
  CHECK(transpose(make({2, 4, 0}, DType::bf16, 1)).shape() == Shape{2, 0, 4});
  CHECK(transpose(make({0, 4, 5}, DType::i64, 1)).shape() == Shape{0, 5, 4});
  for (const Shape& s : std::vector<Shape>{{3, 4}, {2, 3, 2}}) {
    Tensor x = tgt::rand64(s, 6).requires_grad_(true);
    auto res = autograd::gradcheck([](const std::vector<Tensor>& in) { return transpose(in[0]); }, {x});
    INFO(res.report);
    REQUIRE(res);
  }
  tgt::require_throws<ShapeError>([] { transpose(make({4}, DType::f32, 1)); }, {"transpose", "x", "2 dims", "[4]"});
  tgt::require_throws<ShapeError>([] { transpose(make({}, DType::f32, 1)); }, {"transpose", "x", "[]"});
  tgt::require_throws<ValueError>([] { transpose(Tensor()); }, {"transpose", "x", "undefined"});
}

// ---- cat ----------------------------------------------------------------------------------

TEST_CASE("cat: along every dim for every dtype, including empty pieces", "[ops][shape]") {
  for (DType dt : kAllDTypes) {
    for (int dim : {0, 1, 2, -1, -3}) {
      INFO("dtype " << dt << " dim " << dim);
      const int d = dim < 0 ? dim + 3 : dim;
      std::vector<Tensor> xs;
      const std::int64_t sizes[] = {2, 0, 3, 1};
      std::int64_t total = 0;
      for (std::size_t i = 0; i < 4; ++i) {
        Shape s{3, 4, 5};
        s.dims()[d] = sizes[i];
        total += sizes[i];
        xs.push_back(make(s, dt, 10 + i));
      }
      Shape os{3, 4, 5};
      os.dims()[d] = total;
      Tensor y = cat(xs, dim);
      CHECK(y.dtype() == dt);
      require_equal(y, ref_cat(xs, d, os), os);
    }
  }
  // One input: a copy, not an alias.
  Tensor x = make({2, 3}, DType::f32, 20);
  Tensor y = cat({x}, 1);
  CHECK(y.data_ptr() != x.data_ptr());
  require_equal(y, x.to_vector<double>(), {2, 3});
  // Odd byte widths (1-d, bf16 with odd extents) and all-empty inputs.
  std::vector<Tensor> odd = {make({3}, DType::bf16, 21), make({5}, DType::bf16, 22), make({1}, DType::bf16, 23)};
  require_equal(cat(odd, 0), ref_cat(odd, 0, {9}), {9});
  CHECK(cat({make({0, 2}, DType::f32, 1), make({0, 2}, DType::f32, 2)}, 0).shape() == Shape{0, 2});
  CHECK(cat({make({0, 2}, DType::f32, 1), make({0, 3}, DType::f32, 2)}, 1).shape() == Shape{0, 5});
}

TEST_CASE("cat: gradcheck, also with inputs that need no gradient", "[ops][shape][gradcheck]") {
  for (int dim : {0, 1, -1}) {
    INFO("dim " << dim);
    const int d = dim < 0 ? dim + 3 : dim;
    Shape sa{2, 3, 2}, sb{2, 3, 2}, sc{2, 3, 2};
    sa.dims()[d] = 1;
    sc.dims()[d] = 3;
    Tensor a = tgt::rand64(sa, 31).requires_grad_(true), b = tgt::rand64(sb, 32), c = tgt::rand64(sc, 33).requires_grad_(true);
    auto res = autograd::gradcheck([dim](const std::vector<Tensor>& in) { return cat(in, dim); }, {a, b, c});
    INFO(res.report);
    REQUIRE(res);
  }
  Tensor a = tgt::rand64({2, 2}, 34).requires_grad_(true), b = tgt::rand64({2, 3}, 35);
  Tensor y = cat({a, b}, 1);
  backward(y, tgt::rand64(y.shape(), 36));
  CHECK(a.grad().shape() == a.shape());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("cat: bad inputs", "[ops][shape]") {
  Tensor a = make({2, 3}, DType::f32, 1);
  tgt::require_throws<ValueError>([] { cat({}, 0); }, {"cat", "xs", "none"});
  tgt::require_throws<ValueError>([&] { cat({a, Tensor()}, 0); }, {"cat", "xs[1]", "undefined"});
  tgt::require_throws<ShapeError>([&] { cat({a, make({2, 4}, DType::f32, 2)}, 0); },
                                  {"cat", "xs[1]", "[2, 4]", "[2, 3]", "dim 1"});
  tgt::require_throws<ShapeError>([&] { cat({a, make({2, 3, 1}, DType::f32, 2)}, 0); },
                                  {"cat", "xs[1]", "3 dims", "2"});
  tgt::require_throws<ShapeError>([&] { cat({a, a}, 2); }, {"cat", "dim 2", "out of range"});
  tgt::require_throws<ShapeError>([&] { cat({a, a}, -3); }, {"cat", "dim -3", "out of range"});
  tgt::require_throws<ShapeError>([&] { cat({make({}, DType::f32, 1)}, 0); }, {"cat", "xs[0]", "0-d"});
  tgt::require_throws<DTypeError>([&] { cat({a, make({2, 3}, DType::f64, 2)}, 0); }, {"cat", "xs[0]", "xs[1]", "f32", "f64"});
  if (cuda_available()) {
    tgt::require_throws<DeviceError>([&] { cat({a, a.to(Device::cuda())}, 0); }, {"cat", "xs[1]", "cpu", "cuda"});
  }
}

// ---- slice --------------------------------------------------------------------------------

TEST_CASE("slice: Python-style clamping along every dim for every dtype", "[ops][shape]") {
  // (start, end) as given, and the [lo, hi) Python would take from an extent of 5.
  struct Range {
    std::int64_t start, end, lo, hi;
  };
  const std::vector<Range> ranges = {{1, 3, 1, 3},     {0, 5, 0, 5},    {-2, 100, 3, 5}, {-100, 2, 0, 2},
                                     {3, 1, 3, 3},     {0, 0, 0, 0},    {-1, -1, 4, 4},  {5, 9, 5, 5},
                                     {-3, -1, 2, 4},   {2, -100, 2, 2}, {4, 5, 4, 5},    {100, 200, 5, 5}};
  for (DType dt : kAllDTypes) {
    for (int dim : {0, 1, 2, -1}) {
      Shape s{4, 3, 6};
      const int d = dim < 0 ? dim + 3 : dim;
      s.dims()[d] = 5;
      Tensor x = make(s, dt, 40);
      for (const Range& r : ranges) {
        INFO("dtype " << dt << " dim " << dim << " start " << r.start << " end " << r.end);
        Shape os;
        auto expect = ref_slice(x, d, r.lo, r.hi, &os);
        Tensor y = slice(x, dim, r.start, r.end);
        CHECK(y.dtype() == dt);
        require_equal(y, expect, os);
      }
    }
  }
  Tensor e = make({0, 3}, DType::f32, 1);
  CHECK(slice(e, 0, 0, 5).shape() == Shape{0, 3});
  CHECK(slice(e, 1, 1, 2).shape() == Shape{0, 1});
}

TEST_CASE("slice: gradcheck (zero-padded scatter), and bad inputs", "[ops][shape][gradcheck]") {
  for (int dim : {0, 1, 2}) {
    Tensor x = tgt::rand64({3, 4, 5}, 41).requires_grad_(true);
    auto res = autograd::gradcheck([dim](const std::vector<Tensor>& in) { return slice(in[0], dim, 1, -1); }, {x});
    INFO("dim " << dim << ": " << res.report);
    REQUIRE(res);
  }
  // The gradient is zero outside the slice.
  Tensor x = tgt::rand64({2, 6}, 42).requires_grad_(true);
  Tensor y = slice(x, 1, 2, 4);
  backward(y, from_vector<double>({1, 2, 3, 4}, {2, 2}));
  require_equal(x.grad(), {0, 0, 1, 2, 0, 0, 0, 0, 3, 4, 0, 0}, {2, 6});
  // An empty slice gives a zero gradient of x's shape.
  Tensor z = tgt::rand64({2, 3}, 43).requires_grad_(true);
  Tensor w = cat({slice(z, 0, 1, 1), slice(z, 0, 0, 1)}, 0);
  backward(w, tgt::rand64(w.shape(), 44));
  REQUIRE(z.grad().shape() == z.shape());

  tgt::require_throws<ShapeError>([] { slice(make({}, DType::f32, 1), 0, 0, 1); }, {"slice", "x", "0-d"});
  tgt::require_throws<ShapeError>([] { slice(make({2, 3}, DType::f32, 1), 2, 0, 1); }, {"slice", "dim 2", "out of range"});
  tgt::require_throws<ValueError>([] { slice(Tensor(), 0, 0, 1); }, {"slice", "x", "undefined"});
}

TEST_CASE("split_heads / merge_heads: the head layout of attention, every dtype, inverse of each other", "[ops][shape]") {
  for (DType dt : kAllDTypes) {
    // {2, 300, 64}: thousands of head rows, which the CPU copy spreads over threads
    for (auto [B, S, dh] :
         std::vector<std::array<std::int64_t, 3>>{{2, 5, 4}, {1, 1, 1}, {3, 7, 3}, {2, 0, 2}, {2, 300, 64}}) {
      for (const std::vector<std::int64_t>& heads : std::vector<std::vector<std::int64_t>>{{3}, {4, 2, 2}, {1, 1}}) {
        std::int64_t total = 0;
        for (std::int64_t h : heads) total += h;
        INFO(dt << " B " << B << " S " << S << " dh " << dh << " parts " << heads.size());
        Tensor x = make({B, S, total * dh}, dt, 110);
        std::vector<Tensor> parts = split_heads(x, heads, dh);
        const auto want = ref_split_heads(x, heads, dh);
        REQUIRE(parts.size() == heads.size());
        for (std::size_t p = 0; p < heads.size(); ++p) {
          require_equal(parts[p], want[p], Shape{B * heads[p], S, dh});
          // merge_heads undoes one part exactly
          Tensor back = merge_heads(parts[p], B);
          REQUIRE(back.shape() == (Shape{B, S, heads[p] * dh}));
          std::int64_t col = 0;
          for (std::size_t q = 0; q < p; ++q) col += heads[q] * dh;
          Shape ss;
          require_equal(back, ref_slice(x, 2, col, col + heads[p] * dh, &ss), ss);
        }
      }
    }
  }
}

TEST_CASE("split_heads / merge_heads: gradcheck, a part without gradient, bad inputs", "[ops][shape][gradcheck]") {
  Tensor x = tgt::rand64({2, 3, 12}, 111).requires_grad_(true);
  auto res = autograd::gradcheck(
      [](const std::vector<Tensor>& in) {
        auto p = split_heads(in[0], {2, 1, 1}, 3);
        return cat({reshape(p[0], {-1}), reshape(p[1], {-1}), reshape(mul(p[2], p[2]), {-1})}, 0);
      },
      {x});
  INFO(res.report);
  REQUIRE(res);
  Tensor y = tgt::rand64({6, 3, 4}, 112).requires_grad_(true);
  auto res2 = autograd::gradcheck([](const std::vector<Tensor>& in) { return merge_heads(in[0], 2); }, {y});
  INFO(res2.report);
  REQUIRE(res2);
  {  // only part 1 reaches the loss: the gradient of the other columns is exactly 0
    Tensor z = tgt::rand64({2, 3, 8}, 113).requires_grad_(true);
    auto p = split_heads(z, {1, 1}, 4);
    backward(sum(p[1]));
    auto g = z.grad().to_vector<double>();
    for (std::size_t i = 0; i < g.size(); ++i) {
      INFO("element " << i);
      CHECK(g[i] == ((i % 8) >= 4 ? 1.0 : 0.0));
    }
  }
  Tensor t = tgt::rand64({2, 3, 12}, 114);
  tgt::require_throws<ShapeError>([&] { split_heads(t, {2, 2}, 4); }, {"split_heads", "sum of heads", "16", "[2, 3, 12]"});
  tgt::require_throws<ShapeError>([&] { split_heads(t, {3, 0}, 4); }, {"split_heads", "heads[1]", "positive", "0"});
  tgt::require_throws<ShapeError>([&] { split_heads(t, {3}, 0); }, {"split_heads", "head_dim", "0"});
  tgt::require_throws<ShapeError>([&] { split_heads(reshape(t, {-1}), {3}, 4); }, {"split_heads", "3-d", "[72]"});
  tgt::require_throws<ValueError>([&] { split_heads(t, {}, 4); }, {"split_heads", "heads", "none"});
  tgt::require_throws<ValueError>([&] { split_heads(Tensor(), {1}, 4); }, {"split_heads", "x"});
  tgt::require_throws<ShapeError>([&] { merge_heads(t, 4); }, {"merge_heads", "batch", "divide", "2", "4"});
  tgt::require_throws<ShapeError>([&] { merge_heads(t, 0); }, {"merge_heads", "batch", "0"});
  tgt::require_throws<ShapeError>([&] { merge_heads(reshape(t, {6, 12}), 2); }, {"merge_heads", "3-d", "[6, 12]"});
}

// ---- CUDA ---------------------------------------------------------------------------------

TEST_CASE("shape ops [cuda]: forward results equal the CPU's for every dtype", "[ops][shape][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : kAllDTypes) {
    INFO("dtype " << dt);
    // transpose: tile-aligned, ragged, batched, tall/flat
    for (const Shape& s : std::vector<Shape>{{32, 64}, {37, 70}, {3, 129, 257}, {2, 2, 1, 300}, {1000, 3}, {5, 1}}) {
      INFO("transpose " << s);
      Tensor x = make(s, dt, 50);
      require_equal(transpose(x.to(gpu)), transpose(x).to_vector<double>(), transpose(x).shape());
    }
    // cat along each dim, with odd widths (unaligned word sizes) and an empty piece
    for (int dim : {0, 1, 2}) {
      INFO("cat dim " << dim);
      std::vector<Tensor> xs, gs;
      const std::int64_t sizes[] = {3, 0, 8, 1};
      for (std::size_t i = 0; i < 4; ++i) {
        Shape s{3, 5, 7};
        s.dims()[dim] = sizes[i];
        xs.push_back(make(s, dt, 60 + i));
        gs.push_back(xs.back().to(gpu));
      }
      Tensor ref = cat(xs, dim);
      require_equal(cat(gs, dim), ref.to_vector<double>(), ref.shape());
    }
    // slice: odd starts and lengths (unaligned), whole dim, empty
    for (int dim : {0, 1, 2}) {
      for (auto [lo, hi] : std::vector<std::pair<std::int64_t, std::int64_t>>{{1, 4}, {0, 100}, {-3, -1}, {2, 2}, {3, 7}}) {
        INFO("slice dim " << dim << " [" << lo << ", " << hi << ")");
        Tensor x = make({9, 7, 33}, dt, 70);
        Tensor ref = slice(x, dim, lo, hi);
        require_equal(slice(x.to(gpu), dim, lo, hi), ref.to_vector<double>(), ref.shape());
      }
    }
    // reshape shares storage on the GPU too
    Tensor g = make({4, 6}, dt, 80).to(gpu);
    CHECK(reshape(g, {-1, 8}).data_ptr() == g.data_ptr());
  }
}

TEST_CASE("shape ops [cuda]: large copies take the vectorised paths", "[ops][shape][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO("dtype " << dt);
    Tensor x = make({8, 512, 384}, dt, 90);
    Tensor t = transpose(x);
    require_equal(transpose(x.to(gpu)), t.to_vector<double>(), t.shape());
    Tensor s = slice(x, 2, 128, 256);
    require_equal(slice(x.to(gpu), 2, 128, 256), s.to_vector<double>(), s.shape());
    Tensor c = cat({x, s}, 2);
    require_equal(cat({x.to(gpu), s.to(gpu)}, 2), c.to_vector<double>(), c.shape());
  }
}

TEST_CASE("shape ops [cuda]: backward results equal the CPU's for floating dtypes", "[ops][shape][cuda]") {
  TG_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    INFO("dtype " << dt);
    // One graph using every op; the gradients are pure data movement and sums of at most two
    // terms, so CPU and GPU agree up to one rounding.
    auto run = [&](Device dev) {
      Tensor a = make({2, 5, 6}, dt, 100).to(dev).requires_grad_(true);
      Tensor b = make({2, 3, 6}, dt, 101).to(dev).requires_grad_(true);
      Tensor y = cat({transpose(slice(a, 1, 1, 4)), transpose(b)}, -1);  // [2, 6, 6]
      Tensor z = cat({reshape(y, {-1, 6}), slice(reshape(a, {10, 6}), 0, 2, 7)}, 0);
      Tensor g = make(z.shape(), dt, 102).to(dev);
      backward(z, g);
      return std::vector<Tensor>{z.detach().to(Device::cpu()), a.grad().to(Device::cpu()), b.grad().to(Device::cpu())};
    };
    auto cpu = run(Device::cpu()), gpu = run(Device::cuda());
    for (std::size_t i = 0; i < 3; ++i) {
      INFO("output " << i);
      tgt::require_close(gpu[i], cpu[i], 1e-2, 1e-6);
    }
  }
}

TEST_CASE("split_heads / merge_heads [cuda]: equal to the CPU, every word width, backward", "[ops][shape][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : kAllDTypes) {
    // dh·size 2, 3, ... bytes: every unit width from 1 to 16 bytes; the GPT's shape last
    for (auto [B, S, dh] : std::vector<std::array<std::int64_t, 3>>{{2, 5, 1}, {3, 7, 3}, {2, 9, 8}, {2, 33, 64}, {4, 256, 64}}) {
      INFO(dt << " B " << B << " S " << S << " dh " << dh);
      Tensor x = make({B, S, 8 * dh}, dt, 120);
      auto cpu = split_heads(x, {4, 2, 2}, dh);
      auto gpu_parts = split_heads(x.to(gpu), {4, 2, 2}, dh);
      for (std::size_t p = 0; p < 3; ++p) {
        require_equal(gpu_parts[p], cpu[p].to_vector<double>(), cpu[p].shape());
        Tensor m = merge_heads(cpu[p], B);
        require_equal(merge_heads(gpu_parts[p], B), m.to_vector<double>(), m.shape());
      }
    }
  }
  // an odd column offset: the second part starts 3 elements in (unaligned), 2-byte words
  Tensor x = make({2, 4, 9}, DType::bf16, 121);
  auto c = split_heads(x, {1, 2}, 3), g = split_heads(x.to(gpu), {1, 2}, 3);
  require_equal(g[1], c[1].to_vector<double>(), c[1].shape());
  for (DType dt : {DType::f32, DType::bf16}) {
    auto run = [&](Device dev) {
      Tensor a = make({2, 16, 96}, dt, 122).to(dev).requires_grad_(true);
      auto p = split_heads(a, {2, 1, 1}, 24);
      Tensor y = merge_heads(mul(p[0], p[0]), 2);
      backward(add(sum(y), sum(p[2])));
      return a.grad().to(Device::cpu());
    };
    tgt::require_close(run(gpu), run(Device::cpu()), 1e-2, 1e-6);
  }
}

}  // namespace test_shape_ops
