// Tutorial 02: block-sparse tensors.
//
// A block-sparse matrix stores only some fixed-size square blocks of a [B, M, N] matrix
// batch. Which blocks exist is its Layout; the blocks themselves sit one after another in
// a [n_blocks, bs, bs] tensor. This tutorial builds layouts, moves data in and out, does
// arithmetic on the blocks (including a row-wise softmax), transposes, and runs backward
// to the dense input. Read top to bottom; every step prints what it made. Build and run:
//   cmake --preset release && cmake --build --preset release
//   build/release/examples/02_block_sparse_tensors
#include <cmath>
#include <iostream>

#include "tilegrad.h"

int main() {
  tg::set_print_options({.edge_items = 3, .threshold = 200, .precision = 3});

  // 1. Block-sparse ops work on 3-d [B, M, N] batches. Attention scores come as
  //    [batch, heads, queries, keys]; flatten_to_3d merges the leading dims (and
  //    unflatten undoes it at the end).
  const std::int64_t batch = 1, heads = 2, seq = 8, bs = 2;
  tg::Tensor scores4 = tg::randn_seeded({batch, heads, seq, seq}, /*seed=*/1, {.dtype = tg::DType::f64});
  scores4.requires_grad_();
  auto [scores, original_shape] = tg::flatten_to_3d(scores4);
  std::cout << "scores: " << original_shape << " flattened to " << scores.shape() << "\n\n";

  // 2. A layout says which bs x bs blocks exist. Pattern builders make the usual attention
  //    shapes; here a causal one: a query block sees key blocks at or before it. Printing
  //    a small layout draws it ('#' = block present).
  tg::Layout causal = tg::causal_pattern(batch * heads, seq, seq, bs);
  std::cout << "causal layout: " << causal << "\n\n";
  //    random_layout makes test layouts: each block present with a given probability,
  //    the same on every machine for the same seed.
  tg::Layout random = tg::random_layout(2, 4, 4, bs, /*density=*/0.4, /*seed=*/7);
  std::cout << "random layout: " << random << "\n\n";

  // 3. to_sparse copies the blocks of a dense tensor that the layout keeps. The result
  //    holds only them: [n_blocks, bs, bs], in row-major order of (batch, row, column).
  tg::BlockSparseTensor x = tg::to_sparse(scores, causal);
  std::cout << "x: logical shape " << x.shape() << ", " << causal.n_blocks() << " blocks, data shape "
            << x.data().shape() << "\n\n";

  // 4. Element-wise ops act on the stored blocks and keep the layout. Two block-sparse
  //    operands must have equal layouts.
  tg::BlockSparseTensor y = tg::tanh(x) * 2.0 + x;
  std::cout << "tanh(x) * 2 + x keeps the layout: " << (y.layout() == x.layout() ? "yes" : "no") << "\n\n";

  // 5. transpose swaps the last two dims, blocks and all: block (r, c) becomes block
  //    (c, r), transposed inside. The causal (lower-triangular) layout turns upper
  //    triangular. It equals transposing the dense tensor, and it is differentiable like
  //    every op here (step 9 backpropagates through it). Printing a block-sparse tensor
  //    shows its layout and its stored blocks.
  tg::BlockSparseTensor xt = tg::transpose(x);
  std::cout << "transpose(x): " << xt << "\n";
  const double t_diff = tg::max(tg::abs(tg::to_dense(xt) - tg::transpose(tg::to_dense(x)))).item<double>();
  std::cout << "max |to_dense(transpose(x)) - transpose(to_dense(x))| = " << t_diff << "\n\n";

  // 6. Row reductions run over the blocks present in each row and give dense [B, M].
  //    Absent elements count as nothing: 0 for a sum, excluded from a max.
  std::cout << "row_sum(x) = " << tg::row_sum(x) << "\n";
  std::cout << "row_max(x) = " << tg::row_max(x) << "\n\n";

  // 7. A softmax over each row's present elements, from row ops: subtract the row max
  //    (for numerical safety), exponentiate, divide by the row sum.
  tg::Tensor m = tg::row_max(x);                         // [B, M]
  tg::BlockSparseTensor e = tg::exp(tg::row_sub(x, m));  // block-sparse, values in (0, 1]
  tg::Tensor s = tg::row_sum(e);                         // [B, M]
  tg::BlockSparseTensor p = tg::row_div(e, s);           // every row sums to 1
  std::cout << "row sums of p = " << tg::row_sum(p) << "\n\n";

  // 8. to_dense goes back to [B, M, N], filling absent elements with a value of your
  //    choice. With -inf, a dense softmax of the filled scores gives the same
  //    probabilities: the absent blocks are exactly the masked-out positions.
  tg::Tensor masked = tg::to_dense(x, -INFINITY);
  tg::Tensor p_dense = tg::to_dense(p, 0.0);
  tg::Tensor diff = tg::max(tg::abs(tg::softmax(masked) - p_dense));
  std::cout << "scores with -inf where absent (head 0):\n" << tg::slice(masked, 0, 0, 1) << "\n";
  std::cout << "max |dense softmax - block-sparse softmax| = " << diff.item<double>() << "\n\n";

  // 9. Backward reaches the dense input through every step: absent positions get no
  //    gradient at all. unflatten brings back the [batch, heads, ...] shape.
  tg::Tensor w = tg::rand_seeded(original_shape, 3, {.dtype = tg::DType::f64});
  tg::Tensor probs4 = tg::unflatten(p_dense, original_shape);
  //    The loss also reads the transposed blocks of step 5, so their gradient flows back
  //    through transpose to the same blocks of x.
  tg::Tensor wt = tg::rand_seeded(xt.shape(), 4, {.dtype = tg::DType::f64});
  tg::Tensor loss = tg::sum(probs4 * w) + tg::sum(tg::to_dense(xt) * wt);
  loss.backward();
  std::cout << "loss = " << loss.item<double>() << "\n";
  std::cout << "dloss/dscores (head 0; zero above the causal blocks):\n" << tg::slice(scores4.grad(), 1, 0, 1)
            << "\n\n";

  // 10. Errors name the op and say what differs.
  try {
    tg::BlockSparseTensor other = tg::to_sparse(scores.detach(), tg::random_layout(batch * heads, 4, 4, bs, 0.5, 9));
    tg::add(x, other);
  } catch (const tg::LayoutError& err) {
    std::cout << "error: " << err.what() << "\n";
  }
  return diff.item<double>() < 1e-12 && t_diff == 0.0 ? 0 : 1;
}
