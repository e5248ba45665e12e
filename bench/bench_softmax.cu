// Softmax throughput next to the device copy rate measured in the same run:
// tg::softmax forward and backward (tg::softmax_backward), f32 and bf16, on
// [16*2048, 2048] (16 heads of 2048 x 2048 scores) and on 256M elements ([131072, 2048]);
// log_softmax on the first shape; and tg::sum over the last dim.
// Bytes counted are the fewest that must move: each input read once, each output written
// once (forward: x + y; backward: y + dy + dx; row sum: x + one value per row).
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "tilegrad.h"

namespace {

struct Row {
  std::string op, shape, dtype;
  double ms, gbs, pct;
};

std::vector<Row> g_rows;
double g_copy = 0;

void report(const std::string& op, const std::string& shape, tg::DType dt, double ms, double bytes) {
  Row r{op, shape, tg::dtype_name(dt), ms, bytes / ms / 1e6, 0.0};
  r.pct = 100.0 * r.gbs / g_copy;
  g_rows.push_back(r);
  std::printf("%-22s %-16s %-5s %9.3f ms %8.0f GB/s %6.1f%% of copy  (floor %.0f MB)\n", op.c_str(), shape.c_str(),
              r.dtype.c_str(), ms, r.gbs, r.pct, bytes / 1e6);
  std::fflush(stdout);
}

}  // namespace

int main() {
  using tg::Tensor;
  const tg::Device gpu = tg::Device::cuda();
  g_copy = tgb::copy_rate_gbps();
  std::printf("device: cudaMemcpyDeviceToDevice of 2 GiB: %.0f GB/s (bytes read + written)\n\n", g_copy);

  struct Shape2 {
    std::int64_t rows, cols;
    const char* name;
  };
  const std::vector<Shape2> shapes = {{16 * 2048, 2048, "[32768, 2048]"}, {131072, 2048, "[131072, 2048]"}};
  tg::NoGradGuard no_grad;
  for (const Shape2& s : shapes) {
    for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
      const double nb = static_cast<double>(tg::dtype_size(dt)) * static_cast<double>(s.rows * s.cols);
      // Random, never-zero data; a spread of logits so that exp() does real work.
      Tensor x = tg::rand_seeded({s.rows, s.cols}, 1, {.dtype = dt, .device = gpu}, 0.5, 8.0);
      Tensor dy = tg::rand_seeded({s.rows, s.cols}, 2, {.dtype = dt, .device = gpu}, 0.5, 1.5);
      Tensor y = tg::softmax(x);
      report("softmax fwd", s.name, dt, tgb::time_ms([&] { tg::softmax(x); }), 2 * nb);
      report("softmax bwd", s.name, dt, tgb::time_ms([&] { tg::softmax_backward(y, dy); }), 3 * nb);
      if (s.rows == shapes[0].rows) {
        Tensor ly = tg::log_softmax(x, 0.125);
        report("log_softmax fwd", s.name, dt, tgb::time_ms([&] { tg::log_softmax(x, 0.125); }), 2 * nb);
        report("log_softmax bwd", s.name, dt, tgb::time_ms([&] { tg::log_softmax_backward(ly, dy, 0.125); }),
               3 * nb);
      }
      const double out_bytes = static_cast<double>(tg::dtype_size(dt)) * static_cast<double>(s.rows);
      report("sum(dim=-1)", s.name, dt, tgb::time_ms([&] { tg::sum(x, -1); }), nb + out_bytes);
    }
  }

  std::printf("\n| op | shape | dtype | ms | GB/s | %% of copy (%.0f GB/s) |\n|---|---|---|---|---|---|\n", g_copy);
  for (const Row& r : g_rows) {
    std::printf("| %s | %s | %s | %.3f | %.0f | %.1f |\n", r.op.c_str(), r.shape.c_str(), r.dtype.c_str(), r.ms, r.gbs,
                r.pct);
  }
  return 0;
}
