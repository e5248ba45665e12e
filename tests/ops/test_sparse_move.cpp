// Tests of the block-sparse data-movement ops (ops/sparse_move): each op against a plain
// f64 dense reference on the CPU (the block-sparse operands expanded with to_dense, the
// dense definition applied with loops, the result masked by the expected output layout),
// over batches 1-3, block sizes 1 to 64 and empty / one-block / sparse / full / holed
// layouts; gradchecks; bad inputs; CUDA against the CPU.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "layout_cases.h"
#include "ops/sparse_move/gather_path.h"
#include "util.h"

namespace test_sparse_move {

using namespace tg;

namespace {

using tgt::Density;
using tgt::kDensities;
using tgt::make_layout;

BlockSparseTensor rand_bst(const Layout& l, std::uint64_t seed, DType dt = DType::f64) {
  const std::int64_t bs = l.block_size();
  return BlockSparseTensor(tgt::rand64({l.n_blocks(), bs, bs}, seed).to(dt), l);
}

struct Case {
  std::int64_t B, Mb, Nb, bs;
  Density d;
  std::uint64_t seed;
};

// Batches 1-3, block sizes 1, 2, 16, 32, 64 (small grids for 64), every density kind.
std::vector<Case> cases() {
  std::vector<Case> out;
  std::mt19937_64 rng(42);
  std::uint64_t seed = 100;
  for (std::int64_t bs : {1, 2, 16, 32, 64}) {
    const std::uint64_t maxb = bs >= 64 ? 2 : 4;
    for (Density d : kDensities) {
      out.push_back({1 + static_cast<std::int64_t>(rng() % 3), 1 + static_cast<std::int64_t>(rng() % maxb),
                     1 + static_cast<std::int64_t>(rng() % maxb), bs, d, seed++});
    }
  }
  return out;
}

// Dense [B, M, N] values with absent blocks 0.
std::vector<double> dense(const BlockSparseTensor& x) { return to_dense(x).to_vector<double>(); }

// Flat index into [B, M, N].
struct Grid {
  std::int64_t B, M, N;
  explicit Grid(const Layout& l) : B(l.batch()), M(l.rows()), N(l.cols()) {}
  Grid(std::int64_t b, std::int64_t m, std::int64_t n) : B(b), M(m), N(n) {}
  std::size_t at(std::int64_t b, std::int64_t r, std::int64_t c) const {
    return static_cast<std::size_t>((b * M + r) * N + c);
  }
  std::size_t size() const { return static_cast<std::size_t>(B * M * N); }
};

// REQUIREs that `got` has layout `want` and, on it, the values of `ref` (dense [B,M,N]).
void require_result(const BlockSparseTensor& got, const Layout& want, const std::vector<double>& ref,
                    double tol = 0.0) {
  INFO("got " << got.layout() << "\nexpected " << want);
  REQUIRE(got.layout() == want);
  REQUIRE(got.data().shape() == Shape{want.n_blocks(), want.block_size(), want.block_size()});
  Grid g(want);
  REQUIRE(ref.size() == g.size());
  std::vector<double> masked(ref.size(), 0.0);
  const std::int64_t bs = want.block_size();
  for (std::int64_t b = 0; b < g.B; ++b)
    for (std::int64_t r = 0; r < g.M; ++r)
      for (std::int64_t c = 0; c < g.N; ++c)
        if (want.active(b, r / bs, c / bs)) masked[g.at(b, r, c)] = ref[g.at(b, r, c)];
  tgt::require_close(to_dense(got).to(DType::f64), from_vector(masked, {g.B, g.M, g.N}), tol, tol);
}

// A block layout from a predicate on block coordinates.
template <typename F>
Layout layout_where(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs, F&& f) {
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t r = 0; r < Mb; ++r)
      for (std::int64_t c = 0; c < Nb; ++c) m[static_cast<std::size_t>((b * Mb + r) * Nb + c)] = f(b, r, c);
  return Layout(from_vector(m, {B, Mb, Nb}), bs);
}

// Random indices in [0, hi) on idx_layout (i64, or i32 when asked).
BlockSparseTensor rand_idx(const Layout& l, std::int64_t hi, std::uint64_t seed, DType dt = DType::i64) {
  const std::int64_t bs = l.block_size();
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(l.n_blocks() * bs * bs));
  for (auto& x : v) x = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi));
  return BlockSparseTensor(from_vector(v, {l.n_blocks(), bs, bs}).to(dt), l);
}

// Indices that never collide along `dim`: each line along dim of the idx extent gets
// distinct values from a random permutation of [0, hi) (hi >= the idx extent along dim).
BlockSparseTensor perm_idx(const Layout& l, int dim, std::int64_t hi, std::uint64_t seed) {
  Grid g(l);
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> dv(g.size());
  const std::int64_t ext[3] = {g.B, g.M, g.N};
  std::vector<std::int64_t> perm(static_cast<std::size_t>(hi));
  for (std::int64_t b = 0; b < (dim == 0 ? 1 : g.B); ++b)
    for (std::int64_t r = 0; r < (dim == 1 ? 1 : g.M); ++r)
      for (std::int64_t c = 0; c < (dim == 2 ? 1 : g.N); ++c) {
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        for (std::int64_t t = 0; t < ext[dim]; ++t) {
          std::int64_t bb = b, rr = r, cc = c;
          (dim == 0 ? bb : dim == 1 ? rr : cc) = t;
          dv[g.at(bb, rr, cc)] = perm[static_cast<std::size_t>(t)];
        }
      }
  return to_sparse(from_vector(dv, {g.B, g.M, g.N}), l);
}

std::vector<std::int64_t> dense_idx(const BlockSparseTensor& idx) {
  return to_dense(BlockSparseTensor(idx.data().to(DType::i64), idx.layout())).to_vector<std::int64_t>();
}

void redirect(int dim, std::int64_t v, std::int64_t& b, std::int64_t& r, std::int64_t& c) {
  (dim == 0 ? b : dim == 1 ? r : c) = v;
}

std::vector<double> ref_gather(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx) {
  Grid gs(src.layout()), gi(idx.layout());
  auto sd = dense(src);
  auto id = dense_idx(idx);
  std::vector<double> out(gi.size(), 0.0);
  for (std::int64_t b = 0; b < gi.B; ++b)
    for (std::int64_t r = 0; r < gi.M; ++r)
      for (std::int64_t c = 0; c < gi.N; ++c) {
        std::int64_t sb = b, sr = r, sc = c;
        redirect(dim, id[gi.at(b, r, c)], sb, sr, sc);
        out[gi.at(b, r, c)] = sd[gs.at(sb, sr, sc)];
      }
  return out;
}

// sum: +=, none: = (the caller avoids collisions). Only active src elements are written,
// only into active target blocks.
std::vector<double> ref_scatter(const BlockSparseTensor& src, int dim, const BlockSparseTensor& idx,
                                const Layout& target, bool sum) {
  Grid gs(src.layout()), gt(target);
  auto sd = dense(src);
  auto id = dense_idx(idx);
  const std::int64_t bs = src.block_size();
  std::vector<double> out(gt.size(), 0.0);
  for (std::int64_t b = 0; b < gs.B; ++b)
    for (std::int64_t r = 0; r < gs.M; ++r)
      for (std::int64_t c = 0; c < gs.N; ++c) {
        if (!src.layout().active(b, r / bs, c / bs)) continue;
        std::int64_t tb = b, tr = r, tc = c;
        redirect(dim, id[gs.at(b, r, c)], tb, tr, tc);
        if (!target.active(tb, tr / bs, tc / bs)) continue;
        if (sum) out[gt.at(tb, tr, tc)] += sd[gs.at(b, r, c)];
        else out[gt.at(tb, tr, tc)] = sd[gs.at(b, r, c)];
      }
  return out;
}

}  // namespace

// ---- transpose -----------------------------------------------------------------------------

TEST_CASE("sparse transpose matches the dense reference", "[ops][sparse_move]") {
  for (const Case& c : cases()) {
    INFO("B=" << c.B << " Mb=" << c.Mb << " Nb=" << c.Nb << " bs=" << c.bs << " density kind " << int(c.d));
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor x = rand_bst(l, c.seed);
    auto xd = dense(x);
    Grid g(l), gt(c.B, l.cols(), l.rows());
    std::vector<double> ref(gt.size());
    for (std::int64_t b = 0; b < g.B; ++b)
      for (std::int64_t i = 0; i < g.M; ++i)
        for (std::int64_t j = 0; j < g.N; ++j) ref[gt.at(b, j, i)] = xd[g.at(b, i, j)];
    BlockSparseTensor t = transpose(x);
    require_result(t, l.transposed(), ref);
    require_result(transpose(t), l, xd);  // the same layout object comes back from the memo or not: equal values
  }
}

TEST_CASE("sparse transpose of other dtypes moves bits", "[ops][sparse_move]") {
  Layout l = make_layout(2, 3, 2, 2, Density::Holes, 5);
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64}) {
    BlockSparseTensor x = rand_bst(l, 6);
    BlockSparseTensor xt(x.data().to(dt), l);
    tgt::require_close(transpose(xt).data().to(DType::f64), transpose(BlockSparseTensor(xt.data().to(DType::f64), l)).data(), 0, 0);
  }
}

