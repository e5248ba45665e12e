// CPU kernels of flash attention.
//
// Work unit: one batch·head row and a chunk of at most kChunk query rows inside one query
// block. Its visited key blocks, clipped by causal / window / k_lens, merge into a few
// contiguous key ranges; scores are Eigen GEMMs against those ranges, then one element-wise
// pass applies the bias, the soft cap and every visibility rule (-inf for hidden keys).
// Forward: a two-pass softmax with the sink in the denominator, dropout, P·V. Backward: the
// flash backward, recomputing P from the saved lse. Arithmetic is f32 (f64 for f64); dk/dv
// are accumulated per kv row over its query heads in a fixed order, so results are
// deterministic run to run. Rows run in parallel over the cores (parallel_ranges): the
// forward over batch·head rows, the backward over kv rows, each writing only its own
// outputs (the sinks' gradient is summed per kv row, then over them in order).
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/attention/dropout_rule.h"
#include "ops/attention/kernels.h"
#include "runtime/parallel.h"
#include "runtime/philox.h"

namespace tg::ops {
namespace {

// Query rows per work unit: bounds the score matrix of long (variable) query blocks.
constexpr std::int64_t kChunk = 64;

template <typename A>
using Mat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename A>
using CMap = Eigen::Map<const Mat<A>>;

inline std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// The values of `t` in the arithmetic type A: the data itself when T is A, else a widened copy.
template <typename T, typename A>
class Widened {
 public:
  explicit Widened(const Tensor& t) {
    const T* src = static_cast<const T*>(t.data_ptr());
    if constexpr (std::is_same_v<T, A>) {
      ptr_ = src;
    } else {
      copy_.resize(at(t.numel()));
      for (std::size_t i = 0; i < copy_.size(); ++i) copy_[i] = static_cast<A>(src[i]);
      ptr_ = copy_.data();
    }
  }
  const A* data() const { return ptr_; }

 private:
  std::vector<A> copy_;
  const A* ptr_ = nullptr;
};

// Dropout keep decisions (dropout_rule.h), reusing each Philox block for its 8 decisions:
// consecutive keys of a row are consecutive element indices.
class KeepMask {
 public:
  explicit KeepMask(const AttentionProblem& p) : seed_(p.seed), offset_(p.offset), threshold_(p.dropout_threshold) {}
  bool operator()(std::uint64_t e) {
    const std::uint64_t b = e >> 3;
    if (b != block_) {
      words_ = philox::block(seed_, offset_, b);
      block_ = b;
    }
    return attention_keep(words_, static_cast<int>(e & 7), threshold_);
  }

 private:
  std::uint64_t seed_, offset_;
  std::uint32_t threshold_;
  std::uint64_t block_ = ~std::uint64_t{0};
  philox::U32x4 words_{};
};

// A block-sparse [bhq, sq, sk] operand (mask, bias) read element by element.
struct ElementLookup {
  const std::int64_t* index = nullptr;
  std::int64_t shift = 0, mb = 0, nb = 0, bs = 1;
  explicit ElementLookup(const BlockSparseTensor& x) {
    if (!x.defined()) return;
    const Layout& l = x.layout();
    index = l.tables(Device::cpu()).block_index.data<std::int64_t>();
    bs = l.block_size();
    mb = l.block_rows();
    nb = l.block_cols();
    while ((std::int64_t{1} << shift) < bs) ++shift;
  }
  // Flat data offset of element (bh, i, j), or -1 when its block is absent.
  std::int64_t find(std::int64_t bh, std::int64_t i, std::int64_t j) const {
    const std::int64_t k = index[(bh * mb + (i >> shift)) * nb + (j >> shift)];
    return k < 0 ? -1 : (k * bs + (i & (bs - 1))) * bs + (j & (bs - 1));
  }
};

// Keys [j0, j1) sit in score columns [col, col + j1 - j0).
struct KeyRange {
  std::int64_t j0, j1, col;
};

template <typename T>
class CpuAttention {
 public:
  using A = typename acc_type<T>::type;
  static constexpr A kNegInf = -std::numeric_limits<A>::infinity();

