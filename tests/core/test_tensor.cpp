#include <sstream>

#include "ops/dispatch.h"
#include "runtime/backend.h"
#include "util.h"

namespace test_tensor {

using namespace tg;

TEST_CASE("shapes and dtypes", "[core]") {
  Shape s{2, 3, 4};
  REQUIRE(s.numel() == 24);
  REQUIRE(s[-1] == 4);
  REQUIRE(s.str() == "[2, 3, 4]");
  REQUIRE(Shape{}.numel() == 1);
  tgt::require_throws<ShapeError>([&] { (void)s[3]; }, {"dim 3", "3-d"});
  REQUIRE(dtype_size(DType::bf16) == 2);
  REQUIRE(parse_dtype("f16") == DType::f16);
  tgt::require_throws<DTypeError>([] { parse_dtype("f8"); }, {"parse_dtype", "f8"});
}

TEST_CASE("devices parse and print", "[core]") {
  REQUIRE(Device::parse("cpu") == Device::cpu());
  REQUIRE(Device::parse("cuda:1") == Device::cuda(1));
  REQUIRE(Device::cuda(2).str() == "cuda:2");
  tgt::require_throws<DeviceError>([] { Device::parse("gpu0"); }, {"Device::parse", "gpu0"});
  tgt::require_throws<DeviceError>([] { Device::parse("cuda:x"); }, {"cuda:x"});
}

TEST_CASE("bfloat16 and half round to nearest even", "[core]") {
  REQUIRE(float(bfloat16(1.0f)) == 1.0f);
  REQUIRE(float(half(1.0f)) == 1.0f);
  REQUIRE(float(half(65504.0f)) == 65504.0f);
  REQUIRE(std::isinf(float(half(70000.0f))));
  REQUIRE(float(half(5.9604645e-08f)) == 5.9604645e-08f);  // smallest subnormal
  REQUIRE(float(half(1.0f + 1.0f / 2048)) == 1.0f);          // tie -> even
  REQUIRE(float(half(1.0f + 3.0f / 2048)) == 1.0f + 2.0f / 1024);
  REQUIRE(float(bfloat16(1.0f + 1.0f / 256)) == 1.0f);       // tie -> even
  REQUIRE(std::isnan(float(bfloat16(NAN))));
  REQUIRE(std::isnan(float(half(NAN))));
  for (float v : {0.1f, -3.75f, 1234.5f, 1e-3f}) {
    REQUIRE(float(half(v)) == Approx(v).epsilon(1e-3));
    REQUIRE(float(bfloat16(v)) == Approx(v).epsilon(1e-2));
  }
}

TEST_CASE("from_vector, to_vector, item", "[core]") {
  Tensor t = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  REQUIRE(t.shape() == Shape{2, 3});
  REQUIRE(t.dtype() == DType::f32);
  REQUIRE(t.to_vector<double>() == std::vector<double>{1, 2, 3, 4, 5, 6});
  REQUIRE(from_vector<double>({7.5}, {}).item<double>() == 7.5);
  tgt::require_throws<ShapeError>([&] { t.item<float>(); }, {"item", "[2, 3]"});
  tgt::require_throws<ShapeError>([] { from_vector<float>({1, 2}, {3}); }, {"from_vector", "[3]", "got 2"});
  tgt::require_throws<DTypeError>([&] { t.data<double>(); }, {"f32", "f64"});
  Tensor b = from_vector<float>({1.5f, -2.0f}, {2}, {.dtype = DType::bf16});
  REQUIRE(b.dtype() == DType::bf16);
  REQUIRE(b.to_vector<float>() == std::vector<float>{1.5f, -2.0f});
}

TEST_CASE("empty tensors and undefined tensors", "[core]") {
  Tensor e = empty({0, 5});
  REQUIRE(e.numel() == 0);
  REQUIRE(e.to_vector<float>().empty());
  tgt::require_throws<ShapeError>([] { empty({2, -1}); }, {"empty", "non-negative"});
  Tensor u;
  REQUIRE_FALSE(u.defined());
  tgt::require_throws<ValueError>([&] { (void)u.shape(); }, {"undefined"});
}

TEST_CASE("printing looks like PyTorch", "[core]") {
  std::ostringstream os;
  os << from_vector<float>({1, 2.5f, -3, 4}, {2, 2});
  std::string s = os.str();
  INFO(s);
  REQUIRE(s.find("tensor([[ 1.0000,  2.5000],") == 0);
  REQUIRE(s.find("shape=[2, 2], dtype=f32, device=cpu") != std::string::npos);

  std::ostringstream big;
  big << zeros({2000});
  REQUIRE(big.str().find("...") != std::string::npos);

  std::ostringstream ints;
  ints << from_vector<std::int64_t>({1, -20}, {2});
  REQUIRE(ints.str().find("[  1, -20]") != std::string::npos);

  Tensor w = ones({2}).requires_grad_();
  std::ostringstream g;
  g << w * 2.0;
  REQUIRE(g.str().find("grad_fn=mul") != std::string::npos);
}

TEST_CASE("CPU allocator statistics", "[core][runtime]") {
  MemoryStats before = memory_stats(Device::cpu());
  {
    Tensor t = empty({1000}, {.dtype = DType::f64});
    MemoryStats during = memory_stats(Device::cpu());
    REQUIRE(during.bytes_in_use >= before.bytes_in_use + 8000);
  }
  MemoryStats after = memory_stats(Device::cpu());
  REQUIRE(after.bytes_in_use == before.bytes_in_use);
}

TEST_CASE("missing backends are reported clearly", "[core][runtime]") {
  if (cuda_available()) TG_SKIP("a CUDA device is present");
  tgt::require_throws<DeviceError>([] { empty({2}, {.device = Device::cuda(0)}); }, {"cuda:0"});
}

TEST_CASE("every kernel slot has a CPU kernel, and a CUDA one in CUDA builds", "[core][registry]") {
  const auto& slots = ops::kernel_slots();
  REQUIRE(slots.size() > 10);
  bool cuda_built = runtime::find_backend(DeviceType::CUDA) != nullptr;
  for (const auto* s : slots) {
    INFO("kernel slot " << s->name());
    CHECK(s->has(DeviceType::CPU));
    if (cuda_built) CHECK(s->has(DeviceType::CUDA));
  }
}

}  // namespace test_tensor
