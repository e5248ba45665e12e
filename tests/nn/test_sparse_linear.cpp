// Tests of nn::BlockSparseLinear (a linear layer with a block-sparse weight) and of
// magnitude_layout: forward and gradients against f64 loops over the masked weight,
// padding of row counts that are not whole blocks, initialisation bounds, pruning a dense
// layer, checkpoints restoring the saved layout, printing, bad inputs, CUDA against the CPU.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <vector>

#include "util.h"

namespace test_sparse_linear {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// W [out, in] of a layer as f64 host values, zero outside the layout's blocks.
std::vector<double> dense_weight(const nn::BlockSparseLinear& m) { return tgt::values(to_dense(m.weight_sparse())); }

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("tilegrad_test_" + name)).string();
}

using tgt::kF64;

}  // namespace

TEST_CASE("BlockSparseLinear: forward and gradients match f64 loops over the masked weight", "[nn][sparse_linear]") {
  // Row counts that are whole blocks and that are not (padded inside), empty block-rows
  // (output = bias), empty block-columns (inputs that never matter), an empty layout.
  struct Case {
    Layout layout;
    Shape x_shape;
  };
  const std::int64_t bs = 4;
  Layout holed =
      tgt::layout_where(1, 3, 4, bs, [](auto, auto r, auto c) { return r != 1 && c != 2 && (r + c) % 3 != 0; });
  std::vector<Case> cases = {{random_layout(1, 3, 5, bs, 0.5, 7), {2, 6, 20}},
                             {random_layout(1, 4, 2, bs, 0.6, 8), {3, 5, 8}},  // 15 rows: padded to 16
                             {holed, {7, 16}},
                             {full_layout(1, 2, 3, bs), {1, 1, 12}},
                             {random_layout(1, 2, 2, bs, 0.0, 9), {5, 8}}};
  std::uint64_t seed = 100;
  for (const Case& c : cases) {
    for (bool with_bias : {true, false}) {
      INFO("layout " << c.layout << " x " << c.x_shape << " bias " << with_bias);
      nn::BlockSparseLinear m(c.layout, with_bias, kF64, ++seed);
      const std::int64_t in = m.in_features, out = m.out_features, R = c.x_shape.numel() / in;
      Tensor x = tgt::rand64(c.x_shape, ++seed).requires_grad_();
      Tensor y = m(x);
      Shape want = c.x_shape;
      want.dims().back() = out;
      REQUIRE(y.shape() == want);
      const std::vector<double> xv = tgt::values(x), wv = dense_weight(m);
      const std::vector<double> bv = with_bias ? tgt::values(m.bias) : std::vector<double>{};
      tgt::require_close(y, from_vector(tgt::affine(xv, R, in, wv, bv, out), want), 1e-12, 1e-12);

      // Gradients against loops: dx = g · W, dW = gᵀ · x on the layout's blocks, db = Σ g.
      Tensor g = tgt::rand64(want, ++seed);
      m.zero_grad();
      sum(y * g).backward();
      const std::vector<double> gv = tgt::values(g);
      std::vector<double> dx(at(R * in), 0.0), dw(at(out * in), 0.0), db(at(out), 0.0);
      for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t o = 0; o < out; ++o) {
          const double go = gv[at(r * out + o)];
          db[at(o)] += go;
          for (std::int64_t k = 0; k < in; ++k) {
            dx[at(r * in + k)] += go * wv[at(o * in + k)];
            if (c.layout.active(0, o / bs, k / bs)) dw[at(o * in + k)] += go * xv[at(r * in + k)];
          }
        }
      tgt::require_close(x.grad(), from_vector(dx, c.x_shape), 1e-12, 1e-12);
      if (c.layout.n_blocks() > 0) {
        tgt::require_close(to_dense(BlockSparseTensor(m.weight.grad(), c.layout)), from_vector(dw, {1, out, in}), 1e-12,
                           1e-12);
      }
      if (with_bias) tgt::require_close(m.bias.grad(), from_vector(db, {out}), 1e-12, 1e-12);
    }
  }
}