  CpuAttention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionProblem& p)
      : p_(p), q_(q), k_(k), v_(v), mask_(p.mask), bias_(p.bias), group_(p.bhq / p.bhkv) {
    if (p.q_lens.defined()) q_lens_ = p.q_lens.data<std::int64_t>();
    if (p.k_lens.defined()) k_lens_ = p.k_lens.data<std::int64_t>();
    if (p.seg_q.defined()) {
      seg_q_ = p.seg_q.data<std::int64_t>();
      seg_k_ = p.seg_k.data<std::int64_t>();
    }
    if (p.mask.defined()) mask_data_ = p.mask.data().data<bool>();
    if (p.bias.defined()) bias_data_ = static_cast<const T*>(p.bias.data().data_ptr());
    if (p.sinks.defined()) sinks_ = p.sinks.to_vector<double>();
    drop_scale_ = static_cast<A>(1.0 / (1.0 - p.dropout_p));
  }

  void forward(const Tensor& o, const Tensor& lse) {
    T* out = static_cast<T*>(o.data_ptr());
    A* lse_out = static_cast<A*>(lse.data_ptr());
    const std::int64_t dv = p_.dv;
    CMap<A> V_all(v_.data(), p_.bhkv * p_.sk, dv);
    // every bh row does the same work (all its queries): ranges of one row
    parallel_ranges(p_.bhq, 1, [&](std::int64_t bh0, std::int64_t bh1) {
      for (std::int64_t bh = bh0; bh < bh1; ++bh) {
        for_each_chunk(bh, [&](Chunk& c) {
          const A sink = sink_of(c);
          KeepMask keep(p_);
          Mat<A> O = Mat<A>::Zero(c.m, dv);
          if (c.nk > 0) {
            for (std::int64_t ii = 0; ii < c.m; ++ii) {
              A* row = &c.S(ii, 0);
              Eigen::Map<Eigen::Array<A, Eigen::Dynamic, 1>> r(row, c.nk);
              const A mx = std::max(sink, r.maxCoeff());
              if (mx == kNegInf) {  // nothing visible and no sink
                r.setZero();
                lse_out[(bh * p_.sq) + c.i0 + ii] = kNegInf;
                continue;
              }
              // Eigen's vectorised exp (libm's scalar one took a sixth of the pass). Hidden keys
              // (-inf) must give exactly 0: Eigen's f32 packets do; its f64 packets give a
              // denormal, so f64 selects.
              if constexpr (std::is_same_v<A, float>)
                r = (r - mx).exp();
              else
                r = (r == kNegInf).select(A(0), (r - mx).exp());
              const A sum = (sinks_.empty() ? A(0) : std::exp(sink - mx)) + r.sum();
              r *= A(1) / sum;
              lse_out[bh * p_.sq + c.i0 + ii] = mx + std::log(sum);
              if (p_.dropout_p > 0) {
                const std::uint64_t e0 = static_cast<std::uint64_t>((bh * p_.sq + c.i0 + ii) * p_.sk);
                for (const KeyRange& r : c.ranges)
                  for (std::int64_t j = r.j0; j < r.j1; ++j) {
                    A& pr = row[r.col + j - r.j0];
                    pr = keep(e0 + static_cast<std::uint64_t>(j)) ? pr * drop_scale_ : A(0);
                  }
              }
            }
            const std::int64_t vbase = c.kv * p_.sk;
            for (const KeyRange& r : c.ranges)
              O.noalias() += c.S.middleCols(r.col, r.j1 - r.j0) * V_all.middleRows(vbase + r.j0, r.j1 - r.j0);
          }
          for (std::int64_t ii = 0; ii < c.rows; ++ii) {
            T* dst = out + (bh * p_.sq + c.i0 + ii) * dv;
            if (ii < c.m && c.nk > 0) {
              for (std::int64_t x = 0; x < dv; ++x) dst[x] = static_cast<T>(O(ii, x));
            } else {  // a padded query (i >= q_lens) or one without keys
              for (std::int64_t x = 0; x < dv; ++x) dst[x] = static_cast<T>(A(0));
              lse_out[bh * p_.sq + c.i0 + ii] = sink;
            }
          }
        });
      }
    });
  }

