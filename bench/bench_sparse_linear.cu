// A block-sparse MLP layer against the dense one it replaces: nn::BlockSparseLinear (one
// DDS block-sparse product reading the stored weight transposed, then the bias) next to
// nn::Linear (one cuBLASLt GEMM with the bias in its epilogue) at the training example's
// MLP shapes: 16 x 1024 tokens, d 384 -> 1536 and 1536 -> 384 (GPU defaults), and d 1024
// -> 4096. bf16, blocks 64 and 128, densities 0.1 / 0.25 / 0.5 / 1; forward, and forward +
// backward (dx, dW, db). CUDA events, queued behind a spin kernel, median of 50 runs.
//
// Printed: ms, useful TFLOP/s (2·R·in·out·density forward, three times that with the
// backward) and `ratio` = sparse ms / (density × dense ms): 1 means the sparse layer costs
// exactly its share of the dense one; the speed-up over the dense layer is 1 / (density ×
// ratio).
#include <cstdio>
#include <string>

#include "bench_util.h"
#include "tilegrad.h"

namespace {

struct Shape2 {
  std::int64_t rows, in, out;
};

void bench_shape(const Shape2& s) {
  const tg::TensorOptions o{.dtype = tg::DType::bf16, .device = tg::Device::cuda()};
  tg::Tensor x = tg::rand_seeded({s.rows, s.in}, 1, o, -1, 1).requires_grad_();
  tg::Tensor dy = tg::rand_seeded({s.rows, s.out}, 2, o, -1, 1);
  const double flops = 2.0 * static_cast<double>(s.rows * s.in * s.out);
  const std::string shape = std::to_string(s.rows) + "x" + std::to_string(s.in) + "->" + std::to_string(s.out);

  tg::nn::Linear dense(s.in, s.out, true, o, 3);
  auto fwd_bwd = [&](auto& layer) {
    return [&] {
      tg::Tensor y = layer.forward(x);
      y.backward(dy);
    };
  };
  // The dense layer is always timed: every ratio is against it.
  double dense_fwd;
  {
    tg::NoGradGuard ng;
    dense_fwd = tgb::time_queued_ms([&] { dense.forward(x); });
  }
  const double dense_fb = tgb::time_queued_ms(fwd_bwd(dense));
  std::printf("%-20s %-7s %5s %7.3f %9.3f %9.1f %7.3f %9.3f %9.1f %7.3f\n", shape.c_str(), "dense", "-", 1.0, dense_fwd,
              flops / dense_fwd / 1e9, 1.0, dense_fb, 3 * flops / dense_fb / 1e9, 1.0);

  for (std::int64_t bs : {64, 128}) {
    for (double d : {0.1, 0.25, 0.5, 1.0}) {
      const std::string label = shape + " bs" + std::to_string(bs) + " d" + std::to_string(d);
      if (!tgb::selected(label)) continue;
      tg::Layout l = tg::random_layout(1, s.out / bs, s.in / bs, bs, d, 7);
      tg::nn::BlockSparseLinear sparse(l, true, o, 4);
      const double dd = l.density();  // the drawn density, not the asked one
      double fwd, fb;
      {
        tg::NoGradGuard ng;
        fwd = tgb::time_queued_ms([&] { sparse.forward(x); });
      }
      fb = tgb::time_queued_ms(fwd_bwd(sparse));
      std::printf("%-20s %-7s %5lld %7.3f %9.3f %9.1f %7.3f %9.3f %9.1f %7.3f\n", shape.c_str(), "sparse",
                  static_cast<long long>(bs), dd, fwd, dd * flops / fwd / 1e9, fwd / (dd * dense_fwd), fb,
                  3 * dd * flops / fb / 1e9, fb / (dd * dense_fb));
    }
  }
}

}  // namespace

int main() {
  std::printf("# BlockSparseLinear vs nn::Linear, bf16 (queued, median of 50; ratio = sparse / (density x dense))\n");
  std::printf("%-20s %-7s %5s %7s %9s %9s %7s %9s %9s %7s\n", "rows x in -> out", "layer", "block", "density", "fwd ms",
              "TFLOP/s", "ratio", "f+b ms", "TFLOP/s", "ratio");
  for (const Shape2& s :
       {Shape2{16384, 384, 1536}, Shape2{16384, 1536, 384}, Shape2{16384, 1024, 4096}, Shape2{16384, 4096, 1024}})
    bench_shape(s);
  return 0;
}
