// AttentionPattern: validation of the builders, block boundaries, the host mask, and the
// remembered P = B·Hq expansion that kernels receive.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "ops/attention/attention.h"
#include "ops/copy/copy.h"

namespace tg {

struct AttentionPattern::Memo {
  std::uint64_t id = 0;
  std::mutex mu;
  std::int64_t expanded_count = 0;
  AttentionPattern expanded;  // empty until the first expansion
};

namespace {

std::uint64_t next_pattern_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1);
}

bool is_pow2(std::int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }

// The mask as a contiguous bool CPU tensor (non-zero = visited), from any dtype / device.
Tensor bool_mask(const char* op, const Tensor& mask) {
  if (!mask.defined()) TG_THROW(ValueError, op, ": mask is an undefined tensor");
  if (mask.dim() != 3) {
    TG_THROW(ShapeError, op, ": mask must be 3-d [P, q_blocks, k_blocks], got shape ", mask.shape());
  }
  Tensor m = mask.detach().to(Device::cpu());
  if (m.dtype() == DType::boolean) return m;
  std::vector<double> v = m.to_vector<double>();
  std::vector<bool> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = v[i] != 0.0;  // nan is non-zero
  return from_vector(b, m.shape());
}

std::vector<std::int64_t> starts_of(const char* op, const char* arg, const std::vector<std::int64_t>& sizes) {
  std::vector<std::int64_t> s(sizes.size() + 1, 0);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] <= 0) TG_THROW(ValueError, op, ": ", arg, "[", i, "] must be positive, got ", sizes[i]);
    s[i + 1] = s[i] + sizes[i];
  }
  return s;
}

std::vector<std::int64_t> uniform_starts(std::int64_t blocks, std::int64_t size) {
  std::vector<std::int64_t> s(static_cast<std::size_t>(blocks + 1));
  for (std::int64_t i = 0; i <= blocks; ++i) s[static_cast<std::size_t>(i)] = i * size;
  return s;
}

}  // namespace

AttentionPattern::AttentionPattern(Tensor mask, std::vector<std::int64_t> q_starts, std::vector<std::int64_t> k_starts,
                                   std::int64_t bq, std::int64_t bk)
    : mask_(std::move(mask)), q_starts_(std::move(q_starts)), k_starts_(std::move(k_starts)), bq_(bq), bk_(bk) {
  auto host = std::make_shared<std::vector<std::uint8_t>>(static_cast<std::size_t>(mask_.numel()));
  if (!host->empty()) std::memcpy(host->data(), mask_.data_ptr(), host->size());  // bool is one byte 0/1
  mask_host_ = std::move(host);
  memo_ = std::make_shared<Memo>();
  memo_->id = next_pattern_id();
}

AttentionPattern AttentionPattern::uniform(const Tensor& mask, std::int64_t bq, std::int64_t bk) {
  const char* op = "AttentionPattern::uniform";
  if (!is_pow2(bq) || !is_pow2(bk)) {
    TG_THROW(ValueError, op, ": block sizes bq and bk must be powers of two >= 1, got bq = ", bq, ", bk = ", bk);
  }
  Tensor m = bool_mask(op, mask);
  return AttentionPattern(m, uniform_starts(m.size(1), bq), uniform_starts(m.size(2), bk), bq, bk);
}

AttentionPattern AttentionPattern::from_layout(const Layout& layout) {
  if (!layout.defined()) TG_THROW(ValueError, "AttentionPattern::from_layout: layout is undefined");
  const std::int64_t bs = layout.block_size();
  return AttentionPattern(layout.mask(), uniform_starts(layout.block_rows(), bs), uniform_starts(layout.block_cols(), bs),
                          bs, bs);
}

AttentionPattern AttentionPattern::variable(const Tensor& mask, std::vector<std::int64_t> q_sizes,
                                            std::vector<std::int64_t> k_sizes) {
  const char* op = "AttentionPattern::variable";
  Tensor m = bool_mask(op, mask);
  const auto nq = static_cast<std::int64_t>(q_sizes.size()), nk = static_cast<std::int64_t>(k_sizes.size());
  if (m.size(1) != nq || m.size(2) != nk) {
    TG_THROW(ShapeError, op, ": mask must have shape [P, q_sizes.size(), k_sizes.size()] = [", m.size(0), ", ", nq,
             ", ", nk, "], got ", m.shape());
  }
  auto qs = starts_of(op, "q_sizes", q_sizes), ks = starts_of(op, "k_sizes", k_sizes);
  // Equal sizes make a uniform pattern, which kernels may treat faster.
  auto all_equal = [](const std::vector<std::int64_t>& v) {
    for (std::int64_t x : v)
      if (x != v.front()) return false;
    return !v.empty();
  };
  const std::int64_t bq = all_equal(q_sizes) ? q_sizes.front() : 0, bk = all_equal(k_sizes) ? k_sizes.front() : 0;
  return AttentionPattern(m, std::move(qs), std::move(ks), bq, bk);
}

