#include "ops/sparse_matmul/plan.h"

#include <algorithm>
#include <climits>
#include <list>
#include <mutex>
#include <vector>

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

// A stored operand description that holds no Layout: a plan kept on one layout (below)
// must not keep another alive, or two layouts each holding the other's plans would never
// be freed. A sparse operand is remembered by its hash, extents and mask bytes.
struct DescKey {
  bool sparse = false, trans = false;
  std::int64_t batch = 0, rows = 0, cols = 0;        // dense extents
  std::uint64_t hash = 0;                            // sparse: the layout's
  std::int64_t B = 0, Mb = 0, Nb = 0, lbs = 0;       // sparse: the layout's extents
  std::vector<std::uint8_t> mask;                    // sparse: the layout's mask

  explicit DescKey(const OperandDesc& d) : sparse(d.sparse()), trans(d.trans) {
    if (sparse) {
      hash = d.layout.hash(), B = d.layout.batch(), Mb = d.layout.block_rows(), Nb = d.layout.block_cols();
      lbs = d.layout.block_size(), mask = d.layout.mask_host();
    } else {
      batch = d.batch, rows = d.rows, cols = d.cols;
    }
  }
  /// `own`: d's layout is the one whose shelf holds this key, so its structure matches by
  /// construction and the mask need not be compared (a per-call cost of the hot path).
  bool matches(const OperandDesc& d, bool own = false) const {
    if (sparse != d.sparse() || trans != d.trans) return false;
    if (!sparse) return batch == d.batch && rows == d.rows && cols == d.cols;
    if (own) return true;
    const Layout& l = d.layout;
    return hash == l.hash() && B == l.batch() && Mb == l.block_rows() && Nb == l.block_cols() &&
           lbs == l.block_size() && mask == l.mask_host();
  }
};

struct Entry {
  DescKey a, b, c;
  std::int64_t bs;
  std::shared_ptr<const MatmulPlan> plan;
  /// `owner`: which operand's layout holds the list (0 x, 1 y, 2 output; -1 none).
  bool matches(const OperandDesc& x, const OperandDesc& y, const OperandDesc& z, std::int64_t s, int owner) const {
    return bs == s && a.matches(x, owner == 0) && b.matches(y, owner == 1) && c.matches(z, owner == 2);
  }
};

// Plans live in two places:
//  - on a shelf attached to one sparse operand's layout (the output's, else x's, else
//    y's), so that a program using more structures than any fixed cache holds (a model
//    whose layers each have their own layouts) builds each plan once per layout;
//  - in a small process-wide list matched by value, so that a layout rebuilt equal every
//    step (a pattern made inside a forward function) finds its plan too.
// Both hold plans with device tensors: tg::release_device_resources() empties the list and
// every shelf still alive.
constexpr std::size_t kMaxShelfPlans = 8;  // per layout: a product's forward and backward use 1-3
constexpr std::size_t kMaxPlans = 16;      // the value-matched list

struct PlanShelf {
  std::mutex mu;
  std::list<Entry> entries;  // most recently used first
};

// Weak references to every shelf made, for release; pruned of dead shelves as it grows.
struct ShelfRegistry {
  std::mutex mu;
  std::vector<std::weak_ptr<PlanShelf>> shelves;
  std::size_t prune_at = 64;

  static ShelfRegistry& instance() {
    static ShelfRegistry* r = [] {
      auto* reg = new ShelfRegistry;  // never destroyed, like the op caches
      runtime::register_op_cache([reg] {
        std::vector<std::shared_ptr<PlanShelf>> live;
        {
          std::lock_guard<std::mutex> lock(reg->mu);
          for (auto& w : reg->shelves)
            if (auto s = w.lock()) live.push_back(std::move(s));
        }
        for (auto& s : live) {
          std::list<Entry> doomed;  // destroyed outside the shelf's lock
          std::lock_guard<std::mutex> lock(s->mu);
          doomed.swap(s->entries);
        }
      });
      return reg;
    }();
    return *r;
  }
  void add(const std::shared_ptr<PlanShelf>& s) {
    std::lock_guard<std::mutex> lock(mu);
    shelves.push_back(s);
    if (shelves.size() >= prune_at) {
      std::erase_if(shelves, [](const std::weak_ptr<PlanShelf>& w) { return w.expired(); });
      prune_at = std::max<std::size_t>(64, 2 * shelves.size());
    }
  }
};

