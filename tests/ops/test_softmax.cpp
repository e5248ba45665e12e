// Tests of softmax / log_softmax (ops/softmax): plain-loop f64 references, -inf / nan /
// empty edge cases, gradchecks, the backward primitives, bad inputs, and CUDA against the
// CPU on every kernel path (warp rows, block rows, long online rows; aligned or not).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "util.h"

namespace test_softmax {

using namespace tg;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor rand_t(const Shape& s, std::uint64_t seed, DType dt = DType::f64, Device dev = Device::cpu(),
              double lo = -3.0, double hi = 3.0) {
  return tgt::rand64(s, seed, lo, hi).to(dt).to(dev);
}

using tgt::vec_t;

std::int64_t cols_of(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(-1); }

// softmax / log_softmax of scale * x per row, in f64 with plain loops.
Tensor ref_softmax(const Tensor& x, double scale, bool log) {
  const std::int64_t cols = cols_of(x);
  auto v = x.to_vector<double>();
  std::vector<double> out(v.size());
  for (std::size_t r = 0; cols > 0 && r < v.size() / static_cast<std::size_t>(cols); ++r) {
    const std::size_t o = r * static_cast<std::size_t>(cols);
    bool has_nan = false;
    double m = -kInf;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double z = scale * v[o + c];
      if (std::isnan(z)) has_nan = true;
      else m = std::max(m, z);
    }
    double s = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double z = scale * v[o + c];
      if (z != -kInf) s += std::exp(z - m);
    }
    for (std::int64_t c = 0; c < cols; ++c) {
      const double z = scale * v[o + c];
      double y;
      if (has_nan) y = NAN;
      else if (m == -kInf) y = log ? -kInf : 0.0;
      else y = log ? z - m - std::log(s) : (z == -kInf ? 0.0 : std::exp(z - m) / s);
      out[o + c] = y;
    }
  }
  return from_vector<double>(out, x.shape());
}

// dx from y (the forward output) and dy, in f64.
Tensor ref_backward(const Tensor& y, const Tensor& dy, double scale, bool log) {
  const std::int64_t cols = cols_of(y);
  auto yv = y.to_vector<double>(), gv = dy.to_vector<double>();
  std::vector<double> out(yv.size());
  for (std::size_t r = 0; r < yv.size() / static_cast<std::size_t>(cols); ++r) {
    const std::size_t o = r * static_cast<std::size_t>(cols);
    double s = 0;
    for (std::int64_t c = 0; c < cols; ++c) s += log ? gv[o + c] : gv[o + c] * yv[o + c];
    for (std::int64_t c = 0; c < cols; ++c) {
      out[o + c] = log ? scale * (gv[o + c] - std::exp(yv[o + c]) * s) : scale * yv[o + c] * (gv[o + c] - s);
    }
  }
  return from_vector<double>(out, y.shape());
}

}  // namespace

TEST_CASE("softmax and log_softmax match a plain f64 loop", "[ops][softmax]") {
  const std::vector<Shape> shapes = {{4, 7}, {2, 3, 33}, {1}, {5, 1}, {3, 100}};
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (const Shape& s : shapes) {
      for (double scale : {1.0, 0.5, -2.0}) {
        for (bool log : {false, true}) {
          INFO("dtype " << dt << ", shape " << s << ", scale " << scale << ", log " << log);
          Tensor x = rand_t(s, 3, dt);
          Tensor y = log ? log_softmax(x, scale) : softmax(x, scale);
          REQUIRE(y.dtype() == dt);
          REQUIRE(y.shape() == s);
          const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-6 : 1e-2;
          tgt::require_close(y.to(DType::f64), ref_softmax(x, scale, log), tol, tol);
        }
      }
    }
  }
}