  void backward(const Tensor& o, const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                const Tensor& dv, const Tensor& dbias, const Tensor& dsinks) {
    Widened<T, A> o_w(o), do_w(dout);
    const A* lse_in = static_cast<const A*>(lse.data_ptr());
    T* dq_out = static_cast<T*>(dq.data_ptr());
    T* dk_out = static_cast<T*>(dk.data_ptr());
    T* dv_out = static_cast<T*>(dv.data_ptr());
    T* dbias_out = dbias.defined() ? static_cast<T*>(dbias.data_ptr()) : nullptr;
    if (dbias_out) std::fill(dbias_out, dbias_out + dbias.numel(), static_cast<T>(A(0)));
    std::vector<double> dsink_kv(at(p_.bhkv * p_.heads), 0.0);  // per kv row and head
    const std::int64_t d = p_.d, dvv = p_.dv, sq = p_.sq, sk = p_.sk;
    const A scale = static_cast<A>(p_.scale);
    CMap<A> Q_all(q_.data(), p_.bhq * sq, d), K_all(k_.data(), p_.bhkv * sk, d), V_all(v_.data(), p_.bhkv * sk, dvv);
    CMap<A> O_all(o_w.data(), p_.bhq * sq, dvv), dO_all(do_w.data(), p_.bhq * sq, dvv);
    // every kv row does the same work (its group of bh rows): ranges of one row
    parallel_ranges(p_.bhkv, 1, [&](std::int64_t kv0, std::int64_t kv1) {
      for (std::int64_t kv = kv0; kv < kv1; ++kv) {
        Mat<A> dK = Mat<A>::Zero(sk, d), dV = Mat<A>::Zero(sk, dvv);
        const std::int64_t kvbase = kv * sk;
        for (std::int64_t bh = kv * group_; bh < (kv + 1) * group_; ++bh) {
          for_each_chunk(bh, [&](Chunk& c) {
            const std::int64_t qrow = bh * sq + c.i0;
            Mat<A> dQ = Mat<A>::Zero(c.rows, d);
            if (c.m > 0 && c.nk > 0) {
              auto dO = dO_all.middleRows(qrow, c.m);
              Eigen::Matrix<A, Eigen::Dynamic, 1> D = dO.cwiseProduct(O_all.middleRows(qrow, c.m)).rowwise().sum();
              Mat<A> dP(c.m, c.nk), Pd(c.m, c.nk);
              for (const KeyRange& r : c.ranges)
                dP.middleCols(r.col, r.j1 - r.j0).noalias() =
                    dO * V_all.middleRows(kvbase + r.j0, r.j1 - r.j0).transpose();
              const A sink = sink_of(c);
              KeepMask keep(p_);
              for (std::int64_t ii = 0; ii < c.m; ++ii) {
                const std::int64_t i = c.i0 + ii;
                const A L = lse_in[bh * sq + i];
                A* srow = &c.S(ii, 0);  // scores in, dT (gradient of the pre-cap score) out
                A* prow = &Pd(ii, 0);
                const A* dprow = &dP(ii, 0);
                row_grads(c, bh, i, L, D(ii), srow, prow, dprow, keep, dbias_out);
                if (!sinks_.empty() && L != kNegInf)
                  dsink_kv[at(kv * p_.heads + c.h)] -= static_cast<double>(std::exp(sink - L) * D(ii));
              }
              auto Q = Q_all.middleRows(qrow, c.m);
              for (const KeyRange& r : c.ranges) {
                const std::int64_t len = r.j1 - r.j0;
                dQ.topRows(c.m).noalias() += c.S.middleCols(r.col, len) * K_all.middleRows(kvbase + r.j0, len);
                dK.middleRows(r.j0, len).noalias() += c.S.middleCols(r.col, len).transpose() * Q;
                dV.middleRows(r.j0, len).noalias() += Pd.middleCols(r.col, len).transpose() * dO;
              }
            }
            for (std::int64_t ii = 0; ii < c.rows; ++ii) {
              T* dst = dq_out + (qrow + ii) * d;
              for (std::int64_t x = 0; x < d; ++x) dst[x] = static_cast<T>(dQ(ii, x) * scale);
            }
          });
        }
        for (std::int64_t j = 0; j < sk; ++j) {
          T* dkr = dk_out + (kvbase + j) * d;
          T* dvr = dv_out + (kvbase + j) * dvv;
          for (std::int64_t x = 0; x < d; ++x) dkr[x] = static_cast<T>(dK(j, x) * scale);
          for (std::int64_t x = 0; x < dvv; ++x) dvr[x] = static_cast<T>(dV(j, x));
        }
      }
    });
    if (dsinks.defined()) {  // f32, or f64 for f64
      std::vector<double> dsink(at(p_.heads), 0.0);
      for (std::int64_t kv = 0; kv < p_.bhkv; ++kv)
        for (std::int64_t h = 0; h < p_.heads; ++h) dsink[at(h)] += dsink_kv[at(kv * p_.heads + h)];
      for (std::size_t h = 0; h < dsink.size(); ++h) {
        if (dsinks.dtype() == DType::f64)
          static_cast<double*>(dsinks.data_ptr())[h] = dsink[h];
        else
          static_cast<float*>(dsinks.data_ptr())[h] = static_cast<float>(dsink[h]);
      }
    }
  }

