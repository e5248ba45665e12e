// Element-wise throughput on 256M-element tensors next to the device copy rate measured in
// the same run: tg::add (f32, bf16, and with a broadcast row or column), tg::mul by a scalar,
// tg::gelu, tg::mul of two tensors, tg::dropout (also at the training example's activation
// size, against a same-size copy), tg::rope on [B·H, 4096, 64 / 128] (split halves and
// interleaved pairs), and their backward through the autograd engine.
// Bytes counted: each element read or written once (the fewest that must move).
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "tilegrad.h"

namespace {

struct Row {
  std::string op, shape, dtype;
  double ms, gbs, pct;
  bool counted;  // false: no kernel moves bytes (GB/s not meaningful)
};

std::vector<Row> g_rows;
double g_copy = 0;

void report(const std::string& op, const std::string& shape, tg::DType dt, double ms, double bytes) {
  Row r{op, shape, tg::dtype_name(dt), ms, bytes > 0 ? bytes / ms / 1e6 : 0.0, 0.0, bytes > 0};
  r.pct = r.counted ? 100.0 * r.gbs / g_copy : 0.0;
  g_rows.push_back(r);
  if (r.counted) {
    std::printf("%-22s %-16s %-5s %9.3f ms %8.0f GB/s %6.1f%% of copy\n", op.c_str(), shape.c_str(), r.dtype.c_str(),
                ms, r.gbs, r.pct);
  } else {
    std::printf("%-22s %-16s %-5s %9.3f ms %8s GB/s %6s (no kernel: the gradient passes through)\n", op.c_str(),
                shape.c_str(), r.dtype.c_str(), ms, "-", "-");
  }
  std::fflush(stdout);
}

}  // namespace

