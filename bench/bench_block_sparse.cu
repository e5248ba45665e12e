// Block-sparse data movement throughput (transpose, gather along dims 2 and 1,
// repeat_interleave, split, merge)
// at 16 x 2048 x 2048, block 64, densities 0.25 / 0.5 / 1.0, f32 and bf16, next to the
// device copy rate measured in the same run. GB/s counts the fewest bytes the op must read
// and write; %copy is that rate over the copy rate, %size-copy over the rate of a device
// copy moving the same bytes (the ceiling at that size).
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench_util.h"
#include "ops/sparse_move/gather_path.h"
#include "ops/sparse_move/kernels.h"
#include "tilegrad.h"

namespace {

double g_copy = 0;

// One line: the op's time paced by the host (each launch as the host gets to it) and queued
// behind a spin kernel (the GPU's time alone, what a loop whose host runs ahead sees: the
// small ops here take 25-50 us, close to their host-side cost), each with its rate over
// the 2 GiB copy and over a same-size copy timed the same way. The target is judged on the
// queued figure against the same-size copy.
void row(const char* op, double density, tg::DType dt, double bytes, const std::function<void()>& fn) {
  const tgb::CopyRates r = tgb::copy_rates(bytes, g_copy, fn);
  std::printf("%-24s %5.2f %-5s %8.3f %6.1f%% %9.1f%% %9.3f %6.1f%% %9.1f%%%s\n", op, density, tg::dtype_name(dt), r.ms,
              r.pct_copy, r.pct_size, r.qms, r.qpct_copy, r.qpct_size, r.qpct_size >= 85.0 ? "" : "  (< 85%)");
}

// Indices for gather along dim 2 on layout l: "local" permutes the columns inside each
// block (v = C*bs + ((17 j + i) mod bs)); otherwise v is uniform over the row (dim 1: the column). With
// dim 1 and local, the rows inside each block: v = R*bs + ((17 i + j) mod bs).
tg::BlockSparseTensor make_idx(const tg::Layout& l, bool local, int dim = 2) {
  const std::int64_t n = l.n_blocks(), bs = l.block_size(), N = l.cols();
  const auto coords = l.tables(tg::Device::cpu()).block_coords.to_vector<std::int64_t>();
  std::vector<std::int32_t> v(static_cast<std::size_t>(n * bs * bs));
  std::uint64_t s = 88172645463325252ull;
  for (std::int64_t k = 0; k < n; ++k)
    for (std::int64_t i = 0; i < bs; ++i)
      for (std::int64_t j = 0; j < bs; ++j) {
        std::int64_t val;
        if (local && dim == 1) {
          val = coords[static_cast<std::size_t>(3 * k + 1)] * bs + ((17 * i + j) % bs);
        } else if (local) {
          val = coords[static_cast<std::size_t>(3 * k + 2)] * bs + ((17 * j + i) % bs);
        } else {
          s ^= s << 13, s ^= s >> 7, s ^= s << 17;
          val = static_cast<std::int64_t>(s % static_cast<std::uint64_t>(N));
        }
        v[static_cast<std::size_t>((k * bs + i) * bs + j)] = static_cast<std::int32_t>(val);
      }
  return tg::BlockSparseTensor(tg::from_vector(v, {n, bs, bs}).to(tg::Device::cuda()), l);
}

}  // namespace

