// tg::release_device_resources(): drops the ops' caches, cuBLAS handles and workspaces and
// the pools' unused segments; everything computed afterwards is identical.
#include <cstdint>

#include "ops/attention/attention.h"
#include "ops/layout/builders.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "util.h"

namespace test_release {

using namespace tg;

namespace {

struct Outputs {
  Tensor sparse_product, attention, dense_product;
};

// Work that fills every cache: a sparse-matmul plan, attention tile lists (on CUDA), a
// cuBLAS handle and workspace (on CUDA).
Outputs run_all(Device dev, DType dt) {
  const std::int64_t B = 2, bs = 16, Mb = 4, Kb = 3, Nb = 5;
  const Tensor x = tgt::rand64({B, Mb * bs, Kb * bs}, 11).to(dt).to(dev);
  const Tensor y = tgt::rand64({B, Kb * bs, Nb * bs}, 12).to(dt).to(dev);
  const Layout out_layout = random_layout(B, Mb, Nb, bs, 0.5, 13);
  Outputs o;
  o.sparse_product = matmul(x, y, out_layout).data();
  const Tensor q = tgt::rand64({2, 64, 32}, 14).to(dt).to(dev);
  const Tensor k = tgt::rand64({2, 64, 32}, 15).to(dt).to(dev);
  const Tensor v = tgt::rand64({2, 64, 32}, 16).to(dt).to(dev);
  AttentionOptions causal;
  causal.causal = true;
  o.attention = flash_attention(q, k, v, AttentionPattern::dense(64, 64, 16), causal);
  o.dense_product = matmul(x, y);
  return o;
}

void require_identical(const Outputs& a, const Outputs& b) {
  tgt::require_close(a.sparse_product, b.sparse_product, 0, 0);
  tgt::require_close(a.attention, b.attention, 0, 0);
  tgt::require_close(a.dense_product, b.dense_product, 0, 0);
}

}  // namespace

TEST_CASE("release_device_resources: ops give identical results afterwards (CPU)", "[runtime][release]") {
  const Outputs before = run_all(Device::cpu(), DType::f32);
  release_device_resources();
  require_identical(before, run_all(Device::cpu(), DType::f32));
  release_device_resources();  // twice in a row is harmless
}

TEST_CASE("release_device_resources frees cached device memory; ops rebuild what they need",
          "[runtime][release][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const Outputs before = run_all(gpu, DType::bf16);
  synchronize(gpu);
  const MemoryStats held = memory_stats(gpu);
  release_device_resources();
  const MemoryStats after = memory_stats(gpu);
  // At least the cuBLAS workspace (>= 4 MiB on every architecture) went back to the pool,
  // and the pool returned its unused segments to the driver.
  CHECK(after.bytes_in_use + (std::size_t{4} << 20) <= held.bytes_in_use);
  CHECK(after.bytes_reserved <= held.bytes_reserved);
  require_identical(before, run_all(gpu, DType::bf16));
}

}  // namespace test_release
