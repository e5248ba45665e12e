// Tests of products of blocks of 16 and 32 taken on the 64-blocks covering them
// (ops/sparse_matmul/sparse_matmul.cpp `covering_route`, path.h CoarseBlocks):
//  - covering_layout (ops/layout/derived.h) on small layouts, padded grids, finer targets,
//    against adapted_layout on non-zero data, and its bad inputs;
//  - on the CPU with the covering blocks forced (CoarseBlocks::Always), every mode and
//    transpose combination at blocks 16 and 32, forward against the f64 reference and
//    forward and gradients against the block size's own products, on random layouts, empty
//    ones, empty rows and columns and k-blocks without overlap; gradchecks of every mode;
//  - that the covering blocks were used: a NaN of y facing a block absent from x reaches
//    the output only through a covering block's zeros;
//  - on CUDA (Hopper), the automatic choice against the CPU, where it takes the covering
//    blocks and where it declines them (too much added work, extents not multiples of 64);
//  - a block-sparse output stored straight into its fine blocks (fine stores) bit for bit
//    equal to the 64-blocks moved out: on the CPU, and on CUDA on every Hopper schedule and
//    with split k lists (and against the CPU).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/layout/derived.h"
#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "sparse_matmul_cases.h"
#include "util.h"

namespace test_sparse_matmul_coarse {

using namespace tg;
using namespace mmcases;
using ops::spmm::CoarseBlocks;

namespace {

// Sets CoarseBlocks for one test and puts back the automatic choice however it ends.
struct CoarseGuard {
  explicit CoarseGuard(CoarseBlocks c) { ops::spmm::set_coarse_blocks(c); }
  CoarseGuard(const CoarseGuard&) = delete;
  CoarseGuard& operator=(const CoarseGuard&) = delete;
  ~CoarseGuard() { ops::spmm::set_coarse_blocks(CoarseBlocks::Auto); }
};

// out, dx, dy (f64, on the CPU) of mode m on problem p with the operands stored as the
// options say; x and y are the stored values, w the output's gradient, all given dense.
struct Result {
  Tensor out, dx, dy;
};
Result run_mode(const Mode& m, const Problem& p, const MatmulOptions& o, const Tensor& xd, const Tensor& yd,
                const Tensor& wd, DType dt, Device dev) {
  const Layout sx = o.transpose_x ? p.lx.transposed() : p.lx, sy = o.transpose_y ? p.ly.transposed() : p.ly;
  Tensor x = input_of(xd, sx, m.x_sparse).to(dt).to(dev).detach().requires_grad_();
  Tensor y = input_of(yd, sy, m.y_sparse).to(dt).to(dev).detach().requires_grad_();
  Tensor w = input_of(wd, p.lo, m.out_sparse).to(dt).to(dev);
  Tensor out = call(m, x, sx, y, sy, p.lo, o);
  out.backward(w);
  const auto f64 = [](const Tensor& t) { return t.to(Device::cpu()).to(DType::f64); };
  return {f64(out), f64(x.grad()), f64(y.grad())};
}

// Problems whose extents are multiples of 64 at block size bs (16 or 32): random layouts at
// two densities, batch 2, non-square; x empty; the output empty; an empty block-row of x and
// block-column of y; k-blocks of x and y that never meet.
std::vector<Problem> coarse_problems(std::int64_t bs, std::uint64_t seed) {
  const std::int64_t f = 64 / bs;  // blocks a 64-block spans along each side
  std::vector<Problem> ps = {
      problem(2, 2 * f, 3 * f, f, bs, 0.4, 0.5, 0.6, seed), problem(1, f, 2 * f, 2 * f, bs, 0.8, 0.9, 1.0, seed + 10),
      problem(1, f, f, f, bs, 0.0, 0.7, 0.7, seed + 20), problem(2, f, 2 * f, f, bs, 0.7, 0.7, 0.0, seed + 30)};
  const Layout rx = random_layout(1, 2 * f, 2 * f, bs, 0.8, seed + 40),
               ry = random_layout(1, 2 * f, f, bs, 0.8, seed + 41);
  ps.push_back(
      {tgt::layout_where(1, 2 * f, 2 * f, bs, [&](auto b, auto r, auto c) { return r != 1 && rx.active(b, r, c); }),
       tgt::layout_where(1, 2 * f, f, bs, [&](auto b, auto r, auto c) { return c != 0 && ry.active(b, r, c); }),
       tgt::layout_where(1, 2 * f, f, bs, [](auto, auto r, auto) { return r != 0; })});
  // even k-blocks in x, odd ones in y: every output block of SSS / DSS is an empty sum
  ps.push_back({tgt::layout_where(1, f, 2 * f, bs, [](auto, auto, auto c) { return c % 2 == 0; }),
                tgt::layout_where(1, 2 * f, f, bs, [](auto, auto r, auto) { return r % 2 == 1; }),
                full_layout(1, f, f, bs)});
  return ps;
}

std::string describe(const Mode& m, const Problem& p, const MatmulOptions& o) {
  return detail::concat(m.name, " B=", p.B(), " M=", p.M(), " K=", p.K(), " N=", p.N(), " bs=", p.bs(),
                        o.transpose_x ? " transpose_x" : "", o.transpose_y ? " transpose_y" : "");
}

const MatmulOptions kOptions[] = {{false, false}, {true, false}, {false, true}, {true, true}};

// Stored values of problem p's operands under options o (x [B, K, M] when transposed, ...).
struct Stored {
  Tensor x, y, w;
};
Stored stored_values(const Problem& p, const MatmulOptions& o, std::uint64_t seed) {
  const Shape xs = o.transpose_x ? Shape{p.B(), p.K(), p.M()} : Shape{p.B(), p.M(), p.K()};
  const Shape ys = o.transpose_y ? Shape{p.B(), p.N(), p.K()} : Shape{p.B(), p.K(), p.N()};
  return {tgt::rand64(xs, seed), tgt::rand64(ys, seed + 1), tgt::rand64({p.B(), p.M(), p.N()}, seed + 2)};
}

// Output and gradients bit for bit equal.
void require_identical(const Result& a, const Result& b) {
  tgt::require_close(a.out, b.out, 0.0, 0.0);
  tgt::require_close(a.dx, b.dx, 0.0, 0.0);
  tgt::require_close(a.dy, b.dy, 0.0, 0.0);
}

// Calls f(p, o, v, m) for every problem of ps, option set of kOptions and mode, the stored
// values v of each (problem, options) pair drawn from ++seed.
template <typename F>
void for_each_case(const std::vector<Problem>& ps, std::uint64_t& seed, F&& f) {
  for (const Problem& p : ps) {
    for (const MatmulOptions& o : kOptions) {
      const Stored v = stored_values(p, o, ++seed);
      for (const Mode& m : kModes) f(p, o, v, m);
    }
  }
}

// x (DSD) whose block (0, 0, 1) is absent at block 32 while (0, 0, 0) is stored, and y with
// a NaN in k-block 1 (row 40, column 3): the block size's own product never reads it (no
// block of x meets k-block 1 in block-row 0), the covering 64-block of x reads it against
// zeros, so output row 0, column 3 is NaN exactly when the covering blocks were used.
bool nan_reaches_output(DType dt, Device dev) {
  const Layout lx = tgt::layout_where(1, 2, 2, 32, [](auto, auto r, auto c) { return !(r == 0 && c == 1); });
  Tensor xd = tgt::rand64({1, 64, 64}, 77), yd = tgt::rand64({1, 64, 64}, 78);
  std::vector<double> yv = tgt::values(yd);
  yv[40 * 64 + 3] = std::nan("");
  yd = from_vector(yv, {1, 64, 64});
  const BlockSparseTensor x(to_sparse(xd, lx).data().to(dt).to(dev), lx);
  const Tensor out = matmul(x, yd.to(dt).to(dev)).to(Device::cpu()).to(DType::f64);
  // rows 32..63 of x (block-row 1) hold k-block 1 and read the NaN on every path
  REQUIRE(std::isnan(tgt::values(out)[40 * 64 + 3]));
  return std::isnan(tgt::values(out)[0 * 64 + 3]);
}

}  // namespace

TEST_CASE("covering_layout: the blocks covering a layout's at another block size", "[ops][layout]") {
  // 1 x 4 x 6 blocks of 32 -> 1 x 2 x 3 blocks of 64
  const Layout l = tgt::layout_where(
      1, 4, 6, 32, [](auto, auto r, auto c) { return (r == 0 && c == 0) || (r == 3 && c == 3) || (r == 2 && c == 5); });
  const Layout c = covering_layout(l, 64);
  CHECK(c.block_size() == 64);
  CHECK(c.block_rows() == 2);
  CHECK(c.block_cols() == 3);
  const std::vector<std::uint8_t> want = {1, 0, 0, 0, 1, 1};
  CHECK(c.mask_host() == want);
  // a grid that 64 does not divide is padded: 3 x 3 blocks of 32 -> 2 x 2 of 64
  const Layout odd =
      tgt::layout_where(2, 3, 3, 32, [](auto b, auto r, auto c2) { return b == 1 && r == 2 && c2 == 2; });
  const Layout oc = covering_layout(odd, 64);
  CHECK(oc.batch() == 2);
  CHECK(oc.block_rows() == 2);
  CHECK(oc.block_cols() == 2);
  CHECK(oc.n_blocks() == 1);
  CHECK(oc.active(1, 1, 1));
  // a finer target: each block of 32 is four of 16
  const Layout fine = covering_layout(l, 16);
  CHECK(fine.n_blocks() == 4 * l.n_blocks());
  CHECK(fine.active(0, 7, 6));
  CHECK(fine.active(0, 6, 7));
  CHECK_FALSE(fine.active(0, 0, 2));
  // the same as adapted_layout where every block holds a non-zero, for random layouts
  for (std::uint64_t seed : {1, 2, 3}) {
    const Layout r = random_layout(2, 6, 4, 16, 0.3, seed);
    const BlockSparseTensor x = to_sparse(tgt::rand64({2, 96, 64}, seed + 9, 0.5, 1.0), r);
    for (std::int64_t to : {32, 64, 128}) CHECK(covering_layout(r, to) == adapted_layout(x, to));
  }
  // an empty layout covers nothing
  CHECK(covering_layout(random_layout(1, 2, 2, 32, 0.0, 4), 64).n_blocks() == 0);
  tgt::require_throws<LayoutError>([] { (void)covering_layout(Layout(), 64); }, {"covering_layout", "l", "defined"});
  tgt::require_throws<LayoutError>([&] { (void)covering_layout(l, 48); },
                                   {"covering_layout", "bs_to", "power of two", "48"});
}

TEST_CASE("sparse matmul on covering 64-blocks matches the block size's own products (CPU)", "[ops][sparse_matmul]") {
  std::uint64_t seed = 31000;
  for (std::int64_t bs : {16, 32}) {
    for_each_case(
        coarse_problems(bs, seed += 100), seed,
        [](const Problem& p, const MatmulOptions& o, const Stored& v, const Mode& m) {
          INFO(describe(m, p, o));
          Result own, wide;
          {
            CoarseGuard never(CoarseBlocks::Never);
            own = run_mode(m, p, o, v.x, v.y, v.w, DType::f64, Device::cpu());
          }
          {
            CoarseGuard always(CoarseBlocks::Always);
            wide = run_mode(m, p, o, v.x, v.y, v.w, DType::f64, Device::cpu());
          }
          // forward against the f64 reference of the masked operands (0 outside the output)
          const Layout sx = o.transpose_x ? p.lx.transposed() : p.lx, sy = o.transpose_y ? p.ly.transposed() : p.ly;
          const Tensor ref = reference_mm(host(v.x, sx, m.x_sparse), host(v.y, sy, m.y_sparse), p.B(), p.M(), p.K(),
                                          p.N(), o.transpose_x, o.transpose_y, m.out_sparse ? &p.lo : nullptr, 0.0);
          tgt::require_close(logical(wide.out, p.lo, m.out_sparse, 0.0), ref, 1e-12, 1e-12);
          // and forward and gradients against the block size's own products
          tgt::require_close(wide.out, own.out, 1e-12, 1e-12);
          tgt::require_close(wide.dx, own.dx, 1e-12, 1e-12);
          tgt::require_close(wide.dy, own.dy, 1e-12, 1e-12);
        });
  }
}

TEST_CASE("sparse matmul on covering 64-blocks: fine stores equal the moved 64-blocks (CPU)", "[ops][sparse_matmul]") {
  CoarseGuard always(CoarseBlocks::Always);
  struct FineGuard {
    ~FineGuard() { ops::spmm::set_fine_stores(true); }
  } restore;
  std::uint64_t seed = 34000;
  for (std::int64_t bs : {16, 32}) {
    for_each_case(coarse_problems(bs, seed += 100), seed,
                  [](const Problem& p, const MatmulOptions& o, const Stored& v, const Mode& m) {
                    INFO(describe(m, p, o));
                    ops::spmm::set_fine_stores(true);
                    const Result fine = run_mode(m, p, o, v.x, v.y, v.w, DType::f32, Device::cpu());
                    ops::spmm::set_fine_stores(false);
                    const Result moved = run_mode(m, p, o, v.x, v.y, v.w, DType::f32, Device::cpu());
                    require_identical(fine, moved);
                  });
  }
}

TEST_CASE("sparse matmul on covering 64-blocks: gradcheck along random directions (CPU)",
          "[ops][sparse_matmul][gradcheck]") {
  CoarseGuard always(CoarseBlocks::Always);
  std::uint64_t seed = 31500;
  for (std::int64_t bs : {16, 32}) {
    const Problem p = coarse_problems(bs, seed += 100)[0];  // random layouts, batch 2, non-square
    for (const Mode& m : kModes) {
      const Tensor x0 = input_of(tgt::rand64({p.B(), p.M(), p.K()}, ++seed), p.lx, m.x_sparse);
      const Tensor y0 = input_of(tgt::rand64({p.B(), p.K(), p.N()}, ++seed), p.ly, m.y_sparse);
      const auto r = directional_gradcheck(
          [&](const Tensor& x, const Tensor& y) { return call(m, x, p.lx, y, p.ly, p.lo, {}); }, x0, y0, 4, ++seed);
      INFO(m.name << " bs=" << bs << ": " << r.report);
      REQUIRE(r.ok);
    }
  }
}

TEST_CASE("sparse matmul on covering 64-blocks: a NaN facing an added zero block shows the path",
          "[ops][sparse_matmul]") {
  {
    CoarseGuard never(CoarseBlocks::Never);
    CHECK_FALSE(nan_reaches_output(DType::f64, Device::cpu()));
  }
  {
    CoarseGuard always(CoarseBlocks::Always);
    CHECK(nan_reaches_output(DType::f64, Device::cpu()));
  }
  // the automatic choice takes covering blocks only for 16-bit products on a Hopper GPU
  CHECK_FALSE(nan_reaches_output(DType::f64, Device::cpu()));
  CHECK_FALSE(nan_reaches_output(DType::bf16, Device::cpu()));
}

TEST_CASE("sparse matmul CUDA on covering 64-blocks matches the CPU", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  if (!ops::spmm::wgmma_supported(Device::cuda().index)) TG_SKIP("not a compute capability 9.0 GPU: test skipped");
  CudaSettingsGuard restore;
  // Auto on CUDA takes the covering blocks for bf16 / f16 where they add at most
  // max_coarse_work(32) times the work: x with 3 of the 4 blocks of 32 of its one 64-block (4/3)
  CHECK(nan_reaches_output(DType::bf16, Device::cuda()));
  CHECK(nan_reaches_output(DType::f16, Device::cuda()));
  // not for f32 (no Hopper kernel), nor when forced off
  CHECK_FALSE(nan_reaches_output(DType::f32, Device::cuda()));
  {
    CoarseGuard never(CoarseBlocks::Never);
    CHECK_FALSE(nan_reaches_output(DType::bf16, Device::cuda()));
  }
  // every mode and transpose combination against the CPU's products at the block size's own
  // (the CPU never takes covering blocks under Auto), Auto and Always (f32 too)
  std::uint64_t seed = 32000;
  for (std::int64_t bs : {16, 32}) {
    for_each_case(coarse_problems(bs, seed += 100), seed,
                  [](const Problem& p, const MatmulOptions& o, const Stored& v, const Mode& m) {
                    for (DType dt : {DType::bf16, DType::f32}) {
                      INFO(describe(m, p, o) << " " << dtype_name(dt));
                      const Result cpu = run_mode(m, p, o, v.x, v.y, v.w, dt, Device::cpu());
                      CoarseGuard choice(dt == DType::f32 ? CoarseBlocks::Always : CoarseBlocks::Auto);
                      const Result gpu = run_mode(m, p, o, v.x, v.y, v.w, dt, Device::cuda());
                      const double rtol = dt == DType::bf16 ? 1.6e-2 : 1e-5;
                      const double atol = rtol * std::sqrt(static_cast<double>(std::max({p.M(), p.K(), p.N()})));
                      tgt::require_close(gpu.out, cpu.out, rtol, atol);
                      tgt::require_close(gpu.dx, cpu.dx, rtol, atol);
                      tgt::require_close(gpu.dy, cpu.dy, rtol, atol);
                    }
                  });
  }
  // Auto declines where the covering blocks would add too much work: one block of 16 in each
  // 64-block of x (16 times the work), and extents that are not multiples of 64
  {
    const Layout lx = tgt::layout_where(1, 4, 4, 16, [](auto, auto r, auto c) { return r == 0 && c == 0; });
    Tensor yd = tgt::rand64({1, 64, 64}, 5);
    std::vector<double> yv = tgt::values(yd);
    yv[20 * 64 + 1] = std::nan("");  // k-block 1 of 16, which no block of x reaches
    const BlockSparseTensor x(to_sparse(tgt::rand64({1, 64, 64}, 6), lx).data().to(DType::bf16).to(Device::cuda()), lx);
    const Tensor out = matmul(x, from_vector(yv, {1, 64, 64}).to(DType::bf16).to(Device::cuda()));
    CHECK_FALSE(std::isnan(tgt::values(out.to(Device::cpu()).to(DType::f64))[1]));
  }
  const Problem ragged = problem(1, 3, 4, 2, 32, 1.0, 1.0, 1.0, seed + 1);  // M = 96
  for (const Mode& m : kModes) {
    INFO("extents not multiples of 64: " << m.name);
    const Stored v = stored_values(ragged, kOptions[0], seed + 2);
    const Result cpu = run_mode(m, ragged, kOptions[0], v.x, v.y, v.w, DType::bf16, Device::cpu());
    const Result gpu = run_mode(m, ragged, kOptions[0], v.x, v.y, v.w, DType::bf16, Device::cuda());
    tgt::require_close(gpu.out, cpu.out, 1.6e-2, 0.2);
    tgt::require_close(gpu.dx, cpu.dx, 1.6e-2, 0.2);
    tgt::require_close(gpu.dy, cpu.dy, 1.6e-2, 0.2);
  }
}

TEST_CASE("sparse matmul CUDA on covering 64-blocks: fine stores equal the moved 64-blocks",
          "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  if (!ops::spmm::wgmma_supported(Device::cuda().index)) TG_SKIP("not a compute capability 9.0 GPU: test skipped");
  CudaSettingsGuard restore;
  CoarseGuard always(CoarseBlocks::Always);
  using ops::spmm::MmaPath;
  // every schedule of the Hopper kernel: one block a tile (two rings), row groups, column
  // groups (tiles stored transposed), pairs of row groups and of column groups
  const MmaPath paths[] = {MmaPath::Auto,
                           MmaPath::WgmmaTmaNarrow,
                           MmaPath::WgmmaTmaWide,
                           MmaPath::WgmmaTmaWideColumns,
                           MmaPath::WgmmaTmaRowPairs,
                           MmaPath::WgmmaTmaColumnPairs};
  // (a section a block size, so that a sanitizer run can take one: -c "blocks of 32")
  const std::int64_t bs = [] {
    std::int64_t b = 0;
    SECTION("blocks of 16") { b = 16; }
    SECTION("blocks of 32") { b = 32; }
    return b;
  }();
  std::uint64_t seed = 33000 + static_cast<std::uint64_t>(bs) * 100;
  const std::int64_t f = 64 / bs;
  std::vector<Problem> ps = coarse_problems(bs, seed += 100);
  // k of 1024 over two output 64-blocks: the lists are cut into pieces that the split
  // reduction sums into the fine blocks
  ps.push_back(problem(1, f, 16 * f, 2 * f, bs, 0.7, 0.7, 0.6, seed + 50));
  for_each_case(ps, seed, [&](const Problem& p, const MatmulOptions& o, const Stored& v, const Mode& m) {
    const DType dt = seed % 2 == 0 ? DType::bf16 : DType::f16;
    const Result cpu = run_mode(m, p, o, v.x, v.y, v.w, dt, Device::cpu());
    for (MmaPath path : paths) {
      INFO(describe(m, p, o) << " " << dtype_name(dt) << " path " << static_cast<int>(path));
      ops::spmm::set_mma_path(path);
      ops::spmm::set_fine_stores(true);
      const Result fine = run_mode(m, p, o, v.x, v.y, v.w, dt, Device::cuda());
      ops::spmm::set_fine_stores(false);
      const Result moved = run_mode(m, p, o, v.x, v.y, v.w, dt, Device::cuda());
      require_identical(fine, moved);
      const double atol = 1.6e-2 * std::sqrt(static_cast<double>(std::max({p.M(), p.K(), p.N()})));
      tgt::require_close(fine.out, cpu.out, 1.6e-2, atol);
      tgt::require_close(fine.dx, cpu.dx, 1.6e-2, atol);
      tgt::require_close(fine.dy, cpu.dy, 1.6e-2, atol);
    }
  });
}

}  // namespace test_sparse_matmul_coarse
