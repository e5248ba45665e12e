// Tests of adapt_layout (ops/sparse_adapt): against a dense f64 reference (x expanded with
// to_dense, padded or cropped to the target extent, masked by the target layout), over
// block sizes up and down, given and derived target layouts, padding of non-divisible
// extents; gradcheck; bad inputs; CUDA against the CPU.
#include <cstdint>
#include <random>
#include <vector>

#include "util.h"

namespace test_sparse_adapt {

using namespace tg;

namespace {

// Random blocks, with every third block all zero (so that "holding a non-zero" matters).
BlockSparseTensor rand_bst(const Layout& l, std::uint64_t seed) {
  const std::int64_t bs = l.block_size();
  std::vector<double> v = tgt::rand64({l.n_blocks(), bs, bs}, seed).to_vector<double>();
  for (std::int64_t k = 0; k < l.n_blocks(); k += 3)
    for (std::int64_t e = 0; e < bs * bs; ++e) v[static_cast<std::size_t>(k * bs * bs + e)] = 0.0;
  return BlockSparseTensor(from_vector(v, {l.n_blocks(), bs, bs}), l);
}

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// x's dense values on the grid [B, M2, N2] (0 outside x's extent), masked by `target`.
std::vector<double> reference(const BlockSparseTensor& x, const Layout& target) {
  const std::int64_t B = x.layout().batch(), M = x.layout().rows(), N = x.layout().cols();
  const std::int64_t M2 = target.rows(), N2 = target.cols(), bs = target.block_size();
  auto d = to_dense(x).to_vector<double>();
  std::vector<double> out(static_cast<std::size_t>(B * M2 * N2), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M2; ++i)
      for (std::int64_t j = 0; j < N2; ++j)
        if (i < M && j < N && target.active(b, i / bs, j / bs))
          out[static_cast<std::size_t>((b * M2 + i) * N2 + j)] = d[static_cast<std::size_t>((b * M + i) * N + j)];
  return out;
}

// Target block active iff it overlaps an active source block holding a non-zero.
Layout reference_layout(const BlockSparseTensor& x, std::int64_t bs_to) {
  const Layout& l = x.layout();
  const std::int64_t bs = l.block_size(), B = l.batch();
  const std::int64_t tMb = round_up(l.rows(), bs_to) / bs_to, tNb = round_up(l.cols(), bs_to) / bs_to;
  auto d = to_dense(x).to_vector<double>();
  std::vector<bool> m(static_cast<std::size_t>(B * tMb * tNb), false);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t R = 0; R < l.block_rows(); ++R)
      for (std::int64_t C = 0; C < l.block_cols(); ++C) {
        if (!l.active(b, R, C)) continue;
        bool nz = false;
        for (std::int64_t i = 0; i < bs; ++i)
          for (std::int64_t j = 0; j < bs; ++j) {
            const double v = d[static_cast<std::size_t>((b * l.rows() + R * bs + i) * l.cols() + C * bs + j)];
            nz = nz || v != 0.0 || std::isnan(v);
          }
        if (!nz) continue;
        for (std::int64_t tr = 0; tr < tMb; ++tr)
          for (std::int64_t tc = 0; tc < tNb; ++tc) {
            const bool rows_overlap = tr * bs_to < (R + 1) * bs && R * bs < (tr + 1) * bs_to;
            const bool cols_overlap = tc * bs_to < (C + 1) * bs && C * bs < (tc + 1) * bs_to;
            if (rows_overlap && cols_overlap) m[static_cast<std::size_t>((b * tMb + tr) * tNb + tc)] = true;
          }
      }
  return Layout(from_vector(m, {B, tMb, tNb}), bs_to);
}

void require_adapted(const BlockSparseTensor& got, const Layout& want, const std::vector<double>& ref) {
  INFO("got " << got.layout() << "\nexpected " << want);
  REQUIRE(got.layout() == want);
  tgt::require_close(to_dense(got), from_vector(ref, {want.batch(), want.rows(), want.cols()}), 0, 0);
}

}  // namespace