TEST_CASE("BlockSparseLinear gradcheck in x, weight and bias", "[nn][sparse_linear][gradcheck]") {
  for (std::int64_t bs : {1, 2, 4}) {
    Layout l = tgt::layout_where(1, 8 / bs, 12 / bs, bs, [](auto, auto r, auto c) { return (r * 5 + c) % 3 != 1; });
    nn::BlockSparseLinear m(l, true, kF64, 3);
    Tensor x = tgt::rand64({3, 12}, 11 + static_cast<std::uint64_t>(bs));  // 3 rows: padded below every bs > 1
    auto f = [&](const std::vector<Tensor>& in) {
      // The module's parameters are leaves; gradcheck perturbs its own inputs, so the
      // same product is written with them in place of the parameters.
      Tensor y = matmul(reshape(cat({reshape(in[0], {1, 3, 12}), zeros({1, (3 + bs - 1) / bs * bs - 3, 12}, kF64)}, 1),
                                {1, (3 + bs - 1) / bs * bs, 12}),
                        BlockSparseTensor(in[1], l), MatmulOptions{.transpose_y = true});
      return slice(y, 1, 0, 3) + in[2];
    };
    INFO("bs " << bs);
    // The module's forward equals that function on its parameters...
    tgt::require_close(m(x), reshape(f({x, m.weight, m.bias}), {3, 8}), 1e-13, 1e-13);
    // ...whose gradients are checked numerically.
    auto r = autograd::gradcheck(f, {x.detach().requires_grad_(), m.weight.detach().clone().requires_grad_(),
                                     m.bias.detach().clone().requires_grad_()});
    INFO(r.report);
    REQUIRE(r.ok);
  }
}

TEST_CASE("BlockSparseLinear: weights drawn within each block-row's fan-in bound, reproducibly",
          "[nn][sparse_linear]") {
  const std::int64_t bs = 8;
  // Row 0 has 4 active blocks (fan-in 32), row 1 one (fan-in 8), row 2 none.
  Layout l = tgt::layout_where(1, 3, 4, bs, [](auto, auto r, auto c) { return r == 0 || (r == 1 && c == 2); });
  nn::BlockSparseLinear m(l, true, {}, 5);
  REQUIRE(m.weight.shape() == Shape{5, bs, bs});
  REQUIRE(m.weight.dtype() == DType::f32);
  const std::vector<double> w = tgt::values(m.weight), b = tgt::values(m.bias);
  auto max_abs = [](auto first, auto last) {
    double v = 0;
    for (auto it = first; it != last; ++it) v = std::max(v, std::abs(*it));
    return v;
  };
  const double b32 = 1.0 / std::sqrt(32.0), b8 = 1.0 / std::sqrt(8.0);
  const double row0 = max_abs(w.begin(), w.begin() + 4 * bs * bs), row1 = max_abs(w.begin() + 4 * bs * bs, w.end());
  CHECK(row0 <= b32);
  CHECK(row0 > 0.9 * b32);  // 256 draws reach near the bound
  CHECK(row1 <= b8);
  CHECK(row1 > 0.8 * b8);  // 64 draws
  CHECK(max_abs(b.begin(), b.begin() + bs) <= b32);
  CHECK(max_abs(b.begin() + bs, b.begin() + 2 * bs) <= b8);
  CHECK(max_abs(b.begin() + 2 * bs, b.end()) <= 1.0 / std::sqrt(32.0));  // no blocks: 1/√in
  // Same seed, same values; another seed, others.
  nn::BlockSparseLinear same(l, true, {}, 5), other(l, true, {}, 6);
  REQUIRE(tgt::max_abs_diff(same.weight, m.weight) == 0.0);
  REQUIRE(tgt::max_abs_diff(other.weight, m.weight) > 0.0);
  // The dtype is a conversion of the same draws.
  nn::BlockSparseLinear half(l, true, {.dtype = DType::bf16}, 5);
  REQUIRE(half.weight.dtype() == DType::bf16);
  tgt::require_close(to_dtype(half.weight, DType::f32), m.weight, 1e-2, 1e-3);
}

TEST_CASE("BlockSparseLinear::from_dense keeps a dense layer's blocks (magnitude pruning)", "[nn][sparse_linear]") {
  nn::Linear dense(32, 16, true, kF64, 21);
  const std::int64_t bs = 8;
  Layout keep = magnitude_layout(reshape(dense.weight, {1, 16, 32}), bs, 0.5);
  REQUIRE(keep.n_blocks() == 4);
  auto sparse = nn::BlockSparseLinear::from_dense(dense, keep);
  REQUIRE(sparse->weight.dtype() == DType::f64);
  REQUIRE(sparse->layout() == keep);
  Tensor x = tgt::rand64({5, 32}, 22);
  // Equal to the dense layer with the pruned blocks zeroed.
  std::vector<double> w = tgt::values(dense.weight);
  for (std::int64_t o = 0; o < 16; ++o)
    for (std::int64_t k = 0; k < 32; ++k)
      if (!keep.active(0, o / bs, k / bs)) w[at(o * 32 + k)] = 0.0;
  tgt::require_close((*sparse)(x),
                     from_vector(tgt::affine(tgt::values(x), 5, 32, w, tgt::values(dense.bias), 16), {5, 16}), 1e-12,
                     1e-12);
  // A full layout gives the dense layer itself.
  auto all = nn::BlockSparseLinear::from_dense(dense, full_layout(1, 2, 4, bs));
  tgt::require_close((*all)(x), dense(x), 1e-12, 1e-12);
  // The copies are the module's own: training it leaves the dense layer alone.
  REQUIRE(sparse->weight.requires_grad());
  tgt::require_throws<ShapeError>([&] { nn::BlockSparseLinear::from_dense(dense, full_layout(1, 4, 2, bs)); },
                                  {"BlockSparseLinear::from_dense", "[16, 32]", "[32, 16]"});
}

