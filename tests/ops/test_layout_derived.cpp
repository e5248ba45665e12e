// Tests of the derived layout builders (ops/layout/derived.h): matmul_layout,
// adapted_layout and distribution_layout against brute-force references; bad inputs;
// CUDA against the CPU for the content-dependent ones.
#include <cstdint>
#include <random>
#include <vector>

#include "util.h"

namespace test_layout_derived {

using namespace tg;

namespace {

BlockSparseTensor rand_idx(const Layout& l, std::int64_t hi, std::uint64_t seed, DType dt) {
  const std::int64_t bs = l.block_size();
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(l.n_blocks() * bs * bs));
  for (auto& x : v) x = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi));
  return BlockSparseTensor(from_vector(v, {l.n_blocks(), bs, bs}).to(dt), l);
}

Layout reference_distribution(const BlockSparseTensor& idx, int dim, const Shape& t, std::int64_t bs) {
  const Layout& l = idx.layout();
  const std::int64_t M = l.rows(), N = l.cols(), tMb = t[1] / bs, tNb = t[2] / bs;
  auto d = to_dense(BlockSparseTensor(idx.data().to(DType::i64), l)).to_vector<std::int64_t>();
  std::vector<bool> m(static_cast<std::size_t>(t[0] * tMb * tNb), false);
  for (std::int64_t b = 0; b < l.batch(); ++b)
    for (std::int64_t r = 0; r < M; ++r)
      for (std::int64_t c = 0; c < N; ++c) {
        if (!l.active(b, r / l.block_size(), c / l.block_size())) continue;
        std::int64_t p[3] = {b, r, c};
        p[dim] = d[static_cast<std::size_t>((b * M + r) * N + c)];
        m[static_cast<std::size_t>((p[0] * tMb + p[1] / bs) * tNb + p[2] / bs)] = true;
      }
  return Layout(from_vector(m, {t[0], tMb, tNb}), bs);
}

}  // namespace

TEST_CASE("matmul_layout is the structural product", "[ops][layout]") {
  std::mt19937_64 rng(1);
  for (int percent : {0, 5, 30, 100}) {
    for (int trial = 0; trial < 4; ++trial) {
      const std::int64_t B = 1 + static_cast<std::int64_t>(rng() % 3), Mb = 1 + static_cast<std::int64_t>(rng() % 5),
                         Kb = 1 + static_cast<std::int64_t>(rng() % 5), Nb = 1 + static_cast<std::int64_t>(rng() % 5);
      Layout lx = tgt::rand_mask_layout(B, Mb, Kb, 16, percent, rng()), ly = tgt::rand_mask_layout(B, Kb, Nb, 16, percent, rng());
      Layout lo = matmul_layout(lx, ly);
      REQUIRE(lo.block_size() == 16);
      REQUIRE(lo.batch() == B);
      REQUIRE(lo.block_rows() == Mb);
      REQUIRE(lo.block_cols() == Nb);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < Mb; ++i)
          for (std::int64_t j = 0; j < Nb; ++j) {
            bool want = false;
            for (std::int64_t k = 0; k < Kb; ++k) want = want || (lx.active(b, i, k) && ly.active(b, k, j));
            REQUIRE(lo.active(b, i, j) == want);
          }
    }
  }
  // one block each
  Layout one_x = tgt::rand_mask_layout(1, 1, 1, 2, 100, 1);
  REQUIRE(matmul_layout(one_x, one_x).n_blocks() == 1);
}

TEST_CASE("distribution_layout marks every written target block", "[ops][layout]") {
  std::mt19937_64 rng(2);
  for (std::int64_t bs : {1, 2, 16, 32}) {
    for (int percent : {0, 30, 100}) {
      for (int d : {0, 1, 2}) {
        const std::int64_t B = 1 + static_cast<std::int64_t>(rng() % 3), Mb = 1 + static_cast<std::int64_t>(rng() % 3),
                           Nb = 1 + static_cast<std::int64_t>(rng() % 3);
        Layout l = tgt::rand_mask_layout(B, Mb, Nb, bs, percent, rng());
        Shape t{B + 1, (Mb + 1) * bs, (Nb + 2) * bs};
        const std::int64_t ext = t[d];
        for (DType it : {DType::i32, DType::i64}) {
          // sparse indices (only a few distinct values) so that not every block is hit
          BlockSparseTensor idx = rand_idx(l, std::min<std::int64_t>(ext, 3), rng(), it);
          INFO("bs " << bs << " percent " << percent << " dim " << d);
          REQUIRE(distribution_layout(idx, d, t, bs) == reference_distribution(idx, d, t, bs));
          BlockSparseTensor idx2 = rand_idx(l, ext, rng(), it);
          REQUIRE(distribution_layout(idx2, d - 3, t, bs) == reference_distribution(idx2, d, t, bs));
        }
      }
    }
  }
}