// ---- gather --------------------------------------------------------------------------------

TEST_CASE("sparse gather matches the dense reference along every dim", "[ops][sparse_move]") {
  std::mt19937_64 rng(7);
  for (const Case& c : cases()) {
    Layout ls = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor src = rand_bst(ls, c.seed);
    for (int dim : {0, 1, 2, -1}) {
      const int d = dim < 0 ? dim + 3 : dim;
      // idx grid: at most src's along the other dims, anything along dim.
      std::int64_t g[3] = {c.B, c.Mb, c.Nb};
      for (int k = 0; k < 3; ++k) {
        const std::int64_t cap = k == d ? 4 : g[k];
        g[k] = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(cap));
      }
      if (c.bs >= 64) g[d] = std::min<std::int64_t>(g[d], 2);
      Layout li = make_layout(g[0], g[1], g[2], c.bs, static_cast<Density>(rng() % 5), c.seed + 1);
      const std::int64_t ext = d == 0 ? c.B : d == 1 ? ls.rows() : ls.cols();
      for (DType it : {DType::i64, DType::i32}) {
        INFO("case bs=" << c.bs << " density kind " << int(c.d) << " dim " << dim << " idx " << dtype_name(it));
        BlockSparseTensor idx = rand_idx(li, ext, c.seed + 2, it);
        BlockSparseTensor out = gather(src, dim, idx);
        require_result(out, li, ref_gather(src, d, idx));
      }
    }
  }
}

// ---- scatter_reduce ------------------------------------------------------------------------

TEST_CASE("sparse scatter_reduce sum matches the dense reference", "[ops][sparse_move]") {
  std::mt19937_64 rng(11);
  for (const Case& c : cases()) {
    Layout ls = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor src = rand_bst(ls, c.seed);
    for (int d : {0, 1, 2}) {
      std::int64_t g[3] = {c.B, c.Mb, c.Nb};
      for (int k = 0; k < 3; ++k) g[k] += static_cast<std::int64_t>(rng() % 2);  // target at least src's
      Layout lt = make_layout(g[0], g[1], g[2], c.bs, static_cast<Density>(rng() % 5), c.seed + 3);
      const std::int64_t ext = d == 0 ? lt.batch() : d == 1 ? lt.rows() : lt.cols();
      BlockSparseTensor idx = rand_idx(ls, ext, c.seed + 4, rng() % 2 ? DType::i32 : DType::i64);
      INFO("case bs=" << c.bs << " density kind " << int(c.d) << " dim " << d);
      require_result(scatter_reduce(src, d, idx, lt, Reduce::Sum), lt, ref_scatter(src, d, idx, lt, true), 1e-12);
      // into the layout of everything written: nothing is dropped
      Layout ld = distribution_layout(idx, d, {lt.batch(), lt.rows(), lt.cols()}, c.bs);
      require_result(scatter_reduce(src, d, idx, ld, Reduce::Sum), ld, ref_scatter(src, d, idx, ld, true), 1e-12);
    }
  }
}

TEST_CASE("sparse scatter_reduce none writes values without collisions", "[ops][sparse_move]") {
  std::mt19937_64 rng(13);
  for (const Case& c : cases()) {
    Layout ls = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor src = rand_bst(ls, c.seed);
    for (int d : {0, 1, 2}) {
      std::int64_t g[3] = {c.B, c.Mb, c.Nb};
      g[d] += 1;  // room: a permutation of a longer line
      Layout lt = make_layout(g[0], g[1], g[2], c.bs, static_cast<Density>(rng() % 5), c.seed + 5);
      const std::int64_t ext = d == 0 ? lt.batch() : d == 1 ? lt.rows() : lt.cols();
      BlockSparseTensor idx = perm_idx(ls, d, ext, c.seed + 6);
      INFO("case bs=" << c.bs << " density kind " << int(c.d) << " dim " << d);
      require_result(scatter_reduce(src, d, idx, lt, Reduce::None), lt, ref_scatter(src, d, idx, lt, false));
      // and gather with the same indices reads the values back where the target kept them
      BlockSparseTensor back = gather(scatter_reduce(src, d, idx, lt, Reduce::None), d, idx);
      require_result(back, ls, ref_gather(BlockSparseTensor(scatter_reduce(src, d, idx, lt, Reduce::None).data(), lt), d, idx));
    }
  }
}

TEST_CASE("sparse scatter_reduce sum in bf16 accumulates in f32", "[ops][sparse_move]") {
  // 512 ones added into each position of one row: a bf16 accumulator would stop at 256
  // (256 + 1 rounds back to 256), an f32 one reaches 512, which bf16 represents.
  Layout ls = full_layout(1, 16, 1, 32), lt = full_layout(1, 1, 1, 32);
  for (DType it : {DType::i32, DType::i64}) {
    BlockSparseTensor src(ones({16, 32, 32}, {.dtype = DType::bf16}), ls);
    BlockSparseTensor idx(zeros({16, 32, 32}, {.dtype = it}), ls);
    BlockSparseTensor out = scatter_reduce(src, 1, idx, lt, Reduce::Sum);
    REQUIRE(out.dtype() == DType::bf16);
    auto v = out.data().to_vector<double>();
    for (std::size_t j = 0; j < 32; ++j) REQUIRE(v[j] == 512.0);
    for (std::size_t j = 32; j < v.size(); ++j) REQUIRE(v[j] == 0.0);
  }
}

// ---- repeat / repeat_interleave ------------------------------------------------------------

TEST_CASE("sparse repeat matches the dense reference", "[ops][sparse_move]") {
  std::mt19937_64 rng(17);
  for (const Case& c : cases()) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor x = rand_bst(l, c.seed);
    auto xd = dense(x);
    Grid g(l);
    for (int trial = 0; trial < 3; ++trial) {
      std::array<std::int64_t, 3> r{static_cast<std::int64_t>(rng() % 3), static_cast<std::int64_t>(rng() % 3),
                                    static_cast<std::int64_t>(rng() % 3)};
      if (trial == 0) r = {1 + r[0], 1 + r[1], 1 + r[2]};
      Grid go(g.B * r[0], g.M * r[1], g.N * r[2]);
      std::vector<double> ref(go.size());
      for (std::int64_t b = 0; b < go.B; ++b)
        for (std::int64_t i = 0; i < go.M; ++i)
          for (std::int64_t j = 0; j < go.N; ++j) ref[go.at(b, i, j)] = xd[g.at(b % g.B, i % g.M, j % g.N)];
      Layout natural = layout_where(go.B, go.M / c.bs, go.N / c.bs, c.bs, [&](auto b, auto R, auto C) {
        return l.active(b % c.B, R % c.Mb, C % c.Nb);
      });
      INFO("bs=" << c.bs << " density kind " << int(c.d) << " repeats " << r[0] << " " << r[1] << " " << r[2]);
      require_result(repeat(x, r), natural, ref);
      // with an output layout: only blocks active in both
      Layout lo = make_layout(go.B, go.M / c.bs, go.N / c.bs, c.bs, Density::Sparse, c.seed + trial);
      Layout both = layout_where(go.B, go.M / c.bs, go.N / c.bs, c.bs, [&](auto b, auto R, auto C) {
        return natural.active(b, R, C) && lo.active(b, R, C);
      });
      require_result(repeat(x, r, lo), both, ref);
    }
  }
}

TEST_CASE("sparse repeat_interleave matches the dense reference", "[ops][sparse_move]") {
  for (const Case& c : cases()) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    BlockSparseTensor x = rand_bst(l, c.seed);
    auto xd = dense(x);
    Grid g(l);
    for (std::int64_t r : {0, 1, 3}) {
      Grid go(g.B * r, g.M, g.N);
      std::vector<double> ref(go.size());
      for (std::int64_t b = 0; b < go.B; ++b)
        for (std::int64_t i = 0; i < go.M; ++i)
          for (std::int64_t j = 0; j < go.N; ++j) ref[go.at(b, i, j)] = xd[g.at(b / r, i, j)];
      Layout natural = layout_where(go.B, c.Mb, c.Nb, c.bs, [&](auto b, auto R, auto C) { return l.active(b / r, R, C); });
      INFO("bs=" << c.bs << " density kind " << int(c.d) << " r=" << r);
      BlockSparseTensor out = repeat_interleave(x, r);
      require_result(out, natural, ref);
      if (r == 0) REQUIRE(out.data().numel() == 0);
      Layout lo = make_layout(go.B, c.Mb, c.Nb, c.bs, Density::Holes, c.seed + 9);
      Layout both = layout_where(go.B, c.Mb, c.Nb, c.bs,
                                 [&](auto b, auto R, auto C) { return natural.active(b, R, C) && lo.active(b, R, C); });
      require_result(repeat_interleave(x, r, lo), both, ref);
    }
  }
}

// ---- split / merge -------------------------------------------------------------------------

