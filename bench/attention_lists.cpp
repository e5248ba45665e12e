// The tile lists the attention benchmarks' patterns give (attention_cases.h), built on the
// host as the CUDA backend builds them (ops/attention/cuda/work_lists.h), without a GPU: per
// pattern and tile shape, the work items, the mean and median steps an item, the items under
// 24 steps, and the share of entries whose tiles need per-element checks (causal or window
// edges, partly visited blocks). Short lists weigh a CTA's start and end; checked entries
// weigh masking. kv pass: key tiles of 64 or 128 over query tiles of 64 (its column lists);
// forward: query tiles of 64 or 128 over key tiles of 64 (row lists). One head: every head
// of these patterns has the same lists.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "attention_cases.h"
#include "ops/attention/cuda/entry.h"
#include "ops/attention/cuda/work_lists.h"

namespace {

namespace at = tg::ops::attn;

void print_stats(const char* name, const char* pass, int bm, int bn, const at::HostList& l) {
  std::vector<int> len;
  for (std::size_t i = 0; i + 1 < l.off.size(); ++i) len.push_back(l.off[i + 1] - l.off[i]);
  std::int64_t entries = 0, checked = 0, short_items = 0;
  for (int x : len) {
    entries += x;
    short_items += x < 24 ? 1 : 0;
  }
  for (std::int32_t e : l.entries) checked += (e & ((1 << at::kFlagBits) - 1)) != 0 ? 1 : 0;
  std::sort(len.begin(), len.end());
  const double items = static_cast<double>(len.size());
  std::printf("%-30s %-7s %4d %4d %6zu %8.1f %7d %7lld %8.1f%%\n", name, pass, bm, bn, len.size(),
              items > 0 ? static_cast<double>(entries) / items : 0.0, len.empty() ? 0 : len[len.size() / 2],
              static_cast<long long>(short_items), entries > 0 ? 100.0 * static_cast<double>(checked) / entries : 0.0);
}

}  // namespace

int main() {
  std::printf("attention tile lists of one head, S %lld (bench_attention's patterns)\n",
              static_cast<long long>(tg_bench::kSeq));
  std::printf("%-30s %-7s %4s %4s %6s %8s %7s %7s %9s\n", "pattern", "pass", "rows", "keys", "items", "mean", "median",
              "<24", "checked");
  for (const tg_bench::Case& c : tg_bench::cases()) {
    if (c.options.dropout_p > 0.0 || c.options.softcap > 0.0) continue;  // the same lists as causal
    const tg::AttentionPattern& pat = c.pattern;
    std::vector<std::uint8_t> visited(static_cast<std::size_t>(pat.q_blocks() * pat.k_blocks()));
    for (std::int64_t r = 0; r < pat.q_blocks(); ++r)
      for (std::int64_t k = 0; k < pat.k_blocks(); ++k)
        visited[static_cast<std::size_t>(r * pat.k_blocks() + k)] = pat.visited(0, r, k) ? 1 : 0;
    const std::vector<std::int32_t> q_blk = at::block_of_positions(pat.q_starts());
    const std::vector<std::int32_t> k_blk = at::block_of_positions(pat.k_starts());
    at::ListSpec s;
    s.bhq = s.bhkv = 1;
    s.sq = pat.sq();
    s.sk = pat.sk();
    s.pattern = visited.data();
    s.qb = pat.q_blocks();
    s.kb = pat.k_blocks();
    s.q_starts = &pat.q_starts();
    s.k_starts = &pat.k_starts();
    s.q_blk = &q_blk;
    s.k_blk = &k_blk;
    s.causal = c.options.causal;
    s.wl = c.options.window_left;
    s.wr = c.options.window_right;
    for (int bn : {64, 128})
      print_stats(c.name.c_str(), "kv", 64, bn, at::build_col_lists(at::build_row_lists(s, 64, bn), 1, 1));
    for (int bm : {64, 128}) print_stats(c.name.c_str(), "forward", bm, 64, at::build_row_lists(s, bm, 64));
  }
  return 0;
}
