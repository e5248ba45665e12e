#include "util.h"

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