TEST_CASE("sparse split and merge match the dense reference", "[ops][sparse_move]") {
  std::mt19937_64 rng(19);
  for (const Case& c : cases()) {
    for (std::int64_t P : {1, 2, 3}) {
      for (int dim : {-1, 2, 1, -2}) {
        const bool cols = dim == -1 || dim == 2;
        // the split extent: P times 1 or 2 blocks (64: 1)
        const std::int64_t per = c.bs >= 64 ? 1 : 1 + static_cast<std::int64_t>(rng() % 2);
        const std::int64_t Mb = cols ? c.Mb : P * per, Nb = cols ? P * per : c.Nb;
        Layout l = make_layout(c.B, Mb, Nb, c.bs, c.d, c.seed + static_cast<std::uint64_t>(P));
        BlockSparseTensor x = rand_bst(l, c.seed);
        auto xd = dense(x);
        Grid g(l);
        Grid go(g.B * P, cols ? g.M : g.M / P, cols ? g.N / P : g.N);
        std::vector<double> ref(go.size());
        for (std::int64_t b = 0; b < go.B; ++b)
          for (std::int64_t i = 0; i < go.M; ++i)
            for (std::int64_t j = 0; j < go.N; ++j) {
              const std::int64_t p = b % P;
              ref[go.at(b, i, j)] = cols ? xd[g.at(b / P, i, p * go.N + j)] : xd[g.at(b / P, p * go.M + i, j)];
            }
        const std::int64_t oMb = go.M / c.bs, oNb = go.N / c.bs;
        Layout want = layout_where(go.B, oMb, oNb, c.bs, [&](auto b, auto R, auto C) {
          return cols ? l.active(b / P, R, (b % P) * oNb + C) : l.active(b / P, (b % P) * oMb + R, C);
        });
        INFO("bs=" << c.bs << " density kind " << int(c.d) << " P=" << P << " dim " << dim);
        BlockSparseTensor s = split(x, P, dim);
        require_result(s, want, ref);
        // merge is the inverse, checked against its own reference: out batch b from b*P + p
        BlockSparseTensor m = merge(s, P, dim);
        require_result(m, l, xd);
        // merge of an arbitrary tensor with a batch divisible by P
        Layout lm = make_layout(c.B * P, c.Mb, c.Nb, c.bs, c.d, c.seed + 77);
        BlockSparseTensor y = rand_bst(lm, c.seed + 78);
        auto yd = dense(y);
        Grid gy(lm), gm(c.B, cols ? gy.M : gy.M * P, cols ? gy.N * P : gy.N);
        std::vector<double> mref(gm.size());
        for (std::int64_t b = 0; b < gm.B; ++b)
          for (std::int64_t i = 0; i < gm.M; ++i)
            for (std::int64_t j = 0; j < gm.N; ++j)
              mref[gm.at(b, i, j)] = cols ? yd[gy.at(b * P + j / gy.N, i, j % gy.N)] : yd[gy.at(b * P + i / gy.M, i % gy.M, j)];
        Layout mwant = layout_where(gm.B, gm.M / c.bs, gm.N / c.bs, c.bs, [&](auto b, auto R, auto C) {
          return cols ? lm.active(b * P + C / c.Nb, R, C % c.Nb) : lm.active(b * P + R / c.Mb, R % c.Mb, C);
        });
        require_result(merge(y, P, dim), mwant, mref);
      }
    }
  }
}

// ---- gradients -----------------------------------------------------------------------------

TEST_CASE("sparse data movement gradcheck", "[ops][sparse_move][gradcheck]") {
  Layout l = make_layout(2, 2, 4, 2, Density::Holes, 21);
  REQUIRE(l.n_blocks() > 0);
  auto check = [](const char* what, const std::function<Tensor(const std::vector<Tensor>&)>& f, const Tensor& in) {
    INFO(what);
    auto r = autograd::gradcheck(f, {in});
    INFO(r.report);
    REQUIRE(r.ok);
  };
  Tensor xd = tgt::rand64({l.n_blocks(), 2, 2}, 22).requires_grad_();
  check("transpose", [&](const std::vector<Tensor>& in) { return transpose(BlockSparseTensor(in[0], l)).data(); }, xd);
  Layout lo = make_layout(4, 4, 8, 2, Density::Sparse, 23);
  check("repeat", [&](const std::vector<Tensor>& in) { return repeat(BlockSparseTensor(in[0], l), {2, 2, 2}).data(); }, xd);
  check("repeat with layout_out",
        [&](const std::vector<Tensor>& in) { return repeat(BlockSparseTensor(in[0], l), {2, 2, 2}, lo).data(); }, xd);
  check("repeat_interleave",
        [&](const std::vector<Tensor>& in) { return repeat_interleave(BlockSparseTensor(in[0], l), 3).data(); }, xd);
  Layout lri = make_layout(4, 2, 4, 2, Density::Sparse, 24);
  check("repeat_interleave with layout_out",
        [&](const std::vector<Tensor>& in) { return repeat_interleave(BlockSparseTensor(in[0], l), 2, lri).data(); }, xd);
  check("split cols", [&](const std::vector<Tensor>& in) { return split(BlockSparseTensor(in[0], l), 2, -1).data(); }, xd);
  check("split rows", [&](const std::vector<Tensor>& in) { return split(BlockSparseTensor(in[0], l), 2, 1).data(); }, xd);
  check("merge cols", [&](const std::vector<Tensor>& in) { return merge(BlockSparseTensor(in[0], l), 2, 2).data(); }, xd);
  check("merge rows", [&](const std::vector<Tensor>& in) { return merge(BlockSparseTensor(in[0], l), 2, -2).data(); }, xd);
  for (int d : {0, 1, 2}) {
    Layout li = make_layout(2, 2, 3, 2, Density::Holes, 25 + static_cast<std::uint64_t>(d));
    const std::int64_t ext = d == 0 ? 2 : d == 1 ? 4 : 8;
    BlockSparseTensor idx = rand_idx(li, ext, 26);  // collisions: the backward must add them
    INFO("dim " << d);
    check("gather", [&](const std::vector<Tensor>& in) { return gather(BlockSparseTensor(in[0], l), d, idx).data(); }, xd);
    Layout lt = make_layout(2, 3, 5, 2, Density::Holes, 27);
    const std::int64_t text = d == 0 ? 2 : d == 1 ? 6 : 10;
    BlockSparseTensor sidx = rand_idx(l, text, 28);
    check("scatter_reduce sum",
          [&](const std::vector<Tensor>& in) {
            return scatter_reduce(BlockSparseTensor(in[0], l), d, sidx, lt, Reduce::Sum).data();
          },
          xd);
  }
}

TEST_CASE("sparse scatter_reduce none refuses a backward", "[ops][sparse_move]") {
  Layout l = make_layout(1, 2, 2, 2, Density::Full, 31);
  Tensor xd = tgt::rand64({l.n_blocks(), 2, 2}, 32).requires_grad_();
  BlockSparseTensor idx = rand_idx(l, 4, 33);
  BlockSparseTensor out = scatter_reduce(BlockSparseTensor(xd, l), 2, idx, l, Reduce::None);
  tgt::require_throws<ValueError>([&] { out.data().backward(ones_like(out.data())); },
                                  {"scatter_reduce", "none", "not differentiable"});
  // without grad it is an ordinary op
  NoGradGuard ng;
  REQUIRE_NOTHROW(scatter_reduce(BlockSparseTensor(xd, l), 2, idx, l, Reduce::None));
}

TEST_CASE("sparse data movement edge cases", "[ops][sparse_move]") {
  // empty layouts give empty results with the right layouts
  Layout e = make_layout(2, 3, 4, 16, Density::Empty, 1);
  BlockSparseTensor x(zeros({0, 16, 16}), e);
  REQUIRE(transpose(x).layout() == e.transposed());
  REQUIRE(transpose(x).data().shape() == Shape{0, 16, 16});
  REQUIRE(repeat(x, {2, 1, 3}).data().numel() == 0);
  REQUIRE(split(x, 2, -1).shape() == Shape{4, 48, 32});
  REQUIRE(merge(x, 2, 1).shape() == Shape{1, 96, 64});
  // zero repeats: an empty extent
  Layout l = make_layout(2, 2, 2, 2, Density::Full, 2);
  BlockSparseTensor y = rand_bst(l, 3);
  REQUIRE(repeat(y, {0, 1, 1}).shape() == Shape{0, 4, 4});
  REQUIRE(repeat(y, {1, 0, 2}).shape() == Shape{2, 0, 8});
  REQUIRE(repeat_interleave(y, 0).shape() == Shape{0, 4, 4});
  // gather from an empty src reads zeros; an empty idx layout gives an empty result
  Layout f16 = make_layout(2, 3, 4, 16, Density::Full, 5);
  BlockSparseTensor gi = rand_idx(f16, 64, 6);
  BlockSparseTensor g = gather(x, 2, gi);
  REQUIRE(g.layout() == f16);
  REQUIRE(tgt::max_abs_diff(g.data(), zeros(g.data().shape(), {.dtype = DType::f32})) == 0.0);
  REQUIRE(gather(x, 1, BlockSparseTensor(zeros({0, 16, 16}, {.dtype = DType::i64}), e)).data().numel() == 0);
  REQUIRE(scatter_reduce(x, 2, BlockSparseTensor(zeros({0, 16, 16}, {.dtype = DType::i32}), e), f16).data().numel() ==
          f16.n_blocks() * 256);
  // one block of one element
  Layout one = full_layout(1, 1, 1, 1);
  BlockSparseTensor o(full({1, 1, 1}, 2.5), one);
  REQUIRE(transpose(o).data().item<float>() == 2.5f);
  REQUIRE(repeat(o, {2, 2, 2}).data().numel() == 8);
}