TEST_CASE("adapt_layout matches the dense reference", "[ops][sparse_adapt]") {
  std::mt19937_64 rng(3);
  std::uint64_t seed = 10;
  for (std::int64_t bs_from : {1, 2, 16, 32, 64}) {
    for (std::int64_t bs_to : {1, 2, 4, 16, 32, 64}) {
      for (int percent : {0, 30, 100, -1}) {
        // extents: a few source blocks; not always divisible by a larger bs_to
        const std::int64_t B = 1 + static_cast<std::int64_t>(rng() % 3);
        const std::int64_t cap = std::max<std::int64_t>(1, std::min<std::int64_t>(5, 128 / bs_from));
        const std::int64_t Mb = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(cap));
        const std::int64_t Nb = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(cap));
        Layout l = percent >= 0 ? tgt::rand_mask_layout(B, Mb, Nb, bs_from, percent, seed++) : Layout();
        if (percent < 0) {  // exactly one block
          std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb), false);
          m[rng() % m.size()] = true;
          l = Layout(from_vector(m, {B, Mb, Nb}), bs_from);
        }
        BlockSparseTensor x = rand_bst(l, seed++);
        INFO("bs " << bs_from << " -> " << bs_to << ", " << l);
        // natural target layout
        Layout want = reference_layout(x, bs_to);
        BlockSparseTensor a = adapt_layout(x, bs_to);
        require_adapted(a, want, reference(x, want));
        REQUIRE(adapted_layout(x, bs_to) == want);
        // a given target layout (drops values outside it, zeros where x has nothing)
        Layout given = tgt::rand_mask_layout(B, want.block_rows(), want.block_cols(), bs_to, 50, seed++);
        BlockSparseTensor g = adapt_layout(x, bs_to, given);
        require_adapted(g, given, reference(x, given));
        // and back: cropping a padded extent returns x's values where both layouts hold them
        BlockSparseTensor back = adapt_layout(g, bs_from, l);
        require_adapted(back, l, reference(g, l));
      }
    }
  }
}

TEST_CASE("adapt_layout pads non-divisible extents", "[ops][sparse_adapt]") {
  // [1, 48, 16] at 16 -> 32: the extent becomes [1, 64, 32]
  Layout l = full_layout(1, 3, 1, 16);
  BlockSparseTensor x(tgt::rand64({3, 16, 16}, 5, 0.5, 1.0), l);
  BlockSparseTensor a = adapt_layout(x, 32);
  REQUIRE(a.shape() == Shape{1, 64, 32});
  REQUIRE(a.layout().n_blocks() == 2);
  auto d = to_dense(a).to_vector<double>();
  auto xd = to_dense(x).to_vector<double>();
  for (std::int64_t i = 0; i < 64; ++i)
    for (std::int64_t j = 0; j < 32; ++j) {
      const double want = (i < 48 && j < 16) ? xd[static_cast<std::size_t>(i * 16 + j)] : 0.0;
      REQUIRE(d[static_cast<std::size_t>(i * 32 + j)] == want);
    }
  // gradients reach only the original extent
  Tensor xd2 = x.data().detach().requires_grad_();
  BlockSparseTensor y = adapt_layout(BlockSparseTensor(xd2, l), 32);
  y.data().backward(ones_like(y.data()));
  REQUIRE(xd2.grad().shape() == x.data().shape());
  REQUIRE(tgt::max_abs_diff(xd2.grad(), ones_like(x.data())) == 0.0);
  // NaN counts as non-zero, an all-zero block as nothing
  std::vector<double> v(3 * 256, 0.0);
  v[256 + 17] = NAN;
  BlockSparseTensor z(from_vector(v, {3, 16, 16}), l);
  Layout zl = adapted_layout(z, 8);
  REQUIRE(zl.n_blocks() == 4);
  for (std::int64_t r = 2; r < 4; ++r)
    for (std::int64_t c = 0; c < 2; ++c) REQUIRE(zl.active(0, r, c));
}

TEST_CASE("adapt_layout gradcheck", "[ops][sparse_adapt][gradcheck]") {
  for (auto [bs_from, bs_to, Mb, Nb] : {std::array<std::int64_t, 4>{2, 4, 3, 1}, std::array<std::int64_t, 4>{4, 2, 1, 2},
                                        std::array<std::int64_t, 4>{2, 2, 2, 2}, std::array<std::int64_t, 4>{1, 4, 3, 2}}) {
    Layout l = tgt::rand_mask_layout(2, Mb, Nb, bs_from, 70, static_cast<std::uint64_t>(bs_from * 10 + bs_to));
    if (l.n_blocks() == 0) l = full_layout(2, Mb, Nb, bs_from);
    Tensor xd = tgt::rand64({l.n_blocks(), bs_from, bs_from}, 7).requires_grad_();
    const std::int64_t tMb = round_up(Mb * bs_from, bs_to) / bs_to, tNb = round_up(Nb * bs_from, bs_to) / bs_to;
    Layout lt = tgt::rand_mask_layout(2, tMb, tNb, bs_to, 70, 8);
    INFO("bs " << bs_from << " -> " << bs_to);
    auto r = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return adapt_layout(BlockSparseTensor(in[0], l), bs_to, lt).data(); }, {xd});
    INFO(r.report);
    REQUIRE(r.ok);
    auto r2 = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return adapt_layout(BlockSparseTensor(in[0], l), bs_to).data(); }, {xd});
    INFO(r2.report);
    REQUIRE(r2.ok);
  }
}