int main() {
  using tg::Tensor;
  const tg::Device gpu = tg::Device::cuda();
  g_copy = tgb::copy_rate_gbps();
  std::printf("device: cudaMemcpyDeviceToDevice of 2 GiB: %.0f GB/s (bytes read + written)\n\n", g_copy);

  const std::int64_t N = std::int64_t{256} << 20;  // 256M elements
  const std::string shape = "[268435456]";
  for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
    const double es = static_cast<double>(tg::dtype_size(dt));
    const double nb = es * static_cast<double>(N);  // bytes of one tensor
    // Random, never-zero inputs.
    Tensor a = tg::rand_seeded({N}, 1, {.dtype = dt, .device = gpu}, 0.5, 1.5);
    Tensor b = tg::rand_seeded({N}, 2, {.dtype = dt, .device = gpu}, 0.5, 1.5);
    Tensor g = tg::rand_seeded({N}, 3, {.dtype = dt, .device = gpu}, 0.5, 1.5);
    {
      tg::NoGradGuard ng;
      report("add", shape, dt, tgb::time_ms([&] { tg::add(a, b); }), 3 * nb);
      report("mul_scalar", shape, dt, tgb::time_ms([&] { tg::mul(a, 1.25); }), 2 * nb);
      report("gelu", shape, dt, tgb::time_ms([&] { tg::gelu(a); }), 2 * nb);
      report("mul", shape, dt, tgb::time_ms([&] { tg::mul(a, b); }), 3 * nb);
      // A trailing row vector broadcast over the leading dim.
      Tensor m = tg::alias_with_shape(a, {N / 4096, 4096});
      Tensor row = tg::rand_seeded({4096}, 4, {.dtype = dt, .device = gpu}, 0.5, 1.5);
      report("add row [4096]", "[65536, 4096]", dt, tgb::time_ms([&] { tg::add(m, row); }), 2 * nb);
      // A column vector broadcast over the trailing dim (the strided, general map path).
      Tensor col = tg::rand_seeded({N / 4096, 1}, 5, {.dtype = dt, .device = gpu}, 0.5, 1.5);
      report("add column [65536, 1]", "[65536, 4096]", dt, tgb::time_ms([&] { tg::add(m, col); }), 2 * nb);
      report("sum_to [4096]", "[65536, 4096]", dt, tgb::time_ms([&] { tg::sum_to(m, {4096}); }), nb);
      report("sum_to [65536, 1]", "[65536, 4096]", dt, tgb::time_ms([&] { tg::sum_to(m, {N / 4096, 1}); }), nb);
      report("dropout p=0.1", shape, dt, tgb::time_ms([&] { tg::dropout(a, 0.1, 7, 11); }), 2 * nb);
      // Rotary embeddings of queries laid out for attention: [B·H, S, head_dim].
      for (std::int64_t hd : {64, 128}) {
        Tensor q = tg::alias_with_shape(a, {N / (4096 * hd), 4096, hd});
        char qs[48];  // (not "[" + std::to_string(...): GCC 12 warns falsely inside that concatenation)
        std::snprintf(qs, sizeof qs, "[%lld, 4096, %lld]", static_cast<long long>(N / (4096 * hd)),
                      static_cast<long long>(hd));
        report("rope", qs, dt, tgb::time_ms([&] { tg::rope(q); }), 2 * nb);
        report("rope interleaved", qs, dt, tgb::time_ms([&] { tg::rope(q, {.interleaved = true}); }), 2 * nb);
      }
      // the training example's activation size, against copies of the same bytes (at 12 MiB
      // a copy itself falls short of the 2 GiB rate)
      const std::int64_t n_act = 16 * 1024 * 384;
      Tensor act = tg::slice(a, 0, 0, n_act);
      const double act_bytes = 2 * es * static_cast<double>(n_act);
      const double act_ms = tgb::time_ms([&] { tg::dropout(act, 0.1, 7, 11); });
      std::printf("%-22s %-16s %-5s %9.4f ms %8.0f GB/s %6.1f%% of a same-size copy\n", "dropout p=0.1",
                  "[16384 x 384]", tg::dtype_name(dt), act_ms, act_bytes / act_ms / 1e6,
                  100.0 * act_bytes / act_ms / 1e6 / tgb::same_size_copy_gbps(act_bytes));
    }
    // Backward through the engine; leaves' first gradient is taken without a copy, so
    // each run times exactly the op's backward kernels.
    Tensor ag = a.detach().requires_grad_(), bg = b.detach().requires_grad_();
    auto time_bwd = [&](const Tensor& y) {
      return tgb::time_ms([&] {
        ag.zero_grad();
        bg.zero_grad();
        y.backward(g, /*retain_graph=*/true);
      });
    };
    {
      Tensor y = tg::add(ag, bg);
      report("add backward", shape, dt, time_bwd(y), 0);
    }
    {
      Tensor y = tg::mul(ag, 1.25);
      report("mul_scalar backward", shape, dt, time_bwd(y), 2 * nb);
    }
    {
      Tensor y = tg::gelu(ag);
      report("gelu backward", shape, dt, time_bwd(y), 3 * nb);  // read x, g; write dx
    }
    {
      Tensor y = tg::mul(ag, bg);
      report("mul backward", shape, dt, time_bwd(y), 5 * nb);  // read a, b, g; write da, db
    }
  }

  std::printf("\nsummary (target: >= 85%% of the copy rate, %.0f GB/s)\n", g_copy);
  std::printf("| %-22s | %-5s | %9s | %8s | %7s |\n", "op", "dtype", "ms", "GB/s", "% copy");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(24, '-').c_str(), std::string(7, '-').c_str(),
              std::string(11, '-').c_str(), std::string(10, '-').c_str(), std::string(9, '-').c_str());
  for (const Row& r : g_rows) {
    if (r.counted) {
      std::printf("| %-22s | %-5s | %9.3f | %8.0f | %6.1f%% |\n", r.op.c_str(), r.dtype.c_str(), r.ms, r.gbs, r.pct);
    } else {
      std::printf("| %-22s | %-5s | %9.3f | %8s | %7s |\n", r.op.c_str(), r.dtype.c_str(), r.ms, "-", "-");
    }
  }
  return 0;
}