TEST_CASE("sparse data movement bad inputs", "[ops][sparse_move]") {
  Layout l = make_layout(2, 2, 4, 2, Density::Full, 41);
  BlockSparseTensor x = rand_bst(l, 42);
  BlockSparseTensor idx = rand_idx(l, 8, 43);
  tgt::require_throws<ValueError>([&] { transpose(BlockSparseTensor()); }, {"transpose", "x", "undefined"});
  // gather
  tgt::require_throws<ValueError>([&] { gather(x, 3, idx); }, {"gather", "dim", "3"});
  tgt::require_throws<DTypeError>([&] { gather(x, 2, BlockSparseTensor(idx.data().to(DType::f32), l)); },
                                  {"gather", "idx", "i32 or i64", "f32"});
  Tensor bd = zeros({l.n_blocks(), 2, 2}, {.dtype = DType::i64});
  tgt::require_throws<ValueError>([&] { gather(x, 2, BlockSparseTensor(full_like(bd, 8.0), l)); },
                                  {"gather", "[0, 8)", "dim 2", "[8, 8]"});
  tgt::require_throws<ValueError>([&] { gather(x, 1, BlockSparseTensor(full_like(bd, -1.0), l)); },
                                  {"gather", "[0, 4)", "dim 1", "[-1, -1]"});
  Layout big = make_layout(3, 2, 4, 2, Density::Full, 45);
  tgt::require_throws<ShapeError>([&] { gather(x, 2, rand_idx(big, 8, 46)); }, {"gather", "idx", "dim 0", "3", "2"});
  Layout other_bs = make_layout(2, 1, 2, 4, Density::Full, 47);
  tgt::require_throws<LayoutError>([&] { gather(x, 2, rand_idx(other_bs, 8, 48)); }, {"gather", "block size", "4", "2"});
  // scatter_reduce
  Layout lt = make_layout(2, 2, 4, 2, Density::Sparse, 49);
  tgt::require_throws<LayoutError>([&] { scatter_reduce(x, 2, rand_idx(big, 8, 50), lt); },
                                   {"scatter_reduce", "idx", "layout of src"});
  tgt::require_throws<ValueError>([&] { scatter_reduce(x, 2, BlockSparseTensor(full_like(bd, 9.0), l), lt); },
                                  {"scatter_reduce", "[0, 8)", "target_layout", "[9, 9]"});
  Layout small_t = make_layout(1, 2, 4, 2, Density::Full, 51);
  tgt::require_throws<ShapeError>([&] { scatter_reduce(x, 2, idx, small_t); },
                                  {"scatter_reduce", "src", "dim 0", "target_layout"});
  tgt::require_throws<DTypeError>(
      [&] { scatter_reduce(BlockSparseTensor(x.data().to(DType::i32), l), 2, idx, lt, Reduce::Sum); },
      {"scatter_reduce", "sum", "floating", "i32"});
  tgt::require_throws<LayoutError>([&] { scatter_reduce(x, 2, idx, Layout()); }, {"scatter_reduce", "target_layout"});
  // repeat / repeat_interleave
  tgt::require_throws<ValueError>([&] { repeat(x, {1, -1, 1}); }, {"repeat", ">= 0", "-1"});
  tgt::require_throws<ValueError>([&] { repeat_interleave(x, -2); }, {"repeat_interleave", ">= 0", "-2"});
  tgt::require_throws<ShapeError>([&] { repeat(x, {2, 1, 1}, l); }, {"repeat", "layout_out", "[4, 2, 4]", "[2, 2, 4]"});
  tgt::require_throws<LayoutError>([&] { repeat_interleave(x, 1, other_bs); },
                                   {"repeat_interleave", "layout_out", "block size", "2", "4"});
  // split / merge
  tgt::require_throws<ShapeError>([&] { split(x, 3, -1); }, {"split", "block-columns", "4", "3"});
  tgt::require_throws<ShapeError>([&] { split(x, 4, 1); }, {"split", "block-rows", "2", "4"});
  tgt::require_throws<ValueError>([&] { split(x, 2, 0); }, {"split", "dim", "0"});
  tgt::require_throws<ValueError>([&] { split(x, 0, 2); }, {"split", "parts", "0"});
  tgt::require_throws<ShapeError>([&] { merge(x, 3, 2); }, {"merge", "batch", "2", "3"});
  tgt::require_throws<ValueError>([&] { merge(x, 2, 3); }, {"merge", "dim", "3"});
}

// ---- CUDA ----------------------------------------------------------------------------------

namespace {

BlockSparseTensor to_cuda(const BlockSparseTensor& x) { return BlockSparseTensor(x.data().to(Device::cuda()), x.layout()); }

// Runs f on CPU and CUDA copies of x (dtype dt), compares the forward (exactly, or within
// tol) and the backward of a random projection.
void parity(const char* what, const BlockSparseTensor& x64, DType dt,
            const std::function<BlockSparseTensor(const BlockSparseTensor&)>& f, double tol = 0.0) {
  INFO(what << " " << dtype_name(dt) << " bs " << x64.block_size());
  Tensor xc = x64.data().to(dt).detach().requires_grad_();
  Tensor xg = xc.to(Device::cuda()).detach().requires_grad_();
  BlockSparseTensor oc = f(BlockSparseTensor(xc, x64.layout()));
  BlockSparseTensor og = f(BlockSparseTensor(xg, x64.layout()));
  REQUIRE(og.device().is_cuda());
  REQUIRE(og.layout() == oc.layout());
  tgt::require_close(og.data(), oc.data(), tol, tol);
  Tensor g = rand_seeded(oc.data().shape(), 99, {.dtype = dt});
  oc.data().backward(g);
  og.data().backward(g.to(Device::cuda()));
  tgt::require_close(xg.grad(), xc.grad(), tol, tol);
}

}  // namespace

TEST_CASE("sparse data movement CUDA matches CPU", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  std::mt19937_64 rng(61);
  for (std::int64_t bs : {1, 2, 4, 8, 16, 32, 64, 128}) {
    for (Density d : kDensities) {
      const std::int64_t maxb = bs >= 64 ? 2 : 4, B = 1 + static_cast<std::int64_t>(rng() % 3);
      const std::int64_t Mb = 2 * (1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(maxb)));
      const std::int64_t Nb = 2 * (1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(maxb)));
      Layout l = make_layout(B, Mb, Nb, bs, d, 62 + static_cast<std::uint64_t>(bs));
      BlockSparseTensor x = rand_bst(l, 63);
      for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
        const double stol = dt == DType::bf16 ? 2e-2 : dt == DType::f32 ? 1e-5 : 1e-12;
        parity("transpose", x, dt, [](const BlockSparseTensor& v) { return transpose(v); });
        parity("repeat", x, dt, [](const BlockSparseTensor& v) { return repeat(v, {2, 1, 3}); });
        Layout lo = make_layout(B * 2, Mb * 2, Nb, bs, Density::Sparse, 64);
        parity("repeat with layout_out", x, dt, [&](const BlockSparseTensor& v) { return repeat(v, {2, 2, 1}, lo); });
        parity("repeat_interleave", x, dt, [](const BlockSparseTensor& v) { return repeat_interleave(v, 3); });
        parity("split cols", x, dt, [](const BlockSparseTensor& v) { return split(v, 2, -1); });
        parity("split rows", x, dt, [](const BlockSparseTensor& v) { return split(v, 2, 1); });
        parity("merge cols", x, dt, [&](const BlockSparseTensor& v) { return merge(v, B, 2); });
        parity("merge rows", x, dt, [&](const BlockSparseTensor& v) { return merge(v, B, 1); });
        parity("split then merge", x, dt, [](const BlockSparseTensor& v) { return merge(split(v, 2, 2), 2, -1); });
        for (int dim : {0, 1, 2}) {
          INFO("dim " << dim);
          Layout li = make_layout(B, Mb, Nb, bs, Density::Holes, 65);
          const std::int64_t ext = dim == 0 ? B : dim == 1 ? l.rows() : l.cols();
          for (DType it : {DType::i32, DType::i64}) {
            BlockSparseTensor idx = rand_idx(li, ext, 66, it);
            BlockSparseTensor idxg = to_cuda(idx);
            // gather: the backward is a scatter-add with atomics: equal within rounding
            INFO("gather");
            Tensor xc = x.data().to(dt).detach().requires_grad_();
            Tensor xg = xc.to(Device::cuda()).detach().requires_grad_();
            BlockSparseTensor oc = gather(BlockSparseTensor(xc, l), dim, idx);
            BlockSparseTensor og = gather(BlockSparseTensor(xg, l), dim, idxg);
            tgt::require_close(og.data(), oc.data(), 0, 0);
            Tensor g = rand_seeded(oc.data().shape(), 67, {.dtype = dt});
            oc.data().backward(g);
            og.data().backward(g.to(Device::cuda()));
            tgt::require_close(xg.grad(), xc.grad(), stol, stol);
            // scatter sum / none into a target with holes
            Layout lt = make_layout(B, Mb, Nb, bs, Density::Holes, 68);
            BlockSparseTensor sidx = rand_idx(l, ext, 69, it);
            Tensor sc = x.data().to(dt).detach().requires_grad_();
            Tensor sg = sc.to(Device::cuda()).detach().requires_grad_();
            BlockSparseTensor tc = scatter_reduce(BlockSparseTensor(sc, l), dim, sidx, lt, Reduce::Sum);
            BlockSparseTensor tg_ = scatter_reduce(BlockSparseTensor(sg, l), dim, to_cuda(sidx), lt, Reduce::Sum);
            tgt::require_close(tg_.data(), tc.data(), stol, stol);
            Tensor gt = rand_seeded(tc.data().shape(), 70, {.dtype = dt});
            tc.data().backward(gt);
            tg_.data().backward(gt.to(Device::cuda()));
            tgt::require_close(sg.grad(), sc.grad(), 0, 0);  // gather: exact
            NoGradGuard ng;
            Layout lp = make_layout(B, Mb, dim == 2 ? Nb + 2 : Nb, bs, Density::Holes, 71);
            BlockSparseTensor pidx = perm_idx(l, dim, dim == 0 ? B : dim == 1 ? l.rows() : lp.cols(), 72);
            BlockSparseTensor pidx_t(pidx.data().to(it), l);
            tgt::require_close(scatter_reduce(BlockSparseTensor(sg, l), dim, to_cuda(pidx_t), lp, Reduce::None).data(),
                               scatter_reduce(BlockSparseTensor(sc, l), dim, pidx_t, lp, Reduce::None).data(), 0, 0);
            // distribution layout: the same on both devices
            REQUIRE(distribution_layout(to_cuda(sidx), dim, {B, l.rows(), l.cols()}, bs) ==
                    distribution_layout(sidx, dim, {B, l.rows(), l.cols()}, bs));
          }
        }
      }
    }
  }
}

