// Tests of to_sparse / to_dense (ops/sparse_convert): f64 masked references over block
// sizes 1-64, batches 1-3 and empty / one-block / sparse / full / holed layouts, gradchecks,
// printing, bad inputs, and CUDA against the CPU.
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "layout_cases.h"
#include "util.h"

namespace test_sparse_convert {

using namespace tg;

namespace {
// Reference: dense -> keep only elements of active blocks, others = fill.
std::vector<double> masked_reference(const std::vector<double>& d, const Layout& l, double fill) {
  std::vector<double> out(d.size());
  const std::int64_t M = l.rows(), N = l.cols(), bs = l.block_size();
  for (std::int64_t b = 0; b < l.batch(); ++b)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        std::size_t f = static_cast<std::size_t>((b * M + i) * N + j);
        out[f] = l.active(b, i / bs, j / bs) ? d[f] : fill;
      }
  return out;
}
}  // namespace

TEST_CASE("to_sparse / to_dense round trip against a masked reference", "[ops][sparse]") {
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  for (Case c : {Case{1, 3, 2, 1, 0.5}, Case{2, 4, 3, 2, 0.3}, Case{3, 2, 2, 16, 1.0}, Case{1, 3, 3, 32, 0.0},
                 Case{2, 1, 1, 64, 1.0}, Case{1, 4, 4, 16, 0.3}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, static_cast<std::uint64_t>(c.bs * 7 + c.B));
    Tensor d = tgt::rand64({c.B, c.Mb * c.bs, c.Nb * c.bs}, 3);
    BlockSparseTensor s = to_sparse(d, l);
    REQUIRE(s.data().shape() == Shape{l.n_blocks(), c.bs, c.bs});
    // block k holds dense elements of its (b, r, c)
    auto coords = l.tables(Device::cpu()).block_coords.to_vector<std::int64_t>();
    auto sv = tgt::values(s.data()), dv = tgt::values(d);
    for (std::int64_t k = 0; k < l.n_blocks(); ++k)
      for (std::int64_t i = 0; i < c.bs; ++i)
        for (std::int64_t j = 0; j < c.bs; ++j) {
          auto b = coords[static_cast<std::size_t>(3 * k)], r = coords[static_cast<std::size_t>(3 * k + 1)],
               cc = coords[static_cast<std::size_t>(3 * k + 2)];
          REQUIRE(sv[static_cast<std::size_t>((k * c.bs + i) * c.bs + j)] ==
                  dv[static_cast<std::size_t>((b * l.rows() + r * c.bs + i) * l.cols() + cc * c.bs + j)]);
        }
    for (double fill : {0.0, -double(INFINITY)}) {
      Tensor back = to_dense(s, fill);
      tgt::require_close(back, from_vector(masked_reference(dv, l, fill), d.shape()), 0, 0);
    }
  }
}

namespace {

using tgt::Density;
using tgt::density_name;
using tgt::kDensities;
using tgt::make_layout;

struct ConvertCase {
  std::int64_t B, Mb, Nb, bs;
  Density d;
  std::uint64_t seed;
};

// Block sizes 1, 2, 16, 32, 64 x batches 1, 2, 3 x every density kind; grids of 2-4 blocks a
// side (2-3 at block 64), at least 2 so that Holes leaves blocks next to its empty row and
// column.
std::vector<ConvertCase> convert_cases() {
  std::vector<ConvertCase> out;
  std::mt19937_64 rng(17);
  std::uint64_t seed = 500;
  for (std::int64_t bs : {1, 2, 16, 32, 64}) {
    const std::uint64_t extra = bs >= 64 ? 2 : 3;
    for (std::int64_t B : {1, 2, 3})
      for (Density d : kDensities)
        out.push_back({B, 2 + static_cast<std::int64_t>(rng() % extra), 2 + static_cast<std::int64_t>(rng() % extra),
                       bs, d, seed++});
  }
  return out;
}

// Fill values of to_dense: 0 (the default), -inf (attention masks), and an arbitrary value.
const double kFills[] = {0.0, -double(INFINITY), 2.5};

}  // namespace

