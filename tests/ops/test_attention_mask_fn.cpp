// attention_mask_from_fn: a mask callback folded once into the element mask that
// options.mask_fn stands for, element by element against the callback, and flash
// attention with that mask equal (bit for bit) to attention with the callback itself.
#include <cstdint>
#include <functional>
#include <vector>

#include "ops/attention/attention.h"
#include "util.h"

namespace test_attention_mask_fn {

using namespace tg;

namespace {

// Excludes a scattered 1/5 of the pairs, everything far right of the diagonal, and a
// whole query row of head 1.
bool excluded(std::int64_t bh, std::int64_t i, std::int64_t j) {
  return (i * 7 + j * 3 + bh) % 5 == 0 || j > i + 9 || (bh == 1 && i == 4);
}

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

}  // namespace

TEST_CASE("attention_mask_from_fn folds the callback over the visited pairs", "[ops][attention]") {
  const std::int64_t bhq = 3, sq = 24, sk = 20;
  // variable blocks (sizes with a gcd of 2: the folded mask's blocks are 2 x 2) and one
  // pattern row shared by every batch·head
  const Tensor pm = from_vector<bool>({true, false, true, true, true, false, false, true, true}, {1, 3, 3});
  const AttentionPattern pattern = AttentionPattern::variable(pm, {8, 6, 10}, {4, 12, 4});
  const BlockSparseTensor mask = attention_mask_from_fn(pattern, bhq, excluded);
  REQUIRE(mask.dtype() == DType::boolean);
  REQUIRE(mask.shape() == Shape{bhq, sq, sk});
  const std::vector<double> dense =
      tgt::values(to_dense(BlockSparseTensor(mask.data().to(DType::f64), mask.layout())));
  const std::vector<std::int64_t> qs = pattern.q_starts(), ks = pattern.k_starts();
  const auto block = [](const std::vector<std::int64_t>& starts, std::int64_t i) {
    std::int64_t r = 0;
    while (starts[at(r + 1)] <= i) ++r;
    return r;
  };
  std::int64_t kept = 0;
  for (std::int64_t bh = 0; bh < bhq; ++bh)
    for (std::int64_t i = 0; i < sq; ++i)
      for (std::int64_t j = 0; j < sk; ++j) {
        INFO("(" << bh << ", " << i << ", " << j << ")");
        const bool visited = pattern.visited(0, block(qs, i), block(ks, j));
        const bool want = visited && excluded(bh, i, j);
        REQUIRE((dense[at((bh * sq + i) * sk + j)] != 0.0) == want);
        kept += want;
      }
  REQUIRE(kept > 0);
}

TEST_CASE("flash_attention with attention_mask_from_fn's mask equals it with mask_fn", "[ops][attention]") {
  const std::int64_t bhq = 2, sq = 16, sk = 24, d = 8;
  const AttentionPattern pattern = AttentionPattern::from_layout(random_layout(bhq, 4, 6, 4, 0.7, 17));
  const Tensor q0 = tgt::rand64({bhq, sq, d}, 1), k0 = tgt::rand64({bhq, sk, d}, 2), v0 = tgt::rand64({bhq, sk, d}, 3);
  const Tensor g = tgt::rand64({bhq, sq, d}, 4);
  const auto run = [&](const AttentionOptions& o) {
    Tensor q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
    Tensor out = flash_attention(q, k, v, pattern, o);
    out.backward(g);
    return std::vector<Tensor>{out, q.grad(), k.grad(), v.grad()};
  };
  AttentionOptions with_fn;
  with_fn.mask_fn = excluded;
  AttentionOptions with_mask;
  with_mask.mask = attention_mask_from_fn(pattern, bhq, excluded);
  const std::vector<Tensor> a = run(with_fn), b = run(with_mask), plain = run({});
  for (std::size_t t = 0; t < a.size(); ++t) {
    INFO("tensor " << t);
    tgt::require_close(b[t], a[t], 0, 0);
  }
  // the mask matters: without it the output differs
  REQUIRE(tgt::values(max(abs(plain[0] - a[0])))[0] > 1e-3);
}

TEST_CASE("attention_mask_from_fn bad inputs", "[ops][attention]") {
  const AttentionPattern two = AttentionPattern::from_layout(random_layout(2, 2, 2, 4, 0.5, 3));
  tgt::require_throws<ValueError>([] { attention_mask_from_fn(AttentionPattern(), 1, excluded); },
                                  {"attention_mask_from_fn", "pattern", "undefined"});
  tgt::require_throws<ValueError>([&] { attention_mask_from_fn(two, 2, {}); },
                                  {"attention_mask_from_fn", "fn", "empty"});
  tgt::require_throws<ValueError>([&] { attention_mask_from_fn(two, 0, excluded); },
                                  {"attention_mask_from_fn", "bhq", "0"});
  tgt::require_throws<ShapeError>([&] { attention_mask_from_fn(two, 3, excluded); },
                                  {"attention_mask_from_fn", "pattern", "3", "2"});
}

TEST_CASE("flash_attention CUDA with attention_mask_from_fn's mask equals it with mask_fn",
          "[ops][attention][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const std::int64_t bhq = 2, sq = 128, sk = 192, d = 64;
  const AttentionPattern pattern = AttentionPattern::from_layout(random_layout(bhq, 2, 3, 64, 0.8, 23));
  const TensorOptions opt{.dtype = DType::bf16, .device = gpu};
  const Tensor q = rand_seeded({bhq, sq, d}, 5, opt, -1, 1), k = rand_seeded({bhq, sk, d}, 6, opt, -1, 1),
               v = rand_seeded({bhq, sk, d}, 7, opt, -1, 1);
  AttentionOptions with_fn;
  with_fn.mask_fn = excluded;
  AttentionOptions with_mask;
  const BlockSparseTensor m = attention_mask_from_fn(pattern, bhq, excluded);
  with_mask.mask = BlockSparseTensor(m.data().to(gpu), m.layout());
  tgt::require_close(flash_attention(q, k, v, pattern, with_mask), flash_attention(q, k, v, pattern, with_fn), 0, 0);
}

}  // namespace test_attention_mask_fn