using tgt::SyncChecksGuard;
using tgt::synced;

// Without sync checks the op returns, its kernel reads out-of-range indices as 0, and the
// error comes from the calling thread's next synchronisation (each kind: a copy to the
// host, a stream, the device), once; with them the op itself throws.
TEST_CASE("sparse gather CUDA reports out-of-range indices at the next synchronisation", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  Layout l = make_layout(2, 2, 4, 16, Density::Full, 81);
  BlockSparseTensor x = to_cuda(rand_bst(l, 82, DType::f32));
  const BlockSparseTensor bad(full({l.n_blocks(), 16, 16}, 64.0, {.dtype = DType::i32, .device = Device::cuda()}), l);
  synchronize(Device::cuda());
  const std::vector<std::string> want = {"gather", "[0, 64)", "[64, 64]", "after the op returned", "TG_SYNC_CHECKS"};
  {
    SyncChecksGuard mode(false);
    BlockSparseTensor out;
    REQUIRE_NOTHROW(out = gather(x, 2, bad));
    REQUIRE(runtime::pending_deferred_checks() >= 1);
    tgt::require_throws<ValueError>([&] { (void)out.data().to(Device::cpu()); }, want);
    REQUIRE(runtime::pending_deferred_checks() == 0);
    // Reported once; what the kernel wrote is zeros, not memory outside src.
    Tensor host;
    REQUIRE_NOTHROW(host = out.data().to(Device::cpu()));
    REQUIRE(sum(abs(host)).item<double>() == 0.0);

    (void)gather(x, 2, bad);
    tgt::require_throws<ValueError>([&] { synchronize(current_stream(Device::cuda())); }, want);
    (void)gather(x, 2, bad);
    tgt::require_throws<ValueError>([&] { synchronize(Device::cuda()); }, want);
    REQUIRE_NOTHROW(synchronize(Device::cuda()));
    (void)scatter_reduce(x, 1, bad, l);
    tgt::require_throws<ValueError>([&] { synchronize(Device::cuda()); }, {"scatter_reduce", "[0, 32)", "[64, 64]"});

    // Only the thread that queued the check sees its error.
    (void)gather(x, 2, bad);
    std::string other;
    std::thread([&] {
      try {
        synchronize(Device::cuda());
      } catch (const std::exception& e) {
        other = e.what();
      }
    }).join();
    REQUIRE(other.empty());
    tgt::require_throws<ValueError>([&] { synchronize(Device::cuda()); }, want);

    // Loops that never synchronise keep the queue short: finished checks are judged by
    // later calls.
    BlockSparseTensor ok(zeros({l.n_blocks(), 16, 16}, {.dtype = DType::i32, .device = Device::cuda()}), l);
    for (int i = 0; i < 300; ++i) (void)gather(x, 2, ok);
    synchronize(Device::cuda());
    for (int i = 0; i < 5; ++i) (void)gather(x, 2, ok);
    REQUIRE(runtime::pending_deferred_checks() <= 5);
    REQUIRE_NOTHROW(synchronize(Device::cuda()));
    REQUIRE(runtime::pending_deferred_checks() == 0);
  }
  {
    SyncChecksGuard mode(true);
    tgt::require_throws<ValueError>([&] { (void)gather(x, 2, bad); }, {"gather", "[0, 64)", "[64, 64]"});
    tgt::require_throws<ValueError>([&] { (void)scatter_reduce(x, 1, bad, l); },
                                    {"scatter_reduce", "[0, 32)", "[64, 64]"});
    REQUIRE(runtime::pending_deferred_checks() == 0);
    bool threw = false;
    try {
      (void)gather(x, 2, bad);
    } catch (const ValueError& e) {
      threw = true;
      REQUIRE(std::string(e.what()).find("after the op returned") == std::string::npos);
    }
    REQUIRE(threw);
  }
}

TEST_CASE("sparse gather / scatter_reduce with src and idx on different devices throw", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  // src on the GPU with idx on the CPU, and the reverse (indices otherwise valid): a
  // DeviceError naming the op, both arguments and their devices, in that order
  const Layout l = make_layout(2, 2, 4, 2, Density::Full, 91), lt = make_layout(2, 2, 4, 2, Density::Holes, 92);
  const BlockSparseTensor x = rand_bst(l, 93, DType::f32), xg = to_cuda(x);
  for (DType it : {DType::i32, DType::i64}) {
    INFO(dtype_name(it) << " indices");
    const BlockSparseTensor idx = rand_idx(l, 8, 94, it), idxg = to_cuda(idx);
    tgt::require_throws<DeviceError>([&] { gather(xg, 2, idx); },
                                     {"gather", "src and idx", "same device", "got cuda:0 and cpu"});
    tgt::require_throws<DeviceError>([&] { gather(x, 2, idxg); },
                                     {"gather", "src and idx", "same device", "got cpu and cuda:0"});
    for (Reduce r : {Reduce::Sum, Reduce::None}) {
      INFO((r == Reduce::Sum ? "reduce = sum" : "reduce = none"));
      tgt::require_throws<DeviceError>([&] { scatter_reduce(xg, 2, idx, lt, r); },
                                       {"scatter_reduce", "src and idx", "same device", "got cuda:0 and cpu"});
      tgt::require_throws<DeviceError>([&] { scatter_reduce(x, 2, idxg, lt, r); },
                                       {"scatter_reduce", "src and idx", "same device", "got cpu and cuda:0"});
    }
  }
}

namespace {

// count values of dtype dt on the CPU with distinct bit patterns (floats: random; integers:
// distinct values; bool: a mix of true and false).
Tensor pattern_values(std::int64_t count, DType dt, std::uint64_t seed) {
  if (is_floating(dt)) return tgt::rand64({count}, seed).to(dt);
  if (dt == DType::boolean) {
    std::vector<bool> v(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = (i * 7 + seed) % 3 == 0;
    return from_vector(v, {count});
  }
  std::vector<std::int64_t> v(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>((i * 7919 + seed) % 1000003) - 500000;
  return from_vector(v, {count}).to(dt);
}

}  // namespace

// Every transpose path on the GPU: 16-byte micro-tiles through shared memory (2-, 4- and
// 8-byte elements, block sizes 16-128), the padded byte tile (bool, 32-128), the
// one-element kernel (block sizes 1-8, and data misaligned by one element), empty layouts.
TEST_CASE("sparse transpose CUDA matches CPU for every dtype, block size and alignment", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  for (std::int64_t bs : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    for (Density d : {Density::Empty, Density::One, Density::Holes, Density::Full}) {
      const std::int64_t B = 2, Mb = bs >= 128 ? 2 : 3, Nb = bs >= 128 ? 3 : 5;
      Layout l = make_layout(B, Mb, Nb, bs, d, 90 + static_cast<std::uint64_t>(bs));
      const std::int64_t count = l.n_blocks() * bs * bs;
      for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i32, DType::i64, DType::boolean}) {
        for (std::int64_t skip : {0, 1}) {
          INFO("bs " << bs << " blocks " << l.n_blocks() << " " << dtype_name(dt) << " skip " << skip);
          Tensor base = pattern_values(count + skip, dt, 91);
          const Shape shape{l.n_blocks(), bs, bs};
          BlockSparseTensor xc(tgt::misaligned_view(base, skip, shape), l);
          BlockSparseTensor xg(tgt::misaligned_view(base.to(Device::cuda()), skip, shape), l);
          BlockSparseTensor oc = transpose(xc), og = transpose(xg);
          REQUIRE(og.layout() == oc.layout());
          tgt::require_close(og.data(), oc.data(), 0, 0);
          tgt::require_close(transpose(og).data(), xc.data().clone(), 0, 0);
        }
      }
    }
  }
}

