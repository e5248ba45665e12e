#include "ops/sparse_matmul/plan.h"

#include <climits>
#include <list>
#include <mutex>

#include "runtime/op_caches.h"

namespace tg::ops {

namespace {

// Tile ids and presence of op(X)(b, i, k) for one operand, from its host index tables.
class TileIndex {
 public:
  TileIndex(const OperandDesc& d, std::int64_t bs) : d_(d) {
    if (d.sparse()) {
      const LayoutTables& t = d.layout.tables(Device::cpu());
      coords_ = t.block_coords.data<std::int64_t>();
      index_ = t.block_index.data<std::int64_t>();
      row_off_ = t.row_offsets.data<std::int64_t>();
      col_off_ = t.col_offsets.data<std::int64_t>();
      col_blocks_ = t.col_blocks.data<std::int64_t>();
    }
    rb_ = d.rows / bs;
    cb_ = d.cols / bs;
  }

  // Id of the stored tile behind op(X)(b, i, k), or -1 when absent.
  std::int64_t id(std::int64_t b, std::int64_t i, std::int64_t k) const {
    const std::int64_t r = d_.trans ? k : i, c = d_.trans ? i : k;
    const std::int64_t g = (b * rb_ + r) * cb_ + c;
    return d_.sparse() ? index_[g] : g;
  }

  // Calls f(k) for each k with op(X)(b, i, k) present, increasing (sparse X only): a row
  // of the stored layout, or a column when X is read transposed.
  template <typename F>
  void for_each_in_row(std::int64_t b, std::int64_t i, F&& f) const {
    if (!d_.trans) {
      for (std::int64_t q = row_off_[b * rb_ + i]; q < row_off_[b * rb_ + i + 1]; ++q) f(coords_[3 * q + 2]);
    } else {
      for (std::int64_t q = col_off_[b * cb_ + i]; q < col_off_[b * cb_ + i + 1]; ++q)
        f(coords_[3 * col_blocks_[q] + 1]);
    }
  }

  // Calls f(k) for each k with op(X)(b, k, j) present, increasing (sparse X only).
  template <typename F>
  void for_each_in_col(std::int64_t b, std::int64_t j, F&& f) const {
    if (!d_.trans) {
      for (std::int64_t q = col_off_[b * cb_ + j]; q < col_off_[b * cb_ + j + 1]; ++q)
        f(coords_[3 * col_blocks_[q] + 1]);
    } else {
      for (std::int64_t q = row_off_[b * rb_ + j]; q < row_off_[b * rb_ + j + 1]; ++q) f(coords_[3 * q + 2]);
    }
  }

