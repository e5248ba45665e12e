// Tutorial 04: block-sparse attention by hand.
//
// Attention with a sliding causal window only needs the score blocks near the diagonal.
// Here it is built from three block-sparse ops: an SDD matmul (dense q times dense kᵀ,
// computing only the blocks of a layout), a masked softmax over the active elements of each
// row, and a DSD matmul (block-sparse probabilities times dense v). Then backward, a check
// against plain dense attention, and the same result from the fused flash_attention, with
// the window as an option and as a mask callback.
// Read top to bottom. Build and run:
//   cmake --preset release && cmake --build --preset release
//   build/release/examples/04_block_sparse_attention [cpu|cuda]
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "tilegrad.h"

int main(int argc, char** argv) try {
  const tg::Device dev = argc > 1 ? tg::Device::parse(argv[1]) : tg::Device::cpu();
  tg::set_print_options({.edge_items = 2, .threshold = 100, .precision = 4});

  // 1. Shapes. Block-sparse ops take 3-d batches: [batch · heads, sequence, head dim].
  //    Tensor-core ops need blocks of at least 16.
  const std::int64_t bh = 2, seq = 256, dh = 32, bs = 32, window = 96;
  const tg::TensorOptions opts{.dtype = tg::DType::f32, .device = dev};
  tg::Tensor q = tg::randn_seeded({bh, seq, dh}, 1, opts).requires_grad_();
  tg::Tensor k = tg::randn_seeded({bh, seq, dh}, 2, opts).requires_grad_();
  tg::Tensor v = tg::randn_seeded({bh, seq, dh}, 3, opts).requires_grad_();

  // 2. The layout: query i sees keys i - window < j <= i. The builder keeps every block that
  //    holds at least one such pair; it prints as a block picture.
  tg::Layout pattern = tg::causal_window_pattern(bh, seq, bs, window);
  std::cout << "pattern: " << pattern << "\n\n";

  // 3. Scores, only for the active blocks: an SDD matmul (sparse output, dense inputs).
  //    transpose() swaps the last two dims, so kt is [bh, dh, seq].
  tg::BlockSparseTensor scores = tg::matmul(q, tg::transpose(k), pattern);
  std::cout << "scores: logical " << scores.shape() << ", stored " << scores.data().shape() << " ("
            << pattern.n_blocks() << " of " << bh * (seq / bs) * (seq / bs) << " blocks)\n";

  // 4. Blocks on the window's edges also hold pairs outside it. A block-sparse bool mask with
  //    the same layout marks them (true = excluded); masked_softmax skips them, scales by
  //    1/sqrt(dh) and normalises each row over what is left.
  std::vector<float> excluded(static_cast<std::size_t>(bh * seq * seq)), additive(excluded.size());
  for (std::int64_t b = 0; b < bh; ++b)
    for (std::int64_t i = 0; i < seq; ++i)
      for (std::int64_t j = 0; j < seq; ++j) {
        const bool out_of_window = j > i || j <= i - window;
        excluded[static_cast<std::size_t>((b * seq + i) * seq + j)] = out_of_window ? 1.0f : 0.0f;
        additive[static_cast<std::size_t>((b * seq + i) * seq + j)] = out_of_window ? -INFINITY : 0.0f;
      }
  tg::Tensor excluded_dense = tg::from_vector(excluded, {bh, seq, seq}, {.dtype = tg::DType::boolean, .device = dev});
  tg::BlockSparseTensor mask = tg::to_sparse(excluded_dense, pattern);
  tg::BlockSparseTensor probs = tg::masked_softmax(scores, mask, 1.0 / std::sqrt(static_cast<double>(dh)));

  // 5. Output: a DSD matmul (block-sparse probabilities times dense v) gives dense [bh, seq, dh].
  tg::Tensor out = tg::matmul(probs, v);
  std::cout << "out: " << out << "\n\n";

  // 6. Backward through all three ops to q, k and v.
  tg::Tensor loss = tg::sum(out * out);
  loss.backward();
  std::cout << "loss " << loss.item<double>() << ", |dq| " << tg::sum(q.grad() * q.grad()).item<double>()
            << ", |dk| " << tg::sum(k.grad() * k.grad()).item<double>() << ", |dv| "
            << tg::sum(v.grad() * v.grad()).item<double>() << "\n";

  // 7. Check against dense attention: all seq x seq scores, -inf outside the window.
  tg::Tensor dense_scores =
      tg::matmul(q, k, false, /*trans_b=*/true) + tg::from_vector(additive, {bh, seq, seq}, opts);
  tg::Tensor dense_out = tg::matmul(tg::softmax(dense_scores, 1.0 / std::sqrt(static_cast<double>(dh))), v);
  const double diff = tg::max(tg::abs(dense_out - out)).item<double>();
  std::cout << "max |block-sparse - dense| = " << diff << "\n";

  // 8. flash_attention does all of it in one fused op, reading only the pattern's blocks;
  //    the window option masks the edge pairs in-kernel.
  tg::Tensor fused = tg::flash_attention(q, k, v, tg::AttentionPattern::from_layout(pattern),
                                         {.causal = true, .window_left = window - 1});
  const double diff_fused = tg::max(tg::abs(fused - out)).item<double>();
  std::cout << "max |flash_attention - by hand| = " << diff_fused << "\n";

  // 9. Any other rule is a mask callback (bh, i, j) -> excluded. A GPU kernel cannot call a
  //    host function, so attention_mask_from_fn evaluates it once, over the pattern's pairs
  //    only, into an element mask: build it once, pass it as options.mask every step. Here
  //    the same window as a callback gives the same attention.
  const std::int64_t w = window;
  tg::BlockSparseTensor window_mask = tg::attention_mask_from_fn(
      tg::AttentionPattern::from_layout(pattern), bh,
      [w](std::int64_t, std::int64_t i, std::int64_t j) { return !(j <= i && j > i - w); });
  std::cout << "mask from the callback: " << window_mask.layout().n_blocks() << " blocks that exclude something\n";
  window_mask = tg::BlockSparseTensor(window_mask.data().to(dev), window_mask.layout());  // to the device once
  tg::Tensor masked = tg::flash_attention(q, k, v, tg::AttentionPattern::from_layout(pattern), {.mask = window_mask});
  const double diff_mask = tg::max(tg::abs(masked - out)).item<double>();
  std::cout << "max |flash_attention with the callback's mask - by hand| = " << diff_mask << "\n";
  return diff < 1e-4 && diff_fused < 1e-4 && diff_mask < 1e-4 ? 0 : 1;
} catch (const tg::Error& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