TEST_CASE("to_sparse / to_dense at every block size, batch and density against a masked reference",
          "[ops][sparse][sparse_convert]") {
  for (const ConvertCase& c : convert_cases()) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    INFO("B=" << c.B << " Mb=" << c.Mb << " Nb=" << c.Nb << " bs=" << c.bs << " " << density_name(c.d) << " ("
              << l.n_blocks() << " blocks)");
    // the kinds are what they claim: none, one, all, and an empty block-row and block-column
    if (c.d == Density::Empty) REQUIRE(l.n_blocks() == 0);
    if (c.d == Density::One) REQUIRE(l.n_blocks() == 1);
    if (c.d == Density::Full) REQUIRE(l.n_blocks() == c.B * c.Mb * c.Nb);
    if (c.d == Density::Holes) {
      for (std::int64_t b = 0; b < c.B; ++b) {
        bool empty_row = false, empty_col = false;
        for (std::int64_t r = 0; r < c.Mb; ++r) {
          bool any = false;
          for (std::int64_t cc = 0; cc < c.Nb; ++cc) any = any || l.active(b, r, cc);
          empty_row = empty_row || !any;
        }
        for (std::int64_t cc = 0; cc < c.Nb; ++cc) {
          bool any = false;
          for (std::int64_t r = 0; r < c.Mb; ++r) any = any || l.active(b, r, cc);
          empty_col = empty_col || !any;
        }
        REQUIRE(empty_row);
        REQUIRE(empty_col);
      }
    }
    const Shape dshape{c.B, c.Mb * c.bs, c.Nb * c.bs};
    Tensor d = tgt::rand64(dshape, c.seed + 1);
    const std::vector<double> dv = tgt::values(d);
    BlockSparseTensor s = to_sparse(d, l);
    REQUIRE(s.layout() == l);
    REQUIRE(s.dtype() == DType::f64);
    REQUIRE(s.data().shape() == Shape{l.n_blocks(), c.bs, c.bs});
    // block k (in row-major (batch, block-row, block-col) order) holds the dense elements of
    // its block, found here by walking the mask, independently of the layout's tables
    std::vector<double> want_blocks;
    want_blocks.reserve(static_cast<std::size_t>(l.n_blocks() * c.bs * c.bs));
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t r = 0; r < c.Mb; ++r)
        for (std::int64_t cc = 0; cc < c.Nb; ++cc) {
          if (!l.active(b, r, cc)) continue;
          for (std::int64_t i = 0; i < c.bs; ++i)
            for (std::int64_t j = 0; j < c.bs; ++j)
              want_blocks.push_back(
                  dv[static_cast<std::size_t>((b * dshape[1] + r * c.bs + i) * dshape[2] + cc * c.bs + j)]);
        }
    tgt::require_close(s.data(), from_vector(want_blocks, s.data().shape()), 0, 0);
    for (double fill : kFills) {
      INFO("fill " << fill);
      tgt::require_close(to_dense(s, fill), from_vector(masked_reference(dv, l, fill), dshape), 0, 0);
    }
    REQUIRE(to_dense(s).shape() == dshape);
    tgt::require_close(to_dense(s), from_vector(masked_reference(dv, l, 0.0), dshape), 0, 0);  // default fill 0
  }
}

TEST_CASE("to_sparse / to_dense backward at every block size against a masked reference",
          "[ops][sparse][sparse_convert]") {
  // to_sparse's gradient is the block gradient scattered back (0 outside the layout);
  // to_dense's is the dense gradient's active blocks, whatever the fill
  for (const ConvertCase& c : convert_cases()) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    INFO("B=" << c.B << " Mb=" << c.Mb << " Nb=" << c.Nb << " bs=" << c.bs << " " << density_name(c.d));
    const Shape dshape{c.B, c.Mb * c.bs, c.Nb * c.bs};
    Tensor d = tgt::rand64(dshape, c.seed + 2).requires_grad_();
    Tensor gd = tgt::rand64(dshape, c.seed + 3);
    const std::vector<double> gv = tgt::values(gd);
    BlockSparseTensor s = to_sparse(d, l);
    Tensor gblocks = to_sparse(gd, l).data();  // the blocks of gd under l (checked above)
    s.data().backward(gblocks);
    tgt::require_close(d.grad(), from_vector(masked_reference(gv, l, 0.0), dshape), 0, 0);
    Tensor blocks = tgt::rand64({l.n_blocks(), c.bs, c.bs}, c.seed + 4).requires_grad_();
    to_dense(BlockSparseTensor(blocks, l), -double(INFINITY)).backward(gd);
    REQUIRE(blocks.grad().shape() == blocks.shape());
    tgt::require_close(blocks.grad(), gblocks, 0, 0);
  }
}