TEST_CASE("adapted_layout of content", "[ops][layout]") {
  // two source blocks of 4: one with a non-zero in its top-left element, one all zero
  Layout l = tgt::rand_mask_layout(1, 2, 1, 4, 100, 1);
  std::vector<double> v(32, 0.0);
  v[0] = 1.0;
  BlockSparseTensor x(from_vector(v, {2, 4, 4}), l);
  Layout a2 = adapted_layout(x, 2);  // all 4 sub-blocks of the first source block (it overlaps them)
  REQUIRE(a2.batch() == 1);
  REQUIRE(a2.block_rows() == 4);
  REQUIRE(a2.block_cols() == 2);
  REQUIRE(a2.n_blocks() == 4);
  for (std::int64_t r = 0; r < 2; ++r)
    for (std::int64_t c = 0; c < 2; ++c) REQUIRE(a2.active(0, r, c));
  Layout a16 = adapted_layout(x, 16);  // padded to [1, 16, 16]
  REQUIRE(a16.block_rows() == 1);
  REQUIRE(a16.block_cols() == 1);
  REQUIRE(a16.n_blocks() == 1);
  BlockSparseTensor z(zeros({2, 4, 4}), l);
  REQUIRE(adapted_layout(z, 8).n_blocks() == 0);
}

TEST_CASE("derived layouts bad inputs", "[ops][layout]") {
  Layout a = tgt::rand_mask_layout(2, 3, 4, 16, 50, 1), b = tgt::rand_mask_layout(2, 5, 2, 16, 50, 2);
  tgt::require_throws<ShapeError>([&] { matmul_layout(a, b); }, {"matmul_layout", "4 block-columns", "5 block-rows"});
  tgt::require_throws<ShapeError>([&] { matmul_layout(a, tgt::rand_mask_layout(3, 4, 2, 16, 50, 3)); },
                                  {"matmul_layout", "batch", "2", "3"});
  tgt::require_throws<LayoutError>([&] { matmul_layout(a, tgt::rand_mask_layout(2, 4, 2, 32, 50, 3)); },
                                   {"matmul_layout", "block size", "16", "32"});
  tgt::require_throws<LayoutError>([&] { matmul_layout(Layout(), a); }, {"matmul_layout", "defined"});
  BlockSparseTensor x(zeros({a.n_blocks(), 16, 16}), a);
  tgt::require_throws<LayoutError>([&] { adapted_layout(x, 0); }, {"adapted_layout", "bs_to", "0"});
  Layout li = tgt::rand_mask_layout(1, 2, 2, 2, 100, 4);
  BlockSparseTensor idx = rand_idx(li, 4, 5, DType::i64);
  tgt::require_throws<ValueError>([&] { distribution_layout(idx, 2, {1, 4, 2}, 2); },
                                  {"distribution_layout", "[0, 2)", "dim 2"});
  tgt::require_throws<ShapeError>([&] { distribution_layout(idx, 2, {1, 2, 8}, 2); },
                                  {"distribution_layout", "dim 1", "4", "2"});
  tgt::require_throws<LayoutError>([&] { distribution_layout(idx, 2, {1, 4, 6}, 4); },
                                   {"distribution_layout", "divisible", "4"});
  tgt::require_throws<DTypeError>(
      [&] { distribution_layout(BlockSparseTensor(idx.data().to(DType::f32), li), 2, {1, 4, 4}, 2); },
      {"distribution_layout", "i32 or i64", "f32"});
  tgt::require_throws<ValueError>([&] { distribution_layout(idx, 5, {1, 4, 4}, 2); }, {"distribution_layout", "dim", "5"});
  tgt::require_throws<ShapeError>([&] { distribution_layout(idx, 2, {4, 4}, 2); }, {"distribution_layout", "target_shape"});
}

TEST_CASE("derived layouts CUDA match CPU", "[ops][layout][cuda]") {
  TG_REQUIRE_CUDA();
  std::mt19937_64 rng(9);
  for (std::int64_t bs : {1, 2, 16, 64}) {
    Layout l = tgt::rand_mask_layout(2, 3, 2, bs, 60, rng());
    for (int d : {0, 1, 2}) {
      Shape t{3, 4 * bs, 3 * bs};
      for (DType it : {DType::i32, DType::i64}) {
        BlockSparseTensor idx = rand_idx(l, t[d], rng(), it);
        BlockSparseTensor idxg(idx.data().to(Device::cuda()), l);
        REQUIRE(distribution_layout(idxg, d, t, bs) == distribution_layout(idx, d, t, bs));
        Tensor over = full(idx.data().shape(), static_cast<double>(t[d]), {.dtype = it, .device = Device::cuda()});
        tgt::require_throws<ValueError>([&] { distribution_layout(BlockSparseTensor(over, l), d, t, bs); },
                                        {"distribution_layout", "got values in"});
      }
    }
    std::vector<double> v(static_cast<std::size_t>(l.n_blocks() * bs * bs), 0.0);
    for (std::size_t i = 0; i < v.size(); i += 7 * static_cast<std::size_t>(bs) + 3) v[i] = 1.0;
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      BlockSparseTensor x(from_vector(v, {l.n_blocks(), bs, bs}).to(dt), l);
      BlockSparseTensor xg(x.data().to(Device::cuda()), l);
      for (std::int64_t to : {1, 8, 32, 128}) REQUIRE(adapted_layout(xg, to) == adapted_layout(x, to));
    }
  }
}

}  // namespace test_layout_derived