TEST_CASE("magnitude_layout keeps the blocks with the largest norms", "[ops][layout]") {
  // Batch 2, 3 x 4 blocks of 2: block (b, r, c) filled with a value whose norm ranks it.
  const std::int64_t bs = 2, B = 2, Mb = 3, Nb = 4;
  std::vector<double> v(at(B * Mb * bs * Nb * bs));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < Mb * bs; ++i)
      for (std::int64_t j = 0; j < Nb * bs; ++j) {
        const std::int64_t blk = (i / bs) * Nb + j / bs;
        // batch 0 ranks blocks by index, batch 1 in reverse; one element of each block
        // carries the sign to check that norms, not sums, decide
        const double mag = b == 0 ? static_cast<double>(blk + 1) : static_cast<double>(Mb * Nb - blk);
        v[at((b * Mb * bs + i) * Nb * bs + j)] = (i + j) % 2 ? -mag : mag;
      }
  Tensor dense = from_vector(v, {B, Mb * bs, Nb * bs});
  for (double d : {0.0, 0.25, 0.5, 1.0}) {
    Layout l = magnitude_layout(dense, bs, d);
    const auto keep = static_cast<std::int64_t>(std::llround(d * Mb * Nb));
    INFO("density " << d << ": " << l);
    REQUIRE(l.n_blocks() == B * keep);
    for (std::int64_t r = 0; r < Mb; ++r)
      for (std::int64_t c = 0; c < Nb; ++c) {
        const std::int64_t blk = r * Nb + c;
        CHECK(l.active(0, r, c) == (blk >= Mb * Nb - keep));
        CHECK(l.active(1, r, c) == (blk < keep));
      }
  }
  // Ties go to the lower block index; a NaN block is kept first; works from bf16 and on
  // a non-square grid.
  Tensor ties = ones({1, 4, 8});
  Layout lt = magnitude_layout(ties, 2, 0.25);  // 2 of 8 blocks
  REQUIRE(lt.n_blocks() == 2);
  CHECK(lt.active(0, 0, 0));
  CHECK(lt.active(0, 0, 1));
  std::vector<float> w(32, 1.0f);
  w[31] = std::numeric_limits<float>::quiet_NaN();  // in block (1, 3)
  Layout ln = magnitude_layout(from_vector(w, {1, 4, 8}, {.dtype = DType::bf16}), 2, 0.125);
  REQUIRE(ln.n_blocks() == 1);
  CHECK(ln.active(0, 1, 3));
  // Bad inputs, each named.
  tgt::require_throws<ValueError>([&] { magnitude_layout(dense, bs, 1.5); }, {"magnitude_layout", "density", "1.5"});
  tgt::require_throws<ValueError>([&] { magnitude_layout(dense, bs, std::nan("")); }, {"magnitude_layout", "density"});
  tgt::require_throws<LayoutError>([&] { magnitude_layout(dense, 3, 0.5); }, {"magnitude_layout", "power of two", "3"});
  tgt::require_throws<LayoutError>([&] { magnitude_layout(dense, 4, 0.5); },
                                   {"magnitude_layout", "6", "divisible", "4"});
  tgt::require_throws<ShapeError>(
      [&] {
        magnitude_layout(zeros({4, 4}), 2, 0.5);
      },
      {"magnitude_layout", "3-d", "[4, 4]"});
  tgt::require_throws<DTypeError>(
      [&] {
        magnitude_layout(zeros({1, 4, 4}, {.dtype = DType::i32}), 2, 0.5);
      },
      {"magnitude_layout", "floating", "i32"});
}

