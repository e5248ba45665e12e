// The tile lists the attention benchmarks' patterns give (attention_cases.h), built on the
// host as the CUDA backend builds them (ops/attention/cuda/work_lists.h), without a GPU: per
// pattern and tile shape, the work items, the mean and median steps an item, the items under
// 24 steps, the share of entries whose tiles need per-element checks of the pattern (partly
// visited blocks, keys past sk: table lookups) and of the geometry (causal or window edges:
// arithmetic), and the tiles' area against the smaller tiles' (the work a larger tile
// wastes). Short lists weigh a CTA's start and end; checked entries weigh masking. kv pass: key tiles of 64 or 128 over
// query tiles of 64 (its column lists); forward: query tiles of 64 or 128 over key tiles of 64 (row lists). One head:
// every head of these patterns has the same lists.
//
// Then the launch orders (kernel_choice.h's LaunchOrder and KvOrder) in a list-schedule model of
// bench_attention's B·H = 64 rows: the items start in launch order, each on the first CTA to be
// free, and take their list's length plus kItemSteps steps; printed, the last CTA's end over the
// mean CTA's, by row and in the default bands (forward) or with the default tail (kv pass), for
// an H100's CTAs at once (132 SMs: the D 128 forward two an SM, the D 64 forward five, the D 128
// kv pass one) and its 50 MiB L2.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <queue>
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

// The model's fixed steps of an item (its Q / K / V loads, its stores), beside one a tile.
constexpr double kItemSteps = 2.0;

// The end of the greedy schedule of the items (lists bounded by `off`) in `order` on `ctas`
// CTAs, over the mean CTA's.
double makespan(const std::vector<std::int32_t>& off, const std::vector<std::int32_t>& order, int ctas) {
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int i = 0; i < ctas; ++i) free_at.push(0.0);
  double total = 0.0, end = 0.0;
  for (std::int32_t x : order) {
    const double cost = off[static_cast<std::size_t>(x) + 1] - off[static_cast<std::size_t>(x)] + kItemSteps;
    const double t = free_at.top() + cost;
    free_at.pop();
    free_at.push(t);
    total += cost;
    end = std::max(end, t);
  }
  return total > 0 ? end / (total / ctas) : 1.0;
}

// The list offsets of `rows` rows each holding the lists of `one` (every head of these patterns
// has the same lists): what the model reads.
std::vector<std::int32_t> repeat_rows(const at::HostList& one, std::int64_t rows) {
  std::vector<std::int32_t> off(1, 0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::size_t i = 0; i + 1 < one.off.size(); ++i) off.push_back(off.back() + one.off[i + 1] - one.off[i]);
  return off;
}

// The model for pattern c (one head's spec s): the forward at D 128 and D 64 (rows against the
// default bands), the D 128 kv pass (rows against the default tail), on bench_attention's rows.
void print_orders(const tg_bench::Case& c, const at::ListSpec& s) {
  constexpr int kSms = 132;
  constexpr std::int64_t kL2 = std::int64_t{50} << 20;
  const std::int64_t rows = tg_bench::kBatch * tg_bench::kHeads;
  auto model = [&](const at::HostList& one, std::int64_t per_row, at::LaunchBand band, int ctas) {
    const std::vector<std::int32_t> off = repeat_rows(one, rows);
    return std::pair{makespan(off, at::item_order(off, per_row, {}), ctas),
                     makespan(off, at::item_order(off, per_row, band), ctas)};
  };
  auto bands = [&](std::int64_t d) { return at::forward_band(kSms, kL2, tg_bench::kSeq, d, d); };
  const at::HostList f128 = forward_lists(s, 128), f64 = forward_lists(s, 64), kv = kv_lists(s, 128);
  const auto a = model(f128, f128.num_m, bands(128), 2 * kSms), b = model(f64, f64.num_m, bands(64), 5 * kSms);
  const auto k = model(kv, kv.num_n, at::kv_tail_band(kSms), kSms);
  std::printf("%-30s %7.3f %7.3f | %7.3f %7.3f | %7.3f %7.3f\n", c.name.c_str(), a.first, a.second, b.first, b.second,
              k.first, k.second);
}

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
  std::printf("\nlaunch orders, %lld rows: the last CTA's end over the mean CTA's (list-schedule model)\n",
              static_cast<long long>(tg_bench::kBatch * tg_bench::kHeads));
  std::printf("%-30s %15s | %15s | %15s\n", "", "forward D 128", "forward D 64", "kv pass D 128");
  std::printf("%-30s %7s %7s | %7s %7s | %7s %7s\n", "pattern", "rows", "bands", "rows", "bands", "rows", "tail");
  for (const tg_bench::Case& c : tg_bench::cases()) {
    if (c.options.dropout_p > 0.0 || c.options.softcap > 0.0) continue;
    const tg::AttentionPattern& pat = c.pattern;
    const std::vector<std::int32_t> q_blk = at::block_of_positions(pat.q_starts());
    const std::vector<std::int32_t> k_blk = at::block_of_positions(pat.k_starts());
    print_orders(
        c, at::list_spec(pat, 1, 1, c.options.causal, c.options.window_left, c.options.window_right, q_blk, k_blk));
  }
  return 0;
}
