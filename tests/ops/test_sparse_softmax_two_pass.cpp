// The CUDA block-sparse softmax's two-pass kernels forced on rows the fused kernels would
// take (ops::set_force_two_pass): every dtype and block size 16-128, masked (mask on x's
// layout and on another) and not, scales > 0, < 0 and 0, -inf / nan / +inf rows, aligned
// and misaligned data, forward and backward, against the CPU on the same inputs. Without
// the override the two passes run only on rows past the fused kernels' limits.
#include <cstdint>
#include <random>
#include <vector>

#include "ops/sparse_softmax/sparse_softmax.h"
#include "ops/sparse_softmax/two_pass.h"
#include "sparse_softmax_cases.h"
#include "util.h"

namespace test_sparse_softmax_two_pass {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// A bool mask with `percent` of the elements of every block of ml set.
BlockSparseTensor random_mask(const Layout& ml, int percent, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> m(at(ml.n_blocks() * ml.block_size() * ml.block_size()));
  for (double& v : m) v = static_cast<int>(rng() % 100) < percent ? 1.0 : 0.0;
  return BlockSparseTensor(from_vector(m, {ml.n_blocks(), ml.block_size(), ml.block_size()}).to(DType::boolean), ml);
}

// Restores the default plan choice however a check leaves the scope.
struct TwoPass {
  TwoPass() { ops::set_force_two_pass(true); }
  ~TwoPass() { ops::set_force_two_pass(false); }
};

}  // namespace

TEST_CASE("block-sparse softmax: the two-pass override round-trips and leaves the CPU alone", "[ops][sparse_softmax]") {
  REQUIRE_FALSE(ops::force_two_pass());
  const Layout l = random_layout(2, 3, 4, 16, 0.6, 41);
  const BlockSparseTensor x(tgt::rand64({l.n_blocks(), 16, 16}, 42, -3.0, 3.0), l);
  const Tensor plain = softmax(x, 0.8).data();
  {
    TwoPass on;
    REQUIRE(ops::force_two_pass());
    tgt::require_close(softmax(x, 0.8).data(), plain, 0, 0);
  }
  REQUIRE_FALSE(ops::force_two_pass());
}

TEST_CASE("block-sparse softmax CUDA two-pass kernels forced on every block size match CPU",
          "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  struct Case {
    std::int64_t B, Mb, Nb, bs;
    double density;
  };
  std::uint64_t seed = 5100;
  for (const Case& c : {Case{2, 3, 9, 16, 0.6}, Case{1, 4, 7, 32, 0.5}, Case{2, 2, 6, 64, 0.7},
                        Case{1, 2, 5, 128, 0.8}, Case{1, 2, 4, 64, 1.0}}) {
    const Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    if (l.n_blocks() == 0) continue;
    const std::int64_t bs = c.bs;
    const Shape shape{l.n_blocks(), bs, bs};
    const BlockSparseTensor own = random_mask(l, 30, ++seed);
    const Layout ml = random_layout(c.B, c.Mb, c.Nb, bs, 0.6, ++seed);
    const BlockSparseTensor other = random_mask(ml, 30, ++seed);
    std::vector<double> d = tgt::values(tgt::rand64(shape, ++seed, -4.0, 4.0));
    tgt::plant_special_rows(l, d);  // -inf, nan and +inf rows
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      const Tensor xc = from_vector(d, shape).to(dt);
      const auto misaligned = [&](const Tensor& t) {
        Tensor v = tgt::misaligned_view(zeros({t.numel() + 1}, {.dtype = t.dtype(), .device = gpu}), 1, t.shape());
        copy_bytes(v, t.to(gpu));
        return v;
      };
      const BlockSparseTensor xh(xc, l), xg(xc.to(gpu), l), xm(misaligned(xc), l);
      TwoPass on;
      for (double scale : {0.7, -0.6, 0.0}) {
        INFO("block " << bs << " density " << c.density << " dtype " << dtype_name(dt) << " scale " << scale);
        const Tensor want = softmax(xh, scale).data();
        tgt::require_close(softmax(xg, scale).data(), want, tol, tol * 1e-2);
        INFO("misaligned x");
        tgt::require_close(softmax(xm, scale).data(), want, tol, tol * 1e-2);
      }
      for (const BlockSparseTensor* mask : {&own, &other}) {
        INFO("block " << bs << " dtype " << dtype_name(dt) << (mask == &own ? " mask on x's layout" : " mask on another"));
        const Tensor want = masked_softmax(xh, *mask, 0.7).data();
        const BlockSparseTensor mg(mask->data().to(gpu), mask->layout());
        tgt::require_close(masked_softmax(xg, mg, 0.7).data(), want, tol, tol * 1e-2);
        tgt::require_close(masked_softmax(xm, mg, 0.7).data(), want, tol, tol * 1e-2);
      }
      {
        INFO("block " << bs << " dtype " << dtype_name(dt) << " softmax_backward on the CPU's y");
        const Tensor y = softmax(xh, 0.7).data(), dyc = rand_seeded(shape, ++seed, {.dtype = dt}, -1.0, 1.0);
        const Tensor want = softmax_backward(BlockSparseTensor(y, l), BlockSparseTensor(dyc, l), 0.7).data();
        tgt::require_close(
            softmax_backward(BlockSparseTensor(y.to(gpu), l), BlockSparseTensor(dyc.to(gpu), l), 0.7).data(), want,
            tol, tol * 1e-1);
        INFO("misaligned y and dy");
        tgt::require_close(
            softmax_backward(BlockSparseTensor(misaligned(y), l), BlockSparseTensor(misaligned(dyc), l), 0.7).data(),
            want, tol, tol * 1e-1);
      }
    }
  }
}

}  // namespace test_sparse_softmax_two_pass