TEST_CASE("adapt_layout bad inputs", "[ops][sparse_adapt]") {
  Layout l = full_layout(2, 3, 2, 4);
  BlockSparseTensor x(zeros({12, 4, 4}), l);
  tgt::require_throws<LayoutError>([&] { adapt_layout(x, 3); }, {"adapt_layout", "bs_to", "power of two", "3"});
  tgt::require_throws<LayoutError>([&] { adapt_layout(x, 8, full_layout(2, 2, 1, 16)); },
                                   {"adapt_layout", "layout_to", "block size 16", "8"});
  tgt::require_throws<ShapeError>([&] { adapt_layout(x, 8, full_layout(1, 2, 1, 8)); },
                                  {"adapt_layout", "batch", "1", "2"});
  tgt::require_throws<ShapeError>([&] { adapt_layout(x, 8, full_layout(2, 3, 1, 8)); },
                                  {"adapt_layout", "M = 24", "M = 12", "16"});
  tgt::require_throws<ShapeError>([&] { adapt_layout(x, 2, full_layout(2, 6, 5, 2)); },
                                  {"adapt_layout", "N = 10", "N = 8"});
  tgt::require_throws<ValueError>([&] { adapt_layout(BlockSparseTensor(), 2); }, {"adapt_layout", "x", "undefined"});
  // cropping is accepted only for an extent that rounds up to x's
  REQUIRE(adapt_layout(x, 2, full_layout(2, 6, 3, 2)).shape() == Shape{2, 12, 6});
}

TEST_CASE("adapt_layout CUDA matches CPU", "[ops][sparse_adapt][cuda]") {
  TG_REQUIRE_CUDA();
  std::uint64_t seed = 50;
  for (std::int64_t bs_from : {1, 2, 16, 32, 64}) {
    for (std::int64_t bs_to : {1, 4, 16, 64, 128}) {
      Layout l = tgt::rand_mask_layout(2, 3, 2, bs_from, 60, seed++);
      BlockSparseTensor x64 = rand_bst(l, seed++);
      for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
        INFO("bs " << bs_from << " -> " << bs_to << " " << dtype_name(dt));
        Tensor xc = x64.data().to(dt).detach().requires_grad_();
        Tensor xg = xc.to(Device::cuda()).detach().requires_grad_();
        BlockSparseTensor ac = adapt_layout(BlockSparseTensor(xc, l), bs_to);
        BlockSparseTensor ag = adapt_layout(BlockSparseTensor(xg, l), bs_to);
        REQUIRE(ag.layout() == ac.layout());
        tgt::require_close(ag.data(), ac.data(), 0, 0);
        Tensor g = rand_seeded(ac.data().shape(), 51, {.dtype = dt});
        ac.data().backward(g);
        ag.data().backward(g.to(Device::cuda()));
        tgt::require_close(xg.grad(), xc.grad(), 0, 0);
        Layout given = tgt::rand_mask_layout(2, ac.layout().block_rows(), ac.layout().block_cols(), bs_to, 50, seed++);
        {
          NoGradGuard ng;
          tgt::require_close(adapt_layout(BlockSparseTensor(xg, l), bs_to, given).data(),
                             adapt_layout(BlockSparseTensor(xc, l), bs_to, given).data(), 0, 0);
        }
        // the given layout's backward (the gradient moved back to x's layout), on new leaves
        INFO("given layout " << given);
        Tensor xc2 = x64.data().to(dt).detach().requires_grad_();
        Tensor xg2 = xc2.to(Device::cuda()).detach().requires_grad_();
        BlockSparseTensor gc = adapt_layout(BlockSparseTensor(xc2, l), bs_to, given);
        BlockSparseTensor gg = adapt_layout(BlockSparseTensor(xg2, l), bs_to, given);
        REQUIRE(gg.layout() == given);
        Tensor g2 = rand_seeded(gc.data().shape(), 52, {.dtype = dt});
        gc.data().backward(g2);
        gg.data().backward(g2.to(Device::cuda()));
        REQUIRE(xg2.grad().device().is_cuda());
        tgt::require_close(xg2.grad(), xc2.grad(), 0, 0);
      }
    }
  }
}

}  // namespace test_sparse_adapt