TEST_CASE("to_sparse / to_dense gradcheck", "[ops][sparse][gradcheck]") {
  Layout l = random_layout(2, 3, 2, 2, 0.5, 4);
  Tensor d = tgt::rand64({2, 6, 4}, 8).requires_grad_();
  auto r1 = autograd::gradcheck([&](const std::vector<Tensor>& in) { return to_sparse(in[0], l).data(); }, {d});
  INFO(r1.report);
  REQUIRE(r1.ok);
  Tensor blocks = tgt::rand64({l.n_blocks(), 2, 2}, 9).requires_grad_();
  auto r2 = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return to_dense(BlockSparseTensor(in[0], l), 0.0); }, {blocks});
  INFO(r2.report);
  REQUIRE(r2.ok);
}

TEST_CASE("to_sparse / to_dense gradcheck at larger blocks, with holes and batches", "[ops][sparse][gradcheck]") {
  // block 16, 3 batches: an empty block-row and block-column; block 32, a single block out
  // of four; the to_dense check with a non-zero fill (whose gradient is 0)
  for (const ConvertCase& c :
       {ConvertCase{3, 3, 2, 16, Density::Holes, 61}, ConvertCase{1, 2, 2, 32, Density::One, 62}}) {
    Layout l = make_layout(c.B, c.Mb, c.Nb, c.bs, c.d, c.seed);
    INFO("B=" << c.B << " bs=" << c.bs << " " << density_name(c.d) << " (" << l.n_blocks() << " blocks)");
    REQUIRE(l.n_blocks() > 0);
    Tensor d = tgt::rand64({c.B, c.Mb * c.bs, c.Nb * c.bs}, c.seed + 1).requires_grad_();
    auto r1 = autograd::gradcheck([&](const std::vector<Tensor>& in) { return to_sparse(in[0], l).data(); }, {d});
    INFO(r1.report);
    REQUIRE(r1.ok);
    Tensor blocks = tgt::rand64({l.n_blocks(), c.bs, c.bs}, c.seed + 2).requires_grad_();
    auto r2 = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return to_dense(BlockSparseTensor(in[0], l), -3.0); }, {blocks});
    INFO(r2.report);
    REQUIRE(r2.ok);
  }
}

TEST_CASE("BlockSparseTensor and Layout print their shape, density and block picture",
          "[ops][sparse][sparse_convert]") {
  // [1, 4, 6] at block 2: blocks (0, 0), (0, 2) and (1, 1) of a 2x3 grid
  Layout l =
      tgt::layout_where(1, 2, 3, 2, [](auto, auto r, auto c) { return (r == 0 && c != 1) || (r == 1 && c == 1); });
  BlockSparseTensor x(from_vector<double>({0.5, -1.25, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 2, 2}), l);
  std::ostringstream os;
  os << x;
  const std::string s = os.str();
  INFO(s);
  for (const char* part : {"BlockSparseTensor(", "shape=[1, 4, 6]", "dtype=f64", "Layout(batch=1, blocks=2x3",
                           "block_size=2", "active=3", "density=0.5", "batch 0:", "\n  #.#\n  .#.", "data=", "-1.25"}) {
    INFO("should contain \"" << part << "\"");
    CHECK(s.find(part) != std::string::npos);
  }
  // two batches: a picture per batch
  Layout l2 = tgt::layout_where(2, 1, 2, 4, [](auto b, auto, auto c) { return c == b; });
  std::ostringstream os2;
  os2 << BlockSparseTensor(zeros({2, 4, 4}, {.dtype = DType::f32}), l2);
  const std::string s2 = os2.str();
  INFO(s2);
  for (const char* part : {"shape=[2, 4, 8]", "dtype=f32", "Layout(batch=2, blocks=1x2", "block_size=4", "active=2",
                           "density=0.5", "batch 0:\n  #.", "batch 1:\n  .#"}) {
    INFO("should contain \"" << part << "\"");
    CHECK(s2.find(part) != std::string::npos);
  }
  std::ostringstream os3;
  os3 << BlockSparseTensor() << " " << Layout();
  CHECK(os3.str() == "BlockSparseTensor(undefined) Layout(undefined)");
}

