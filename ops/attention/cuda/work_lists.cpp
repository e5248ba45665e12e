// Host construction of the attention tile lists, and their device cache.
#include "ops/attention/cuda/work_lists.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <numeric>
#include <tuple>

#include "ops/attention/cuda/entry.h"
#include "ops/attention/kernel_choice.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/op_caches.h"

namespace tg::ops::attn {
namespace {

constexpr std::int64_t kFar = std::numeric_limits<std::int64_t>::max() / 4;

// Keys visible to query i by causal / window alone: [lo(i), hi(i)], which contains i and
// slides right as i grows. Over rows [a0, a1) the union is [lo(a0), hi(a1 - 1)].
struct Geometry {
  bool causal;
  std::int64_t wl, wr;
  std::int64_t lo(std::int64_t i) const { return wl >= 0 ? i - wl : -kFar; }
  std::int64_t hi(std::int64_t i) const {
    std::int64_t h = wr >= 0 ? i + wr : kFar;
    return causal ? std::min(h, i) : h;
  }
  /// No pair of rows [a0, a1) x keys [b0, b1) is visible.
  bool none(std::int64_t a0, std::int64_t a1, std::int64_t b0, std::int64_t b1) const {
    return hi(a1 - 1) < b0 || lo(a0) > b1 - 1;
  }
  /// Every pair is visible.
  bool all(std::int64_t a0, std::int64_t a1, std::int64_t b0, std::int64_t b1) const {
    return lo(a1 - 1) <= b0 && hi(a0) >= b1 - 1;
  }
};

}  // namespace

std::vector<std::int32_t> item_order(const std::vector<std::int32_t>& off, std::int64_t per_group, LaunchBand band) {
  const std::int64_t items = static_cast<std::int64_t>(off.size()) - 1;
  std::vector<std::int32_t> order(static_cast<std::size_t>(std::max<std::int64_t>(0, items)));
  if (items <= 0 || per_group <= 0) return order;
  // Rows of a band: the fewest that hold band.items items, at most band.max_rows. The last
  // band also takes the rows left over (a short last band would end the grid on a few rows'
  // long lists) and as many rows before them as hold band.last_items items.
  const std::int64_t groups = items / per_group;
  const std::int64_t per_band =
      std::clamp<std::int64_t>((band.items + per_group - 1) / per_group, 1, std::max<std::int64_t>(1, band.max_rows));
  const std::int64_t tail = std::clamp<std::int64_t>(groups - (band.last_items + per_group - 1) / per_group, 0,
                                                     std::max<std::int64_t>(0, groups / per_band - 1) * per_band);
  auto band_of = [&](std::int32_t x) { return std::min(tail, x / per_group) / per_band; };
  auto len = [&](std::int32_t x) { return off[static_cast<std::size_t>(x) + 1] - off[static_cast<std::size_t>(x)]; };
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    const std::int64_t ba = band_of(a), bb = band_of(b);
    if (ba != bb) return ba < bb;
    return len(a) > len(b);
  });
  return order;
}

LaunchBand forward_band(int sms, std::int64_t l2_bytes, std::int64_t sk, std::int64_t d, std::int64_t dv) {
  const std::int64_t kv_row = std::max<std::int64_t>(1, sk * (d + dv) * 2);
  return {.items = std::int64_t{kLaunchBandWaves} * sms, .max_rows = std::max<std::int64_t>(1, l2_bytes / 2 / kv_row)};
}

LaunchBand kv_tail_band(int sms) { return {.last_items = std::int64_t{kKvTailWaves} * sms}; }

