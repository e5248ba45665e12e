// MultiHeadAttention with rotary position embedding (options.rope): the queries and keys it
// attends with are the rotated projections, a KV cache continues the positions, shifting a
// whole sequence's positions changes nothing, and bad rope options raise named errors.
#include <vector>

#include "util.h"

namespace test_attention_rope {

using namespace tg;

namespace {

using tgt::kF64;

}  // namespace

TEST_CASE("MultiHeadAttention rope: the same as rotating q and k by hand", "[nn][attention][rope]") {
  for (bool inter : {false, true}) {
    INFO("interleaved " << inter);
    const RopeOptions r{.base = 100.0, .rotary_dim = 6, .interleaved = inter};
    nn::MultiHeadAttention plain(32, 4, {.num_kv_heads = 2, .causal = true, .tensor = kF64, .seed = 3});
    nn::MultiHeadAttention rot(32, 4, {.num_kv_heads = 2, .causal = true, .rope = r, .tensor = kF64, .seed = 3});
    const Tensor x = tgt::rand64({2, 9, 32}, 4);
    // By hand from plain's weights (same seed: same weights): project, split, rotate, attend.
    const Tensor qkv = plain.qkv->forward(x);
    std::vector<Tensor> h = split_heads(qkv, {4, 2, 2}, 8);
    const Tensor o = flash_attention(rope(h[0], r), rope(h[1], r), h[2], AttentionPattern::dense(9, 9),
                                     {.num_heads = 4, .causal = true});
    const Tensor want = plain.proj->forward(merge_heads(o, 2));
    tgt::require_close(rot.forward(x), want, 1e-12, 1e-12);
    REQUIRE(tgt::max_abs_diff(plain.forward(x), want) > 1e-3);  // the rotation matters
  }
}

TEST_CASE("MultiHeadAttention rope with a KV cache equals forward, row by row", "[nn][attention][rope][kv_cache]") {
  nn::MultiHeadAttention mha(24, 3, {.causal = true, .rope = RopeOptions{}, .tensor = kF64, .seed = 5});
  const Tensor x = tgt::rand64({2, 13, 24}, 6);
  const Tensor full = mha.forward(x);
  nn::KVCache cache;
  tgt::require_close(mha.forward_cached(slice(x, 1, 0, 6), cache), slice(full, 1, 0, 6), 1e-12, 1e-12);
  tgt::require_close(mha.forward_cached(slice(x, 1, 6, 9), cache), slice(full, 1, 6, 9), 1e-12, 1e-12);
  for (std::int64_t p = 9; p < 13; ++p) {
    INFO("position " << p);
    tgt::require_close(mha.forward_cached(slice(x, 1, p, p + 1), cache), slice(full, 1, p, p + 1), 1e-12, 1e-12);
  }
}

TEST_CASE("MultiHeadAttention rope: the gradient flows through the rotation", "[nn][attention][rope]") {
  nn::MultiHeadAttention mha(16, 2, {.fused_qkv = false, .causal = true, .rope = RopeOptions{}, .tensor = kF64});
  const auto res = autograd::gradcheck([&](const std::vector<Tensor>& in) { return mha.forward(in[0]); },
                                       {tgt::rand64({1, 5, 16}, 7).requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
}

TEST_CASE("MultiHeadAttention rope options are checked at construction", "[nn][attention][rope]") {
  tgt::require_throws<ShapeError>(
      [] { nn::MultiHeadAttention(32, 4, {.rope = RopeOptions{.rotary_dim = 10}}); },
      {"MultiHeadAttention", "rope.rotary_dim", "head_dim = 8", "10"});
  tgt::require_throws<ShapeError>([] { nn::MultiHeadAttention(32, 4, {.rope = RopeOptions{.rotary_dim = 3}}); },
                                  {"MultiHeadAttention", "rope.rotary_dim", "even", "3"});
  tgt::require_throws<ValueError>([] { nn::MultiHeadAttention(32, 4, {.rope = RopeOptions{.offset = 2}}); },
                                  {"MultiHeadAttention", "rope.offset", "offset 2"});
}

TEST_CASE("MultiHeadAttention rope on CUDA matches the CPU", "[nn][attention][rope][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda(), cpu = Device::cpu();
  // head dim 32, f32 (TF32 products: the tolerance of the module's other CUDA test)
  nn::MultiHeadAttention mc(128, 4, {.causal = true, .rope = RopeOptions{.rotary_dim = 16}, .seed = 8});
  nn::MultiHeadAttention mg(128, 4, {.causal = true, .rope = RopeOptions{.rotary_dim = 16},
                                     .tensor = {.device = gpu}, .seed = 9});
  const std::vector<Tensor> pc = mc.parameters(), pg = mg.parameters();
  {
    NoGradGuard ng;
    for (std::size_t i = 0; i < pc.size(); ++i) copy_bytes(pg[i], pc[i].to(gpu));
  }
  const Tensor x = tgt::rand64({2, 40, 128}, 9).to(DType::f32);
  Tensor xc = x.detach().requires_grad_(), xg = x.to(gpu).requires_grad_();
  const Tensor yc = mc.forward(xc), yg = mg.forward(xg);
  tgt::require_close(yg.to(cpu), yc, 1e-3, 1e-3);
  sum(mul(yc, yc)).backward();
  sum(mul(yg, yg)).backward();
  tgt::require_close(xg.grad().to(cpu), xc.grad(), 1e-3, 1e-3);
}

}  // namespace test_attention_rope
