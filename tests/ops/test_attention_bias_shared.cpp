// flash_attention with a bias shared by every batch·head (P = 1) or by the batches of a
// head (P = Hq): equal to the same attention with that bias written out per batch·head
// (tiled by hand, not by the op's own repeat), its gradient the sum over the rows sharing
// it; a gradcheck; a bias of another row count raises; CUDA against the CPU.
#include <cstdint>
#include <vector>

#include "ops/attention/attention.h"
#include "util.h"

namespace test_attention_bias_shared {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

constexpr std::int64_t kB = 2, kH = 2, kSq = 8, kSk = 12, kD = 4, kBs = 4;

// A layout [rows, Sq/4, Sk/4] and its rows tiled to kB·kH rows: row r of the result is row
// r % rows (rows = kH: row b·Hq + h reads head h).
Layout bias_layout(std::int64_t rows, std::uint64_t seed) { return random_layout(rows, 2, 3, kBs, 0.7, seed); }
Layout tiled(const Layout& l) {
  const std::vector<std::uint8_t>& m = l.mask_host();
  const std::int64_t per = l.block_rows() * l.block_cols(), rows = l.batch();
  std::vector<bool> t(at(kB * kH * per));
  for (std::int64_t r = 0; r < kB * kH; ++r)
    for (std::int64_t e = 0; e < per; ++e) t[at(r * per + e)] = m[at((r % rows) * per + e)] != 0;
  return Layout(from_vector(t, {kB * kH, l.block_rows(), l.block_cols()}), kBs);
}
// Dense [rows, Sq, Sk] values tiled to kB·kH rows the same way.
Tensor tile_rows(const Tensor& dense) {
  const std::vector<double> v = tgt::values(dense);
  const std::int64_t rows = dense.size(0), per = kSq * kSk;
  std::vector<double> t(at(kB * kH * per));
  for (std::int64_t r = 0; r < kB * kH; ++r)
    for (std::int64_t e = 0; e < per; ++e) t[at(r * per + e)] = v[at((r % rows) * per + e)];
  return from_vector(t, {kB * kH, kSq, kSk});
}

struct Run {
  Tensor out, dq, dbias_dense;  // dbias as dense [P, Sq, Sk] (0 outside the bias's blocks)
};

Run run(const Tensor& bias_dense, const Layout& bl, Device dev, DType dt, std::int64_t d = kD) {
  const AttentionPattern pat = AttentionPattern::from_layout(random_layout(kB * kH, 2, 3, kBs, 0.8, 77));
  Tensor q = tgt::rand64({kB * kH, kSq, d}, 1).to(dt).to(dev).requires_grad_();
  const Tensor k = tgt::rand64({kB * kH, kSk, d}, 2).to(dt).to(dev), v = tgt::rand64({kB * kH, kSk, d}, 3).to(dt).to(dev);
  Tensor bdata = to_sparse(bias_dense, bl).data().to(dt).to(dev).detach().requires_grad_();
  AttentionOptions o;
  o.num_heads = kH;
  o.bias = BlockSparseTensor(bdata, bl);
  Tensor out = flash_attention(q, k, v, pat, o);
  out.backward(tgt::rand64(out.shape(), 4).to(dt).to(dev));
  return {out, q.grad(), to_dense(BlockSparseTensor(bdata.grad().to(DType::f64).to(Device::cpu()), bl))};
}

}  // namespace