std::vector<std::int32_t> block_of_positions(const std::vector<std::int64_t>& starts) {
  std::vector<std::int32_t> blk(static_cast<std::size_t>(starts.back()));
  for (std::size_t r = 0; r + 1 < starts.size(); ++r)
    for (std::int64_t i = starts[r]; i < starts[r + 1]; ++i) blk[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(r);
  return blk;
}

ListSpec list_spec(const AttentionPattern& pat, std::int64_t bhq, std::int64_t bhkv, bool causal, std::int64_t wl,
                   std::int64_t wr, const std::vector<std::int32_t>& q_blk, const std::vector<std::int32_t>& k_blk) {
  return {.bhq = bhq,
          .bhkv = bhkv,
          .sq = pat.sq(),
          .sk = pat.sk(),
          .pattern = pat.mask_host().data(),
          .qb = pat.q_blocks(),
          .kb = pat.k_blocks(),
          .q_starts = &pat.q_starts(),
          .k_starts = &pat.k_starts(),
          .q_blk = &q_blk,
          .k_blk = &k_blk,
          .causal = causal,
          .wl = wl,
          .wr = wr};
}

HostList build_row_lists(const ListSpec& s, int bm, int bn, LaunchBand band) {
  HostList out;
  out.num_m = static_cast<int>((s.sq + bm - 1) / bm);
  out.num_n = static_cast<int>((s.sk + bn - 1) / bn);
  const Geometry geo{s.causal, s.wl, s.wr};
  const auto& qs = *s.q_starts;
  const auto& ks = *s.k_starts;
  const auto& qblk = *s.q_blk;
  const auto& kblk = *s.k_blk;
  out.off.reserve(static_cast<std::size_t>(s.bhq * out.num_m + 1));
  out.off.push_back(0);
  for (std::int64_t bh = 0; bh < s.bhq; ++bh) {
    const std::uint8_t* pat = s.pattern + bh * s.qb * s.kb;
    for (std::int64_t m = 0; m < out.num_m; ++m) {
      const std::int64_t i0 = m * bm, i1 = std::min(s.sq, i0 + bm);
      const std::int64_t r_lo = qblk[static_cast<std::size_t>(i0)], r_hi = qblk[static_cast<std::size_t>(i1 - 1)];
      for (std::int64_t n = 0; n < out.num_n; ++n) {
        const std::int64_t j0 = n * bn, j1 = std::min(s.sk, j0 + bn);
        if (geo.none(i0, i1, j0, j1)) continue;
        const std::int64_t c_lo = kblk[static_cast<std::size_t>(j0)], c_hi = kblk[static_cast<std::size_t>(j1 - 1)];
        bool any = false, every = true;
        for (std::int64_t r = r_lo; r <= r_hi; ++r) {
          const std::int64_t a0 = std::max(i0, qs[static_cast<std::size_t>(r)]);
          const std::int64_t a1 = std::min(i1, qs[static_cast<std::size_t>(r) + 1]);
          for (std::int64_t c = c_lo; c <= c_hi; ++c) {
            if (pat[r * s.kb + c]) {
              const std::int64_t b0 = std::max(j0, ks[static_cast<std::size_t>(c)]);
              const std::int64_t b1 = std::min(j1, ks[static_cast<std::size_t>(c) + 1]);
              any = any || !geo.none(a0, a1, b0, b1);
            } else {
              every = false;
            }
          }
        }
        if (!any) continue;
        int flags = 0;
        if (!every || j1 - j0 < bn) flags |= kCheckPattern;
        if (!geo.all(i0, i1, j0, j1)) flags |= kCheckGeometry;
        out.entries.push_back(static_cast<std::int32_t>((n << kFlagBits) | flags));
      }
      out.off.push_back(static_cast<std::int32_t>(out.entries.size()));
    }
  }
  out.order = item_order(out.off, out.num_m, band);
  return out;
}

HostList build_col_lists(const HostList& rows, std::int64_t bhq, std::int64_t bhkv, LaunchBand band) {
  HostList out;
  out.num_m = rows.num_m;
  out.num_n = rows.num_n;
  const std::int64_t group = bhq / bhkv;
  const std::size_t items = static_cast<std::size_t>(bhkv * rows.num_n);
  std::vector<std::int32_t> count(items + 1, 0);
  auto col_item = [&](std::int64_t bh, std::int32_t entry) {
    return static_cast<std::size_t>((bh / group) * rows.num_n + (entry >> kFlagBits));
  };
  for (std::int64_t bh = 0; bh < bhq; ++bh)
    for (std::int64_t m = 0; m < rows.num_m; ++m) {
      const std::size_t item = static_cast<std::size_t>(bh * rows.num_m + m);
      for (std::int32_t e = rows.off[item]; e < rows.off[item + 1]; ++e) ++count[col_item(bh, rows.entries[static_cast<std::size_t>(e)]) + 1];
    }
  out.off.assign(items + 1, 0);
  for (std::size_t x = 0; x < items; ++x) out.off[x + 1] = out.off[x] + count[x + 1];
  out.entries.assign(rows.entries.size(), 0);
  std::vector<std::int32_t> fill(out.off.begin(), out.off.end() - 1);
  // bh ascending, then m ascending: within a kv row, head-in-group major
  for (std::int64_t bh = 0; bh < bhq; ++bh)
    for (std::int64_t m = 0; m < rows.num_m; ++m) {
      const std::size_t item = static_cast<std::size_t>(bh * rows.num_m + m);
      for (std::int32_t e = rows.off[item]; e < rows.off[item + 1]; ++e) {
        const std::int32_t entry = rows.entries[static_cast<std::size_t>(e)];
        const std::int64_t x = (bh % group) * rows.num_m + m;
        out.entries[static_cast<std::size_t>(fill[col_item(bh, entry)]++)] =
            static_cast<std::int32_t>((x << kFlagBits) | (entry & ((1 << kFlagBits) - 1)));
      }
    }
  out.order = item_order(out.off, rows.num_n, band);
  return out;
}

// ---- device cache --------------------------------------------------------------------------
namespace {

template <typename V>
Tensor upload(const V& host, DType dt, Device dev) {
  Tensor h = empty({static_cast<std::int64_t>(host.size())}, {.dtype = dt, .device = Device::cpu()});
  if (!host.empty()) std::memcpy(h.data_ptr(), host.data(), host.size() * sizeof(host[0]));
  return h.to(dev);
}

using Key = std::tuple<std::uint64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool, std::int64_t,
                       std::int64_t, int, int, bool, int, std::int64_t, std::int64_t, std::int64_t>;

// The row lists' bands on device dev (kernel_choice.h's LaunchOrder).
LaunchBand row_band(const AttentionProblem& p, Device dev) {
  if (launch_order() == LaunchOrder::Rows) return {};
  return forward_band(tg::cuda::multiprocessor_count(dev.index), tg::cuda::l2_cache_bytes(dev.index), p.sk, p.d, p.dv);
}

// The column lists' bands on device dev (KvOrder).
LaunchBand col_band(Device dev) {
  if (kv_order() == KvOrder::Rows) return {};
  return kv_tail_band(tg::cuda::multiprocessor_count(dev.index));
}

using Cache = runtime::OpCacheList<std::pair<Key, std::shared_ptr<const DeviceWork>>>;  // most recent first

constexpr std::size_t kCacheEntries = 64;

}  // namespace

std::shared_ptr<const DeviceWork> device_work(const AttentionProblem& p, int bm, int bn, bool with_cols, Device dev) {
  // Its device tensors are released by tg::release_device_resources().
  Cache* cache = &Cache::instance();
  const LaunchBand band = row_band(p, dev), cband = col_band(dev);
  const Key key{p.pattern.id(),
                p.bhq,
                p.bhkv,
                p.sq,
                p.sk,
                p.causal,
                p.window_left < 0 ? -1 : p.window_left,
                p.window_right < 0 ? -1 : p.window_right,
                bm,
                bn,
                with_cols,
                dev.index,
                band.items,
                band.max_rows,
                cband.last_items};
  {
    std::lock_guard<std::mutex> lock(cache->mu);
    for (auto it = cache->entries.begin(); it != cache->entries.end(); ++it) {
      if (it->first == key) {
        cache->entries.splice(cache->entries.begin(), cache->entries, it);
        return it->second;
      }
    }
  }
  const std::vector<std::int32_t> q_blk = block_of_positions(p.pattern.q_starts());
  const std::vector<std::int32_t> k_blk = block_of_positions(p.pattern.k_starts());
  const ListSpec s = list_spec(p.pattern, p.bhq, p.bhkv, p.causal, p.window_left, p.window_right, q_blk, k_blk);
  const HostList rows = build_row_lists(s, bm, bn, band);

  auto w = std::make_shared<DeviceWork>();
  w->pattern = upload(p.pattern.mask_host(), DType::boolean, dev);
  w->q_blk = upload(q_blk, DType::i32, dev);
  w->k_blk = upload(k_blk, DType::i32, dev);
  w->row_order = upload(rows.order, DType::i32, dev);
  w->row_off = upload(rows.off, DType::i32, dev);
  w->row_entries = upload(rows.entries, DType::i32, dev);
  w->num_m = rows.num_m;
  w->num_n = rows.num_n;
  w->row_items = static_cast<std::int64_t>(rows.order.size());
  w->pattern_checked = std::count_if(rows.entries.begin(), rows.entries.end(),
                                     [](std::int32_t e) { return (e & kCheckPattern) != 0; });
  if (with_cols) {
    // by row but the last rows (KvOrder): bands of rows measured 1.28-1.36x slower kv passes
    // on causal patterns
    const HostList cols = build_col_lists(rows, p.bhq, p.bhkv, cband);
    w->col_order = upload(cols.order, DType::i32, dev);
    w->col_off = upload(cols.off, DType::i32, dev);
    w->col_entries = upload(cols.entries, DType::i32, dev);
    w->col_items = static_cast<std::int64_t>(cols.order.size());
  }

  std::lock_guard<std::mutex> lock(cache->mu);
  cache->entries.emplace_front(key, w);
  if (cache->entries.size() > kCacheEntries) cache->entries.pop_back();
  return w;
}

}  // namespace tg::ops::attn
