// tg::Profiler: per-kernel-slot call counts and times of the ops run while it is alive.
#include <sstream>
#include <string>
#include <thread>

#include "util.h"

namespace test_profiler {

using namespace tg;

namespace {

const std::string kOuter = "test_outer_kernel";
const std::string kInner = "test_inner_kernel";

}  // namespace

TEST_CASE("Profiler counts the kernels of forward and backward per slot", "[runtime][profiler]") {
  const Tensor a = tgt::rand64({8, 16}, 1).to(DType::f32).requires_grad_(true);
  const Tensor b = tgt::rand64({16, 4}, 2).to(DType::f32).requires_grad_(true);
  REQUIRE_FALSE(runtime::profiling());
  Profiler fwd_prof;
  REQUIRE(runtime::profiling());
  Tensor y = matmul(a, b);
  y = add(y, y);
  y = add(y, y);
  const Profile fwd = fwd_prof.stop();
  REQUIRE_FALSE(runtime::profiling());
  Profiler prof;
  sum(y).backward();
  const Profile p = prof.stop();

  REQUIRE(fwd.find("matmul_gemm", DeviceType::CPU) != nullptr);
  CHECK(fwd.find("matmul_gemm", DeviceType::CPU)->calls == 1);
  REQUIRE(fwd.find("binary_fwd", DeviceType::CPU) != nullptr);
  CHECK(fwd.find("binary_fwd", DeviceType::CPU)->calls == 2);
  const ProfileEntry* gemm = p.find("matmul_gemm", DeviceType::CPU);
  REQUIRE(gemm != nullptr);
  CHECK(gemm->calls == 2);  // dA and dB
  CHECK(p.find("binary_fwd", DeviceType::CUDA) == nullptr);
  CHECK(p.find("no_such_kernel", DeviceType::CPU) == nullptr);
  double total = 0;
  for (std::size_t i = 0; i < p.entries().size(); ++i) {
    const ProfileEntry& e = p.entries()[i];
    CHECK(e.calls > 0);
    CHECK(e.host_ms >= 0);
    CHECK(e.device_ms == e.host_ms);  // CPU kernels: host time is their time
    if (i > 0) CHECK(p.entries()[i - 1].device_ms >= e.device_ms);
    total += e.device_ms;
  }
  CHECK(p.total_device_ms() == Approx(total));
  CHECK(p.wall_ms() >= 0);
}

TEST_CASE("Profiler records nothing outside its lifetime and refuses a second one", "[runtime][profiler]") {
  const Tensor a = tgt::rand64({4, 4}, 3).to(DType::f32);
  (void)add(a, a);  // before: not recorded
  {
    Profiler prof;
    CHECK_THROWS_AS(Profiler(), ValueError);
    (void)add(a, a);
    const Profile p = prof.stop();
    CHECK_THROWS_AS(prof.stop(), ValueError);
    REQUIRE(p.find("binary_fwd", DeviceType::CPU) != nullptr);
    CHECK(p.find("binary_fwd", DeviceType::CPU)->calls == 1);
  }
  (void)add(a, a);  // after: not recorded
  Profiler again;
  (void)mul(a, a);
  const Profile p = again.stop();
  REQUIRE(p.find("binary_fwd", DeviceType::CPU) != nullptr);
  CHECK(p.find("binary_fwd", DeviceType::CPU)->calls == 1);
}

TEST_CASE("Profiler: a nested kernel counts in the outer one; a call spanning stop() is dropped",
          "[runtime][profiler]") {
  {
    Profiler prof;
    {
      runtime::KernelTimer outer(kOuter, Device::cpu());
      runtime::KernelTimer inner(kInner, Device::cpu());
    }
    const Profile p = prof.stop();
    REQUIRE(p.find(kOuter, DeviceType::CPU) != nullptr);
    CHECK(p.find(kOuter, DeviceType::CPU)->calls == 1);
    CHECK(p.find(kInner, DeviceType::CPU) == nullptr);
  }
  Profiler first;
  auto* spanning = new runtime::KernelTimer(kOuter, Device::cpu());
  const Profile p1 = first.stop();
  Profiler second;
  delete spanning;  // ends during the second run, but belongs to the first
  const Profile p2 = second.stop();
  CHECK(p1.find(kOuter, DeviceType::CPU) == nullptr);
  CHECK(p2.find(kOuter, DeviceType::CPU) == nullptr);
}

TEST_CASE("Profiler records the kernels of every thread", "[runtime][profiler]") {
  const Tensor a = tgt::rand64({4, 4}, 4).to(DType::f32);
  Profiler prof;
  std::thread t([&] {
    for (int i = 0; i < 3; ++i) (void)add(a, a);
  });
  t.join();
  (void)add(a, a);
  const Profile p = prof.stop();
  REQUIRE(p.find("binary_fwd", DeviceType::CPU) != nullptr);
  CHECK(p.find("binary_fwd", DeviceType::CPU)->calls == 4);
}

TEST_CASE("Profile table: sorted rows, the top N and a summary of the rest", "[runtime][profiler]") {
  const Profile p({{"small_kernel", DeviceType::CPU, 2, 1.0, 1.0},
                   {"big_kernel", DeviceType::CUDA, 4, 0.5, 6.0},
                   {"mid_kernel", DeviceType::CUDA, 1, 0.1, 3.0}},
                  20.0);
  REQUIRE(p.entries().size() == 3);
  CHECK(p.entries()[0].name == "big_kernel");
  CHECK(p.entries()[2].name == "small_kernel");
  CHECK(p.total_device_ms() == Approx(10.0));
  const std::string all = p.table();
  CHECK(all.find("big_kernel") < all.find("mid_kernel"));
  CHECK(all.find("mid_kernel") < all.find("small_kernel"));
  CHECK(all.find("1500.00") != std::string::npos);  // big_kernel: 6 ms over 4 calls, in us
  CHECK(all.find("60.0") != std::string::npos);     // its share of the 10 ms
  CHECK(all.find("wall 20.000 ms") != std::string::npos);
  const std::string top = p.table(1);
  CHECK(top.find("big_kernel") != std::string::npos);
  CHECK(top.find("small_kernel") == std::string::npos);
  CHECK(top.find("(2 more)") != std::string::npos);
  std::ostringstream os;
  os << p;
  CHECK(os.str() == all);
}

TEST_CASE("Profiler times CUDA kernels with device events", "[runtime][profiler][cuda]") {
  TG_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  const Tensor a = tgt::rand64({1024, 1024}, 5).to(DType::f32).to(dev);
  Profiler prof;
  Tensor y = a;
  for (int i = 0; i < 3; ++i) y = add(y, a);
  (void)matmul(y, a);
  const Profile p = prof.stop();
  const ProfileEntry* e = p.find("binary_fwd", DeviceType::CUDA);
  REQUIRE(e != nullptr);
  CHECK(e->calls == 3);
  CHECK(e->device_ms > 0);
  CHECK(p.find("binary_fwd", DeviceType::CPU) == nullptr);
  REQUIRE(p.find("matmul_gemm", DeviceType::CUDA) != nullptr);
  CHECK(p.find("matmul_gemm", DeviceType::CUDA)->device_ms > 0);
}

}  // namespace test_profiler