TEST_CASE("to_sparse / to_dense: undefined layouts and data", "[ops][sparse][sparse_convert]") {
  // the layout is checked before its (undefined) shape is read
  tgt::require_throws<LayoutError>([] { to_sparse(zeros({1, 4, 4}), Layout()); }, {"to_sparse", "layout", "undefined"});
  tgt::require_throws<Error>([] { to_sparse(Tensor(), full_layout(1, 2, 2, 2)); }, {"to_sparse", "dense"});
  tgt::require_throws<Error>([] { to_dense(BlockSparseTensor()); }, {"to_dense", "x"});
}

TEST_CASE("to_sparse / to_dense bad inputs", "[ops][sparse]") {
  Layout l = full_layout(1, 2, 2, 4);
  tgt::require_throws<ShapeError>([&] { to_sparse(zeros({1, 8, 4}), l); }, {"to_sparse", "[1, 8, 8]", "[1, 8, 4]"});
  tgt::require_throws<ShapeError>([&] { to_sparse(zeros({8, 8}), l); }, {"to_sparse", "3-d"});
  tgt::require_throws<LayoutError>([&] { BlockSparseTensor(zeros({3, 4, 4}), l); },
                                   {"BlockSparseTensor", "[4, 4, 4]", "[3, 4, 4]"});
}

TEST_CASE("to_sparse / to_dense CUDA matches CPU", "[ops][sparse][cuda]") {
  TG_REQUIRE_CUDA();
  for (std::int64_t bs : {1, 2, 16, 64}) {
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      Layout l = random_layout(2, 5, 3, bs, 0.4, static_cast<std::uint64_t>(bs));
      Tensor d = rand_seeded({2, 5 * bs, 3 * bs}, 11, {.dtype = dt});
      BlockSparseTensor cpu = to_sparse(d, l);
      BlockSparseTensor gpu = to_sparse(d.to(Device::cuda()), l);
      tgt::require_close(gpu.data(), cpu.data(), 0, 0);
      tgt::require_close(to_dense(gpu, -1.5), to_dense(cpu, -1.5), 0, 0);
      Tensor dg = d.to(Device::cuda()).detach().requires_grad_();
      Tensor g = rand_seeded({l.n_blocks(), bs, bs}, 12, {.dtype = dt});
      to_sparse(dg, l).data().backward(g.to(Device::cuda()));
      tgt::require_close(dg.grad(), to_dense(BlockSparseTensor(g, l)), 0, 0);
      // to_dense's backward on the GPU (with a fill, whose gradient is 0): the dense
      // gradient's active blocks, as on the CPU
      Tensor blocks = rand_seeded({l.n_blocks(), bs, bs}, 13, {.dtype = dt});
      Tensor bc = blocks.detach().requires_grad_();
      Tensor bg = blocks.to(Device::cuda()).detach().requires_grad_();
      Tensor gd = rand_seeded({2, 5 * bs, 3 * bs}, 14, {.dtype = dt});
      to_dense(BlockSparseTensor(bc, l), -1.5).backward(gd);
      to_dense(BlockSparseTensor(bg, l), -1.5).backward(gd.to(Device::cuda()));
      REQUIRE(bg.grad().device().is_cuda());
      REQUIRE(bg.grad().shape() == bg.shape());
      tgt::require_close(bg.grad(), bc.grad(), 0, 0);
    }
  }
}