AttentionPattern AttentionPattern::slice(std::int64_t q_begin, std::int64_t q_end, std::int64_t k_begin,
                                         std::int64_t k_end) const {
  const char* op = "AttentionPattern::slice";
  if (!defined()) TG_THROW(ValueError, op, ": the pattern is undefined");
  if (!(0 <= q_begin && q_begin < q_end && q_end <= sq()) || !(0 <= k_begin && k_begin < k_end && k_end <= sk())) {
    TG_THROW(ValueError, op, ": ranges must be non-empty and inside the pattern: queries [", q_begin, ", ", q_end,
             ") of [0, ", sq(), "), keys [", k_begin, ", ", k_end, ") of [0, ", sk(), ")");
  }
  // The blocks a range touches, and their sizes cut to it.
  auto cut = [](const std::vector<std::int64_t>& starts, std::int64_t a, std::int64_t b, std::int64_t& first) {
    first = std::upper_bound(starts.begin(), starts.end(), a) - starts.begin() - 1;
    std::vector<std::int64_t> sizes;
    for (auto i = static_cast<std::size_t>(first); starts[i] < b; ++i) {
      sizes.push_back(std::min(b, starts[i + 1]) - std::max(a, starts[i]));
    }
    return sizes;
  };
  std::int64_t r0 = 0, c0 = 0;
  std::vector<std::int64_t> q_sizes = cut(q_starts_, q_begin, q_end, r0), k_sizes = cut(k_starts_, k_begin, k_end, c0);
  const std::int64_t P = count(), nq = static_cast<std::int64_t>(q_sizes.size()),
                     nk = static_cast<std::int64_t>(k_sizes.size());
  std::vector<bool> m(static_cast<std::size_t>(P * nq * nk));
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t r = 0; r < nq; ++r)
      for (std::int64_t c = 0; c < nk; ++c) m[static_cast<std::size_t>((p * nq + r) * nk + c)] = visited(p, r0 + r, c0 + c);
  return variable(from_vector(m, {P, nq, nk}), std::move(q_sizes), std::move(k_sizes));
}

AttentionPattern AttentionPattern::dense(std::int64_t sq, std::int64_t sk, std::int64_t block) {
  const char* op = "AttentionPattern::dense";
  if (sq < 0 || sk < 0) TG_THROW(ValueError, op, ": sq and sk must be >= 0, got sq = ", sq, ", sk = ", sk);
  if (block <= 0) TG_THROW(ValueError, op, ": block must be positive, got ", block);
  auto sizes = [block](std::int64_t s) {
    std::vector<std::int64_t> v;
    for (std::int64_t a = 0; a < s; a += block) v.push_back(std::min(block, s - a));
    return v;
  };
  std::vector<std::int64_t> qz = sizes(sq), kz = sizes(sk);
  const auto nq = static_cast<std::int64_t>(qz.size()), nk = static_cast<std::int64_t>(kz.size());
  std::vector<bool> all(static_cast<std::size_t>(nq * nk), true);
  return variable(from_vector(all, {1, nq, nk}), std::move(qz), std::move(kz));
}

std::int64_t AttentionPattern::count() const { return defined() ? mask_.size(0) : 0; }
std::int64_t AttentionPattern::q_blocks() const { return defined() ? mask_.size(1) : 0; }
std::int64_t AttentionPattern::k_blocks() const { return defined() ? mask_.size(2) : 0; }
std::int64_t AttentionPattern::sq() const { return q_starts_.empty() ? 0 : q_starts_.back(); }
std::int64_t AttentionPattern::sk() const { return k_starts_.empty() ? 0 : k_starts_.back(); }
std::uint64_t AttentionPattern::id() const { return memo_ ? memo_->id : 0; }

bool AttentionPattern::visited(std::int64_t p, std::int64_t r, std::int64_t c) const {
  if (p < 0 || p >= count() || r < 0 || r >= q_blocks() || c < 0 || c >= k_blocks()) {
    TG_THROW(ValueError, "AttentionPattern::visited: (", p, ", ", r, ", ", c, ") is outside the pattern's [", count(),
             ", ", q_blocks(), ", ", k_blocks(), "]");
  }
  return (*mask_host_)[static_cast<std::size_t>((p * q_blocks() + r) * k_blocks() + c)] != 0;
}

double AttentionPattern::density() const {
  const double total = static_cast<double>(count()) * static_cast<double>(sq()) * static_cast<double>(sk());
  if (total == 0) return 0.0;
  const std::int64_t Qb = q_blocks(), Kb = k_blocks();
  const auto& m = *mask_host_;
  double on = 0;
  for (std::int64_t p = 0; p < count(); ++p)
    for (std::int64_t r = 0; r < Qb; ++r)
      for (std::int64_t c = 0; c < Kb; ++c)
        if (m[static_cast<std::size_t>((p * Qb + r) * Kb + c)]) {
          const auto ri = static_cast<std::size_t>(r), ci = static_cast<std::size_t>(c);
          on += static_cast<double>(q_starts_[ri + 1] - q_starts_[ri]) * static_cast<double>(k_starts_[ci + 1] - k_starts_[ci]);
        }
  return on / total;
}

AttentionPattern AttentionPattern::expanded(std::int64_t n) const {
  if (!defined()) TG_THROW(ValueError, "AttentionPattern::expanded: the pattern is undefined");
  if (count() == n) return *this;
  if (count() != 1 || n < 1) {
    TG_THROW(ShapeError, "AttentionPattern::expanded: a pattern of P = ", count(), " rows cannot be expanded to ", n,
             " rows (P must be 1 or ", n, ")");
  }
  std::lock_guard<std::mutex> lock(memo_->mu);
  if (memo_->expanded_count != n) {
    const std::size_t one = mask_host_->size();
    std::vector<bool> rep(one * static_cast<std::size_t>(n));
    for (std::size_t p = 0; p < static_cast<std::size_t>(n); ++p)
      for (std::size_t e = 0; e < one; ++e) rep[p * one + e] = (*mask_host_)[e] != 0;
    memo_->expanded = AttentionPattern(from_vector(rep, {n, q_blocks(), k_blocks()}), q_starts_, k_starts_, bq_, bk_);
    memo_->expanded_count = n;
  }
  return memo_->expanded;
}

}  // namespace tg
