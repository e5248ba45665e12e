#include "ops/elementwise/plan.h"

#include <vector>

#include "runtime/error.h"

namespace tg::ops {

template <int N>
MapPlan<N> make_map_plan(const Shape& out, const std::array<Shape, N>& in_shapes, const char* op) {
  MapPlan<N> plan;
  const int nd = out.ndim();
  const std::int64_t numel = out.numel();
  bool any_strided = false;
  std::vector<std::vector<std::int64_t>> strides(N, std::vector<std::int64_t>(static_cast<std::size_t>(nd), 0));
  for (int k = 0; k < N; ++k) {
    const Shape& s = in_shapes[static_cast<std::size_t>(k)];
    InputPlan& p = plan.in[k];
    const std::int64_t n = s.numel();
    if (n == numel) {
      // A broadcastable input with as many elements as the output has the same layout.
      p.mode = InputMode::Contiguous;
      continue;
    }
    plan.all_contiguous = false;
    if (n == 1) {
      p.mode = InputMode::Scalar;
      continue;
    }
    // Row: after its leading 1s, the input equals the output's trailing dims.
    const int off = nd - s.ndim();
    int first = 0;
    while (first < s.ndim() && s[first] == 1) ++first;
    bool row = true;
    for (int d = first; d < s.ndim(); ++d) row = row && s[d] == out[off + d];
    if (row) {
      p.mode = InputMode::Row;
      p.row_len = n;
      continue;
    }
    p.mode = InputMode::Strided;
    any_strided = true;
    std::int64_t st = 1;
    for (int d = s.ndim() - 1; d >= 0; --d) {
      strides[static_cast<std::size_t>(k)][static_cast<std::size_t>(off + d)] = s[d] == 1 ? 0 : st;
      st *= s[d];
    }
  }
  if (!any_strided) return plan;

  // Coalesce: drop extent-1 dims, merge neighbours that every strided input walks as one.
  std::vector<std::int64_t> sizes;
  std::vector<std::vector<std::int64_t>> cst(N);
  for (int d = 0; d < nd; ++d) {
    const std::int64_t ext = out[d];
    if (ext == 1) continue;
    bool merge = !sizes.empty();
    for (int k = 0; k < N && merge; ++k) {
      if (plan.in[k].mode != InputMode::Strided) continue;
      merge = cst[static_cast<std::size_t>(k)].back() == strides[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)] * ext;
    }
    if (merge) {
      sizes.back() *= ext;
      for (int k = 0; k < N; ++k) {
        if (plan.in[k].mode == InputMode::Strided) {
          cst[static_cast<std::size_t>(k)].back() = strides[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)];
        }
      }
    } else {
      sizes.push_back(ext);
      for (int k = 0; k < N; ++k) {
        cst[static_cast<std::size_t>(k)].push_back(strides[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)]);
      }
    }
  }
  if (static_cast<int>(sizes.size()) > kMaxMapDims) {
    TG_THROW(ShapeError, op, ": broadcasting to shape ", out, " needs ", sizes.size(),
             " dims after merging contiguous ones; at most ", kMaxMapDims, " are supported");
  }
  plan.ndim = static_cast<int>(sizes.size());
  for (int d = 0; d < plan.ndim; ++d) {
    plan.sizes[d] = sizes[static_cast<std::size_t>(d)];
    for (int k = 0; k < N; ++k) {
      if (plan.in[k].mode == InputMode::Strided) {
        plan.in[k].strides[d] = cst[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)];
      }
    }
  }
  return plan;
}

SumToPlan make_sum_to_plan(const Shape& x, const Shape& out, const char* op) {
  SumToPlan plan;
  const int nd = x.ndim();
  const int off = nd - out.ndim();
  std::vector<std::int64_t> ks, kst, rs, rst;
  auto push = [](std::vector<std::int64_t>& sizes, std::vector<std::int64_t>& strides, std::int64_t ext,
                 std::int64_t stride) {
    if (!sizes.empty() && strides.back() == stride * ext) {
      sizes.back() *= ext;
      strides.back() = stride;
    } else {
      sizes.push_back(ext);
      strides.push_back(stride);
    }
  };
  std::vector<std::int64_t> xstride(static_cast<std::size_t>(nd), 1);
  for (int d = nd - 2; d >= 0; --d) xstride[static_cast<std::size_t>(d)] = xstride[static_cast<std::size_t>(d + 1)] * x[d + 1];
  int innermost = -1;  // innermost dim of x with extent > 1
  bool innermost_reduced = false;
  for (int d = 0; d < nd; ++d) {
    const std::int64_t ext = x[d];
    if (ext == 1) continue;
    const bool reduced = d < off || out[d - off] == 1;
    innermost = d;
    innermost_reduced = reduced;
    if (reduced) {
      push(rs, rst, ext, xstride[static_cast<std::size_t>(d)]);
    } else {
      push(ks, kst, ext, xstride[static_cast<std::size_t>(d)]);
    }
  }
  if (ks.size() > static_cast<std::size_t>(kMaxMapDims) || rs.size() > static_cast<std::size_t>(kMaxMapDims)) {
    TG_THROW(ShapeError, op, ": summing shape ", x, " to ", out, " needs more than ", kMaxMapDims,
             " kept or reduced dims after merging contiguous ones");
  }
  plan.nk = static_cast<int>(ks.size());
  plan.nr = static_cast<int>(rs.size());
  for (int d = 0; d < plan.nk; ++d) {
    plan.ksizes[d] = ks[static_cast<std::size_t>(d)];
    plan.kstrides[d] = kst[static_cast<std::size_t>(d)];
  }
  for (int d = 0; d < plan.nr; ++d) {
    plan.rsizes[d] = rs[static_cast<std::size_t>(d)];
    plan.rstrides[d] = rst[static_cast<std::size_t>(d)];
  }
  plan.n_out = out.numel();
  plan.n_red = 1;
  for (auto e : rs) plan.n_red *= e;
  // Extent-0 dims of x: nothing to sum (a kept 0 dim means no output either).
  if (x.numel() == 0) plan.n_red = 0;
  plan.inner_reduced = innermost >= 0 && innermost_reduced;
  return plan;
}

template MapPlan<1> make_map_plan<1>(const Shape&, const std::array<Shape, 1>&, const char*);
template MapPlan<2> make_map_plan<2>(const Shape&, const std::array<Shape, 2>&, const char*);
template MapPlan<3> make_map_plan<3>(const Shape&, const std::array<Shape, 3>&, const char*);

}  // namespace tg::ops