namespace {
// count CPU values of dtype dt with varied bit patterns; bool: a mix of true and false.
Tensor convert_values(std::int64_t count, DType dt) {
  if (dt == DType::boolean) {
    std::vector<bool> v(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = (i * 7 + 3) % 3 == 0;
    return from_vector(v, {count});
  }
  return (tgt::rand64({count}, 21) * 1000.0).to(dt);
}
}  // namespace

// Every to_sparse / to_dense path on the GPU: 16-byte units and the narrower ones that
// block rows of 1-8 bytes or data misaligned by one element fall back to, every element
// size, block sizes 1-256, empty and full layouts, a fill in the inactive tiles.
TEST_CASE("to_sparse / to_dense CUDA: every dtype, block size and alignment", "[ops][sparse][sparse_convert][cuda]") {
  TG_REQUIRE_CUDA();
  for (std::int64_t bs : {1, 2, 16, 32, 64, 128, 256}) {
    for (double density : {0.0, 0.4, 1.0}) {
      const std::int64_t B = 2, Mb = bs >= 128 ? 2 : 5, Nb = bs >= 128 ? 3 : 3;
      Layout l = random_layout(B, Mb, Nb, bs, density, static_cast<std::uint64_t>(bs) + 5);
      for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i32, DType::i64, DType::boolean}) {
        for (std::int64_t skip : {0, 1}) {
          INFO("bs " << bs << " blocks " << l.n_blocks() << " " << dtype_name(dt) << " skip " << skip);
          const Shape dshape{B, Mb * bs, Nb * bs};
          const std::int64_t dcount = dshape.numel();
          Tensor vals = convert_values(dcount + skip, dt);
          Tensor dc = tgt::misaligned_view(vals, skip, dshape);
          Tensor dg = tgt::misaligned_view(vals.to(Device::cuda()), skip, dshape);
          BlockSparseTensor sc = to_sparse(dc, l), sg = to_sparse(dg, l);
          tgt::require_close(sg.data(), sc.data(), 0, 0);
          // to_dense from misaligned blocks
          Tensor bc = tgt::misaligned_view(vals, skip, {l.n_blocks(), bs, bs});
          Tensor bg = tgt::misaligned_view(vals.to(Device::cuda()), skip, {l.n_blocks(), bs, bs});
          const double fill = dt == DType::boolean ? 1.0 : -1.5;
          tgt::require_close(to_dense(BlockSparseTensor(bg, l), fill), to_dense(BlockSparseTensor(bc, l), fill), 0, 0);
          tgt::require_close(to_dense(sg, 0.0), to_dense(sc, 0.0), 0, 0);
        }
      }
    }
  }
}

// Grids of many blocks at every block size, block-column counts that are not powers of two,
// and misaligned data (narrow-unit paths), in every storage width.
TEST_CASE("to_sparse / to_dense CUDA: many blocks, odd grid widths, misaligned data", "[ops][sparse][sparse_convert][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  struct Big { std::int64_t B, Mb, Nb, bs; double density; };
  for (Big c : {Big{2, 16, 16, 64, 0.25}, Big{1, 16, 16, 64, 1.0}, Big{3, 13, 37, 32, 0.5}, Big{2, 24, 75, 16, 0.4},
                Big{2, 5, 11, 128, 0.6}, Big{1, 200, 300, 2, 0.5}, Big{1, 300, 1531, 1, 0.3}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, static_cast<std::uint64_t>(c.bs) + 301);
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i32, DType::boolean}) {
      for (std::int64_t skip : {0, 1}) {
        INFO("bs " << c.bs << " grid " << c.Mb << "x" << c.Nb << " blocks " << l.n_blocks() << " "
                   << dtype_name(dt) << " skip " << skip);
        const Shape dshape{c.B, c.Mb * c.bs, c.Nb * c.bs};
        Tensor vals = convert_values(dshape.numel() + skip, dt);
        Tensor dc = tgt::misaligned_view(vals, skip, dshape);
        Tensor dg = tgt::misaligned_view(vals.to(Device::cuda()), skip, dshape);
        BlockSparseTensor sc = to_sparse(dc, l), sg = to_sparse(dg, l);
        tgt::require_close(sg.data(), sc.data(), 0, 0);
        const double fill = dt == DType::boolean ? 1.0 : -2.5;
        tgt::require_close(to_dense(sg, fill), to_dense(sc, fill), 0, 0);
        Tensor bc = tgt::misaligned_view(vals, skip, {l.n_blocks(), c.bs, c.bs});
        Tensor bg = tgt::misaligned_view(vals.to(Device::cuda()), skip, {l.n_blocks(), c.bs, c.bs});
        tgt::require_close(to_dense(BlockSparseTensor(bg, l), 0.0), to_dense(BlockSparseTensor(bc, l), 0.0), 0, 0);
      }
    }
  }
}

}  // namespace test_sparse_convert
