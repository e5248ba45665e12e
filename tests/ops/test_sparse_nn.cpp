#include <cmath>

#include "util.h"

namespace test_sparse_nn {

using namespace tg;

namespace {
// Row-striped layout: block-row (b, r) full iff rows[b * Mb + r].
Layout striped(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs, const std::vector<bool>& rows) {
  return tgt::layout_where(B, Mb, Nb, bs, [&](auto b, auto r, auto) { return rows[static_cast<std::size_t>(b * Mb + r)]; });
}
}  // namespace

TEST_CASE("block-sparse linear matches x Wᵀ + b on active rows", "[ops][sparse_nn]") {
  const std::int64_t B = 2, Mb = 3, Kb = 2, bs = 2, N = 4;
  Layout lx = tgt::rand_mask_layout(B, Mb, Kb, bs, 40, 3);  // any layout, empty rows included
  Tensor xd = tgt::rand64({B, Mb * bs, Kb * bs}, 1);
  BlockSparseTensor x = to_sparse(xd, lx);
  Tensor w = tgt::rand64({N, Kb * bs}, 2), b = tgt::rand64({N}, 3);
  BlockSparseTensor y = linear(x, w, b);
  REQUIRE(y.shape() == Shape{B, Mb * bs, N});
  REQUIRE(is_row_striped(y.layout()));
  auto xv = tgt::values(to_dense(x)), wv = tgt::values(w), bv = tgt::values(b), yv = tgt::values(to_dense(y, NAN));
  const std::int64_t M = Mb * bs, K = Kb * bs;
  for (std::int64_t bb = 0; bb < B; ++bb)
    for (std::int64_t i = 0; i < M; ++i) {
      bool row_active = false;
      for (std::int64_t c = 0; c < Kb; ++c) row_active = row_active || lx.active(bb, i / bs, c);
      for (std::int64_t n = 0; n < N; ++n) {
        double got = yv[static_cast<std::size_t>((bb * M + i) * N + n)];
        if (!row_active) {
          REQUIRE(std::isnan(got));  // not part of the output layout
          continue;
        }
        double ref = bv[static_cast<std::size_t>(n)];
        for (std::int64_t k = 0; k < K; ++k)
          ref += xv[static_cast<std::size_t>((bb * M + i) * K + k)] * wv[static_cast<std::size_t>(n * K + k)];
        REQUIRE(got == Approx(ref).epsilon(1e-12));
      }
    }
  auto res = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return linear(BlockSparseTensor(in[0], lx), in[1], in[2]).data(); },
      {x.data().detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
  tgt::require_throws<ShapeError>([&] { linear(x, tgt::rand64({N, 3}, 1)); }, {"linear", "K = 3", "K = 4"});
  tgt::require_throws<ShapeError>([&] { linear(x, tgt::rand64({3, K}, 1)); }, {"linear", "N = 3", "block size 2"});
}

TEST_CASE("block-sparse layer_norm normalises each logical row of a row-striped tensor", "[ops][sparse_nn]") {
  Layout l = striped(2, 3, 2, 4, {true, false, true, false, true, true});
  Tensor xd = tgt::rand64({2, 12, 8}, 5, -2.0, 3.0);
  BlockSparseTensor x = to_sparse(xd, l);
  Tensor g = tgt::rand64({8}, 6, 0.5, 1.5), bt = tgt::rand64({8}, 7);
  BlockSparseTensor y = layer_norm(x, g, bt, 1e-5);
  REQUIRE(y.layout() == l);
  tgt::require_close(to_dense(y), to_dense(to_sparse(layer_norm(xd, g, bt, 1e-5), l)), 1e-12, 1e-12);
  auto res = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return layer_norm(BlockSparseTensor(in[0], l), in[1], in[2]).data(); },
      {x.data().detach().requires_grad_(), g.detach().requires_grad_(), bt.detach().requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
  Layout partial = tgt::layout_where(1, 2, 2, 4, [](auto, auto r, auto c) { return r == 0 && c == 0; });
  tgt::require_throws<LayoutError>([&] { layer_norm(to_sparse(tgt::rand64({1, 8, 8}, 1), partial), Tensor(), Tensor()); },
                                   {"layer_norm", "row-striped"});
}

TEST_CASE("block-sparse dropout uses the dense mask of the block data", "[ops][sparse_nn]") {
  Layout l = tgt::rand_mask_layout(1, 4, 4, 8, 50, 9);
  BlockSparseTensor x = to_sparse(tgt::rand64({1, 32, 32}, 2), l);
  BlockSparseTensor y = dropout(x, 0.3, 11, 4);
  REQUIRE(y.layout() == l);
  tgt::require_close(y.data(), dropout(x.data(), 0.3, 11, 4), 0, 0);
}

TEST_CASE("nn modules accept block-sparse input", "[ops][sparse_nn][nn]") {
  Layout l = striped(1, 2, 2, 4, {true, false});
  BlockSparseTensor x = to_sparse(tgt::rand64({1, 8, 8}, 3), l);
  nn::Linear lin(8, 4, true, {.dtype = DType::f64}, 1);
  BlockSparseTensor y = lin(x);
  tgt::require_close(y.data(), linear(x, lin.weight, lin.bias).data(), 0, 0);
  nn::LayerNorm ln(8, 1e-5, {.dtype = DType::f64});
  tgt::require_close(ln(x).data(), layer_norm(x, ln.weight, ln.bias, 1e-5).data(), 0, 0);
  nn::Dropout drop(0.5, 3);
  drop.eval();
  REQUIRE(drop(x).data().is_same(x.data()));
  drop.train();
  REQUIRE(drop(x).layout() == l);
  sum(lin(ln(x)).data()).backward();
  REQUIRE(lin.weight.grad().defined());
}

}  // namespace test_sparse_nn