int main() {
  g_copy = tgb::copy_rate_gbps();
  std::printf("device copy rate: %.0f GB/s (read + write)\n", g_copy);
  std::printf("16 x 2048 x 2048, block 64\n%-24s %5s %-5s %8s %7s %10s %9s %7s %10s\n", "op", "dens", "dtype", "ms",
              "%copy", "%size-copy", "queued ms", "%copy", "%size-copy");
  const std::int64_t B = 16, S = 2048, bs = 64;
  tg::NoGradGuard ng;
  for (tg::DType dt : {tg::DType::f32, tg::DType::bf16}) {
    for (double density : {0.25, 0.5, 1.0}) {
      char set[32];  // TG_BENCH_ONLY selects (dtype, density) sets, e.g. "bf16 d0.25"
      std::snprintf(set, sizeof set, "%s d%.2f", tg::dtype_name(dt), density);
      if (!tgb::selected(set)) continue;
      tg::Layout l = tg::random_layout(B, S / bs, S / bs, bs, density, 3);
      tg::BlockSparseTensor x(
          tg::rand_seeded({l.n_blocks(), bs, bs}, 1, {.dtype = dt, .device = tg::Device::cuda()}), l);
      const double data = static_cast<double>(x.data().nbytes());

      row("transpose", density, dt, 2 * data, [&] { tg::transpose(x); });

      for (bool local : {true, false}) {
        tg::BlockSparseTensor idx = make_idx(l, local);
        const double idx_bytes = static_cast<double>(idx.data().nbytes());
        // read idx, read one source element per output element, write the output
        const double bytes = idx_bytes + 2 * data;
        row(local ? "gather (in-block)" : "gather (random row)", density, dt, bytes, [&] { tg::gather(x, 2, idx); });
        // the op waiting for its index check (tg::set_sync_checks(true))
        tg::set_sync_checks(true);
        row("  with sync checks", density, dt, bytes, [&] { tg::gather(x, 2, idx); });
        tg::set_sync_checks(false);
        // the kernel without the in-kernel index range and its host round trip
        tg::Tensor out = tg::empty({l.n_blocks(), bs, bs}, {.dtype = dt, .device = tg::Device::cuda()});
        row("  kernel only, unchecked", density, dt, bytes, [&] {
          tg::ops::sparse_gather_kernel()(tg::Device::cuda())(x.data(), l, 2, idx.data(), l, out, nullptr);
        });
        // the kernel with the index range and its deferred verdict, without the op's
        // validation and allocation
        const tg::ops::RangeVerdict verdict = [](std::int64_t, std::int64_t) {};
        row("  kernel + range check", density, dt, bytes, [&] {
          tg::ops::sparse_gather_kernel()(tg::Device::cuda())(x.data(), l, 2, idx.data(), l, out, &verdict);
        });
      }
      // dim 1: in-block rows (each idx block reads one source block), the same with i64
      // indices (twice the index bytes), random rows (each element from another source row)
      for (int variant : {0, 1, 2}) {
        const bool local = variant < 2;
        tg::BlockSparseTensor idx = make_idx(l, local, 1);
        if (variant == 1) idx = tg::BlockSparseTensor(idx.data().to(tg::DType::i64), l);
        const double bytes = static_cast<double>(idx.data().nbytes()) + 2 * data;
        const char* name = variant == 0 ? "gather d1 (in-block)" : variant == 1 ? "gather d1 (in-block, i64)"
                                                                                : "gather d1 (random row)";
        row(name, density, dt, bytes, [&] { tg::gather(x, 1, idx); });
        using tg::ops::smove::Dim1Path;
        const Dim1Path ran = tg::ops::smove::last_dim1_kernel();
        std::printf("  (the automatic choice ran the %s kernel)\n", ran == Dim1Path::Span     ? "span"
                                                                : ran == Dim1Path::Strips ? "strips"
                                                                                          : "direct");
        tg::Tensor out = tg::empty({l.n_blocks(), bs, bs}, {.dtype = dt, .device = tg::Device::cuda()});
        row("  kernel only, unchecked", density, dt, bytes, [&] {
          tg::ops::sparse_gather_kernel()(tg::Device::cuda())(x.data(), l, 1, idx.data(), l, out, nullptr);
        });
        // each kernel forced on the same inputs (the automatic choice takes spans, or strips
        // where the span kernel's last run found most rows scattered)
        for (Dim1Path path : {Dim1Path::Span, Dim1Path::Strips, Dim1Path::Direct}) {
          tg::ops::smove::set_dim1_path(path);
          row(path == Dim1Path::Span     ? "  span kernel, unchecked"
              : path == Dim1Path::Strips ? "  strips kernel, unchecked"
                                         : "  direct kernel, unchecked",
              density, dt, bytes, [&] {
                tg::ops::sparse_gather_kernel()(tg::Device::cuda())(x.data(), l, 1, idx.data(), l, out, nullptr);
              });
        }
        tg::ops::smove::set_dim1_path(Dim1Path::Auto);
      }

      row("repeat_interleave r=2", density, dt, 3 * data, [&] { tg::repeat_interleave(x, 2); });  // read once, write twice

      tg::BlockSparseTensor heads = tg::split(x, 4, -1);
      row("split P=4 (cols)", density, dt, 2 * data, [&] { tg::split(x, 4, -1); });
      row("merge P=4 (cols)", density, dt, 2 * data, [&] { tg::merge(heads, 4, -1); });
      row("split P=4 (rows)", density, dt, 2 * data, [&] { tg::split(x, 4, 1); });
    }
  }
  return 0;
}