 private:
  struct Chunk {
    std::int64_t bh = 0, b = 0, h = 0, kv = 0;
    std::int64_t i0 = 0, rows = 0;  ///< the chunk's query rows [i0, i0 + rows)
    std::int64_t m = 0;             ///< rows computed: the first m (the rest are past q_lens)
    std::vector<KeyRange> ranges;
    std::int64_t nk = 0;  ///< keys in the ranges = score columns
    Mat<A> S;             ///< [m, nk] scores after bias and soft cap; -inf where hidden
  };

  A sink_of(const Chunk& c) const { return sinks_.empty() ? kNegInf : static_cast<A>(sinks_[at(c.h)]); }

  // Calls f(chunk) for every chunk of row bh, with its key ranges and scores computed.
  template <typename F>
  void for_each_chunk(std::int64_t bh, F&& f) {
    const auto& qs = p_.pattern.q_starts();
    Chunk c;
    c.bh = bh;
    c.b = bh / p_.heads;
    c.h = bh % p_.heads;
    c.kv = bh / group_;
    for (std::int64_t r = 0; r < p_.pattern.q_blocks(); ++r) {
      for (std::int64_t i0 = qs[at(r)]; i0 < qs[at(r + 1)]; i0 += kChunk) {
        c.i0 = i0;
        c.rows = std::min(kChunk, qs[at(r + 1)] - i0);
        key_ranges(c, r);
        if (c.m > 0 && c.nk > 0) scores(c);
        f(c);
      }
    }
  }