TEST_CASE("BlockSparseLinear checkpoints restore the saved layout", "[nn][sparse_linear][checkpoint]") {
  const std::int64_t bs = 4;
  Layout saved_layout = random_layout(1, 4, 6, bs, 0.5, 31);
  nn::BlockSparseLinear a(saved_layout, true, {}, 1);
  const std::string path = temp_path("sparse_linear.safetensors");
  nn::save(a, path);

  // Another layout with the same block count: loading adopts the saved one.
  Layout other = tgt::layout_where(1, 4, 6, bs, [&](auto, auto r, auto c) {
    return r * 6 + c < saved_layout.n_blocks();  // the first n blocks in row-major order
  });
  REQUIRE(other.n_blocks() == saved_layout.n_blocks());
  REQUIRE_FALSE(other == saved_layout);
  const Tensor other_mask_before = clone(other.mask());
  nn::BlockSparseLinear b(other, true, {}, 2);
  nn::load(b, path);
  REQUIRE(b.layout() == saved_layout);
  Tensor x = rand_seeded({3, 24}, 4);
  tgt::require_close(b(x), a(x), 0.0, 0.0);
  // The layout object the module was built with is untouched (layouts are immutable).
  REQUIRE(tgt::max_abs_diff(to_dtype(other.mask(), DType::f32), to_dtype(other_mask_before, DType::f32)) == 0.0);
  REQUIRE(b.summary().find(std::to_string(saved_layout.n_blocks()) + " of 24 blocks") != std::string::npos);

  // Another block count fails on the weight's shape before anything is copied.
  nn::BlockSparseLinear c(full_layout(1, 4, 6, bs), true, {}, 3);
  const Tensor before = clone(c.weight);
  tgt::require_throws<ShapeError>([&] { nn::load(c, path); },
                                  {"weight", Shape{saved_layout.n_blocks(), bs, bs}.str(), "[24, 4, 4]"});
  REQUIRE(tgt::max_abs_diff(c.weight, before) == 0.0);
  REQUIRE(c.layout() == full_layout(1, 4, 6, bs));
  std::filesystem::remove(path);
}

TEST_CASE("BlockSparseLinear prints its configuration and rejects bad inputs", "[nn][sparse_linear]") {
  nn::BlockSparseLinear m(tgt::layout_where(1, 2, 4, 16, [](auto, auto r, auto c) { return r == c; }), false);
  const std::string s = m.summary();
  INFO(s);
  CHECK(s.find("BlockSparseLinear [in 64, out 32, block 16, 2 of 8 blocks (25%)] (512 params)") != std::string::npos);
  CHECK(s.find(".weight [2, 16, 16] f32") != std::string::npos);
  tgt::require_throws<ShapeError>([&] { m(zeros({3, 32})); }, {"BlockSparseLinear", "in_features = 64", "[3, 32]"});
  tgt::require_throws<DTypeError>(
      [&] {
        m(zeros({3, 64}, {.dtype = DType::f64}));
      },
      {"BlockSparseLinear", "f32", "f64"});
  tgt::require_throws<LayoutError>([&] { nn::BlockSparseLinear m2{full_layout(2, 2, 2, 4)}; },
                                   {"BlockSparseLinear", "batch 1", "batch 2"});
  tgt::require_throws<LayoutError>([&] { nn::BlockSparseLinear m2{Layout()}; }, {"BlockSparseLinear", "undefined"});
  // No rows at all: an empty output of the right shape.
  REQUIRE(m(zeros({0, 64})).shape() == Shape{0, 32});
}

TEST_CASE("BlockSparseLinear CUDA matches the CPU", "[nn][sparse_linear][cuda]") {
  TG_REQUIRE_CUDA();
  for (std::int64_t bs : {16, 32, 64, 128}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      Layout l = random_layout(1, 512 / bs, 256 / bs, bs, 0.4, 40 + static_cast<std::uint64_t>(bs));
      INFO("bs " << bs << " " << dt << " " << l.n_blocks() << " blocks");
      nn::BlockSparseLinear cpu(l, true, {.dtype = dt}, 9), gpu(l, true, {.dtype = dt, .device = Device::cuda()}, 9);
      Tensor x = rand_seeded({3, 50, 256}, 10, {.dtype = dt});  // 150 rows: padded
      Tensor xc = x.detach().requires_grad_(), xg = to_device(x, Device::cuda()).requires_grad_();
      Tensor yc = cpu(xc), yg = gpu(xg);
      const double tol = dt == DType::bf16 ? 3e-2 : 1e-4;
      tgt::require_close(to_device(yg, Device::cpu()), yc, tol, tol);
      Tensor g = rand_seeded(yc.shape(), 11, {.dtype = dt});
      sum(yc * g).backward();
      sum(yg * to_device(g, Device::cuda())).backward();
      tgt::require_close(to_device(xg.grad(), Device::cpu()), xc.grad(), tol, 5 * tol);
      tgt::require_close(to_device(gpu.weight.grad(), Device::cpu()), cpu.weight.grad(), tol, 5 * tol);
      tgt::require_close(to_device(gpu.bias.grad(), Device::cpu()), cpu.bias.grad(), tol, 5 * tol);
    }
  }
}

}  // namespace test_sparse_linear