TEST_CASE("softmax rows sum to 1 and a 0-d x gives 1", "[ops][softmax]") {
  Tensor y = softmax(rand_t({6, 50}, 8, DType::f32));
  for (double v : sum(y.to(DType::f64), -1).to_vector<double>()) CHECK(v == Approx(1.0).epsilon(1e-6));
  CHECK(softmax(vec_t({3.0}, Shape{})).item<double>() == 1.0);
  CHECK(log_softmax(vec_t({3.0}, Shape{})).item<double>() == 0.0);
  // huge logits do not overflow
  Tensor big = softmax(vec_t({1000, 1000, -1000}, {3}, DType::f32));
  tgt::require_close(big.to(DType::f64), vec_t({0.5, 0.5, 0}, {3}), 1e-6, 1e-7);
}

TEST_CASE("softmax: -inf rows give zeros (log_softmax -inf), -inf entries give 0, nan stays in its row",
          "[ops][softmax]") {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    INFO("dtype " << dt);
    Tensor x = vec_t({-kInf, -kInf, -kInf, /**/ 0, -kInf, 0, /**/ 1, NAN, 2, /**/ 1, 2, 3}, {4, 3}, dt);
    Tensor y = softmax(x), ly = log_softmax(x);
    auto v = y.to_vector<double>(), lv = ly.to_vector<double>();
    for (int c = 0; c < 3; ++c) {
      CHECK(v[c] == 0.0);
      CHECK(lv[c] == -kInf);
      CHECK(std::isnan(v[6 + c]));
      CHECK(std::isnan(lv[6 + c]));
    }
    CHECK(v[3] == 0.5);
    CHECK(v[4] == 0.0);
    CHECK(v[5] == 0.5);
    CHECK(lv[4] == -kInf);
    CHECK(lv[3] == Approx(std::log(0.5)).epsilon(1e-2));
    tgt::require_close(slice(y, 0, 3, 4).to(DType::f64), ref_softmax(slice(x, 0, 3, 4), 1.0, false), 1e-2, 1e-3);
  }
}

TEST_CASE("softmax of empty tensors is empty", "[ops][softmax]") {
  for (const Shape& s : {Shape{0, 5}, Shape{3, 0}, Shape{0}}) {
    Tensor x = empty(s, {.dtype = DType::f32});
    CHECK(softmax(x).shape() == s);
    CHECK(log_softmax(x, 2.0).shape() == s);
    CHECK(softmax_backward(x, x).shape() == s);
  }
}

TEST_CASE("softmax backward matches the formula and the backward primitives", "[ops][softmax]") {
  for (bool log : {false, true}) {
    for (double scale : {1.0, 0.7}) {
      INFO("log " << log << ", scale " << scale);
      Tensor x = rand_t({3, 9}, 17).requires_grad_();
      Tensor y = log ? log_softmax(x, scale) : softmax(x, scale);
      Tensor dy = rand_t({3, 9}, 18);
      y.backward(dy);
      Tensor want = ref_backward(y.detach(), dy, scale, log);
      tgt::require_close(x.grad(), want, 1e-12, 1e-12);
      Tensor prim = log ? log_softmax_backward(y.detach(), dy, scale) : softmax_backward(y.detach(), dy, scale);
      tgt::require_close(prim, want, 1e-12, 1e-12);
    }
  }
}

TEST_CASE("softmax gradients pass gradcheck", "[ops][softmax]") {
  for (double scale : {1.0, 0.5, -1.5}) {
    INFO("scale " << scale);
    Tensor x = tgt::rand64({4, 6}, 5).requires_grad_();
    auto r1 = autograd::gradcheck([scale](const std::vector<Tensor>& in) { return softmax(in[0], scale); }, {x});
    INFO(r1.report);
    REQUIRE(r1);
    auto r2 = autograd::gradcheck([scale](const std::vector<Tensor>& in) { return log_softmax(in[0], scale); }, {x});
    INFO(r2.report);
    REQUIRE(r2);
  }
  Tensor x3 = tgt::rand64({2, 2, 5}, 6).requires_grad_();
  auto r3 = autograd::gradcheck([](const std::vector<Tensor>& in) { return softmax(in[0]); }, {x3});
  INFO(r3.report);
  REQUIRE(r3);
}