  // The chunk's computed rows and the merged visited key ranges that any of them can see.
  void key_ranges(Chunk& c, std::int64_t r) {
    std::int64_t end = c.i0 + c.rows;
    if (q_lens_) end = std::clamp(q_lens_[c.b], c.i0, end);
    c.m = end - c.i0;
    c.ranges.clear();
    c.nk = 0;
    if (c.m == 0) return;
    std::int64_t lo = 0, hi = p_.sk;
    if (p_.causal) hi = std::min(hi, end);
    if (p_.window_left >= 0) lo = std::max(lo, c.i0 - p_.window_left);
    if (p_.window_right >= 0) hi = std::min(hi, end + p_.window_right);
    if (k_lens_) hi = std::min(hi, k_lens_[c.b]);
    const auto& ks = p_.pattern.k_starts();
    const std::int64_t Kb = p_.pattern.k_blocks();
    const std::uint8_t* visit = p_.pattern.mask_host().data() + (c.bh * p_.pattern.q_blocks() + r) * Kb;
    for (std::int64_t kb = 0; kb < Kb; ++kb) {
      if (!visit[kb]) continue;
      const std::int64_t a = std::max(ks[at(kb)], lo), e = std::min(ks[at(kb + 1)], hi);
      if (a >= e) continue;
      if (!c.ranges.empty() && c.ranges.back().j1 == a) c.ranges.back().j1 = e;
      else c.ranges.push_back({a, e, c.nk});
      c.nk += e - a;
    }
  }

  // c.S = the final scores of the chunk's computed rows over its key ranges.
  void scores(Chunk& c) {
    const std::int64_t d = p_.d, sq = p_.sq, sk = p_.sk;
    c.S.resize(c.m, c.nk);
    CMap<A> Q(q_.data() + (c.bh * sq + c.i0) * d, c.m, d), K(k_.data() + c.kv * sk * d, sk, d);
    for (const KeyRange& r : c.ranges)
      c.S.middleCols(r.col, r.j1 - r.j0).noalias() = Q * K.middleRows(r.j0, r.j1 - r.j0).transpose();
    const A scale = static_cast<A>(p_.scale), cap = static_cast<A>(p_.softcap);
    // Only causal / window rules and the scale: whole runs of keys, which vectorise.
    const bool plain = !seg_k_ && !mask_data_ && !bias_data_ && !(cap > 0);
    for (std::int64_t ii = 0; ii < c.m; ++ii) {
      const std::int64_t i = c.i0 + ii;
      std::int64_t lo = 0, hi = sk;  // keys visible to row i by causal / window
      if (p_.causal) hi = std::min(hi, i + 1);
      if (p_.window_left >= 0) lo = std::max(lo, i - p_.window_left);
      if (p_.window_right >= 0) hi = std::min(hi, i + p_.window_right + 1);
      const std::int64_t seg = seg_q_ ? seg_q_[c.b * sq + i] : 0;
      A* row = &c.S(ii, 0);
      if (plain) {
        for (const KeyRange& r : c.ranges) {  // key j's score is row[r.col + j - r.j0]
          const std::int64_t a = std::clamp(lo, r.j0, r.j1) - r.j0, e = std::clamp(hi, r.j0 + a, r.j1) - r.j0;
          A* s = row + r.col;
          for (std::int64_t x = 0; x < a; ++x) s[x] = kNegInf;
          for (std::int64_t x = a; x < e; ++x) s[x] *= scale;
          for (std::int64_t x = e; x < r.j1 - r.j0; ++x) s[x] = kNegInf;
        }
        continue;
      }
      for (const KeyRange& r : c.ranges) {
        for (std::int64_t j = r.j0; j < r.j1; ++j) {
          A& s = row[r.col + j - r.j0];
          bool visible = j >= lo && j < hi;
          if (visible && seg_k_) visible = seg_k_[c.b * sk + j] == seg;
          if (visible && mask_data_) {
            const std::int64_t off = mask_.find(c.bh, i, j);
            visible = off < 0 || !mask_data_[off];
          }
          if (!visible) {
            s = kNegInf;
            continue;
          }
          A t = s * scale;
          if (bias_data_) {
            const std::int64_t off = bias_.find(c.bh, i, j);
            if (off >= 0) t += static_cast<A>(bias_data_[off]);
          }
          s = cap > 0 ? cap * std::tanh(t / cap) : t;
        }
      }
    }
  }