 private:
  const OperandDesc& d_;
  const std::int64_t* coords_ = nullptr;
  const std::int64_t* index_ = nullptr;
  const std::int64_t* row_off_ = nullptr;
  const std::int64_t* col_off_ = nullptr;
  const std::int64_t* col_blocks_ = nullptr;
  std::int64_t rb_ = 0, cb_ = 0;
};

TileAddr addr_of(const OperandDesc& d, std::int64_t bs) {
  if (d.sparse()) return TileAddr{1, bs, bs};
  return TileAddr{d.cols / bs, d.cols, bs};
}

std::int32_t narrow(std::int64_t v, const char* what) {
  if (v > INT_MAX) {
    TG_THROW(ShapeError, "matmul: the product has ", v, " ", what, ", more than the supported ", INT_MAX);
  }
  return static_cast<std::int32_t>(v);
}

std::shared_ptr<MatmulPlan> build_plan(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c,
                                       std::int64_t bs) {
  auto p = std::make_shared<MatmulPlan>();
  p->batch = c.batch;
  p->mb = c.rows / bs;
  p->nb = c.cols / bs;
  p->kb = (a.trans ? a.rows : a.cols) / bs;
  p->bs = bs;
  p->trans_a = a.trans;
  p->trans_b = b.trans;
  p->a = addr_of(a, bs);
  p->b = addr_of(b, bs);
  p->c = addr_of(c, bs);
  // Tile ids must fit i32 in every operand's index space.
  narrow(a.batch * (a.rows / bs) * (a.cols / bs), "tiles in x");
  narrow(b.batch * (b.rows / bs) * (b.cols / bs), "tiles in y");
  p->n_out = c.sparse() ? c.layout.n_blocks() : p->batch * p->mb * p->nb;
  narrow(p->n_out, "output tiles");

  const TileIndex ia(a, bs), ib(b, bs);
  const std::int64_t* out_coords =
      c.sparse() ? c.layout.tables(Device::cpu()).block_coords.data<std::int64_t>() : nullptr;
  p->pair_begin.resize(static_cast<std::size_t>(p->n_out + 1));
  p->pair_begin[0] = 0;
  for (std::int64_t o = 0; o < p->n_out; ++o) {
    std::int64_t bt, i, j;
    if (out_coords) {
      bt = out_coords[3 * o];
      i = out_coords[3 * o + 1];
      j = out_coords[3 * o + 2];
    } else {
      bt = o / (p->mb * p->nb);
      i = (o / p->nb) % p->mb;
      j = o % p->nb;
    }
    p->out_coord.insert(p->out_coord.end(),
                        {static_cast<std::int32_t>(bt), static_cast<std::int32_t>(i), static_cast<std::int32_t>(j)});
    auto add = [&](std::int64_t k) {
      const std::int64_t ta = ia.id(bt, i, k), tb = ib.id(bt, k, j);
      if (ta < 0 || tb < 0) return;
      p->pair_a.push_back(static_cast<std::int32_t>(ta));
      p->pair_b.push_back(static_cast<std::int32_t>(tb));
      p->pair_k.push_back(static_cast<std::int32_t>(k));
    };
    // Enumerate the k of the sparse side (the shorter candidate list), check the other.
    if (a.sparse())
      ia.for_each_in_row(bt, i, add);
    else if (b.sparse())
      ib.for_each_in_col(bt, j, add);
    else
      for (std::int64_t k = 0; k < p->kb; ++k) add(k);
    const std::int64_t end = narrow(static_cast<std::int64_t>(p->pair_a.size()), "block pairs");
    p->max_pairs = std::max<std::int64_t>(p->max_pairs, end - p->pair_begin[static_cast<std::size_t>(o)]);
    p->pair_begin[static_cast<std::size_t>(o + 1)] = static_cast<std::int32_t>(end);
  }
  return p;
}

bool same_desc(const OperandDesc& x, const OperandDesc& y) {
  if (x.sparse() != y.sparse() || x.trans != y.trans) return false;
  if (x.sparse()) return x.layout.hash() == y.layout.hash() && x.layout == y.layout;
  return x.batch == y.batch && x.rows == y.rows && x.cols == y.cols;
}

struct Entry {
  OperandDesc a, b, c;
  std::int64_t bs;
  std::shared_ptr<const MatmulPlan> plan;
};

constexpr std::size_t kMaxPlans = 16;

}  // namespace

std::shared_ptr<const MatmulPlan> matmul_plan(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c,
                                              std::int64_t bs) {
  // Plans hold device tensors: the list is released by tg::release_device_resources().
  auto& cache = runtime::OpCacheList<Entry>::instance();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    for (auto it = cache.entries.begin(); it != cache.entries.end(); ++it) {
      if (it->bs == bs && same_desc(it->a, a) && same_desc(it->b, b) && same_desc(it->c, c)) {
        cache.entries.splice(cache.entries.begin(), cache.entries, it);
        return cache.entries.front().plan;
      }
    }
  }
  std::shared_ptr<const MatmulPlan> plan = build_plan(a, b, c, bs);  // outside the lock: may be slow
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.entries.push_front(Entry{a, b, c, bs, plan});
  if (cache.entries.size() > kMaxPlans) cache.entries.pop_back();
  return plan;
}

}  // namespace tg::ops
