// LayerNorm forward / backward on [16384, 1024] and [65536, 1024] (f32, bf16) and an AdamW step over ~100M
// f32 parameters in 20 tensors, next to the device copy rate measured in the same run.
//
// Bytes counted (the fewest that must move):
//   LayerNorm forward:  x read + y written                        = 2 * |x|
//   LayerNorm backward: dy read + x read + dx written             = 3 * |x|
//   (gamma, beta, their gradients and the per-row statistics are < 0.5% and not counted)
//   AdamW: p, g, m, v read + p, m, v written                      = 28 bytes per f32 parameter
//
// "kernel" rows call the registered kernels directly; "op" rows go through the public API
// and the autograd engine (allocations from the caching pool included). Each timed run
// repeats the work kReps times so that host-side overhead overlaps with the GPU work.
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ops/layer_norm/kernels.h"
#include "tilegrad.h"

namespace {

constexpr int kReps = 10;
double g_copy = 0;

void report(const std::string& what, const std::string& shape, const char* dtype, double ms, double bytes) {
  const double gbs = bytes / ms / 1e6;
  std::printf("%-34s %-14s %-5s %9.4f ms %8.0f GB/s %6.1f%% of copy\n", what.c_str(), shape.c_str(), dtype, ms, gbs,
              100.0 * gbs / g_copy);
  std::fflush(stdout);
}

double time_reps(const std::function<void()>& fn) {
  return tgb::time_ms([&] {
           for (int i = 0; i < kReps; ++i) fn();
         }) /
         kReps;
}

void bench_layer_norm(tg::DType dt, std::int64_t rows) {
  using tg::Tensor;
  const tg::Device gpu = tg::Device::cuda();
  const std::int64_t D = 1024;
  char shape_buf[32];
  std::snprintf(shape_buf, sizeof shape_buf, "[%lld, 1024]", static_cast<long long>(rows));
  const std::string shape = shape_buf;
  const char* name = tg::dtype_name(dt);
  const double nb = static_cast<double>(rows * D) * static_cast<double>(tg::dtype_size(dt));
  Tensor x = tg::rand_seeded({rows, D}, 1, {.dtype = dt, .device = gpu}, -2.0, 3.0);
  Tensor g = tg::rand_seeded({D}, 2, {.dtype = dt, .device = gpu}, 0.5, 1.5);
  Tensor b = tg::rand_seeded({D}, 3, {.dtype = dt, .device = gpu}, -1.0, 1.0);
  Tensor dy = tg::rand_seeded({rows, D}, 4, {.dtype = dt, .device = gpu}, -1.0, 1.0);

  // Kernels alone, on preallocated outputs.
  const tg::DType st = tg::DType::f32;
  Tensor y = tg::empty({rows, D}, {.dtype = dt, .device = gpu});
  Tensor mean = tg::empty({rows}, {.dtype = st, .device = gpu}), rstd = tg::empty({rows}, {.dtype = st, .device = gpu});
  Tensor dx = tg::empty({rows, D}, {.dtype = dt, .device = gpu});
  Tensor dg = tg::empty({D}, {.dtype = dt, .device = gpu}), db = tg::empty({D}, {.dtype = dt, .device = gpu});
  auto& fwd = tg::ops::layer_norm_fwd_kernel();
  auto& bwd = tg::ops::layer_norm_bwd_kernel();
  const double kf = time_reps([&] { fwd(gpu)(x, g, b, rows, D, 1e-5, y, mean, rstd); });
  report("layer_norm fwd (kernel)", shape, name, kf, 2 * nb);
  const double kb = time_reps([&] { bwd(gpu)(dy, x, g, mean, rstd, rows, D, dx, dg, db); });
  report("layer_norm bwd dx+dgamma+dbeta (kernel)", shape, name, kb, 3 * nb);
  const double kbx = time_reps([&] { bwd(gpu)(dy, x, g, mean, rstd, rows, D, dx, Tensor(), Tensor()); });
  report("layer_norm bwd dx only (kernel)", shape, name, kbx, 3 * nb);
  report("layer_norm fwd+bwd (kernels)", shape, name, kf + kb, 5 * nb);

  // Public API: forward without grad, then forward + backward through the engine.
  {
    tg::NoGradGuard ng;
    const double ms = time_reps([&] { (void)tg::layer_norm(x, g, b); });
    report("layer_norm fwd (op, no grad)", shape, name, ms, 2 * nb);
  }
  Tensor xl = x.detach().requires_grad_(), gl = g.detach().requires_grad_(), bl = b.detach().requires_grad_();
  const double fb = time_reps([&] {
    xl.zero_grad();
    gl.zero_grad();
    bl.zero_grad();
    tg::layer_norm(xl, gl, bl).backward(dy);
  });
  report("layer_norm fwd+bwd (op + autograd)", shape, name, fb, 5 * nb);
}

void bench_adamw() {
  using tg::Tensor;
  const tg::Device gpu = tg::Device::cuda();
  const int n_tensors = 20;
  const std::int64_t per = 5'000'000;  // 100M parameters in all
  std::vector<Tensor> params;
  for (int i = 0; i < n_tensors; ++i) {
    Tensor p = tg::rand_seeded({per}, 100 + static_cast<std::uint64_t>(i), {.device = gpu}, -1.0, 1.0);
    p.requires_grad_();
    p.set_grad(tg::rand_seeded({per}, 200 + static_cast<std::uint64_t>(i), {.device = gpu}, -1.0, 1.0));
    params.push_back(p);
  }
  tg::optim::AdamW opt(params, {.lr = 1e-4});
  const double n = static_cast<double>(per) * n_tensors;
  const double ms = tgb::time_ms([&] { opt.step(); });
  report("AdamW step (20 tensors)", "100M f32", "f32", ms, 28.0 * n);
}

}  // namespace

int main() {
  g_copy = tgb::copy_rate_gbps();
  std::printf("device: cudaMemcpyDeviceToDevice of 2 GiB: %.0f GB/s (bytes read + written)\n\n", g_copy);
  // 16K rows (a 16 x 1024-token batch) and 64K rows: at 32 MB a bf16 pass is short enough
  // (~10 us) for launch and tail overheads to show; the larger size shows the kernels.
  for (std::int64_t rows : {16384, 65536}) {
    bench_layer_norm(tg::DType::f32, rows);
    bench_layer_norm(tg::DType::bf16, rows);
  }
  bench_adamw();
  return 0;
}