// Grids of many blocks at every block size (many blocks per CUDA block at small ones),
// block counts that do not fill the last wave, misaligned data on the narrow-unit paths.
TEST_CASE("sparse data movement CUDA: many blocks, every block size, misaligned data", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  struct Big { std::int64_t B, Mb, Nb, bs; Density d; };
  for (Big c : {Big{2, 16, 16, 64, Density::Holes}, Big{2, 16, 16, 64, Density::Sparse}, Big{2, 6, 12, 128, Density::Holes},
                Big{2, 32, 32, 32, Density::Sparse}, Big{2, 48, 64, 16, Density::Holes}, Big{2, 256, 256, 2, Density::Sparse},
                Big{1, 384, 512, 1, Density::Holes}}) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, 201 + static_cast<std::uint64_t>(c.bs));
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i32, DType::boolean}) {
      for (std::int64_t skip : {0, 1}) {
        if (skip && c.bs != 64) continue;
        INFO("bs " << c.bs << " blocks " << l.n_blocks() << " " << dtype_name(dt) << " skip " << skip);
        const Shape shape{l.n_blocks(), c.bs, c.bs};
        Tensor base = pattern_values(shape.numel() + skip, dt, 202);
        BlockSparseTensor xc(tgt::misaligned_view(base, skip, shape), l);
        BlockSparseTensor xg(tgt::misaligned_view(base.to(Device::cuda()), skip, shape), l);
        tgt::require_close(transpose(xg).data(), transpose(xc).data(), 0, 0);
        tgt::require_close(split(xg, 4, -1).data(), split(xc, 4, -1).data(), 0, 0);
        tgt::require_close(split(xg, 2, 1).data(), split(xc, 2, 1).data(), 0, 0);
        if (c.B % 2 == 0) tgt::require_close(merge(xg, 2, -1).data(), merge(xc, 2, -1).data(), 0, 0);
        tgt::require_close(repeat_interleave(xg, 2).data(), repeat_interleave(xc, 2).data(), 0, 0);
        tgt::require_close(repeat(xg, {1, 2, 1}).data(), repeat(xc, {1, 2, 1}).data(), 0, 0);
        // gather along each dim with i32 and i64 indices on a layout with holes
        for (int dim : {0, 1, 2}) {
          const std::int64_t ext = dim == 0 ? c.B : dim == 1 ? l.rows() : l.cols();
          for (DType it : {DType::i32, DType::i64}) {
            if (dim != 2 && it == DType::i64) continue;
            INFO("gather dim " << dim << " " << dtype_name(it));
            BlockSparseTensor idx = rand_idx(l, ext, 203 + static_cast<std::uint64_t>(dim), it);
            tgt::require_close(gather(xg, dim, to_cuda(idx)).data(), gather(xc, dim, idx).data(), 0, 0);
          }
        }
      }
    }
  }
}

// The backward kernels of the moves on a grid of many blocks: the sum over copies and the
// scatter-add of gather, f32 and bf16.
TEST_CASE("sparse data movement CUDA backward: many blocks", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = make_layout(2, 16, 16, 64, Density::Holes, 211);
  BlockSparseTensor x = rand_bst(l, 212);
  for (DType dt : {DType::f32, DType::bf16}) {
    const double tol = dt == DType::bf16 ? 2e-2 : 1e-5;
    parity("repeat_interleave", x, dt, [](const BlockSparseTensor& v) { return repeat_interleave(v, 2); });
    parity("split cols", x, dt, [](const BlockSparseTensor& v) { return split(v, 4, -1); });
    parity("transpose", x, dt, [](const BlockSparseTensor& v) { return transpose(v); });
    BlockSparseTensor idx = rand_idx(l, l.cols(), 213, DType::i32);
    parity("gather", x, dt, [&](const BlockSparseTensor& v) {
      return gather(v, 2, v.device().is_cuda() ? to_cuda(idx) : idx);
    }, tol);
  }
}

namespace {

// Indices on l for a gather along `dim` (1 or 2) from a source of extent n_src there, as
// dtype dt: `local` keeps each value in its block's own block (modulo the source's) and
// permutes inside it (dim 2: v = (C mod n_src / bs) * bs + (17 j + i) mod bs, C the idx
// block's column; dim 1 the same with the row R and i, j swapped); otherwise v is uniform
// over [0, n_src).
BlockSparseTensor gather_idx(const Layout& l, int dim, std::int64_t n_src, bool local, std::uint64_t seed, DType dt) {
  const std::int64_t n = l.n_blocks(), bs = l.block_size(), sblocks = n_src / bs;
  const auto coords = l.tables(Device::cpu()).block_coords.to_vector<std::int64_t>();
  std::mt19937_64 rng(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(n * bs * bs));
  for (std::int64_t k = 0; k < n; ++k)
    for (std::int64_t i = 0; i < bs; ++i)
      for (std::int64_t j = 0; j < bs; ++j) {
        const std::int64_t block = coords[static_cast<std::size_t>(3 * k + dim)] % sblocks;
        const std::int64_t inner = dim == 2 ? (17 * j + i) % bs : (17 * i + j) % bs;
        v[static_cast<std::size_t>((k * bs + i) * bs + j)] =
            local ? block * bs + inner : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n_src));
      }
  return BlockSparseTensor(from_vector(v, {n, bs, bs}).to(dt), l);
}

// gather(src, dim, idx) on the GPU equals the CPU result bit for bit (src of any dtype,
// pattern values, `offset` elements into its buffer: 1 misaligns it), for in-block and
// random indices of both index dtypes.
void require_gather_parity(const Layout& ls, const Layout& li, int dim, DType dt, std::uint64_t seed,
                           std::int64_t offset = 0) {
  const std::int64_t bs = ls.block_size();
  const Shape shape{ls.n_blocks(), bs, bs};
  Tensor base = pattern_values(shape.numel() + offset, dt, seed);
  BlockSparseTensor xc(tgt::misaligned_view(base, offset, shape), ls);
  BlockSparseTensor xg(tgt::misaligned_view(base.to(Device::cuda()), offset, shape), ls);
  for (bool local : {true, false}) {
    for (DType it : {DType::i32, DType::i64}) {
      INFO("dim " << dim << (local ? " in-block " : " random ") << dtype_name(dt) << " idx " << dtype_name(it)
                  << " bs " << bs << " offset " << offset << " src " << ls << " idx " << li);
      BlockSparseTensor idx = gather_idx(li, dim, dim == 2 ? ls.cols() : ls.rows(), local, seed + 1, it);
      BlockSparseTensor og = gather(xg, dim, to_cuda(idx));
      REQUIRE(og.layout() == li);
      tgt::require_close(og.data(), gather(xc, dim, idx).data(), 0, 0);
    }
  }
}

// Forces the kernel of CUDA gathers along dim 1 for a scope.
struct Dim1PathGuard {
  explicit Dim1PathGuard(ops::smove::Dim1Path p) { ops::smove::set_dim1_path(p); }
  ~Dim1PathGuard() { ops::smove::set_dim1_path(ops::smove::Dim1Path::Auto); }
  Dim1PathGuard(const Dim1PathGuard&) = delete;
  Dim1PathGuard& operator=(const Dim1PathGuard&) = delete;
};

const char* dim1_path_name(ops::smove::Dim1Path p) {
  using ops::smove::Dim1Path;
  return p == Dim1Path::Auto ? "auto" : p == Dim1Path::Strips ? "strips" : p == Dim1Path::Span ? "span" : "direct";
}

}  // namespace

// The row-staged dim-2 gather (source rows staged in shared memory) and its direct
// fallbacks: every element size, both index dtypes, idx layouts wider / shorter than src,
// source block rows that are empty where idx has blocks, rows too wide to stage (direct),
// an idx much sparser than src (direct), and a grid large enough for the tallest stage.
TEST_CASE("sparse gather CUDA dim 2: staged rows and direct fallbacks match CPU", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  std::uint64_t seed = 300;
  for (std::int64_t bs : {16, 32, 64, 128}) {
    const std::int64_t Mb = bs >= 128 ? 2 : 4, Nb = bs >= 128 ? 3 : 6;
    Layout ls = make_layout(2, Mb, Nb, bs, Density::Holes, seed++);
    Layout same = ls;
    Layout wide = make_layout(2, Mb, Nb + 3, bs, Density::Sparse, seed++);  // more columns than src
    Layout shorter = make_layout(1, Mb - 1, Nb, bs, Density::Full, seed++);  // fewer batches and rows
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::boolean}) {
      require_gather_parity(ls, same, 2, dt, seed++);
      require_gather_parity(ls, wide, 2, dt, seed++);
      require_gather_parity(ls, shorter, 2, dt, seed++);
    }
  }
  // src rows of 10240 f64 (80 KiB, over the stage limit) and an idx of one block per
  // block row under a full src: the direct kernel
  Layout wide_rows = make_layout(1, 2, 160, 64, Density::Sparse, seed++);
  require_gather_parity(wide_rows, wide_rows, 2, DType::f64, seed++);
  // Rows of 10240 f32 (40 KiB, over the small stage): three CTAs of 256 threads, h = 1.
  Layout mid_rows = make_layout(1, 2, 160, 64, Density::Full, seed++);
  require_gather_parity(mid_rows, mid_rows, 2, DType::f32, seed++);
  Layout full = make_layout(2, 3, 16, 32, Density::Full, seed++);
  Layout one_col = layout_where(2, 3, 16, 32, [](std::int64_t, std::int64_t, std::int64_t c) { return c == 5; });
  require_gather_parity(full, one_col, 2, DType::f32, seed++);
  // 128 block rows of 32 blocks of 64 (1 in 8 active): a stage of the 4 active blocks, taller
  // than the 8 rows a full 2048-wide row would allow
  Layout big = layout_where(4, 32, 32, 64, [](std::int64_t b, std::int64_t r, std::int64_t c) { return (7 * b + 3 * r + c) % 8 == 0; });
  require_gather_parity(big, big, 2, DType::f32, seed++);
  require_gather_parity(big, big, 2, DType::bf16, seed++);
}

