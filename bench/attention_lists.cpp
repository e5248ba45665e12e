// The tile lists the attention benchmarks' patterns give (attention_cases.h), built on the
// host as the CUDA backend builds them (ops/attention/cuda/work_lists.h), without a GPU: per
// pattern and tile shape, the work items, the mean and median steps an item, the items under
// 24 steps, the share of entries whose tiles need per-element checks of the pattern (partly
// visited blocks, keys past sk: table lookups) and of the geometry (causal or window edges:
// arithmetic), and the tiles' area against the smaller tiles' (the work a larger tile
// wastes). Short lists weigh a CTA's start and end; checked entries weigh masking. kv pass: key tiles of 64 or 128 over
// query tiles of 64 (its column lists); forward: query tiles of 64 or 128 over key tiles of 64 (row lists). One head:
// every head of these patterns has the same lists.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "attention_cases.h"
#include "ops/attention/cuda/entry.h"
#include "ops/attention/cuda/work_lists.h"

namespace {

namespace at = tg::ops::attn;

// One line: the lists `l` of tiles of bm query rows x bn keys; `area0` is the smaller tiles' total
// area (entries x rows x keys) of the same pass, against which this one's is given.
void print_stats(const char* name, const char* pass, int bm, int bn, const at::HostList& l, double area0) {
  std::vector<int> len;
  for (std::size_t i = 0; i + 1 < l.off.size(); ++i) len.push_back(l.off[i + 1] - l.off[i]);
  std::int64_t short_items = 0, pattern = 0, geometry = 0;
  for (int x : len) short_items += x < 24 ? 1 : 0;
  for (std::int32_t e : l.entries) {
    pattern += (e & at::kCheckPattern) != 0 ? 1 : 0;
    geometry += (e & at::kCheckGeometry) != 0 ? 1 : 0;
  }
  std::sort(len.begin(), len.end());
  const double entries = static_cast<double>(l.entries.size()), items = static_cast<double>(len.size());
  auto share = [&](std::int64_t x) { return entries > 0 ? 100.0 * static_cast<double>(x) / entries : 0.0; };
  const double area = entries * bm * bn;
  std::printf("%-30s %-7s %4d %4d %6zu %8.1f %7d %7lld %8.1f%% %8.1f%% %7.3f\n", name, pass, bm, bn, len.size(),
              items > 0 ? entries / items : 0.0, len.empty() ? 0 : len[len.size() / 2],
              static_cast<long long>(short_items), share(pattern), share(geometry), area0 > 0 ? area / area0 : 0.0);
}

// The lists of the kv pass (key tiles of bn over query tiles of 64) and of the forward (query
// tiles of bm over key tiles of 64).
at::HostList kv_lists(const at::ListSpec& s, int bn) {
  return at::build_col_lists(at::build_row_lists(s, 64, bn), 1, 1);
}
at::HostList forward_lists(const at::ListSpec& s, int bm) { return at::build_row_lists(s, bm, 64); }
double area(const at::HostList& l, int bm, int bn) { return static_cast<double>(l.entries.size()) * bm * bn; }

}  // namespace

int main() {
  std::printf("attention tile lists of one head, S %lld (bench_attention's patterns)\n",
              static_cast<long long>(tg_bench::kSeq));
  std::printf("%-30s %-7s %4s %4s %6s %8s %7s %7s %9s %9s %7s\n", "pattern", "pass", "rows", "keys", "items", "mean",
              "median", "<24", "pattern", "geometry", "area");
  for (const tg_bench::Case& c : tg_bench::cases()) {
    if (c.options.dropout_p > 0.0 || c.options.softcap > 0.0) continue;  // the same lists as causal
    const tg::AttentionPattern& pat = c.pattern;
    const std::vector<std::int32_t> q_blk = at::block_of_positions(pat.q_starts());
    const std::vector<std::int32_t> k_blk = at::block_of_positions(pat.k_starts());
    const at::ListSpec s =
        at::list_spec(pat, 1, 1, c.options.causal, c.options.window_left, c.options.window_right, q_blk, k_blk);
    const double kv0 = area(kv_lists(s, 64), 64, 64), fwd0 = area(forward_lists(s, 64), 64, 64);
    for (int bn : {64, 128}) print_stats(c.name.c_str(), "kv", 64, bn, kv_lists(s, bn), kv0);
    for (int bm : {64, 128}) print_stats(c.name.c_str(), "forward", bm, 64, forward_lists(s, bm), fwd0);
  }
  return 0;
}
