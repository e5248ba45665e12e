// Tests of MultiHeadAttention::forward_cached (incremental decoding with a KV cache):
// prefill, single positions and chunks after a prefill give, row by row, forward() on the
// whole sequence (causal, GQA, fused and separate projections, all pairs and a block
// pattern with its last blocks cut short), and bad caches / options raise named errors.
#include <vector>

#include "util.h"

namespace test_attention_cache {

using namespace tg;

namespace {

using tgt::kF64;

// Rows [a, b) of x [B, S, d].
Tensor rows(const Tensor& x, std::int64_t a, std::int64_t b) { return slice(x, 1, a, b); }

// The pattern of queries [a, b) against keys [0, b) of a square block layout.
AttentionPattern rows_of(const Layout& l, std::int64_t a, std::int64_t b) {
  return AttentionPattern::from_layout(l).slice(a, b, 0, b);
}

}  // namespace

TEST_CASE("forward_cached equals forward on the whole sequence, row by row", "[nn][attention][kv_cache]") {
  for (bool fused : {true, false}) {
    INFO("fused qkv " << fused);
    nn::MultiHeadAttention mha(
        32, 4, {.num_kv_heads = 2, .fused_qkv = fused, .causal = true, .tensor = kF64, .seed = fused ? 1u : 2u});
    const std::int64_t B = 2, S = 21;
    Tensor x = tgt::rand64({B, S, 32}, 3);
    Tensor full = mha.forward(x);
    // A prefill of 5, single positions to 12, a chunk of 4 (causal inside it), then single
    // positions to the end.
    nn::KVCache cache;
    std::vector<std::pair<std::int64_t, std::int64_t>> calls = {{0, 5}};
    for (std::int64_t p = 5; p < 12; ++p) calls.emplace_back(p, p + 1);
    calls.emplace_back(12, 16);
    for (std::int64_t p = 16; p < S; ++p) calls.emplace_back(p, p + 1);
    for (auto [a, b] : calls) {
      INFO("positions " << a << " .. " << b - 1);
      REQUIRE(cache.length() == a);
      Tensor y = mha.forward_cached(rows(x, a, b), cache);
      tgt::require_close(y, rows(full, a, b), 1e-12, 1e-12);
    }
    REQUIRE(cache.length() == S);
    REQUIRE(cache.k.shape() == Shape{B * 2, S, 8});
    REQUIRE_FALSE(cache.k.requires_grad());
  }
}

TEST_CASE("forward_cached over a block pattern cut to the new rows", "[nn][attention][kv_cache]") {
  // The example GPT's kind of pattern: a causal window of blocks plus global leading blocks.
  const std::int64_t bs = 4, S = 22, nb = (S + bs - 1) / bs;
  Layout l =
      pattern_union(causal_window_pattern(1, nb * bs, bs, 2 * bs), global_local_pattern(1, nb * bs, bs, bs, 0, true));
  nn::MultiHeadAttention mha(16, 2, {.causal = true, .tensor = kF64, .seed = 4});
  Tensor x = tgt::rand64({1, S, 16}, 5);
  Tensor full = mha.forward(x, rows_of(l, 0, S));
  nn::KVCache cache;
  Tensor pre = mha.forward_cached(rows(x, 0, 9), cache, rows_of(l, 0, 9));
  tgt::require_close(pre, rows(full, 0, 9), 1e-12, 1e-12);
  for (std::int64_t p = 9; p < S; ++p) {
    INFO("position " << p);
    Tensor y = mha.forward_cached(rows(x, p, p + 1), cache, rows_of(l, p, p + 1));
    tgt::require_close(y, rows(full, p, p + 1), 1e-12, 1e-12);
  }
  // Without the pattern the last position would see every key: the pattern matters.
  nn::KVCache all;
  mha.forward_cached(rows(x, 0, S - 1), all);
  Tensor everything = mha.forward_cached(rows(x, S - 1, S), all);
  REQUIRE(tgt::max_abs_diff(everything, rows(full, S - 1, S)) > 1e-6);
}

TEST_CASE("forward_cached rejects caches and options that do not fit", "[nn][attention][kv_cache]") {
  nn::MultiHeadAttention mha(16, 2, {.causal = true, .tensor = kF64});
  nn::KVCache cache;
  mha.forward_cached(tgt::rand64({2, 3, 16}, 6), cache);
  tgt::require_throws<ShapeError>(
      [&] {
        mha.forward_cached(tgt::rand64({1, 1, 16}, 7), cache);
      },
      {"forward_cached", "[4, 3, 8]", "B·Hkv = 2"});
  tgt::require_throws<ShapeError>(
      [&] {
        mha.forward_cached(tgt::rand64({2, 1, 8}, 8), cache);
      },
      {"forward_cached", "d_model = 16", "[2, 1, 8]"});
  tgt::require_throws<ValueError>(
      [&] {
        AttentionOptions o;
        o.window_left = 4;
        mha.forward_cached(tgt::rand64({2, 1, 16}, 9), cache, {}, o);
      },
      {"forward_cached", "window_left", "length 3"});
  // A pattern of the wrong extent fails in flash_attention, after the projections.
  tgt::require_throws<ShapeError>(
      [&] { mha.forward_cached(tgt::rand64({2, 1, 16}, 10), cache, AttentionPattern::dense(1, 2, 4)); },
      {"flash_attention", "pattern"});
  REQUIRE(cache.length() == 3);  // nothing appended by the failed calls
  cache.clear();
  REQUIRE(cache.length() == 0);
}

TEST_CASE("forward_cached on CUDA matches forward", "[nn][attention][kv_cache][cuda]") {
  TG_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dt);
    const TensorOptions o{.dtype = dt, .device = Device::cuda()};
    nn::MultiHeadAttention mha(256, 4, {.num_kv_heads = 2, .causal = true, .tensor = o, .seed = 3});
    const std::int64_t S = 150;
    Tensor x = rand_seeded({2, S, 256}, 10, o, -1, 1);
    NoGradGuard ng;
    Tensor full = mha.forward(x);
    nn::KVCache cache;
    const double tol = dt == DType::bf16 ? 3e-2 : 1e-4;
    tgt::require_close(mha.forward_cached(rows(x, 0, 100), cache), rows(full, 0, 100), tol, tol);
    for (std::int64_t p = 100; p < 110; ++p) {
      tgt::require_close(mha.forward_cached(rows(x, p, p + 1), cache), rows(full, p, p + 1), tol, tol);
    }
    tgt::require_close(mha.forward_cached(rows(x, 110, S), cache), rows(full, 110, S), tol, tol);
  }
}

}  // namespace test_attention_cache