// The staged dim-2 gather at its tallest stage (h = bs: 512 block rows fill the GPU with one
// item per block row), full source block rows (every column its own slot) next to one-block
// rows (the slot table); an idx that skips the full rows (a stage sized for one block); an
// idx with fewer batches, block rows and block columns than src.
TEST_CASE("sparse gather CUDA dim 2: tall stages over mixed-density block rows", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  std::uint64_t seed = 400;
  Layout mixed = layout_where(4, 128, 8, 32, [](std::int64_t b, std::int64_t r, std::int64_t c) {
    return r % 16 == 0 || c == (b + r) % 8;
  });
  Layout skip_full = layout_where(4, 128, 8, 32, [](std::int64_t b, std::int64_t r, std::int64_t c) {
    return r % 16 != 0 && c == (b + r) % 8;
  });
  Layout narrow = layout_where(3, 120, 5, 32, [](std::int64_t b, std::int64_t r, std::int64_t c) {
    return r % 16 == 0 || c == (b + r) % 5;
  });
  for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::boolean}) {
    require_gather_parity(mixed, mixed, 2, dt, seed++);
    require_gather_parity(mixed, skip_full, 2, dt, seed++);
    require_gather_parity(mixed, narrow, 2, dt, seed++);
  }
}

// gather along dim 1 on the GPU against the CPU, bit for bit: every element size and block
// size, both index dtypes, in-block and random rows, idx layouts taller than src and with
// fewer batches and block columns, source block columns empty where idx has blocks
// (Holes), misaligned data, tall source columns, an idx much sparser than src, more work
// than one wave of the grid, and out-of-range rows. (A column-staged kernel passed these
// and was dropped as slower, bench/RESULTS.md 12-04.)
// Every dim-1 kernel, each forced in turn (a forced staged kernel falls back to the direct
// one where it does not apply), and the automatic choice.
TEST_CASE("sparse gather CUDA dim 1 matches CPU: element and block sizes, layouts, alignment, range", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  using ops::smove::Dim1Path;
  const Dim1Path path = GENERATE(Dim1Path::Auto, Dim1Path::Strips, Dim1Path::Span, Dim1Path::Direct);
  INFO("dim-1 kernel: " << dim1_path_name(path));
  Dim1PathGuard forced(path);
  std::uint64_t seed = 500;
  for (std::int64_t bs : {8, 16, 32, 64, 128}) {
    const std::int64_t Mb = bs >= 128 ? 3 : 5, Nb = bs >= 128 ? 2 : 4;
    Layout ls = make_layout(2, Mb, Nb, bs, Density::Holes, seed++);
    Layout tall = make_layout(2, Mb + 3, Nb, bs, Density::Sparse, seed++);  // more block rows than src
    Layout narrow = make_layout(1, Mb, Nb - 1, bs, Density::Full, seed++);  // fewer batches and columns
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::boolean}) {
      require_gather_parity(ls, ls, 1, dt, seed++);
      require_gather_parity(ls, tall, 1, dt, seed++);
      require_gather_parity(ls, narrow, 1, dt, seed++);
    }
    require_gather_parity(ls, ls, 1, DType::f32, seed++, 1);  // misaligned
  }
  // Columns of 2560 rows.
  Layout tall_src = make_layout(1, 40, 2, 64, Density::Full, seed++);
  require_gather_parity(tall_src, tall_src, 1, DType::f32, seed++);
  // One idx block per block column under a full src.
  Layout full_src = make_layout(2, 16, 3, 32, Density::Full, seed++);
  Layout one_row = layout_where(2, 16, 3, 32, [](std::int64_t, std::int64_t r, std::int64_t) { return r == 5; });
  require_gather_parity(full_src, one_row, 1, DType::bf16, seed++);
  // 10,240 blocks: more than one wave of the grid.
  Layout many = make_layout(64, 4, 40, 32, Density::Holes, seed++);
  require_gather_parity(many, many, 1, DType::f32, seed++);
  // Out-of-range rows read 0 and raise at the next synchronisation, with their range.
  tgt::SyncChecksGuard mode(false);
  Layout l = make_layout(1, 4, 2, 32, Density::Full, seed++);
  BlockSparseTensor x(rand_seeded({l.n_blocks(), 32, 32}, seed++, {.device = Device::cuda()}), l);
  const BlockSparseTensor bad(full({l.n_blocks(), 32, 32}, 128.0, {.dtype = DType::i32, .device = Device::cuda()}), l);
  BlockSparseTensor out = gather(x, 1, bad);
  tgt::require_throws<ValueError>([&] { synchronize(Device::cuda()); }, {"gather", "[0, 128)", "[128, 128]"});
  REQUIRE(sum(abs(out.data())).item<double>() == 0.0);
}

// The dim-1 gather stages the source blocks an idx block reads where their span of block rows
// fits the stage (8 KiB: two blocks of 4 KiB, else one block; idx and source block at most
// 48 KiB, so block 128 takes the direct kernel) and gathers directly otherwise, decided per
// idx block. Each idx block here reads a window of w block rows (w = 1..5 by block), so one
// launch mixes staged items (one slot, two at 4 KiB blocks) with direct ones; Holes leave
// absent source blocks inside staged windows (zeros), and a few elements a block read rows
// of other windows (a span wider than the stage: the direct path, with the source column's
// lookup table in shared memory).
TEST_CASE("sparse gather CUDA dim 1: staged source-block spans and the direct path match CPU", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  Dim1PathGuard forced(ops::smove::Dim1Path::Span);
  std::uint64_t seed = 700;
  for (std::int64_t bs : {32, 64, 128}) {
    const std::int64_t Mb = 6, Nb = bs >= 128 ? 2 : 3;
    Layout ls = make_layout(2, Mb, Nb, bs, Density::Holes, seed++);
    Layout li = make_layout(2, Mb, Nb, bs, Density::Full, seed++);
    const auto coords = li.tables(Device::cpu()).block_coords.to_vector<std::int64_t>();
    for (bool stray : {false, true}) {
      std::mt19937_64 rng(seed++);
      std::vector<std::int64_t> v(static_cast<std::size_t>(li.n_blocks() * bs * bs));
      for (std::int64_t k = 0; k < li.n_blocks(); ++k) {
        const std::int64_t w = 1 + k % 5, R = coords[static_cast<std::size_t>(3 * k + 1)];
        const std::int64_t first = std::min(R, Mb - w) * bs;
        for (std::int64_t e = 0; e < bs * bs; ++e) {
          const bool far = stray && e % 97 == 5;  // now and then any row of the column
          v[static_cast<std::size_t>(k * bs * bs + e)] =
              far ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(Mb * bs))
                  : first + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(w * bs));
        }
      }
      for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::boolean}) {
        for (DType it : {DType::i32, DType::i64}) {
          INFO("bs " << bs << " " << dtype_name(dt) << " idx " << dtype_name(it) << (stray ? " with stray rows" : ""));
          const BlockSparseTensor idx(from_vector(v, {li.n_blocks(), bs, bs}).to(it), li);
          const BlockSparseTensor xc(reshape(pattern_values(ls.n_blocks() * bs * bs, dt, seed++), {ls.n_blocks(), bs, bs}), ls);
          const BlockSparseTensor og = gather(to_cuda(xc), 1, to_cuda(idx));
          tgt::require_close(og.data(), gather(xc, 1, idx).data(), 0, 0);
        }
      }
    }
  }
  // Source columns of 600 block rows: over the 512-entry lookup table of a buffer, so the
  // direct path looks its blocks up in global memory.
  Layout very_tall = make_layout(1, 600, 1, 32, Density::Holes, seed++);
  require_gather_parity(very_tall, very_tall, 1, DType::f32, seed++);
}