TEST_CASE("softmax rejects bad inputs", "[ops][softmax]") {
  Tensor xi = from_vector<std::int32_t>({1, 2}, {2});
  tgt::require_throws<DTypeError>([&] { (void)softmax(xi); }, {"softmax", "x", "floating", "i32"});
  tgt::require_throws<DTypeError>([&] { (void)log_softmax(xi); }, {"log_softmax", "x", "floating"});
  Tensor x = rand_t({2, 3}, 1);
  tgt::require_throws<ValueError>([&] { (void)softmax(x, NAN); }, {"softmax", "scale", "finite"});
  tgt::require_throws<ValueError>([&] { (void)log_softmax(x, kInf); }, {"log_softmax", "scale", "finite"});
  tgt::require_throws<ValueError>([&] { (void)softmax(Tensor()); }, {"softmax", "x", "undefined"});
  tgt::require_throws<ShapeError>([&] { (void)softmax_backward(x, rand_t({3, 2}, 2)); },
                                  {"softmax_backward", "same shape", "[2, 3]", "[3, 2]"});
  tgt::require_throws<DTypeError>([&] { (void)log_softmax_backward(x, rand_t({2, 3}, 2, DType::f32)); },
                                  {"log_softmax_backward", "same dtype", "f64", "f32"});
}

// ---- CUDA against the CPU ------------------------------------------------------------------

TEST_CASE("CUDA softmax forward and backward match the CPU on every row-length path", "[ops][softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // warp rows (<= 1024), block rows (<= 16384; f64 <= 8192), online rows beyond; odd
  // lengths take the scalar (unvectorised) kernels.
  // 16-bit forward rows of 1032..4096 that are multiples of 8 take the packed warp kernel
  // (8 chunks per lane up to 2048, 16 beyond; partial last chunk rounds: 1032, 2056, 4088).
  const std::vector<std::int64_t> col_sizes = {1,    2,    5,    31,   32,    33,    64,    100,   255,
                                               1000, 1024, 1025, 1032, 1536,  2048,  2056,  3001,  4088,
                                               4096, 8192, 8193, 12000, 16384, 16385, 20000, 40000};
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    for (std::int64_t cols : col_sizes) {
      const std::int64_t rows = cols >= 8192 ? 6 : cols >= 1024 ? 40 : 203;
      for (bool log : {false, true}) {
        const double scale = log ? 0.75 : 1.0;
        INFO("dtype " << dt << ", rows " << rows << ", cols " << cols << ", log " << log);
        Tensor x = rand_t({rows, cols}, static_cast<std::uint64_t>(cols) + 3, dt, Device::cpu(), -4.0, 4.0);
        Tensor y_cpu = log ? log_softmax(x, scale) : softmax(x, scale);
        Tensor y_gpu = log ? log_softmax(x.to(gpu), scale) : softmax(x.to(gpu), scale);
        REQUIRE(y_gpu.device() == gpu);
        const bool half = dt == DType::bf16 || dt == DType::f16;
        const double rtol = dt == DType::f64 ? 1e-12 : half ? 8e-3 : 2e-5;
        const double atol = dt == DType::f64 ? 1e-14 : half ? 1e-3 : 1e-7;
        tgt::require_close(y_gpu.to(Device::cpu()), y_cpu, rtol, log ? rtol : atol);
        // backward through the autograd graph, and through the primitive
        Tensor dy = rand_t({rows, cols}, 77, dt);
        Tensor a = x.detach().requires_grad_(), b = x.to(gpu).detach().requires_grad_();
        (log ? log_softmax(a, scale) : softmax(a, scale)).backward(dy);
        (log ? log_softmax(b, scale) : softmax(b, scale)).backward(dy.to(gpu));
        // dx is a difference of O(1) terms: compare with an absolute tolerance
        const double gtol = dt == DType::f64 ? 1e-12 : half ? 2e-2 : 1e-5;
        tgt::require_close(b.grad().to(Device::cpu()), a.grad(), gtol, gtol);
        Tensor prim = log ? log_softmax_backward(y_cpu.to(gpu), dy.to(gpu), scale)
                          : softmax_backward(y_cpu.to(gpu), dy.to(gpu), scale);
        Tensor prim_cpu = log ? log_softmax_backward(y_cpu, dy, scale) : softmax_backward(y_cpu, dy, scale);
        tgt::require_close(prim.to(Device::cpu()), prim_cpu, gtol, gtol);
      }
    }
  }
}

