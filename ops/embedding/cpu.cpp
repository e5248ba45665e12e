// CPU kernels of the embedding family: row copies, and a scatter-add of gradient rows
// (in f32 for bf16/f16 storage, converted once at the end).
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ops/embedding/kernels.h"

namespace tg::ops {
namespace {

template <typename F>
void with_index_type(const Tensor& indices, F&& f) {
  if (indices.dtype() == DType::i32) f(indices.data<std::int32_t>());
  else f(indices.data<std::int64_t>());
}

void embedding_fwd_cpu(const Tensor& weight, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                       const Tensor& out) {
  const std::size_t row_bytes = static_cast<std::size_t>(D) * dtype_size(weight.dtype());
  const auto* w = static_cast<const unsigned char*>(weight.data_ptr());
  auto* o = static_cast<unsigned char*>(out.data_ptr());
  with_index_type(indices, [&](const auto* idx) {
    for (std::int64_t i = 0; i < n; ++i) {
      const auto row = static_cast<std::int64_t>(idx[i]);
      std::memcpy(o + static_cast<std::size_t>(i) * row_bytes, w + static_cast<std::size_t>(row) * row_bytes,
                  row_bytes);
    }
  });
}

template <typename T>
void embedding_bwd_typed(const Tensor& grad, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                         const Tensor& dweight) {
  using Acc = typename acc_type<T>::type;
  const T* g = grad.data<T>();
  T* dw = dweight.data<T>();
  const std::size_t m = static_cast<std::size_t>(V * D);
  // f32/f64 accumulate in place; bf16/f16 in an f32 buffer converted once at the end.
  std::vector<Acc> buf;
  Acc* acc = nullptr;
  if constexpr (std::is_same_v<T, Acc>) {
    std::fill(dw, dw + m, Acc(0));
    acc = dw;
  } else {
    buf.assign(m, Acc(0));
    acc = buf.data();
  }
  with_index_type(indices, [&](const auto* idx) {
    for (std::int64_t i = 0; i < n; ++i) {
      Acc* dst = acc + static_cast<std::int64_t>(idx[i]) * D;
      const T* src = g + i * D;
      for (std::int64_t c = 0; c < D; ++c) dst[c] += static_cast<Acc>(src[c]);
    }
  });
  if constexpr (!std::is_same_v<T, Acc>) {
    for (std::size_t k = 0; k < m; ++k) dw[k] = static_cast<T>(buf[k]);
  }
}

void embedding_bwd_cpu(const Tensor& grad, const Tensor& indices, std::int64_t n, std::int64_t V, std::int64_t D,
                       const Tensor& dweight) {
  TG_DISPATCH_FLOATING(grad.dtype(), "embedding", [&] { embedding_bwd_typed<scalar_t>(grad, indices, n, V, D, dweight); });
}

}  // namespace

TG_REGISTER_KERNEL(embedding_fwd_kernel, CPU, &embedding_fwd_cpu);
TG_REGISTER_KERNEL(embedding_bwd_kernel, CPU, &embedding_bwd_cpu);

}  // namespace tg::ops