// The dim-1 gather by column strips, forced (each item stages a 32-byte strip of every row
// of a source block column): the tallest column a stage holds (3072 rows: 96 KiB, two CTAs
// an SM) and one block row more (not staged: the direct kernel), one strip a block row
// (bf16 at block 16, f32 at 8) and many (f64 at 128), an idx with more block rows than src
// and fewer batches and columns, absent source blocks (zero-filled rows), idx block columns
// without blocks (skipped items), an idx column of one block over a full source column,
// scattered and in-block rows.
TEST_CASE("sparse gather CUDA dim 1: column strips match CPU", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  Dim1PathGuard forced(ops::smove::Dim1Path::Strips);
  std::uint64_t seed = 900;
  for (DType dt : {DType::f32, DType::bf16}) {
    Layout tallest = make_layout(1, 48, 2, 64, Density::Holes, seed++);
    require_gather_parity(tallest, tallest, 1, dt, seed++);
    Layout over = make_layout(1, 49, 2, 64, Density::Holes, seed++);
    require_gather_parity(over, over, 1, dt, seed++);
  }
  Layout narrow16 = make_layout(2, 6, 3, 16, Density::Holes, seed++);
  require_gather_parity(narrow16, narrow16, 1, DType::bf16, seed++);
  Layout narrow8 = make_layout(2, 6, 3, 8, Density::Sparse, seed++);
  require_gather_parity(narrow8, narrow8, 1, DType::f32, seed++);
  Layout wide128 = make_layout(1, 4, 2, 128, Density::Holes, seed++);
  require_gather_parity(wide128, wide128, 1, DType::f64, seed++);
  Layout src = make_layout(2, 5, 3, 32, Density::Holes, seed++);
  Layout tall = make_layout(1, 8, 2, 32, Density::Full, seed++);
  require_gather_parity(src, tall, 1, DType::bf16, seed++);
  Layout cols = layout_where(3, 6, 8, 32, [](std::int64_t b, std::int64_t, std::int64_t c) { return (b + c) % 3 != 0; });
  require_gather_parity(cols, cols, 1, DType::f32, seed++);
  Layout holes = make_layout(2, 8, 4, 32, Density::Holes, seed++);
  Layout full = make_layout(2, 8, 4, 32, Density::Full, seed++);
  require_gather_parity(holes, full, 1, DType::f32, seed++);
  Layout one_row = layout_where(2, 8, 4, 32, [](std::int64_t, std::int64_t r, std::int64_t) { return r == 3; });
  require_gather_parity(full, one_row, 1, DType::f32, seed++);
}

// The automatic dim-1 choice follows the index pattern (ops/sparse_move/span_history.h):
// on a fresh idx layout the span kernel runs and counts the items it gathers directly;
// where more than half were (rows scattered over whole columns), later calls on that
// layout run the strip kernel, with a span run every 128th call to re-measure; in-block
// rows stay on spans. Every call's result equals the CPU's.
TEST_CASE("sparse gather CUDA dim 1: the automatic kernel choice follows the index pattern", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  using ops::smove::Dim1Path;
  using ops::smove::last_dim1_kernel;
  std::uint64_t seed = 1000;
  for (bool scattered : {true, false}) {
    INFO((scattered ? "scattered rows" : "in-block rows"));
    Layout l = make_layout(2, 32, 3, 64, Density::Full, seed++);
    const BlockSparseTensor xc(reshape(pattern_values(l.n_blocks() * 64 * 64, DType::f32, seed++), {l.n_blocks(), 64, 64}), l);
    const BlockSparseTensor xg = to_cuda(xc);
    const BlockSparseTensor idx = gather_idx(l, 1, l.rows(), !scattered, seed++, DType::i32);
    const BlockSparseTensor ig = to_cuda(idx);
    const Tensor want = gather(xc, 1, idx).data();
    std::vector<Dim1Path> ran;
    for (int call = 0; call < 131; ++call) {
      const BlockSparseTensor og = gather(xg, 1, ig);
      ran.push_back(last_dim1_kernel());
      synchronize(Device::cuda());  // the counts of a span run are read once it has completed
      if (call < 3 || call == 130) tgt::require_close(og.data(), want, 0, 0);
    }
    REQUIRE(ran[0] == Dim1Path::Span);
    const auto spans = std::count(ran.begin() + 1, ran.end(), Dim1Path::Span);
    if (scattered) {
      REQUIRE(ran[1] == Dim1Path::Strips);
      REQUIRE(spans == 1);  // the re-probe, 128 calls after the switch
      REQUIRE(ran[128] == Dim1Path::Span);
    } else {
      REQUIRE(spans == 130);
    }
  }
}

// Out-of-range indices raise after the kernel on both gather paths (staged, direct) and in
// scatter_reduce's range pass, with the range of the call itself: the reused device words
// are clean again after every call, a good call after a bad one passes.
TEST_CASE("sparse gather CUDA reports each call's index range", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  Layout l = make_layout(2, 4, 8, 32, Density::Holes, 320);  // 256 columns
  Layout one_col = layout_where(2, 4, 8, 32, [](std::int64_t, std::int64_t, std::int64_t c) { return c == 2; });
  BlockSparseTensor x = to_cuda(rand_bst(l, 321, DType::f32));
  for (bool sync : {false, true}) {
    SyncChecksGuard mode(sync);
    for (const Layout& li : {l, one_col}) {  // staged, then direct
      for (DType it : {DType::i32, DType::i64}) {
        INFO("sync checks " << sync << " idx " << dtype_name(it) << " blocks " << li.n_blocks());
        const std::int64_t count = li.n_blocks() * 32 * 32;
        std::vector<std::int64_t> v(static_cast<std::size_t>(count));
        for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int64_t>((i * 37) % 256);
        const auto with = [&](std::int64_t at, std::int64_t value) {
          std::vector<std::int64_t> w = v;
          w[static_cast<std::size_t>(at)] = value;
          return to_cuda(BlockSparseTensor(from_vector(w, {li.n_blocks(), 32, 32}).to(it), li));
        };
        const std::int64_t huge = std::int64_t(1) << 31 >> (it == DType::i32 ? 1 : 0);
        tgt::require_throws<ValueError>(synced([&] { (void)gather(x, 2, with(count - 1, 256)); }),
                                        {"gather", "[0, 256)", "[0, 256]"});
        REQUIRE_NOTHROW(synced([&] { (void)gather(x, 2, with(0, 255)); })());
        tgt::require_throws<ValueError>(synced([&] { (void)gather(x, 2, with(count / 2, -3)); }),
                                        {"gather", "[0, 256)", "[-3, 255]"});
        tgt::require_throws<ValueError>(synced([&] { (void)gather(x, 2, with(7, huge)); }),
                                        {"gather", std::to_string(huge)});
        REQUIRE_NOTHROW(synced([&] { (void)gather(x, 2, with(0, 0)); })());
        tgt::require_throws<ValueError>(synced([&] { (void)gather(x, 1, with(3, 128)); }),
                                        {"gather", "[0, 128)", "[0, 255]"});
      }
    }
    BlockSparseTensor sx(x.data(), l);
    const std::int64_t count = l.n_blocks() * 32 * 32;
    std::vector<std::int32_t> v(static_cast<std::size_t>(count), 5);
    v[9] = -7;
    tgt::require_throws<ValueError>(
        synced([&] { (void)scatter_reduce(sx, 2, to_cuda(BlockSparseTensor(from_vector(v, {l.n_blocks(), 32, 32}), l)), l); }),
        {"scatter_reduce", "[-7, 5]"});
    v[9] = 5;
    REQUIRE_NOTHROW(synced([&] {
      (void)scatter_reduce(sx, 2, to_cuda(BlockSparseTensor(from_vector(v, {l.n_blocks(), 32, 32}), l)), l);
    })());
  }
}

// Threads gathering at once each see their own index range (the readback buffers are
// taken from a pool, never shared between calls in flight) at their own synchronisation.
TEST_CASE("sparse gather CUDA index ranges of concurrent threads stay apart", "[ops][sparse_move][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = make_layout(1, 4, 4, 16, Density::Full, 330);  // 64 columns
  BlockSparseTensor x = to_cuda(rand_bst(l, 331, DType::f32));
  {
    NoGradGuard ng;  // builds the layout's device tables before the threads share it
    gather(x, 2, BlockSparseTensor(zeros({l.n_blocks(), 16, 16}, {.dtype = DType::i32, .device = Device::cuda()}), l));
  }
  constexpr int kThreadCount = 4, kCalls = 25;
  std::vector<std::string> failures(kThreadCount);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreadCount; ++t) {
    threads.emplace_back([&, t] {
      NoGradGuard ng;
      const std::int64_t bad = 64 + t;  // each thread's own out-of-range value
      BlockSparseTensor idx(full({l.n_blocks(), 16, 16}, static_cast<double>(bad), {.dtype = DType::i32, .device = Device::cuda()}), l);
      BlockSparseTensor ok(full({l.n_blocks(), 16, 16}, static_cast<double>(t), {.dtype = DType::i32, .device = Device::cuda()}), l);
      const std::string want = "[" + std::to_string(bad) + ", " + std::to_string(bad) + "]";
      for (int c = 0; c < kCalls && failures[static_cast<std::size_t>(t)].empty(); ++c) {
        try {
          gather(x, 2, idx);
          synchronize(Device::cuda());  // the check is this thread's, whichever thread waits
          failures[static_cast<std::size_t>(t)] = "no exception";
        } catch (const ValueError& e) {
          if (std::string(e.what()).find(want) == std::string::npos) failures[static_cast<std::size_t>(t)] = e.what();
        }
        try {
          gather(x, 2, ok);
          synchronize(Device::cuda());
        } catch (const std::exception& e) {
          failures[static_cast<std::size_t>(t)] = std::string("good call threw: ") + e.what();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreadCount; ++t) {
    INFO("thread " << t);
    REQUIRE(failures[static_cast<std::size_t>(t)].empty());
  }
}

}  // namespace test_sparse_move