  // One query row i of the backward: P (dropout applied) into prow and dT, the gradient of
  // the pre-cap score, over srow, which holds the row's scores on entry (-inf: hidden);
  // dbias where asked. L: the row's lse; Di: its rowsum(dO ⊙ o).
  void row_grads(const Chunk& c, std::int64_t bh, std::int64_t i, A L, A Di, A* srow, A* prow, const A* dprow,
                 KeepMask& keep, T* dbias_out) const {
    const A cap = static_cast<A>(p_.softcap);
    if (!(p_.dropout_p > 0) && !(cap > 0) && !dbias_out && L != kNegInf) {
      // whole rows of plain vector ops, with the vectorised exp of the forward
      Eigen::Map<Eigen::Array<A, Eigen::Dynamic, 1>> sr(srow, c.nk), pr(prow, c.nk);
      if constexpr (std::is_same_v<A, float>) pr = (sr - L).exp();
      else pr = (sr == kNegInf).select(A(0), (sr - L).exp());
      for (std::int64_t x = 0; x < c.nk; ++x) srow[x] = srow[x] == kNegInf ? A(0) : prow[x] * (dprow[x] - Di);
      return;
    }
    const std::uint64_t e0 = static_cast<std::uint64_t>((bh * p_.sq + i) * p_.sk);
    for (const KeyRange& r : c.ranges) {
      for (std::int64_t j = r.j0; j < r.j1; ++j) {
        const std::int64_t x = r.col + j - r.j0;
        const A s = srow[x];
        if (s == kNegInf || L == kNegInf) {
          srow[x] = A(0);
          prow[x] = A(0);
          continue;
        }
        const A pr = std::exp(s - L);
        const A z = p_.dropout_p > 0 ? (keep(e0 + static_cast<std::uint64_t>(j)) ? drop_scale_ : A(0)) : A(1);
        prow[x] = pr * z;
        A ds = pr * (z * dprow[x] - Di);
        if (cap > 0) ds *= A(1) - (s / cap) * (s / cap);
        srow[x] = ds;
        if (dbias_out) {
          const std::int64_t off = bias_.find(bh, i, j);
          if (off >= 0) dbias_out[off] = static_cast<T>(ds);
        }
      }
    }
  }

  const AttentionProblem& p_;
  Widened<T, A> q_, k_, v_;
  ElementLookup mask_, bias_;
  std::int64_t group_;
  const std::int64_t *q_lens_ = nullptr, *k_lens_ = nullptr, *seg_q_ = nullptr, *seg_k_ = nullptr;
  const bool* mask_data_ = nullptr;
  const T* bias_data_ = nullptr;
  std::vector<double> sinks_;
  A drop_scale_ = 1;
};

// Keeps no dropout decisions: drawing them again costs the CPU little next to its products.
Tensor attention_fwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionProblem& p, const Tensor& o,
                         const Tensor& lse, bool /*keep_mask*/) {
  TG_DISPATCH_FLOATING(q.dtype(), "flash_attention", [&] { CpuAttention<scalar_t>(q, k, v, p).forward(o, lse); });
  return {};
}

void attention_bwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                       const Tensor& dout, const AttentionProblem& p, const Tensor& dq, const Tensor& dk,
                       const Tensor& dv, const Tensor& dbias, const Tensor& dsinks, const Tensor& /*keep*/) {
  TG_DISPATCH_FLOATING(q.dtype(), "flash_attention", [&] {
    CpuAttention<scalar_t>(q, k, v, p).backward(o, lse, dout, dq, dk, dv, dbias, dsinks);
  });
}

}  // namespace

TG_REGISTER_KERNEL(attention_fwd_kernel, CPU, &attention_fwd_cpu);
TG_REGISTER_KERNEL(attention_bwd_kernel, CPU, &attention_bwd_cpu);

}  // namespace tg::ops
