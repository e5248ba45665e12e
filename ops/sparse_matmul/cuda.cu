// CUDA side of block-sparse matmul: the per-device schedule, the exact (SIMT) kernel, the
// split-K reduction, and the dispatch between them and the tensor-core kernel.
//
// Schedule. The plan's pair lists can be very unequal (one full block-row, the rest empty)
// or few (a handful of output blocks with long k lists). Both would leave most SMs idle
// with one CTA per output tile, so a list longer than a chunk is cut into equal pieces,
// each its own CTA writing an f32 (f64) partial tile into a workspace slot; a second
// kernel sums each tile's slots in slot order, so results do not depend on timing. The
// chunk is sized to give the GPU a few CTAs per SM and never less than 256 of k.
//
// Paths. bf16/f16 (and f32 when tg::allow_tf32()) take the tensor-core kernel when every
// operand starts 16-byte aligned (cp.async moves 16-byte chunks). For bf16/f16 that is,
// at blocks of 64 and 128 on a compute capability 9.0 device, its Hopper form with
// warpgroup MMAs (wgmma_tma_kernel.cuh: TMA loads, warp-specialised, persistent, on
// groups of output blocks sharing their x tiles or their y tiles); elsewhere at blocks of 32 and 64,
// where it pays, its grouped variant over 128 x 128 regions of blocks (see path.h and the
// grouped schedule below). Everything else, f64 and exact f32 included, takes the SIMT
// kernel: 256 threads on a TILE x TILE output tile (TILE = min(bs, 64)), each thread
// accumulating (TILE/16)^2 outputs in registers from k-slices staged in shared memory.
#include <algorithm>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "ops/linalg/matmul.h"
#include "ops/sparse_matmul/cuda_launch.cuh"
#include "ops/sparse_matmul/kernels.h"
#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/queues.h"
#include "ops/sparse_matmul/regions.h"
#include "ops/sparse_matmul/row_groups.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace tg::ops {
namespace {

using spmm::DevAddr;
using spmm::KernelArgs;

constexpr int kSimtThreads = 256;
constexpr int kSimtBK = 16;
constexpr int kCtasPerSm = 4;  // split until about this many CTAs per SM

// ---- schedule ----------------------------------------------------------------------------
struct DevicePairs {
  Tensor pairs;  // i32 [n_pairs, 2]
};

struct Schedule {
  Tensor items;   // i32 [n_items, 4]: out tile, pair begin, pair end, slot (-1: direct)
  Tensor reduce;  // i32 [n_split, 3]: out tile, first slot, slot count
  std::int64_t n_items = 0, n_split = 0, n_slots = 0;
};

Tensor to_device_i32(const std::vector<std::int32_t>& v, std::int64_t cols, Device dev) {
  return from_vector(v, {static_cast<std::int64_t>(v.size()) / cols, cols}).to(dev);
}

std::shared_ptr<Schedule> build_schedule(const MatmulPlan& p, std::int64_t tile, Device dev) {
  auto s = std::make_shared<Schedule>();
  const std::int64_t sub = (p.bs / tile) * (p.bs / tile);  // CTAs per (item, block)
  const std::int64_t target = static_cast<std::int64_t>(cuda::multiprocessor_count(dev.index)) * kCtasPerSm;
  const std::int64_t min_chunk = std::max<std::int64_t>(1, kMinChunkK / p.bs);
  const std::int64_t chunk = std::max(min_chunk, (p.n_pairs() * sub + target - 1) / target);
  std::vector<std::int32_t> items, reduce;
  items.reserve(static_cast<std::size_t>(4 * p.n_out));
  std::int32_t slots = 0;
  for (std::int64_t o = 0; o < p.n_out; ++o) {
    const std::int32_t b = p.pair_begin[static_cast<std::size_t>(o)], e = p.pair_begin[static_cast<std::size_t>(o + 1)];
    const std::int64_t len = e - b;
    const auto oi = static_cast<std::int32_t>(o);
    if (len <= chunk) {
      items.insert(items.end(), {oi, b, e, -1});
      continue;
    }
    const std::int64_t pieces = (len + chunk - 1) / chunk;
    reduce.insert(reduce.end(), {oi, slots, static_cast<std::int32_t>(pieces)});
    for (std::int64_t q = 0; q < pieces; ++q) {
      const auto lo = static_cast<std::int32_t>(b + len * q / pieces),
                 hi = static_cast<std::int32_t>(b + len * (q + 1) / pieces);
      items.insert(items.end(), {oi, lo, hi, slots++});
    }
  }
  s->n_items = static_cast<std::int64_t>(items.size()) / 4;
  s->n_split = static_cast<std::int64_t>(reduce.size()) / 3;
  s->n_slots = slots;
  s->items = to_device_i32(items, 4, dev);
  if (s->n_split > 0) s->reduce = to_device_i32(reduce, 3, dev);
  return s;
}

// ---- grouped schedule --------------------------------------------------------------------
// Device copy of a RegionSchedule (regions.h) of rows x cols elements.
struct Grouped {
  Tensor items;            // i32 [n_items, 4]: region, step begin, step end, -1
  Tensor steps;            // i32 [n_steps, GM + GN]
  Tensor outs;             // i32 [n_items, GM * GN]
  int rows = 0, cols = 0;  // region extent in elements
  std::int64_t n_items = 0;
  std::int64_t work = 0;       // block products computed, zeros included
  std::int64_t max_steps = 0;  // longest region
  std::int64_t total_steps = 0;
};

std::shared_ptr<Grouped> build_grouped(const MatmulPlan& p, int rows, int cols, Device dev) {
  const RegionSchedule r = region_schedule(p, rows / p.bs, cols / p.bs);
  auto s = std::make_shared<Grouped>();
  s->rows = rows;
  s->cols = cols;
  s->n_items = r.n_regions;
  s->work = r.work;
  s->max_steps = r.max_steps;
  s->total_steps = r.total_steps;
  if (r.n_regions > 0) {
    s->items = to_device_i32(r.items, 4, dev);
    s->outs = to_device_i32(r.outs, r.gm * r.gn, dev);
  }
  if (!r.steps.empty()) s->steps = to_device_i32(r.steps, r.gm + r.gn, dev);
  return s;
}

// Estimated cost of a grouped schedule (Auto), in units of a block product on a 128 x 128
// tile: its products, zeros included, times the relative cost of its tile (a 64 x 128 tile
// reuses operands less: ~1.25x). Infinite when one region is so long that it alone would
// dominate the run time (no split-K here).
double grouped_cost(const Grouped& g, int sms) {
  if (g.n_items == 0 || g.max_steps * sms > 2 * g.total_steps) return 1e300;
  return static_cast<double>(g.work) * (g.rows == g.cols ? 1.0 : 1.25);
}

// The same for the per-block path: its 32 x 32 and 64 x 64 tiles are about 3x and 1.5x
// slower per product than a 128 x 128 one.
double per_block_cost(const MatmulPlan& p) { return static_cast<double>(p.n_pairs()) * (p.bs == 32 ? 3.0 : 1.5); }

// ---- SIMT kernel -------------------------------------------------------------------------
template <typename T, typename Acc, int TILE>
__global__ void __launch_bounds__(kSimtThreads) simt_kernel(const KernelArgs args) {
  constexpr int R = TILE / 16;           // outputs per thread along each side
  __shared__ Acc sa[kSimtBK][TILE + 1];  // op(A) slice, [k][m]
  __shared__ Acc sb[kSimtBK][TILE + 1];  // op(B) slice, [k][n]
  const int tid = static_cast<int>(threadIdx.x), ty = tid >> 4, tx = tid & 15;
  const int4 item = args.items[blockIdx.x];
  const int ti = static_cast<int>(blockIdx.y) / args.nsub, tj = static_cast<int>(blockIdx.y) % args.nsub;
  const int nsteps = (item.z - item.y) << args.lg_kpp;
  const int kmask = (1 << args.lg_kpp) - 1;
  const T* A = static_cast<const T*>(args.a);
  const T* B = static_cast<const T*>(args.b);
  const long long m0 = static_cast<long long>(ti) * TILE, n0 = static_cast<long long>(tj) * TILE;

  Acc acc[R][R];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < R; ++j) acc[i][j] = Acc(0);