// The operand whose layout keeps the product's plans: the output if sparse, else x if
// sparse, else y (0 x, 1 y, 2 output; -1: dense x dense -> dense, not a block-sparse product).
int owner_of(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c) {
  return c.sparse() ? 2 : a.sparse() ? 0 : b.sparse() ? 1 : -1;
}

std::shared_ptr<PlanShelf> shelf_of(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c, int owner) {
  if (owner < 0) return nullptr;
  const Layout& anchor = owner == 2 ? c.layout : owner == 0 ? a.layout : b.layout;
  bool made = false;
  auto shelf = std::static_pointer_cast<PlanShelf>(anchor.attachment("sparse_matmul.plans", [&] {
    made = true;
    return std::make_shared<PlanShelf>();
  }));
  if (made) ShelfRegistry::instance().add(shelf);
  return shelf;
}

// The entry of `list` matching the operands, moved to the front; null where none does.
// `owner`: the operand whose layout holds `list` (-1: the value-matched list).
std::shared_ptr<const MatmulPlan> find(std::list<Entry>& list, const OperandDesc& a, const OperandDesc& b,
                                       const OperandDesc& c, std::int64_t bs, int owner) {
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->matches(a, b, c, bs, owner)) {
      list.splice(list.begin(), list, it);
      return list.front().plan;
    }
  }
  return nullptr;
}

void remember(std::list<Entry>& list, std::size_t cap, const OperandDesc& a, const OperandDesc& b,
              const OperandDesc& c, std::int64_t bs, const std::shared_ptr<const MatmulPlan>& plan) {
  list.push_front(Entry{DescKey(a), DescKey(b), DescKey(c), bs, plan});
  if (list.size() > cap) list.pop_back();
}

}  // namespace

std::shared_ptr<const MatmulPlan> matmul_plan(const OperandDesc& a, const OperandDesc& b, const OperandDesc& c,
                                              std::int64_t bs) {
  const int owner = owner_of(a, b, c);
  const std::shared_ptr<PlanShelf> shelf = shelf_of(a, b, c, owner);
  if (shelf) {
    std::lock_guard<std::mutex> lock(shelf->mu);
    if (auto plan = find(shelf->entries, a, b, c, bs, owner)) return plan;
  }
  auto& cache = runtime::OpCacheList<Entry>::instance();
  std::shared_ptr<const MatmulPlan> plan;
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    plan = find(cache.entries, a, b, c, bs, -1);
  }
  if (!plan) {
    plan = build_plan(a, b, c, bs);  // outside the locks: may be slow
    std::lock_guard<std::mutex> lock(cache.mu);
    remember(cache.entries, kMaxPlans, a, b, c, bs, plan);
  }
  if (shelf) {
    std::lock_guard<std::mutex> lock(shelf->mu);
    if (!find(shelf->entries, a, b, c, bs, owner)) remember(shelf->entries, kMaxShelfPlans, a, b, c, bs, plan);
  }
  return plan;
}

std::vector<std::int32_t> fine_block_ids(const MatmulPlan& p, const Layout& fine) {
  const std::int64_t per = p.bs / fine.block_size();
  const std::int64_t rows = fine.block_rows(), cols = fine.block_cols();
  // fine block (b, i, j) -> its id, or -1
  const std::int64_t* index = fine.tables(Device::cpu()).block_index.data<std::int64_t>();
  std::vector<std::int32_t> ids(static_cast<std::size_t>(p.n_out * per * per), -1);
  for (std::int64_t o = 0; o < p.n_out; ++o) {
    const auto at = [&](int c) { return static_cast<std::int64_t>(p.out_coord[static_cast<std::size_t>(3 * o + c)]); };
    const std::int64_t bb = at(0), i0 = at(1) * per, j0 = at(2) * per;
    for (std::int64_t di = 0; di < per; ++di)
      for (std::int64_t dj = 0; dj < per; ++dj)
        ids[static_cast<std::size_t>((o * per + di) * per + dj)] =
            static_cast<std::int32_t>(index[(bb * rows + i0 + di) * cols + j0 + dj]);
  }
  return ids;
}

}  // namespace tg::ops
