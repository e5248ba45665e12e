// Tensor::item_async / PendingItem: values equal to item(), a copy that does not wait for
// later work, errors of deferred checks, bad uses.
#include <cstdint>
#include <vector>

#include "core/block_sparse.h"
#include "core/pending_item.h"
#include "ops/layout/builders.h"
#include "ops/sparse_move/sparse_move.h"
#include "runtime/deferred_checks.h"
#include "util.h"

namespace test_pending_item {

using namespace tg;

namespace {

void check_values(Device dev) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::boolean}) {
    INFO(dtype_name(dt) << " on " << dev.str());
    const double v = dt == DType::boolean ? 1.0 : -2.75;
    const Tensor t = full({1, 1}, v, {.dtype = dt, .device = dev});
    const PendingItem p = t.item_async();
    const PendingItem shared = p;  // copies share the copy in flight
    REQUIRE(p.get<double>() == t.item<double>());
    REQUIRE(shared.get<float>() == t.item<float>());
    REQUIRE(p.get<std::int64_t>() == t.item<std::int64_t>());
    REQUIRE(p.ready());
  }
}

}  // namespace

TEST_CASE("item_async gives item's value on the CPU and rejects bad uses", "[core]") {
  check_values(Device::cpu());
  tgt::require_throws<ShapeError>([] { (void)zeros({2}).item_async(); }, {"item_async", "one element", "[2]"});
  tgt::require_throws<ValueError>([] { (void)PendingItem().get<double>(); }, {"PendingItem::get", "empty"});
  REQUIRE_FALSE(PendingItem().ready());
  // A 0-d tensor and a requires-grad one (the copy does not record autograd history).
  REQUIRE(full({}, 3.5).item_async().get<double>() == 3.5);
  Tensor w = full({1}, 1.25).requires_grad_();
  REQUIRE(w.item_async().get<float>() == 1.25f);
}

TEST_CASE("item_async on CUDA: the value at the call, without waiting for later work", "[core][cuda]") {
  TG_REQUIRE_CUDA();
  check_values(Device::cuda());
  // Work queued after item_async changes the tensor: get() still returns the value it had
  // when item_async was called (the copy is ordered before that work on the stream).
  Tensor x = full({1}, 5.0, {.device = Device::cuda()});
  const Tensor big = rand_seeded({2048, 2048}, 3, {.device = Device::cuda()});
  const PendingItem p = x.item_async();
  Tensor y = big;
  for (int i = 0; i < 20; ++i) y = matmul(y, big) * 1e-3;  // a few ms queued behind the copy
  copy_bytes(x, full({1}, 7.0, {.device = Device::cuda()}));
  REQUIRE(p.get<double>() == 5.0);
  REQUIRE(x.item<double>() == 7.0);
  // Many in flight at once (more than a page of host slots), read in reverse order.
  std::vector<PendingItem> many;
  for (int i = 0; i < 150; ++i) many.push_back(full({1}, static_cast<double>(i), {.device = Device::cuda()}).item_async());
  for (int i = 149; i >= 0; --i) REQUIRE(many[static_cast<std::size_t>(i)].get<int>() == i);
}

TEST_CASE("item_async on CUDA reports errors of finished deferred checks from get()", "[core][cuda]") {
  TG_REQUIRE_CUDA();
  NoGradGuard ng;
  tgt::SyncChecksGuard mode(false);
  const Layout l = full_layout(1, 2, 2, 16);
  const BlockSparseTensor x(rand_seeded({l.n_blocks(), 16, 16}, 4, {.device = Device::cuda()}), l);
  const BlockSparseTensor bad(full({l.n_blocks(), 16, 16}, 99.0, {.dtype = DType::i32, .device = Device::cuda()}), l);
  synchronize(Device::cuda());
  (void)gather(x, 2, bad);
  const PendingItem p = full({1}, 1.0, {.device = Device::cuda()}).item_async();
  tgt::require_throws<ValueError>([&] { (void)p.get<double>(); }, {"gather", "[0, 32)", "[99, 99]"});
  REQUIRE(runtime::pending_deferred_checks() == 0);
  REQUIRE(p.get<double>() == 1.0);  // reported once
}

}  // namespace test_pending_item