  for (int s = 0; s < nsteps; ++s) {
    const int2 pr = args.pairs[item.y + (s >> args.lg_kpp)];
    const long long kk = static_cast<long long>(s & kmask) * kSimtBK;
    const T* ga = A + args.addr_a.offset(pr.x);
    const T* gb = B + args.addr_b.offset(pr.y);
    // Consecutive threads read consecutive addresses along each stored row.
    for (int e = tid; e < TILE * kSimtBK; e += kSimtThreads) {
      if (args.trans_a) {
        const int m = e % TILE, k = e / TILE;
        sa[k][m] = static_cast<Acc>(ga[(kk + k) * args.lda + m0 + m]);
      } else {
        const int k = e % kSimtBK, m = e / kSimtBK;
        sa[k][m] = static_cast<Acc>(ga[(m0 + m) * args.lda + kk + k]);
      }
      if (args.trans_b) {
        const int k = e % kSimtBK, n = e / kSimtBK;
        sb[k][n] = static_cast<Acc>(gb[(n0 + n) * args.ldb + kk + k]);
      } else {
        const int n = e % TILE, k = e / TILE;
        sb[k][n] = static_cast<Acc>(gb[(kk + k) * args.ldb + n0 + n]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSimtBK; ++k) {
      Acc av[R], bv[R];
#pragma unroll
      for (int i = 0; i < R; ++i) av[i] = sa[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < R; ++j) bv[j] = sb[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < R; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

  if (item.w < 0) {
    T* out = static_cast<T*>(args.c) + args.addr_c.offset(item.x) + m0 * args.ldc + n0;
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < R; ++j) out[(ty + 16 * i) * args.ldc + tx + 16 * j] = static_cast<T>(acc[i][j]);
  } else {
    const long long bs = args.bs;
    Acc* out = static_cast<Acc*>(args.ws) + static_cast<long long>(item.w) * bs * bs + m0 * bs + n0;
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < R; ++j) out[(ty + 16 * i) * bs + tx + 16 * j] = acc[i][j];
  }
}

template <typename T, typename Acc, int TILE>
void launch_simt(KernelArgs args, int n_items, cudaStream_t stream) {
  args.nsub = args.bs / TILE;
  args.lg_kpp = 0;
  while ((kSimtBK << args.lg_kpp) < args.bs) ++args.lg_kpp;
  const dim3 grid(static_cast<unsigned>(n_items), static_cast<unsigned>(args.nsub * args.nsub));
  simt_kernel<T, Acc, TILE><<<grid, kSimtThreads, 0, stream>>>(args);
  TG_CUDA_CHECK(cudaGetLastError());
}

// ---- split-K reduction -------------------------------------------------------------------
// Output tile red[3r] = the sum of slots red[3r+1] .. red[3r+1] + red[3r+2] - 1, in order.
// With fine stores (fine_c, KernelArgs) element (i, j) of the tile goes to its fine block.
template <typename T, typename Acc>
__global__ void reduce_kernel(const int* __restrict__ red, const Acc* __restrict__ ws, T* __restrict__ c,
                              DevAddr addr_c, long long ldc, int bs, const int* __restrict__ fine_c, int fine_bs) {
  const int r = static_cast<int>(blockIdx.x);
  const int o = red[3 * r], s0 = red[3 * r + 1], ns = red[3 * r + 2];
  const long long bs2 = static_cast<long long>(bs) * bs;
  T* base = fine_c != nullptr ? c : c + addr_c.offset(o);
  for (long long e = static_cast<long long>(blockIdx.y) * blockDim.x + threadIdx.x; e < bs2;
       e += static_cast<long long>(gridDim.y) * blockDim.x) {
    Acc s = Acc(0);
    for (int q = 0; q < ns; ++q) s += ws[(s0 + q) * bs2 + e];
    const long long i = e / bs, j = e % bs;
    if (fine_c != nullptr) {
      const int per = bs / fine_bs;
      const int id = fine_c[static_cast<long long>(o) * per * per + (i / fine_bs) * per + j / fine_bs];
      if (id >= 0)
        base[(static_cast<long long>(id) * fine_bs + i % fine_bs) * fine_bs + j % fine_bs] = static_cast<T>(s);
    } else {
      base[i * ldc + j] = static_cast<T>(s);
    }
  }
}

template <typename T, typename Acc>
void launch_reduce(const Tensor& reduce, std::int64_t n_split, const Tensor& ws, const Tensor& out,
                   const KernelArgs& args, cudaStream_t stream) {
  const std::int64_t per_tile = (static_cast<std::int64_t>(args.bs) * args.bs + kSimtThreads - 1) / kSimtThreads;
  const dim3 grid(static_cast<unsigned>(n_split), static_cast<unsigned>(std::min<std::int64_t>(per_tile, 16)));
  reduce_kernel<T, Acc><<<grid, kSimtThreads, 0, stream>>>(static_cast<const int*>(reduce.data_ptr()),
                                                           static_cast<const Acc*>(ws.data_ptr()), out.data<T>(),
                                                           args.addr_c, args.ldc, args.bs, args.fine_c, args.fine_bs);
  TG_CUDA_CHECK(cudaGetLastError());
}

// ---- row-group schedule of the Hopper TMA kernel ---------------------------------------
// Device copy of a RowGroupSchedule (row_groups.h) of gm lines of g members.
struct TmaSchedule {
  // i32 [n_items, 4] (queue by queue), [n_queues + 1], [n_steps, 2 (gm + g)], [n_groups, gm g + 1], [n_split, 3]
  Tensor items, queues, coords, outs, reduce;
  std::int64_t g = 1, gm = 1, n_items = 0, n_queues = 0, n_steps = 0, n_split = 0, n_slots = 0;
  GroupAxis axis = GroupAxis::Rows;
};

// The schedule of g x gm groups along `axis`, of n_steps steps in all (its counts'), its items
// dealt to the queues of the kernel's grid (tma_queues: one CTA an SM, at most
// spmm::tma_max_ctas() where that is set), uploaded.
std::shared_ptr<TmaSchedule> build_tma_schedule(const MatmulPlan& p, std::int64_t g, std::int64_t gm, GroupAxis axis,
                                                std::int64_t n_steps, Device dev) {
  const int cap = spmm::tma_max_ctas();
  const int sms = cuda::multiprocessor_count(dev.index);
  const TmaQueues tq = tma_queues(p, g, gm, axis, n_steps, cap > 0 ? std::min(cap, sms) : sms);
  const RowGroupSchedule& r = tq.groups;
  auto s = std::make_shared<TmaSchedule>();
  s->g = g;
  s->gm = gm;
  s->axis = axis;
  s->n_steps = r.n_steps;
  s->n_slots = r.n_slots;
  s->n_split = static_cast<std::int64_t>(r.reduce.size()) / 3;
  s->n_items = r.n_items;
  if (s->n_items > 0) {
    std::vector<std::int32_t> items(r.items.size());  // queue by queue
    for (std::size_t j = 0; j < tq.deal.order.size(); ++j)
      std::copy_n(r.items.begin() + 4 * static_cast<std::ptrdiff_t>(tq.deal.order[j]), 4,
                  items.begin() + 4 * static_cast<std::ptrdiff_t>(j));
    s->items = to_device_i32(items, 4, dev);
    s->n_queues = tq.n_queues;
    s->queues = to_device_i32(tq.deal.off, 1, dev);
  }
  if (r.n_groups > 0) s->outs = to_device_i32(r.outs, gm * g + 1, dev);
  if (r.n_steps > 0) {
    // Tile ids as the element coordinates of their origins in the operands' 2-d views (as
    // TileAddr::offset, split into row and column), so that the kernel's one producer
    // thread does no division. A step's first gm tiles are the shared ones (x of a row
    // group, y of a column group).
    const TileAddr& shared = axis == GroupAxis::Rows ? p.a : p.b;
    const TileAddr& own = axis == GroupAxis::Rows ? p.b : p.a;
    std::vector<std::int32_t> coords(2 * r.steps.size());
    for (std::size_t q = 0; q < r.steps.size(); ++q) {
      const std::int64_t id = r.steps[q];
      const TileAddr& t = q % static_cast<std::size_t>(gm + g) < static_cast<std::size_t>(gm) ? shared : own;
      coords[2 * q] = id < 0 ? -1 : static_cast<std::int32_t>((id / t.grid_cols) * t.bs);
      coords[2 * q + 1] = id < 0 ? -1 : static_cast<std::int32_t>((id % t.grid_cols) * t.bs);
    }
    s->coords = to_device_i32(coords, 2 * (gm + g), dev);
  }
  if (s->n_split > 0) s->reduce = to_device_i32(r.reduce, 3, dev);
  return s;
}

// The cost of a step of a group of two lines, and of one that a line sits out, in steps of a
// group of one line, and the share a schedule of pairs must save to be taken, for the choice
// between schedules: fitted by hand to the forced paths' times on the bench's block-64
// layouts (H100, bench/RESULTS.md 12-06, twenty-eighth session, calls 1 and 2), where at
// densities 0.25-0.5 a pair step costs more than its 1.26 at density 1 (row_groups.h). On
// those 12 points (SDD, DSD, DDS at densities 0.1-1) they pick the faster of the pairs and
// the one-line groups, DDS at 0.25 being a tie.
constexpr double kPairStepCost = 1.45, kLoneStepCost = 1.3, kPairMargin = 1.05;

// Relative speed of the TMA kernel's consumer instruction widths (n = 64, 128, 256) per
// block product in a group of one line of g tiles: wider instructions read fewer shared-memory
// bytes per multiply. (Groups of two lines are counted by kPairStepCost.) n = 64 (one block
// a tile at block 64) at 0.55: at 0.6 it was taken for SDD at density 0.1, a tie in the
// estimate, where row groups ran 6% faster with the queues (bench/RESULTS.md 12-06,
// twenty-ninth session); it was the fastest path at no block-64 point there.
double tma_speed(std::int64_t bs, std::int64_t g) {
  const std::int64_t n = bs == 128 ? bs * g : g == 1 ? 64 : 128;
  return n >= 256 ? 1.0 : n == 128 ? 0.85 : 0.55;
}

// The counts of a schedule that the choice between schedules reads (host only: the choice
// builds and uploads only the schedule it takes).
struct TmaCounts {
  std::int64_t n_steps = 0, paired_steps = 0, lone_steps = 0;
};

template <typename T>
void run_tma(const MatmulPlan& p, KernelArgs args, spmm::MmaPath choice, const std::string& prefix, const Tensor& out,
             cudaStream_t stream) {
  const Device dev = out.device();
  const std::int64_t gmax = p.bs == 128 ? 2 : 4;
  // Groups of two block-rows: at bs 64 only (bs 128 has its 128-row tile already).
  const std::int64_t gm_max = p.bs == 64 ? 2 : 1;
  auto key = [&](std::int64_t g, std::int64_t gm, GroupAxis axis) {
    return prefix + "/tma" + std::to_string(gm) + "x" + std::to_string(g) + (axis == GroupAxis::Columns ? "c" : "r");
  };
  auto counts = [&](std::int64_t g, std::int64_t gm, GroupAxis axis) -> const TmaCounts& {
    return p.cached<TmaCounts>(key(g, gm, axis) + "/counts", [&] {
      const RowGroupSchedule r = row_group_schedule(p, g, std::numeric_limits<std::int64_t>::max(), axis, gm, true);
      return std::make_shared<TmaCounts>(TmaCounts{r.n_steps, r.paired_steps, r.lone_steps});
    });
  };
  auto sched = [&](std::int64_t g, std::int64_t gm, GroupAxis axis) -> const TmaSchedule& {
    const std::int64_t n_steps = counts(g, gm, axis).n_steps;
    // (its queues depend on the grid's cap)
    return p.cached<TmaSchedule>(key(g, gm, axis) + "/ctas" + std::to_string(spmm::tma_max_ctas()),
                                 [&] { return build_tma_schedule(p, g, gm, axis, n_steps, dev); });
  };
  const TmaSchedule* s = nullptr;
  if (choice == spmm::MmaPath::WgmmaTmaNarrow) {
    s = &sched(1, 1, GroupAxis::Rows);
  } else if (choice == spmm::MmaPath::WgmmaTmaWide) {
    s = &sched(gmax, 1, GroupAxis::Rows);
  } else if (choice == spmm::MmaPath::WgmmaTmaWideColumns) {
    s = &sched(gmax, 1, GroupAxis::Columns);
  } else if (choice == spmm::MmaPath::WgmmaTmaRowPairs) {
    s = &sched(gmax, gm_max, GroupAxis::Rows);
  } else if (choice == spmm::MmaPath::WgmmaTmaColumnPairs) {
    s = &sched(gmax, gm_max, GroupAxis::Columns);
  } else {
    // Block products computed (empty member slots included) over the tile's speed, a
    // schedule of pairs counting its groups of one line as the one-line tile (the kernel
    // runs them so) and its other steps by kPairStepCost and kLoneStepCost; on equal cost
    // the first of: one block, row groups, column groups (the plain epilogue first), pairs
    // of row groups, pairs of column groups. The estimate reads the schedules' counts; only
    // the schedule taken is written and uploaded.
    //
    // Except at block 128 where output blocks average fewer than 2 pairs: one block a tile
    // there, which the estimate counts slower (its n = 128 instructions) but which ran
    // faster on the bench's DSD and DDS at density 0.1 in three sessions, 1.20x on DSD with
    // the queues (bench/RESULTS.md 12-06, twenty-sixth, twenty-eighth and twenty-ninth
    // sessions): lists of 1-2 steps are bound by the stores and the pipeline's start, not by
    // the products.
    const bool short_lists = p.bs == 128 && p.n_pairs() < 2 * p.n_out;
    std::int64_t g_best = 1, gm_best = 1;
    GroupAxis axis_best = GroupAxis::Rows;
    double best = static_cast<double>(counts(1, 1, GroupAxis::Rows).n_steps) / tma_speed(p.bs, 1);
    const std::pair<std::int64_t, GroupAxis> wide[] = {
        {1, GroupAxis::Rows}, {1, GroupAxis::Columns}, {gm_max, GroupAxis::Rows}, {gm_max, GroupAxis::Columns}};
    if (!short_lists) {
      for (const auto& [gm, axis] : wide) {  // (at bs 128 the last two are the first two again)
        const TmaCounts& w = counts(gmax, gm, axis);
        const double cost = (static_cast<double>(w.n_steps - w.paired_steps) +
                             kPairStepCost * static_cast<double>(w.paired_steps - w.lone_steps) +
                             kLoneStepCost * static_cast<double>(w.lone_steps)) *
                            static_cast<double>(gmax) / tma_speed(p.bs, gmax) * (gm == 2 ? kPairMargin : 1.0);
        if (cost < best) {
          best = cost;
          g_best = gmax;
          gm_best = gm;
          axis_best = axis;
        }
      }
    }
    s = &sched(g_best, gm_best, axis_best);
  }
  if (s->axis == GroupAxis::Columns) {
    // The transposed product Cᵀ = op(B)ᵀ op(A)ᵀ: its first operand is the stored y, read
    // transposed where y was not, and its second the stored x.
    std::swap(args.a, args.b);
    std::swap(args.lda, args.ldb);
    std::swap(args.rows_a, args.rows_b);
    std::swap(args.addr_a, args.addr_b);
    const int ta = args.trans_a;
    args.trans_a = !args.trans_b;
    args.trans_b = !ta;
    args.trans_c = 1;
  }
  Tensor ws;
  if (s->n_slots > 0) ws = empty({s->n_slots, p.bs, p.bs}, {.dtype = DType::f32, .device = dev});
  args.coords = s->n_steps > 0 ? static_cast<const int2*>(s->coords.data_ptr()) : nullptr;
  args.outs = s->outs.defined() ? static_cast<const int*>(s->outs.data_ptr()) : nullptr;
  args.ws = ws.defined() ? ws.data_ptr() : nullptr;
  if (s->n_items > 0) {
    args.items = static_cast<const int4*>(s->items.data_ptr());
    args.queues = static_cast<const int*>(s->queues.data_ptr());
    spmm::launch_wgmma_tma<T>(args, static_cast<int>(s->n_queues), static_cast<int>(s->g), static_cast<int>(s->gm),
                              stream);
  }
  if (s->n_split > 0) launch_reduce<T, float>(s->reduce, s->n_split, ws, out, args, stream);
}

// ---- dispatch ----------------------------------------------------------------------------
DevAddr dev_addr(const TileAddr& a) { return DevAddr{static_cast<unsigned>(a.grid_cols), a.bs * a.ld, a.bs}; }

bool aligned16(const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

// The table of fine stores (KernelArgs::fine_c) on the device: fine_block_ids (plan.h).
struct FineIds {
  Tensor ids;
};

// With `fine` (fine stores, sparse_matmul_fine_kernel): out holds fine's blocks and the
// product is stored into them, on the Hopper path only; returns false (having done
// nothing) where that path would not run. Without: always runs, returns true.
template <typename T>
bool matmul_t(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out, const Layout* fine) {
  using Acc = typename acc_type<T>::type;
  constexpr bool k16 = std::is_same_v<T, bfloat16> || std::is_same_v<T, half>;
  if (!k16 && fine != nullptr) return false;
  const Device dev = out.device();
  tg::cuda::DeviceGuard guard(dev.index);
  cudaStream_t stream = tg::cuda::current_cuda_stream(dev.index);

  const bool tensor_cores =
      (k16 || (std::is_same_v<T, float> && allow_tf32())) && aligned16(a) && aligned16(b) && aligned16(out);
  const std::int64_t tile = tensor_cores ? spmm::mma_tile(static_cast<int>(p.bs)) : std::min<std::int64_t>(p.bs, 64);

  const std::string prefix = "cuda:" + std::to_string(dev.index);
  const DevicePairs& pairs = p.cached<DevicePairs>(prefix + "/pairs", [&] {
    std::vector<std::int32_t> v(static_cast<std::size_t>(2 * p.n_pairs()));
    for (std::size_t q = 0; q < p.pair_a.size(); ++q) {
      v[2 * q] = p.pair_a[q];
      v[2 * q + 1] = p.pair_b[q];
    }
    return std::make_shared<DevicePairs>(DevicePairs{to_device_i32(v, 2, dev)});
  });
  KernelArgs args{};
  args.pairs = p.n_pairs() > 0 ? static_cast<const int2*>(pairs.pairs.data_ptr()) : nullptr;
  args.a = a.data_ptr();
  args.b = b.data_ptr();
  args.c = out.data_ptr();
  args.addr_a = dev_addr(p.a);
  args.addr_b = dev_addr(p.b);
  args.addr_c = dev_addr(p.c);
  args.lda = p.a.ld;
  args.ldb = p.b.ld;
  args.ldc = p.c.ld;
  args.bs = static_cast<int>(p.bs);
  args.trans_a = p.trans_a;
  args.trans_b = p.trans_b;

  if constexpr (k16) {
    using spmm::MmaPath;
    const MmaPath choice = spmm::mma_path();
    const bool forced_tma = choice == MmaPath::WgmmaTma || choice == MmaPath::WgmmaTmaNarrow ||
                            choice == MmaPath::WgmmaTmaWide || choice == MmaPath::WgmmaTmaWideColumns ||
                            choice == MmaPath::WgmmaTmaRowPairs || choice == MmaPath::WgmmaTmaColumnPairs;
    const bool hopper = tensor_cores && (p.bs == 64 || p.bs == 128) && spmm::wgmma_supported(dev.index);
    // TMA reads (and writes the output in) rows of a multiple of 16 bytes and at most 2^31
    // rows (i32 coordinates); an empty operand (no pairs: the output is zeros) has no
    // tensor map to describe it.
    // (fine stores: rows of the fine block size)
    const std::int64_t ldc = fine != nullptr ? fine->block_size() : p.c.ld;
    const bool tma_ok = a.numel() > 0 && b.numel() > 0 && out.numel() > 0 && p.a.ld % 8 == 0 && p.b.ld % 8 == 0 &&
                        ldc % 8 == 0 && a.numel() / p.a.ld < (std::int64_t{1} << 31) &&
                        b.numel() / p.b.ld < (std::int64_t{1} << 31) && out.numel() / ldc < (std::int64_t{1} << 31);
    const bool fine_ok = fine == nullptr || (p.bs == 64 && (fine->block_size() == 16 || fine->block_size() == 32));
    if (hopper && tma_ok && fine_ok && (choice == MmaPath::Auto || forced_tma)) {
      args.rows_a = a.numel() / p.a.ld;
      args.rows_b = b.numel() / p.b.ld;
      args.rows_c = out.numel() / ldc;
      if (fine != nullptr) {
        const std::string key =
            prefix + "/fine" + std::to_string(fine->block_size()) + "/" + std::to_string(fine->hash());
        const FineIds& f = p.cached<FineIds>(key, [&] {
          return std::make_shared<FineIds>(FineIds{
              to_device_i32(fine_block_ids(p, *fine), (p.bs / fine->block_size()) * (p.bs / fine->block_size()), dev)});
        });
        args.fine_c = static_cast<const int*>(f.ids.data_ptr());
        args.fine_bs = static_cast<int>(fine->block_size());
      }
      run_tma<T>(p, args, choice, prefix, out, stream);
      return true;
    }
    if (fine != nullptr) return false;
    // The grouped path: regions of several blocks in one CTA tile (path.h).
    if (tensor_cores && (p.bs == 32 || p.bs == 64) && choice != MmaPath::PerBlock && !forced_tma && p.n_pairs() > 0) {
      auto grouped = [&](int rows, int cols) -> const Grouped& {
        return p.cached<Grouped>(prefix + "/grouped" + std::to_string(rows) + "x" + std::to_string(cols),
                                 [&] { return build_grouped(p, rows, cols, dev); });
      };
      const Grouped* g = nullptr;
      if (choice == spmm::MmaPath::Grouped)
        g = &grouped(128, 128);
      else if (choice == spmm::MmaPath::GroupedWide)
        g = &grouped(64, 128);
      else if (choice == spmm::MmaPath::GroupedTall)
        g = &grouped(128, 64);
      else {
        const int sms = cuda::multiprocessor_count(dev.index);
        double best = per_block_cost(p);
        for (const Grouped* c : {&grouped(128, 128), &grouped(64, 128), &grouped(128, 64)}) {
          const double cost = grouped_cost(*c, sms);
          if (cost < best) {
            best = cost;
            g = c;
          }
        }
      }
      if (g != nullptr) {
        KernelArgs ga = args;
        ga.items = static_cast<const int4*>(g->items.data_ptr());
        ga.steps = g->steps.defined() ? static_cast<const int*>(g->steps.data_ptr()) : nullptr;
        ga.outs = static_cast<const int*>(g->outs.data_ptr());
        spmm::launch_mma_grouped<T>(ga, static_cast<int>(g->n_items), g->rows, g->cols, stream);
        return true;
      }
    }
  }
  const Schedule& sched =
      p.cached<Schedule>(prefix + "/tile" + std::to_string(tile), [&] { return build_schedule(p, tile, dev); });
  Tensor ws;
  if (sched.n_slots > 0) ws = empty({sched.n_slots, p.bs, p.bs}, {.dtype = dtype_of<Acc>(), .device = dev});
  args.items = static_cast<const int4*>(sched.items.data_ptr());
  args.ws = ws.defined() ? ws.data_ptr() : nullptr;
  const int n_items = static_cast<int>(sched.n_items);

  if constexpr (!std::is_same_v<T, double>) {
    if (tensor_cores) {
      spmm::launch_mma<T>(args, n_items, stream);
    }
  }
  if (!tensor_cores) {
    switch (tile) {
      case 64:
        launch_simt<T, Acc, 64>(args, n_items, stream);
        break;
      case 32:
        launch_simt<T, Acc, 32>(args, n_items, stream);
        break;
      case 16:
        launch_simt<T, Acc, 16>(args, n_items, stream);
        break;
      default:
        TG_THROW(Error, "matmul: internal error: no CUDA tile for block size ", p.bs);
    }
  }
  if (sched.n_split > 0) launch_reduce<T, Acc>(sched.reduce, sched.n_split, ws, out, args, stream);
  return true;
}

void matmul_cuda(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "matmul", [&] { matmul_t<scalar_t>(p, a, b, out, nullptr); });
}

bool matmul_fine_cuda(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Layout& fine, const Tensor& out) {
  bool done = false;
  TG_DISPATCH_FLOATING(out.dtype(), "matmul", [&] { done = matmul_t<scalar_t>(p, a, b, out, &fine); });
  return done;
}

}  // namespace

TG_REGISTER_KERNEL(sparse_matmul_kernel, CUDA, &matmul_cuda);
TG_REGISTER_KERNEL(sparse_matmul_fine_kernel, CUDA, &matmul_fine_cuda);

}  // namespace tg::ops