TEST_CASE("flash_attention with a bias shared by all rows or per head equals the tiled bias",
          "[ops][attention]") {
  for (std::int64_t rows : {std::int64_t(1), kH}) {
    INFO("bias rows P = " << rows);
    const Layout bl = bias_layout(rows, 10 + static_cast<std::uint64_t>(rows));
    const Tensor dense = tgt::rand64({rows, kSq, kSk}, 20 + static_cast<std::uint64_t>(rows), -2.0, 2.0);
    const Run shared = run(dense, bl, Device::cpu(), DType::f64);
    const Run full = run(tile_rows(dense), tiled(bl), Device::cpu(), DType::f64);
    tgt::require_close(shared.out, full.out, 1e-13, 1e-13);
    tgt::require_close(shared.dq, full.dq, 1e-13, 1e-13);
    // the shared bias's gradient: the sum of the tiled bias's gradient over the rows reading it
    const std::vector<double> g = tgt::values(full.dbias_dense);
    std::vector<double> want(at(rows * kSq * kSk), 0.0);
    for (std::int64_t r = 0; r < kB * kH; ++r)
      for (std::int64_t e = 0; e < kSq * kSk; ++e) want[at((r % rows) * kSq * kSk + e)] += g[at(r * kSq * kSk + e)];
    tgt::require_close(shared.dbias_dense, from_vector(want, {rows, kSq, kSk}), 1e-13, 1e-13);
    // and the bias matters
    const Run none = run(zeros({rows, kSq, kSk}, {.dtype = DType::f64}), bl, Device::cpu(), DType::f64);
    REQUIRE(tgt::values(max(abs(none.out - shared.out)))[0] > 1e-3);
  }
}

TEST_CASE("flash_attention gradcheck with a bias shared by every row", "[ops][attention][gradcheck]") {
  const AttentionPattern pat = AttentionPattern::from_layout(random_layout(4, 2, 2, 2, 0.8, 5));
  const Layout bl = random_layout(1, 2, 2, 2, 0.75, 6);
  std::vector<Tensor> in{tgt::rand64({4, 4, 2}, 7).requires_grad_(), tgt::rand64({4, 4, 2}, 8).requires_grad_(),
                         tgt::rand64({4, 4, 2}, 9).requires_grad_(),
                         tgt::rand64({bl.n_blocks(), 2, 2}, 10).requires_grad_()};
  auto f = [&](const std::vector<Tensor>& x) {
    AttentionOptions o;
    o.num_heads = 2;
    o.bias = BlockSparseTensor(x[3], bl);
    return flash_attention(x[0], x[1], x[2], pat, o);
  };
  auto r = autograd::gradcheck(f, in);
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("flash_attention: a bias of another row count raises", "[ops][attention]") {
  const AttentionPattern pat = AttentionPattern::from_layout(full_layout(kB * kH, 2, 3, kBs));
  const Tensor q = zeros({kB * kH, kSq, kD}, {.dtype = DType::f64}), k = zeros({kB * kH, kSk, kD}, {.dtype = DType::f64});
  AttentionOptions o;
  o.num_heads = kH;
  o.bias = BlockSparseTensor(zeros({3 * 6, kBs, kBs}, {.dtype = DType::f64}), full_layout(3, 2, 3, kBs));
  tgt::require_throws<ShapeError>([&] { flash_attention(q, k, k, pat, o); },
                                  {"flash_attention", "options.bias", "P = 1, Hq = 2 or B·Hq = 4", "[3, 8, 12]"});
}

TEST_CASE("flash_attention CUDA with a per-head bias matches the CPU", "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  const Layout bl = bias_layout(kH, 31);
  const Tensor dense = tgt::rand64({kH, kSq, kSk}, 32, -2.0, 2.0);
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO("dtype " << dtype_name(dt));
    const double tol = dt == DType::bf16 ? 3e-2 : 1e-4;
    // head dim 32: the bf16 tensor-core kernels take 32, 64 and 128
    const Run cpu = run(dense, bl, Device::cpu(), dt, 32), gpu = run(dense, bl, Device::cuda(), dt, 32);
    tgt::require_close(gpu.out.to(Device::cpu()).to(DType::f64), cpu.out.to(DType::f64), tol, tol);
    tgt::require_close(gpu.dq.to(Device::cpu()).to(DType::f64), cpu.dq.to(DType::f64), 2 * tol, 2 * tol);
    tgt::require_close(gpu.dbias_dense, cpu.dbias_dense, 2 * tol, 2 * tol);
  }
}

}  // namespace test_attention_bias_shared
