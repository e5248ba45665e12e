// Block-sparse softmax, forward and backward, next to the device copy rate measured in
// the same run (PERF.md target: >= 85% of it).
// %size-copy: the same rate over that of device copies moving the same bytes, timed the
// same way (the ceiling at this size, where launch and ramp-up weigh more).
//
// Bytes counted (the fewest that must move, each read and written once):
//   fwd          read x, write y                      2 x data bytes
//   bwd          read y and dy, write dx              3 x data bytes
//   masked fwd   read x and the mask (1 B/element), write y
// The CSR table (B * Mb + 1 i64) is not counted. "row" is the longest logical row in
// elements. Every forward here runs the staged plan (block size >= 16, rows up to 96 KiB of
// staged data: a CTA per slice of rows of one block-row, copied to shared memory with
// cp.async; see ops/sparse_softmax/cuda.cu), every backward too except the f32 one of
// short rows (the slice kernel, measured faster there). Each timed run issues
// kInner calls back to back, so the host-side cost of a call (validation, allocation from
// the pool, launch) shows only where the kernel is shorter than it. The "queued" columns
// time the same calls queued behind a spin kernel (tgb::time_queued_ms): the GPU time
// alone, as in a training loop whose host runs ahead, against copies timed that way; the
// 85% flag is on those. TG_BENCH_ONLY picks cases by label ("fwd 16x2048x2048 bs64 d0.25
// bf16").
#include <algorithm>
#include <cstdio>
#include <functional>

#include "bench_util.h"
#include "ops/sparse_softmax/sparse_softmax.h"
#include "tilegrad.h"

namespace {
constexpr int kInner = 10;

std::int64_t longest_row(const tg::Layout& l) {
  const auto off = l.tables(tg::Device::cpu()).row_offsets.to_vector<std::int64_t>();
  std::int64_t m = 0;
  for (std::size_t q = 0; q + 1 < off.size(); ++q) m = std::max(m, off[q + 1] - off[q]);
  return m * l.block_size();
}

void report(const char* op, const char* shape, const tg::Layout& l, tg::DType dt, double bytes,
            const std::function<void()>& fn, double copy) {
  char label[96];
  std::snprintf(label, sizeof label, "%s %s bs%lld d%.2f %s", op, shape, static_cast<long long>(l.block_size()),
                l.density(), tg::dtype_name(dt));
  if (!tgb::selected(label)) return;
  const tgb::CopyRates r = tgb::copy_rates(bytes, copy, fn, kInner);
  std::printf("%-11s %-13s %4lld %7.2f %6lld %-5s %9.4f %9.0f %6.1f%% %9.1f%% %9.4f %6.1f%% %9.1f%%%s\n", op, shape,
              static_cast<long long>(l.block_size()), l.density(), static_cast<long long>(longest_row(l)),
              tg::dtype_name(dt), r.ms, r.gbs, r.pct_copy, r.pct_size, r.qms, r.qpct_copy, r.qpct_size,
              r.qgbs >= 0.85 * copy ? "" : "  (< 85%)");
}
}  // namespace

int main() {
  const double copy = tgb::copy_rate_gbps();
  std::printf("device copy rate: %.0f GB/s (read + write)\n", copy);
  std::printf("%-11s %-13s %4s %7s %6s %-5s %9s %9s %7s %10s %9s %7s %10s\n", "op", "shape", "bs", "density", "row",
              "dtype", "ms", "GB/s", "%copy", "%size-copy", "queued ms", "%copy", "%size-copy");
  const tg::Device gpu = tg::Device::cuda();
  tg::NoGradGuard no_grad;
  struct Shape3 {
    std::int64_t B, M, N;
    const char* name;
  };
  for (const Shape3& s : {Shape3{16, 2048, 2048, "16x2048x2048"}, Shape3{16, 512, 8192, "16x512x8192"}}) {
    for (std::int64_t bs : {32, 64, 128}) {
      for (double density : {0.25, 0.5, 1.0}) {
        tg::Layout l = tg::random_layout(s.B, s.M / bs, s.N / bs, bs, density, 7);
        (void)l.tables(gpu);  // build the device index tables outside the timing
        for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
          const tg::Shape data_shape{l.n_blocks(), bs, bs};
          tg::BlockSparseTensor x(tg::rand_seeded(data_shape, 1, {.dtype = dt, .device = gpu}, -4, 4), l);
          tg::BlockSparseTensor dy(tg::rand_seeded(data_shape, 2, {.dtype = dt, .device = gpu}, -1, 1), l);
          tg::BlockSparseTensor y = tg::softmax(x);
          const double data = static_cast<double>(x.data().nbytes());
          report(
              "fwd", s.name, l, dt, 2 * data, [&] { tg::softmax(x); }, copy);
          report(
              "bwd", s.name, l, dt, 3 * data, [&] { tg::softmax_backward(y, dy); }, copy);
          if (bs == 64 && density == 0.5) {
            // an element mask over every block of x excluding about half the elements, 1 B each
            tg::Tensor u = tg::rand_seeded(data_shape, 3, {.dtype = tg::DType::f32, .device = gpu});
            tg::BlockSparseTensor mask(tg::relu(tg::sub(u, 0.5)).to(tg::DType::boolean), l);
            const double mbytes = static_cast<double>(mask.data().nbytes());
            report(
                "masked fwd", s.name, l, dt, 2 * data + mbytes, [&] { tg::masked_softmax(x, mask); }, copy);
          }
        }
      }
    }
  }
  return 0;
}