TEST_CASE("CUDA softmax: -inf rows, nan rows, empty and 0-d inputs", "[ops][softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (std::int64_t cols :
       {std::int64_t{3}, std::int64_t{40}, std::int64_t{1032}, std::int64_t{2048}, std::int64_t{4096},
        std::int64_t{30000}}) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      INFO("cols " << cols << ", dtype " << dt);
      std::vector<double> v(static_cast<std::size_t>(3 * cols), -kInf);  // row 0 all -inf
      for (std::int64_t c = 0; c < cols; ++c) {
        v[cols + c] = c % 2 ? -kInf : 0.5 * static_cast<double>(c % 7);  // row 1 partly -inf
        v[2 * cols + c] = static_cast<double>(c % 5);                      // row 2 with a nan
      }
      v[2 * cols + cols / 2] = NAN;
      Tensor x = vec_t(v, {3, cols}, dt);
      for (bool log : {false, true}) {
        Tensor yc = log ? log_softmax(x) : softmax(x);
        Tensor yg = (log ? log_softmax(x.to(gpu)) : softmax(x.to(gpu))).to(Device::cpu());
        tgt::require_close(yg, yc, 1e-2, 1e-3);
        tgt::require_close(yc.to(DType::f64), ref_softmax(x, 1.0, log), 1e-2, 1e-3);
      }
    }
  }
  CHECK(softmax(empty({0, 7}, {.dtype = DType::f32, .device = gpu})).shape() == Shape{0, 7});
  CHECK(softmax(empty({7, 0}, {.dtype = DType::f32, .device = gpu})).shape() == Shape{7, 0});
  CHECK(softmax(vec_t({2.0}, Shape{}, DType::f32).to(gpu)).item<double>() == 1.0);
  // an unaligned view of the data (odd row length) with many rows
  Tensor x = rand_t({4097, 3}, 9, DType::f32);
  tgt::require_close(softmax(x.to(gpu)).to(Device::cpu()), softmax(x), 2e-6, 1e-7);
}

TEST_CASE("CUDA 16-bit softmax: packed warp rows with many rows, negative scales, misaligned views",
          "[ops][softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::bf16, DType::f16}) {
    for (std::int64_t cols : {std::int64_t{1040}, std::int64_t{2048}, std::int64_t{3072}}) {
      for (double scale : {1.0, -0.5, 0.125}) {
        for (bool log : {false, true}) {
          INFO("dtype " << dt << ", cols " << cols << ", scale " << scale << ", log " << log);
          // Enough rows for many blocks; wide logits so that exp underflows in places.
          Tensor x = rand_t({1000, cols}, static_cast<std::uint64_t>(cols) + 11, dt, Device::cpu(), -30.0, 30.0);
          Tensor yc = log ? log_softmax(x, scale) : softmax(x, scale);
          Tensor yg = (log ? log_softmax(x.to(gpu), scale) : softmax(x.to(gpu), scale)).to(Device::cpu());
          tgt::require_close(yg, yc, 8e-3, log ? 8e-3 : 1e-3);
          // and against the f64 reference: within 16-bit rounding
          tgt::require_close(yg.to(DType::f64), ref_softmax(x, scale, log), 1e-2, log ? 2e-2 : 1e-3);
        }
      }
    }
    // A view whose data pointer is not 16-byte aligned: the unvectorised kernels.
    INFO("misaligned " << dt);
    Tensor base = rand_t({64 * 2048 + 3}, 5, dt, gpu);
    Tensor xm = tgt::misaligned_view(base, 3, {64, 2048});
    for (bool log : {false, true}) {
      Tensor yg = (log ? log_softmax(xm) : softmax(xm)).to(Device::cpu());
      Tensor xh = xm.to(Device::cpu());
      tgt::require_close(yg, log ? log_softmax(xh) : softmax(xh), 8e-3, log ? 8e-3 : 1e-3);
    }
  }
}

}  // namespace test_softmax
